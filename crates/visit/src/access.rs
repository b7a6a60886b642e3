//! Access the clinic can take back (docs/security.md, "Revocation"). A removal (by the API
//! or a doctor) or a doctor's denial *blocks* that identity in that visit: every credential
//! for it issued no later than the block is refused from then on, on every node and after
//! restarts, because the block is stored with the visit and loaded with it. Credentials
//! issued later (a new link the clinic mints) work: the clinic decides to let them back.
//!
//! Pure rules over times: which credentials a block refuses, and what `iat` a token minted
//! after a block must carry so that it is not refused.

use crate::ParticipantId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a joining connection proved, as the connection verified it (and, in a cluster,
/// as it travels to the visit's owner).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Credential {
    /// A join token of the clinic: its id (`jti`) and when it was issued (`iat`).
    Token {
        jti: String,
        issued_at: DateTime<Utc>,
        /// A single-use link: it admits one person once (see [`Credential::single_use`]).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        single_use: bool,
    },
    /// A resume token Bedside handed out in `joined`: the place it reopens, and when it was
    /// issued.
    Resume {
        place: ParticipantId,
        issued_at: DateTime<Utc>,
    },
}

impl Credential {
    /// A credential issued at `iat` (whole seconds since the epoch, as JWTs carry it).
    pub fn token(jti: impl Into<String>, iat: i64) -> Self {
        Credential::Token {
            jti: jti.into(),
            issued_at: from_seconds(iat),
            single_use: false,
        }
    }

    /// Marks a join token as a single-use link, as its `single_use` claim says.
    pub fn single_use(self, once: bool) -> Self {
        match self {
            Credential::Token { jti, issued_at, .. } => Credential::Token {
                jti,
                issued_at,
                single_use: once,
            },
            resume => resume,
        }
    }

    /// The `jti` of a single-use link, which a visit remembers once it let someone in with
    /// it: the link then lets nobody else in (the one it let in comes back with their
    /// resume token).
    pub fn single_use_jti(&self) -> Option<&str> {
        match self {
            Credential::Token {
                jti,
                single_use: true,
                ..
            } => Some(jti),
            _ => None,
        }
    }

    /// A resume token for `place` issued at `iat` (whole seconds).
    pub fn resume(place: ParticipantId, iat: i64) -> Self {
        Credential::Resume {
            place,
            issued_at: from_seconds(iat),
        }
    }

    pub fn issued_at(&self) -> DateTime<Utc> {
        match self {
            Credential::Token { issued_at, .. } | Credential::Resume { issued_at, .. } => {
                *issued_at
            }
        }
    }

    /// How the audit trail names it (the `detail` of a join): the token's `jti`, which the
    /// `token_issued` row that minted it carries too, or `resume`.
    pub fn audit_name(&self) -> &str {
        match self {
            Credential::Token { jti, .. } => jti,
            Credential::Resume { .. } => "resume",
        }
    }
}

/// Seconds since the epoch as a time; out of range reads as the epoch (refused by any block).
fn from_seconds(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// An identity blocked in a visit, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub identity: String,
    pub at: DateTime<Utc>,
}

/// Whether a block at `blocked_at` refuses a credential issued at `issued_at`: it refuses
/// every credential issued no later than itself.
pub fn revokes(blocked_at: DateTime<Utc>, issued_at: DateTime<Utc>) -> bool {
    issued_at <= blocked_at
}

/// The `iat` (whole seconds) of a token minted at `now` for an identity that may be blocked
/// (`blocked`): now's second, or the first whole second after the block if that is later.
/// JWT times are whole seconds, so a token minted in the same second as the block but after
/// it would otherwise read as issued before it; this puts it after, by at most a second.
pub fn issued_at_after(blocked: Option<DateTime<Utc>>, now: DateTime<Utc>) -> i64 {
    let now = now.timestamp();
    match blocked {
        // `timestamp` rounds down, so one more second is strictly later than the block.
        Some(block) => now.max(block.timestamp() + 1),
        None => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone};

    fn t(secs: i64, micros: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).unwrap() + TimeDelta::microseconds(micros)
    }

    #[test]
    fn a_block_refuses_credentials_issued_up_to_and_at_its_moment() {
        let block = t(1_000, 500_000);
        assert!(revokes(block, t(999, 0)));
        assert!(revokes(block, t(1_000, 0)), "same second, before the block");
        assert!(revokes(block, block), "at the block");
        assert!(!revokes(block, t(1_001, 0)));
        assert!(
            revokes(t(1_000, 0), t(1_000, 0)),
            "a block on a whole second"
        );
    }

    #[test]
    fn tokens_minted_after_a_block_are_issued_after_it() {
        // The block and the mint in the same second: the token's iat moves on a second.
        let block = t(1_000, 250_000);
        let iat = issued_at_after(Some(block), t(1_000, 900_000));
        assert_eq!(iat, 1_001);
        assert!(!revokes(block, from_seconds(iat)));
        // A block on a whole second and a mint at that very moment.
        let block = t(2_000, 0);
        assert_eq!(issued_at_after(Some(block), block), 2_001);
        // Long after the block: now, as without one.
        assert_eq!(issued_at_after(Some(block), t(5_000, 10)), 5_000);
        assert_eq!(issued_at_after(None, t(5_000, 999_999)), 5_000);
        // Whatever the times, the minted iat is never refused and never before now's second.
        for block_us in [0, 1, 499_999, 999_999, 1_000_000, 1_000_001] {
            for now_us in [-2_000_000, 0, 1, 999_999, 1_000_000, 3_500_000] {
                let (block, now) = (t(10, block_us), t(10, now_us));
                let iat = issued_at_after(Some(block), now);
                assert!(!revokes(block, from_seconds(iat)), "{block} {now}");
                assert!(iat >= now.timestamp());
                assert!(iat <= now.timestamp().max(block.timestamp()) + 1);
            }
        }
    }

    #[test]
    fn the_audit_trail_names_the_token_or_resume() {
        assert_eq!(Credential::token("jti-7", 5).audit_name(), "jti-7");
        let resume = Credential::resume(ParticipantId::from_bits(1), 5);
        assert_eq!(resume.audit_name(), "resume");
        assert_eq!(resume.issued_at(), t(5, 0));
    }
}
