//! TURN credentials derived from a shared secret: the "TURN REST API" scheme coturn
//! implements as `use-auth-secret` (draft-uberti-behave-turn-rest), and Bedside's own
//! embedded TURN server checks the same way.
//!
//! Bedside and the TURN server share a secret and nothing else. For each participant,
//! Bedside mints `username = "{expiry_unix}:{subject}.{issued_unix}"` and `credential =
//! base64(HMAC-SHA1(secret, username))`; the TURN server recomputes the credential from
//! the username and refuses a username whose expiry has passed. No per-user state, no
//! database shared between the two. The subject is a pseudonym of the visit and the
//! identity ([`TurnSecret::subject`], keyed by the secret): the same on every join of that
//! person to that visit, so an allocation quota keyed by it does not grow with rejoins, and
//! a server holding the secret can tell a removed identity's credentials (issued no later
//! than the removal) without the identity ever appearing in a username. Pure: the current
//! time is passed in.

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

/// The longest a probe credential lives: the one a waiting participant gets for the
/// pre-call network check, before anyone admitted them.
pub const PROBE_TURN_CREDENTIAL_SECS: i64 = 5 * 60;

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

    /// The pseudonym TURN usernames carry for `identity` in `visit`: `s_` and 16 hex
    /// digits of an HMAC keyed by the secret, so nobody without it can tell who it is.
    pub fn subject(&self, visit: &str, identity: &str) -> String {
        let mac = self.mac(&[
            b"bedside-turn-subject",
            visit.as_bytes(),
            identity.as_bytes(),
        ]);
        format!("s_{}", hex::encode(&mac[..8]))
    }

    /// A credential for `subject` (see [`Self::subject`]) valid until the visit ends
    /// (`visit_expires_at`), but never longer than [`MAX_TURN_CREDENTIAL_SECS`] from `now`.
    pub fn mint(
        &self,
        subject: &str,
        visit_expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> TurnCredential {
        self.mint_within(subject, visit_expires_at, now, MAX_TURN_CREDENTIAL_SECS)
    }

    /// A probe credential for `subject`: as [`Self::mint`], but valid for no more than
    /// [`PROBE_TURN_CREDENTIAL_SECS`].
    pub fn mint_probe(
        &self,
        subject: &str,
        visit_expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> TurnCredential {
        self.mint_within(subject, visit_expires_at, now, PROBE_TURN_CREDENTIAL_SECS)
    }

    fn mint_within(
        &self,
        subject: &str,
        visit_expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
        max_secs: i64,
    ) -> TurnCredential {
        let cap = now + TimeDelta::seconds(max_secs);
        let expires_at = visit_expires_at.min(cap);
        let username = format!("{}:{subject}.{}", expires_at.timestamp(), now.timestamp());
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
        STANDARD.encode(self.mac(&[username.as_bytes()]))
    }

    /// HMAC-SHA1 of `parts` under the secret, each but the first preceded by a NUL.
    fn mac(&self, parts: &[&[u8]]) -> Vec<u8> {
        // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
        let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(self.0.expose_secret().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                mac.update(&[0]);
            }
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
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

/// The subject and the issue time (unix seconds) of a username Bedside minted
/// (`expiry:s_<16 hex>.issued`); `None` for anything else.
pub fn subject_of(username: &str) -> Option<(&str, i64)> {
    let (_, rest) = username.split_once(':')?;
    let (subject, issued) = rest.split_once('.')?;
    let hex = subject.strip_prefix("s_")?;
    let valid = hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    let issued = issued.parse().ok().filter(|_| valid)?;
    Some((subject, issued))
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
        assert_eq!(c.username, "1767225600:p_0123456789abcdef.1767200000");
        assert_eq!(c.credential, secret.password(&c.username));
        assert_eq!(
            secret.password("1767225600:p_0123456789abcdef"),
            "yko8lu8fGxBZkVi35rrfg+hBNpg="
        );
        assert_eq!(c.expires_at, at(1_767_225_600));
    }

    #[test]
    fn subjects_are_stable_per_visit_and_identity_and_name_nobody() {
        let secret = TurnSecret::new(SECRET).unwrap();
        let s = secret.subject("visit-1", "MRN-77");
        assert_eq!(s, secret.subject("visit-1", "MRN-77"));
        assert_ne!(s, secret.subject("visit-2", "MRN-77"));
        assert_ne!(s, secret.subject("visit-1", "MRN-78"));
        assert_ne!(s, secret.subject("visit-1MRN-77", ""));
        assert!(!s.contains("MRN"));
        let other = TurnSecret::new("another-secret-of-some-length").unwrap();
        assert_ne!(s, other.subject("visit-1", "MRN-77"));
        let c = secret.mint(&s, at(9_000), at(1_000));
        assert_eq!(subject_of(&c.username), Some((s.as_str(), 1_000)));
        for bad in [
            "",
            "9000:s_1",
            "9000:p_0123456789abcdef",
            "9000:s_0123456789abcdef.x",
        ] {
            assert_eq!(subject_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn probe_credentials_live_five_minutes_at_most() {
        let secret = TurnSecret::new(SECRET).unwrap();
        let now = at(1_000_000);
        let probe = secret.mint_probe("s_1", at(1_000_000 + 3600), now);
        assert_eq!(probe.expires_at, at(1_000_000 + PROBE_TURN_CREDENTIAL_SECS));
        assert!(probe.username.starts_with("1000300:"));
        let ending = secret.mint_probe("s_1", at(1_000_060), now);
        assert_eq!(ending.expires_at, at(1_000_060));
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
        assert!(far.username.starts_with("1086400:p_1."));
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
