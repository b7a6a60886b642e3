//! Provider tokens: what opens a provider's dashboard. Signed and checked like join tokens
//! (same keys, `kid`, algorithm and times) but with `role: "provider"` and a `provider`
//! claim (equal to `sub`) in place of `visit`, so neither kind can pass for the other.

use crate::keyring::{KeyId, KeyRing, TenantId, check_time, decode_verified};
use crate::{MAX_TOKEN_LEN, MAX_TOKEN_LIFETIME_SECS, TokenError, check_identity};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The `role` claim of a provider token: only ever `"provider"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderRole {
    Provider,
}

/// Claims of a provider token (docs/protocol.md, "Join tokens").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderClaims {
    pub iss: String,
    pub sub: String,
    pub provider: String,
    pub role: ProviderRole,
    #[serde(default)]
    pub name: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
}

/// A provider token that passed every check, and the tenant whose key signed it.
#[derive(Debug, Clone)]
pub struct VerifiedProvider {
    pub tenant: TenantId,
    pub claims: ProviderClaims,
}

impl ProviderClaims {
    fn check(&mut self) -> Result<(), TokenError> {
        check_identity(&self.sub).map_err(|m| TokenError::InvalidClaims(format!("sub {m}")))?;
        if self.provider != self.sub {
            return Err(TokenError::InvalidClaims("provider must equal sub".into()));
        }
        if self.jti.is_empty() || self.jti.len() > 128 {
            return Err(TokenError::InvalidClaims("jti has a bad length".into()));
        }
        if self.exp <= self.nbf || self.exp.saturating_sub(self.nbf) > MAX_TOKEN_LIFETIME_SECS {
            return Err(TokenError::InvalidClaims(
                "exp must follow nbf within 31 days".into(),
            ));
        }
        self.name = crate::sanitize_display_name(&self.name);
        Ok(())
    }
}

impl KeyRing {
    /// Signs provider claims with the given key (`kid` = key id, `iss` forced to match).
    pub fn mint_provider(
        &self,
        key: &KeyId,
        claims: &ProviderClaims,
    ) -> Result<String, TokenError> {
        let claims = ProviderClaims {
            iss: key.as_str().to_owned(),
            ..claims.clone()
        };
        self.sign(key, &claims)
    }

    /// Verifies a provider token at `now`, with the checks of [`KeyRing::verify_join`].
    pub fn verify_provider(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<VerifiedProvider, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (tenant, decoding, algorithm, kid) = self.decoding_for(token)?;
        let mut claims: ProviderClaims = decode_verified(token, decoding, algorithm, None)?;
        if claims.iss != kid {
            return Err(TokenError::InvalidClaims(
                "iss must equal the kid header".into(),
            ));
        }
        check_time(claims.nbf, claims.exp, now)?;
        claims.check()?;
        Ok(VerifiedProvider { tenant, claims })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ApiKey, JoinClaims, Role};

    fn ring() -> KeyRing {
        KeyRing::new([ApiKey::new("k1", "a-secret-of-some-length").unwrap()]).unwrap()
    }

    fn claims(now: i64) -> ProviderClaims {
        ProviderClaims {
            iss: String::new(),
            sub: "dr-lee".into(),
            provider: "dr-lee".into(),
            role: ProviderRole::Provider,
            name: "Dr\nLee".into(),
            iat: now,
            nbf: now,
            exp: now + 3600,
            jti: "j1".into(),
        }
    }

    #[test]
    fn a_provider_token_opens_a_dashboard_and_never_a_visit() {
        let ring = ring();
        let key = KeyId::new("k1").unwrap();
        let now = Utc::now();
        let token = ring.mint_provider(&key, &claims(now.timestamp())).unwrap();
        let v = ring.verify_provider(&token, now).unwrap();
        assert_eq!(v.claims.provider, "dr-lee");
        assert_eq!(v.claims.name, "Dr Lee");
        assert_eq!(v.tenant.as_str(), "k1");
        assert!(ring.verify_join(&token, now).is_err(), "not a join token");
        // Expired is expired.
        let later = now + chrono::TimeDelta::hours(2);
        assert_eq!(
            ring.verify_provider(&token, later).unwrap_err(),
            TokenError::Expired
        );
        // A join token is not a provider token.
        let join = JoinClaims {
            iss: String::new(),
            sub: "dr-lee".into(),
            visit: "v".into(),
            role: Role::Doctor,
            name: String::new(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: now.timestamp() + 60,
            jti: "j2".into(),
        };
        let join = ring.mint_join(&key, &join).unwrap();
        assert!(ring.verify_provider(&join, now).is_err());
        // The provider claim must name the subject.
        let mut other = claims(now.timestamp());
        other.provider = "dr-kim".into();
        let token = ring.mint_provider(&key, &other).unwrap();
        assert!(ring.verify_provider(&token, now).is_err());
    }
}
