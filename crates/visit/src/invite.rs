//! Invites from the call: a doctor in a visit asks for a guest link (an interpreter, a
//! relative) with `invite {role: "guest", name}`. What may be asked is decided here; the
//! link itself is minted by whoever holds the keys (the node running the visit), with a
//! fresh identity and token id, and the guest still waits for admission like anyone.

use crate::{ConnId, ParticipantId, Refusal};
use chrono::{DateTime, TimeDelta, Utc};

/// How long a guest link from the call is valid (`INVITE_TTL` in docs/protocol.md): long
/// enough for an interpreter called in to join and come back after a drop, short enough
/// that a forwarded link is dead by the end of the clinic's day. Never past the visit's end.
pub const INVITE_TTL: TimeDelta = TimeDelta::hours(2);

/// A guest link the visit agreed to hand out; the caller mints it and records `invited`.
/// Its `Debug` leaves the name out (names never reach the logs).
#[derive(Clone, PartialEq, Eq)]
pub struct Invite {
    /// The asking doctor's connection: the link goes there only.
    pub conn: ConnId,
    /// The asking doctor, for the audit trail's `actor`.
    pub by: ParticipantId,
    /// The guest's display name, checked and trimmed.
    pub name: String,
    /// When the link stops working: [`INVITE_TTL`] from now, or the visit's end if sooner.
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for Invite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invite")
            .field("conn", &self.conn)
            .field("by", &self.by)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The guest's name from an `invite` frame's `role` and `name`, or why it cannot be minted.
/// Only guests are invited from a call: a doctor or patient link is the clinic's to give.
pub fn guest_name(role: &str, name: &str) -> Result<String, Refusal> {
    if role != "guest" {
        return Err(Refusal::InvalidRole);
    }
    // The API's rule for a link's name, and not empty: the doctor names who is coming.
    let name = name.trim();
    if name.is_empty() || !bedside_auth::is_display_name(name) {
        return Err(Refusal::InvalidName);
    }
    Ok(name.to_owned())
}

/// When a link minted at `now` for a visit ending at `visit_expires_at` expires.
/// Whole seconds, as the token's `exp` has it, so `invite_link.expires_at` says exactly when
/// the link stops working.
pub fn expiry(now: DateTime<Utc>, visit_expires_at: DateTime<Utc>) -> DateTime<Utc> {
    let at = (now + INVITE_TTL).min(visit_expires_at);
    DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_guests_with_a_sensible_name_are_invited() {
        assert_eq!(
            guest_name("guest", "  Ana (interpreter) "),
            Ok("Ana (interpreter)".into())
        );
        assert_eq!(guest_name("guest", &"é".repeat(100)), Ok("é".repeat(100)));
        for role in ["doctor", "patient", "provider", "Guest", ""] {
            assert_eq!(guest_name(role, "Ana"), Err(Refusal::InvalidRole), "{role}");
        }
        for name in ["", "   ", "Ana\nBob", "a\u{7}", &"x".repeat(101)] {
            assert_eq!(
                guest_name("guest", name),
                Err(Refusal::InvalidName),
                "{name:?}"
            );
        }
    }

    #[test]
    fn a_link_never_outlives_its_visit() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        assert_eq!(expiry(now, now + TimeDelta::hours(12)), now + INVITE_TTL);
        assert_eq!(
            expiry(now, now + TimeDelta::minutes(30)),
            now + TimeDelta::minutes(30)
        );
        // The token's `exp` is whole seconds; the link's `expires_at` says the same.
        let late = now + TimeDelta::milliseconds(750);
        assert_eq!(expiry(late, late + TimeDelta::hours(12)), now + INVITE_TTL);
        assert_eq!(
            expiry(late, now + TimeDelta::milliseconds(1500)),
            now + TimeDelta::seconds(1)
        );
    }

    #[test]
    fn an_invite_prints_without_its_name() {
        let invite = Invite {
            conn: ConnId::from_raw(7),
            by: ParticipantId::from_bits(9),
            name: "Wilhelmina".into(),
            expires_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        };
        assert!(!format!("{invite:?}").contains("Wilhelmina"));
    }
}
