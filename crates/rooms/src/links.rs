//! Visit links: a join token for one visit, and the web client's URL carrying it in the
//! fragment. One code path for the API's `POST /v1/visits/{id}/tokens` and a doctor's
//! `invite` from the call (which the node running the visit mints: every node holds the
//! same keys).

use bedside_auth::{JoinClaims, KeyId, KeyRing, Role, TenantId, TokenError};
use bedside_visit::VisitId;
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// Mints visit links with the configured keys.
pub struct Links {
    keys: Arc<KeyRing>,
    /// Base of the links, without a trailing slash (`BEDSIDE_PUBLIC_URL`).
    public_url: Arc<str>,
}

/// What a link is for.
pub struct LinkRequest {
    pub visit: VisitId,
    pub identity: String,
    pub role: Role,
    /// Display name (already checked).
    pub name: String,
    /// The token's `iat`: after any block of this identity in the visit (see
    /// `bedside_visit::access::issued_at_after`).
    pub issued_at: i64,
    pub now: DateTime<Utc>,
    /// Already capped at the visit's end.
    pub expires_at: DateTime<Utc>,
    /// The link admits one person once (`POST /v1/visits/{id}/tokens {single_use: true}`).
    pub single_use: bool,
}

/// A minted link.
pub struct Link {
    pub token: String,
    /// The token's id: what the audit trail's `token_issued`/`invited` row and the join
    /// made with it are traced by.
    pub jti: String,
    pub join_url: String,
}

impl Links {
    pub fn new(keys: Arc<KeyRing>, public_url: Arc<str>) -> Self {
        Self { keys, public_url }
    }

    /// The key Bedside signs with for `tenant` when no API key asked.
    pub fn signer_for(&self, tenant: &TenantId) -> Option<KeyId> {
        self.keys.signer_for(tenant).cloned()
    }

    /// A join token for `req`, signed with `key`, and its link.
    pub fn mint(&self, key: &KeyId, req: LinkRequest) -> Result<Link, TokenError> {
        let claims = JoinClaims {
            iss: key.as_str().to_owned(),
            sub: req.identity,
            visit: req.visit.to_string(),
            role: req.role,
            name: req.name,
            iat: req.issued_at,
            nbf: req.now.timestamp(),
            exp: req.expires_at.timestamp(),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let token = self.keys.mint_join_with(key, &claims, req.single_use)?;
        Ok(Link {
            join_url: self.url(&token),
            token,
            jti: claims.jti,
        })
    }

    /// The web client's link for a token: in the fragment, which browsers never send.
    pub fn url(&self, token: &str) -> String {
        format!("{}/#token={token}", self.public_url)
    }
}
