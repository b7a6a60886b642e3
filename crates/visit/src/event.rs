//! Visit events for the clinic's systems: what happened in a visit, in the order it
//! happened, as webhooks deliver them and `GET /v1/events` lists them.
//!
//! The visit state machine emits them next to the changes that cause them, so the storage
//! writer records both in one transaction: an event exists exactly when its change does.
//! Like the audit trail they name people by pseudonymous participant id and the clinic's
//! own opaque identity, never by display name.

use crate::ParticipantId;
use crate::record::text_enum;
use bedside_auth::Role;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventKind {
    #[serde(rename = "visit.created")]
    VisitCreated,
    /// A doctor and a patient are in the visit together for the first time.
    #[serde(rename = "visit.started")]
    VisitStarted,
    #[serde(rename = "visit.ended")]
    VisitEnded,
    /// Someone entered the waiting room.
    #[serde(rename = "participant.waiting")]
    ParticipantWaiting,
    /// A doctor let someone in.
    #[serde(rename = "participant.admitted")]
    ParticipantAdmitted,
    #[serde(rename = "participant.denied")]
    ParticipantDenied,
    /// Someone is in the visit: a doctor on joining, anyone else once admitted.
    #[serde(rename = "participant.joined")]
    ParticipantJoined,
    /// Someone is no longer in the visit or its waiting room; see [`LeftReason`].
    #[serde(rename = "participant.left")]
    ParticipantLeft,
    /// Someone agreed to the visit's consent text (`version`, `sha256` of the text).
    #[serde(rename = "participant.consented")]
    ParticipantConsented,
    /// The visit moved to another provider's queue (`provider`, `previous_provider`).
    #[serde(rename = "visit.transferred")]
    VisitTransferred,
}

text_enum!(EventKind {
    VisitCreated => "visit.created",
    VisitStarted => "visit.started",
    VisitEnded => "visit.ended",
    ParticipantWaiting => "participant.waiting",
    ParticipantAdmitted => "participant.admitted",
    ParticipantDenied => "participant.denied",
    ParticipantJoined => "participant.joined",
    ParticipantLeft => "participant.left",
    ParticipantConsented => "participant.consented",
    VisitTransferred => "visit.transferred",
});

/// Why a `participant.left` happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeftReason {
    /// They left (the `leave` frame).
    Left,
    /// Their connection dropped and they did not come back within the grace period.
    Dropped,
    /// A doctor or the clinic's backend removed them.
    Removed,
    /// The same identity came back with another role, as someone new.
    Replaced,
    /// The visit ended while they were in it.
    VisitEnded,
}

impl LeftReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LeftReason::Left => "left",
            LeftReason::Dropped => "dropped",
            LeftReason::Removed => "removed",
            LeftReason::Replaced => "replaced",
            LeftReason::VisitEnded => "visit_ended",
        }
    }
}

/// Who an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventParticipant {
    pub participant_id: ParticipantId,
    pub identity: String,
    pub role: Role,
}

/// One visit event, before storage gives it an id and its place in the visit's sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitEvent {
    pub kind: EventKind,
    pub at: DateTime<Utc>,
    pub participant: Option<EventParticipant>,
    /// `participant.left`: a [`LeftReason`]; `visit.ended`: the end reason.
    pub reason: Option<&'static str>,
    /// `visit.ended`: seconds from `visit.started` to the end (0 if it never started).
    pub duration_seconds: Option<i64>,
    /// `visit.ended`: each participant's call quality summary
    /// ([`crate::quality::ParticipantQuality`]), as JSON.
    pub quality: Option<serde_json::Value>,
    /// Further text fields of `data`, in order (a consent's version and hash, a transfer's
    /// providers).
    pub fields: Vec<(&'static str, String)>,
}

impl VisitEvent {
    pub fn new(kind: EventKind, at: DateTime<Utc>) -> Self {
        Self {
            kind,
            at,
            participant: None,
            reason: None,
            duration_seconds: None,
            quality: None,
            fields: Vec::new(),
        }
    }

    /// The event's `data` object as receivers get it.
    pub fn data(&self) -> serde_json::Value {
        let mut data = serde_json::Map::new();
        if let Some(p) = &self.participant {
            data.insert("participant_id".into(), p.participant_id.to_string().into());
            data.insert("identity".into(), p.identity.clone().into());
            data.insert("role".into(), p.role.as_str().into());
        }
        if let Some(reason) = self.reason {
            data.insert("reason".into(), reason.into());
        }
        if let Some(d) = self.duration_seconds {
            data.insert("duration_seconds".into(), d.into());
        }
        if let Some(q) = &self.quality {
            data.insert("quality".into(), q.clone());
        }
        for (name, value) in &self.fields {
            data.insert((*name).into(), value.clone().into());
        }
        serde_json::Value::Object(data)
    }
}
