//! Audit trail entries: who did what to a visit, and when. Pseudonymous participant ids
//! and the clinic's opaque identities only: never tokens, names, SDP or chat.

use crate::ParticipantId;
use crate::record::text_enum;
use bedside_auth::{KeyId, Role};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AuditKind {
    Created,
    TokenIssued,
    Joined,
    Rejoined,
    Replaced,
    Admitted,
    Denied,
    Left,
    Dropped,
    TimedOut,
    Removed,
    Ended,
    /// A patient or guest agreed to the visit's consent text (`detail`: its version and
    /// the SHA-256 of the exact text).
    Consented,
    /// The visit moved to another provider's queue (`identity`: the new provider,
    /// `detail`: the previous one).
    Transferred,
    /// A doctor minted a guest link from the call (`identity`/`role`: the guest's,
    /// `detail`: the token's `jti`).
    Invited,
    /// A provider took the visit from their dashboard (`identity`: the provider, `detail`:
    /// the doctor token's `jti`).
    Taken,
}

text_enum!(AuditKind {
    Created => "created",
    TokenIssued => "token_issued",
    Joined => "joined",
    Rejoined => "rejoined",
    Replaced => "replaced",
    Admitted => "admitted",
    Denied => "denied",
    Left => "left",
    Dropped => "dropped",
    TimedOut => "timed_out",
    Removed => "removed",
    Ended => "ended",
    Consented => "consented",
    Transferred => "transferred",
    Invited => "invited",
    Taken => "taken",
});

/// Who caused an audit entry when that is not the participant it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditActor {
    /// A doctor in the visit, by participant id (written `p_...`).
    Participant(ParticipantId),
    /// The clinic's backend, by the id of the API key it used (written `api:KEY_ID`).
    Api(KeyId),
    /// Bedside itself, e.g. ending a visit at its `expires_at` (written `bedside`).
    Bedside,
}

impl fmt::Display for AuditActor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditActor::Participant(id) => id.fmt(f),
            AuditActor::Api(key) => write!(f, "api:{key}"),
            AuditActor::Bedside => f.write_str("bedside"),
        }
    }
}

impl FromStr for AuditActor {
    type Err = crate::record::UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "bedside" {
            return Ok(AuditActor::Bedside);
        }
        if let Some(key) = s.strip_prefix("api:") {
            return KeyId::new(key)
                .map(AuditActor::Api)
                .map_err(|_| crate::record::UnknownValue(s.to_owned()));
        }
        s.parse()
            .map(AuditActor::Participant)
            .map_err(|_| crate::record::UnknownValue(s.to_owned()))
    }
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    pub kind: AuditKind,
    pub participant_id: Option<ParticipantId>,
    pub identity: Option<String>,
    pub role: Option<Role>,
    /// Who caused it, when that is not the participant itself.
    pub actor: Option<AuditActor>,
    pub detail: Option<String>,
}

impl AuditEvent {
    pub fn new(kind: AuditKind, at: DateTime<Utc>) -> Self {
        Self {
            at,
            kind,
            participant_id: None,
            identity: None,
            role: None,
            actor: None,
            detail: None,
        }
    }

    pub fn actor(mut self, actor: AuditActor) -> Self {
        self.actor = Some(actor);
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_are_written_as_the_trail_documents_them() {
        let cases = [
            (
                AuditActor::Participant(ParticipantId::from_bits(255)),
                "p_00000000000000ff",
            ),
            (
                AuditActor::Api(KeyId::new("north-2026").unwrap()),
                "api:north-2026",
            ),
            (AuditActor::Bedside, "bedside"),
        ];
        for (actor, text) in cases {
            assert_eq!(actor.to_string(), text);
            assert_eq!(text.parse::<AuditActor>(), Ok(actor));
        }
        assert!("someone".parse::<AuditActor>().is_err());
        assert!("api:not a key".parse::<AuditActor>().is_err());
    }
}
