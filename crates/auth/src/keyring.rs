//! Tenants' API keys: authenticating REST calls, signing and verifying join tokens.

use crate::error::{ApiKeyError, KeyConfigError};
use crate::{CLOCK_LEEWAY_SECS, JoinClaims, MAX_TOKEN_LEN, TokenError};
use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use subtle::ConstantTimeEq;

const MIN_SECRET_LEN: usize = 16;

/// Identifies one API key: the user name of HTTP Basic auth, the `kid` header and the
/// `iss` claim of the tokens it signs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

/// The clinic that owns visits. Several keys may belong to one tenant, so keys can be
/// rotated without the tenant losing its visits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl std::borrow::Borrow<str> for KeyId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl KeyId {
    pub fn new(id: impl Into<String>) -> Result<Self, KeyConfigError> {
        let id = id.into();
        if valid_id(&id) {
            Ok(Self(id))
        } else {
            Err(KeyConfigError::BadId(id))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TenantId {
    pub fn new(id: impl Into<String>) -> Result<Self, KeyConfigError> {
        let id = id.into();
        if valid_id(&id) {
            Ok(Self(id))
        } else {
            Err(KeyConfigError::BadTenant(id))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// Deserialized through the validating constructors: an id read from a message or a file is
// as checked as one from configuration.
impl TryFrom<String> for KeyId {
    type Error = KeyConfigError;
    fn try_from(id: String) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> Self {
        id.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = KeyConfigError;
    fn try_from(id: String) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> Self {
        id.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One configured API key. The secret never prints.
#[derive(Clone)]
pub struct ApiKey {
    pub id: KeyId,
    pub tenant: TenantId,
    secret: SecretString,
    /// Whether Bedside may sign its own links with it ([`KeyRing::signer_for`]). Off for a
    /// key that is being rolled out: until every node knows it, a link signed with it would
    /// be refused by the nodes that do not.
    pub sign_links: bool,
}

impl ApiKey {
    /// A key whose tenant is itself: what `BEDSIDE_API_KEYS=id:secret` configures.
    pub fn new(id: &str, secret: &str) -> Result<Self, KeyConfigError> {
        Self::for_tenant(id, secret, id)
    }

    pub fn for_tenant(id: &str, secret: &str, tenant: &str) -> Result<Self, KeyConfigError> {
        let id = KeyId::new(id)?;
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyConfigError::WeakSecret(id.0));
        }
        Ok(Self {
            id,
            tenant: TenantId::new(tenant)?,
            secret: SecretString::from(secret),
            sign_links: true,
        })
    }

    /// The same key, which Bedside may (`true`) or may not sign its own links with.
    pub fn with_sign_links(mut self, sign_links: bool) -> Self {
        self.sign_links = sign_links;
        self
    }

    /// Parses `id:secret`.
    pub fn parse(pair: &str) -> Result<Self, KeyConfigError> {
        let (id, secret) = pair
            .trim()
            .split_once(':')
            .ok_or(KeyConfigError::MissingSeparator)?;
        Self::new(id, secret)
    }

    pub fn secret(&self) -> &SecretString {
        &self.secret
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("sign_links", &self.sign_links)
            .finish_non_exhaustive()
    }
}

struct Entry {
    key: ApiKey,
    secret_digest: [u8; 32],
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Pinned per key: the header's `alg` only has to match it, never chooses it.
    algorithm: Algorithm,
}

/// A verified join token: the claims plus the tenant whose key signed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedJoin {
    pub tenant: TenantId,
    pub claims: JoinClaims,
    /// The token carries `single_use: true`: it admits one person once (docs/protocol.md,
    /// "Single-use links"). A claim of its own beside [`JoinClaims`], so that code building
    /// ordinary join tokens need not name it.
    pub single_use: bool,
}

/// A join token's payload as signed and read: the claims, and `single_use` when set.
#[derive(serde::Serialize, serde::Deserialize)]
struct JoinPayload<C> {
    #[serde(flatten)]
    claims: C,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    single_use: bool,
}

impl VerifiedJoin {
    /// A token only opens visits of the tenant whose key signed it.
    pub fn ensure_tenant(&self, owner: &TenantId) -> Result<(), TokenError> {
        if &self.tenant == owner {
            Ok(())
        } else {
            Err(TokenError::WrongTenant)
        }
    }
}

/// All configured keys, looked up by exact key id.
pub struct KeyRing {
    entries: HashMap<KeyId, Entry>,
    /// Key ids in the order they were configured (see [`KeyRing::signer_for`]).
    order: Vec<KeyId>,
    /// Compared against when the id is unknown, so both paths cost the same.
    dummy_digest: [u8; 32],
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.entries.keys())
            .finish()
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl KeyRing {
    pub fn new(keys: impl IntoIterator<Item = ApiKey>) -> Result<Self, KeyConfigError> {
        let mut entries = HashMap::new();
        let mut order = Vec::new();
        for key in keys {
            let secret = key.secret.expose_secret().as_bytes();
            let entry = Entry {
                secret_digest: digest(key.secret.expose_secret()),
                encoding: EncodingKey::from_secret(secret),
                decoding: DecodingKey::from_secret(secret),
                algorithm: Algorithm::HS256,
                key,
            };
            let id = entry.key.id.clone();
            if entries.insert(id.clone(), entry).is_some() {
                return Err(KeyConfigError::Duplicate(id.0));
            }
            order.push(id);
        }
        Ok(Self {
            entries,
            order,
            dummy_digest: digest("bedside-no-such-key"),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &ApiKey> {
        self.entries.values().map(|e| &e.key)
    }

    /// The key Bedside signs with on a tenant's behalf when no API key asked (a doctor's
    /// guest link from the call): the tenant's key configured last among those that may
    /// sign links. A rotation takes two rolls (docs/operations.md): the new key is added
    /// after the old one with `sign_links = false`, so every node can verify it before any
    /// node signs with it; the second roll lets it sign, and links minted then outlive the
    /// old key.
    pub fn signer_for(&self, tenant: &TenantId) -> Option<&KeyId> {
        self.order.iter().rev().find(|id| {
            self.entries
                .get(*id)
                .is_some_and(|e| &e.key.tenant == tenant && e.key.sign_links)
        })
    }

    pub fn get(&self, id: &KeyId) -> Option<&ApiKey> {
        self.entries.get(id).map(|e| &e.key)
    }

    /// Checks an API key id and secret (HTTP Basic). The secret comparison is constant
    /// time over fixed-length digests, so neither content nor length leaks.
    pub fn authenticate(&self, id: &str, secret: &str) -> Result<&ApiKey, ApiKeyError> {
        let given = digest(secret);
        let entry = self.entries.get(id);
        let expected = entry.map_or(&self.dummy_digest, |e| &e.secret_digest);
        let same: bool = given.ct_eq(expected).into();
        match entry {
            Some(e) if same => Ok(&e.key),
            _ => Err(ApiKeyError::Invalid),
        }
    }

    /// Signs join claims with the given key (`kid` = key id, `iss` forced to match).
    pub fn mint_join(&self, key: &KeyId, claims: &JoinClaims) -> Result<String, TokenError> {
        self.mint_join_with(key, claims, false)
    }

    /// [`KeyRing::mint_join`], for a link that admits one person once when `single_use`.
    pub fn mint_join_with(
        &self,
        key: &KeyId,
        claims: &JoinClaims,
        single_use: bool,
    ) -> Result<String, TokenError> {
        let entry = self.entries.get(key).ok_or(TokenError::Signing)?;
        let mut header = Header::new(entry.algorithm);
        header.kid = Some(key.0.clone());
        let claims = JoinPayload {
            claims: JoinClaims {
                iss: key.0.clone(),
                ..claims.clone()
            },
            single_use,
        };
        jsonwebtoken::encode(&header, &claims, &entry.encoding).map_err(|_| TokenError::Signing)
    }

    /// Signs any claims with the given key, `kid` = key id.
    pub(crate) fn sign<T: Serialize>(&self, key: &KeyId, claims: &T) -> Result<String, TokenError> {
        let entry = self.entries.get(key).ok_or(TokenError::Signing)?;
        let mut header = Header::new(entry.algorithm);
        header.kid = Some(key.0.clone());
        jsonwebtoken::encode(&header, claims, &entry.encoding).map_err(|_| TokenError::Signing)
    }

    /// The key a token's `kid` picks: its tenant, decoding key, pinned algorithm and id.
    pub(crate) fn decoding_for<'a>(
        &'a self,
        token: &'a str,
    ) -> Result<(TenantId, &'a DecodingKey, Algorithm, String), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let kid = header.kid.ok_or(TokenError::InvalidSignature)?;
        let entry = self
            .entries
            .get(kid.as_str())
            .ok_or(TokenError::InvalidSignature)?;
        Ok((
            entry.key.tenant.clone(),
            &entry.decoding,
            entry.algorithm,
            kid,
        ))
    }

    /// Verifies a join token at time `now`: the `kid` picks a key from this ring by exact
    /// match, the algorithm is the key's own, `iss` must equal `kid`, every claim of
    /// docs/protocol.md must be present, and `nbf`/`exp` hold within [`CLOCK_LEEWAY_SECS`].
    pub fn verify_join(&self, token: &str, now: DateTime<Utc>) -> Result<VerifiedJoin, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let kid = header.kid.as_deref().ok_or(TokenError::InvalidSignature)?;
        let entry = self.entries.get(kid).ok_or(TokenError::InvalidSignature)?;
        let JoinPayload::<JoinClaims> {
            mut claims,
            single_use,
        } = decode_verified(token, &entry.decoding, entry.algorithm, None)?;
        if claims.iss != kid {
            return Err(TokenError::InvalidClaims(
                "iss must equal the kid header".into(),
            ));
        }
        check_time(claims.nbf, claims.exp, now)?;
        claims.check()?;
        Ok(VerifiedJoin {
            tenant: entry.key.tenant.clone(),
            claims,
            single_use,
        })
    }
}

/// Signature, algorithm and presence checks shared by join and resume tokens. Time is
/// checked by the caller against the `now` it was given, never against the system clock.
pub(crate) fn decode_verified<T: serde::de::DeserializeOwned>(
    token: &str,
    key: &DecodingKey,
    algorithm: Algorithm,
    audience: Option<&str>,
) -> Result<T, TokenError> {
    let mut validation = Validation::new(algorithm);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.leeway = 0;
    match audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        }
        // A token with any `aud` is not a join token (resume tokens carry one).
        None => validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]),
    }
    jsonwebtoken::decode::<T>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::MissingAlgorithm
            | ErrorKind::InvalidAudience => TokenError::InvalidSignature,
            ErrorKind::MissingRequiredClaim(c) => TokenError::InvalidClaims(format!("missing {c}")),
            ErrorKind::InvalidClaimFormat(c) => TokenError::InvalidClaims(format!("bad {c}")),
            ErrorKind::Json(e) => TokenError::InvalidClaims(e.to_string()),
            _ => TokenError::Malformed,
        })
}

pub(crate) fn check_time(nbf: i64, exp: i64, now: DateTime<Utc>) -> Result<(), TokenError> {
    let now = now.timestamp();
    // Saturating: whoever holds a key can sign any i64 at all, and `i64::MAX + leeway`
    // must be a refusal (the lifetime check), not an overflow panic.
    if exp.saturating_add(CLOCK_LEEWAY_SECS) <= now {
        return Err(TokenError::Expired);
    }
    if nbf.saturating_sub(CLOCK_LEEWAY_SECS) > now {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}
