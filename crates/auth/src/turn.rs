//! TURN credentials derived from a shared secret: the "TURN REST API" scheme coturn
//! implements as `use-auth-secret` (draft-uberti-behave-turn-rest), and Bedside's own
//! embedded TURN server checks the same way.
//!
//! Bedside and the TURN server share a secret and nothing else. For each participant,
//! Bedside mints `username = "{expiry_unix}:{participant_id}"` and `credential =
//! base64(HMAC-SHA1(secret, username))`; the TURN server recomputes the credential from
//! the username and refuses a username whose expiry has passed. No per-user state, no
//! database shared between the two, and the username names only the visit's pseudonymous
//! participant id. Pure: the current time is passed in.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha1::Sha1;
use std::fmt;
use thiserror::Error;

/// The longest a minted TURN credential lives, whatever the visit's end: a credential
/// copied out of a browser stays usable this long at most.
pub const MAX_TURN_CREDENTIAL_SECS: i64 = 24 * 3600;

/// Shortest shared secret accepted. HMAC-SHA1 with a guessable secret lets anyone mint
/// credentials and relay through the server.
pub const MIN_TURN_SECRET_LEN: usize = 16;

/// Why a TURN secret or username was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TurnCredentialError {
    #[error("the TURN shared secret must be at least {MIN_TURN_SECRET_LEN} characters")]
    WeakSecret,
    #[error("TURN username is not expiry:participant-id")]
    Malformed,
    #[error("TURN credential has expired")]
    Expired,
}

/// One participant's TURN username and password, as `RTCIceServer` takes them.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnCredential {
    pub username: String,
    pub credential: String,
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for TurnCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnCredential")
            .field("username", &self.username)
            .field("credential", &"..")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The secret shared with the TURN server(s). Never printed.
#[derive(Clone)]
pub struct TurnSecret(SecretString);

impl fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TurnSecret(..)")
    }
}

impl TurnSecret {
    pub fn new(secret: &str) -> Result<Self, TurnCredentialError> {
        if secret.chars().count() < MIN_TURN_SECRET_LEN {
            return Err(TurnCredentialError::WeakSecret);
        }
        Ok(Self(SecretString::from(secret.to_owned())))
    }

    /// A credential for `participant_id` valid until the visit ends (`visit_expires_at`),
    /// but never longer than [`MAX_TURN_CREDENTIAL_SECS`] from `now`.
    pub fn mint(
        &self,
        participant_id: &str,
        visit_expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> TurnCredential {
        let cap = now + TimeDelta::seconds(MAX_TURN_CREDENTIAL_SECS);
        let expires_at = visit_expires_at.min(cap);
        let username = format!("{}:{participant_id}", expires_at.timestamp());
        let credential = self.password(&username);
        TurnCredential {
            username,
            credential,
            expires_at,
        }
    }

    /// `base64(HMAC-SHA1(secret, username))`: the password a TURN server expects for
    /// `username`.
    pub fn password(&self, username: &str) -> String {
        // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(self.0.expose_secret().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(username.as_bytes());
        STANDARD.encode(mac.finalize().into_bytes())
    }

    /// What a TURN server does with a username: checks its form and expiry and returns the
    /// password it must have been issued with.
    pub fn password_for(
        &self,
        username: &str,
        now: DateTime<Utc>,
    ) -> Result<String, TurnCredentialError> {
        let (expiry, id) = username
            .split_once(':')
            .ok_or(TurnCredentialError::Malformed)?;
        if id.is_empty() || expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TurnCredentialError::Malformed);
        }
        let expiry: i64 = expiry.parse().map_err(|_| TurnCredentialError::Malformed)?;
        if expiry <= now.timestamp() {
            return Err(TurnCredentialError::Expired);
        }
        Ok(self.password(username))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(unix, 0).unwrap()
    }

    const SECRET: &str = "north-wing-turn-secret";

    #[test]
    fn matches_a_known_vector() {
        // python3: base64.b64encode(hmac.new(b"north-wing-turn-secret",
        //   b"1767225600:p_0123456789abcdef", hashlib.sha1).digest())
        let secret = TurnSecret::new(SECRET).unwrap();
        let c = secret.mint("p_0123456789abcdef", at(1_767_225_600), at(1_767_200_000));
        assert_eq!(c.username, "1767225600:p_0123456789abcdef");
        assert_eq!(c.credential, "yko8lu8fGxBZkVi35rrfg+hBNpg=");
        assert_eq!(c.expires_at, at(1_767_225_600));
    }

    #[test]
    fn matches_the_turn_rest_api_example() {
        // The draft's own example pair, as coturn's documentation quotes it.
        let secret = TurnSecret(SecretString::from("secret".to_owned()));
        assert_eq!(
            secret.password("1433895918:user"),
            "duY86vsmGEXM+Ma7pGS//SXJIv0="
        );
    }

    #[test]
    fn expiry_is_the_visit_end_capped_at_a_day() {
        let secret = TurnSecret::new(SECRET).unwrap();
        let now = at(1_000_000);
        let soon = secret.mint("p_1", at(1_003_600), now);
        assert_eq!(soon.expires_at, at(1_003_600));
        let far = secret.mint("p_1", at(1_000_000 + 90 * 86_400), now);
        assert_eq!(far.expires_at, at(1_000_000 + MAX_TURN_CREDENTIAL_SECS));
        assert!(far.username.starts_with("1086400:"));
    }

    #[test]
    fn a_server_recomputes_the_password_and_refuses_expired_usernames() {
        let secret = TurnSecret::new(SECRET).unwrap();
        let c = secret.mint("p_abc", at(2_000), at(1_000));
        assert_eq!(
            secret.password_for(&c.username, at(1_999)),
            Ok(c.credential.clone())
        );
        assert_eq!(
            secret.password_for(&c.username, at(2_000)),
            Err(TurnCredentialError::Expired)
        );
        let other = TurnSecret::new("another-secret-of-some-length").unwrap();
        assert_ne!(
            other.password_for(&c.username, at(1_500)).unwrap(),
            c.credential
        );
        for bad in [
            "",
            "p_abc",
            "2000:",
            ":p_abc",
            "20x0:p_abc",
            "-5:p",
            "+5:p",
            "99999999999999999999:p",
        ] {
            assert_eq!(
                secret.password_for(bad, at(1_000)),
                Err(TurnCredentialError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn weak_secrets_are_refused_and_secrets_never_print() {
        assert_eq!(
            TurnSecret::new("short").unwrap_err(),
            TurnCredentialError::WeakSecret
        );
        let secret = TurnSecret::new(SECRET).unwrap();
        assert!(!format!("{secret:?}").contains(SECRET));
        let c = secret.mint("p_1", at(2_000), at(1_000));
        assert!(!format!("{c:?}").contains(&c.credential));
    }
}
