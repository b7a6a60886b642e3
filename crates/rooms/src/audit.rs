//! Audit trail entries: who did what to a visit, and when. Pseudonymous participant ids
//! and the clinic's opaque identities only: never tokens, names, SDP or chat.

use crate::ParticipantId;
use crate::record::text_enum;
use bedside_auth::Role;
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
});

/// One audit entry. `actor` is who caused it when that is not the participant itself: a
/// doctor's participant id, or `api` for the clinic's backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    pub kind: AuditKind,
    pub participant_id: Option<ParticipantId>,
    pub identity: Option<String>,
    pub role: Option<Role>,
    pub actor: Option<String>,
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

    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}
