//! Request and response bodies of the REST API, with their validation.

use crate::error::ApiError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bedside_auth::Role;
use bedside_rooms::storage::AuditRecord;
use bedside_visit::{
    AuditKind, EndReason, MAX_PARTICIPANTS, ParticipantId, ParticipantState, ParticipantView,
    VisitId, VisitRecord, VisitStatus,
};
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

const MAX_EXTERNAL_REF: usize = 200;
const MAX_METADATA_BYTES: usize = 4096;
const DEFAULT_PARTICIPANTS: u8 = 4;
/// How long a visit stays joinable when the clinic does not say.
const DEFAULT_VISIT_HOURS: i64 = 12;
/// How far ahead a visit may be scheduled to end.
const MAX_VISIT_DAYS: i64 = 90;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVisit {
    /// The clinic's own reference (appointment id). Opaque to Bedside, at most 200 characters.
    pub external_ref: Option<String>,
    /// Joins before this time are refused (`visit_not_started`).
    pub not_before: Option<DateTime<Utc>>,
    /// When the visit ends by itself; default 12 hours after `not_before` (or now).
    pub expires_at: Option<DateTime<Utc>>,
    /// 2 to 8; default 4.
    #[schema(minimum = 2, maximum = 8)]
    pub max_participants: Option<u8>,
    /// A JSON object of at most 4 KiB, returned as given.
    #[schema(value_type = Object)]
    pub metadata: Option<serde_json::Value>,
}

/// A validated [`CreateVisit`].
pub struct NewVisit {
    pub external_ref: Option<String>,
    pub not_before: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub max_participants: u8,
    pub metadata: Option<serde_json::Value>,
}

impl CreateVisit {
    pub fn validate(self, now: DateTime<Utc>) -> Result<NewVisit, ApiError> {
        if let Some(r) = &self.external_ref
            && (r.chars().count() > MAX_EXTERNAL_REF || r.chars().any(char::is_control))
        {
            return Err(ApiError::invalid(
                "external_ref",
                "at most 200 characters, no control characters",
            ));
        }
        let max_participants = self.max_participants.unwrap_or(DEFAULT_PARTICIPANTS);
        if !(2..=MAX_PARTICIPANTS).contains(&max_participants) {
            return Err(ApiError::invalid("max_participants", "must be 2 to 8"));
        }
        // Stored at microsecond precision: answer with what will be read back.
        let not_before = self.not_before.map(|t| t.trunc_subsecs(6));
        let start = not_before.map_or(now, |nb| nb.max(now));
        let expires_at = self
            .expires_at
            .unwrap_or(start + TimeDelta::hours(DEFAULT_VISIT_HOURS))
            .trunc_subsecs(6);
        if expires_at <= now {
            return Err(ApiError::invalid("expires_at", "must be in the future"));
        }
        if not_before.is_some_and(|nb| expires_at <= nb) {
            return Err(ApiError::invalid("expires_at", "must be after not_before"));
        }
        if expires_at > now + TimeDelta::days(MAX_VISIT_DAYS) {
            return Err(ApiError::invalid("expires_at", "must be within 90 days"));
        }
        if let Some(m) = &self.metadata {
            if !m.is_object() {
                return Err(ApiError::invalid("metadata", "must be a JSON object"));
            }
            if m.to_string().len() > MAX_METADATA_BYTES {
                return Err(ApiError::invalid("metadata", "must be at most 4 KiB"));
            }
        }
        Ok(NewVisit {
            external_ref: self.external_ref,
            not_before,
            expires_at,
            max_participants,
            metadata: self.metadata,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VisitBody {
    pub id: VisitId,
    pub status: VisitStatus,
    pub ended_reason: Option<EndReason>,
    pub external_ref: Option<String>,
    pub created_at: DateTime<Utc>,
    pub not_before: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub max_participants: u8,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// Admitted participants (single-visit reads only); `connected` is false while one is
    /// reconnecting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected: Option<Vec<ParticipantView>>,
    /// Participants in the waiting room (single-visit reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Vec<ParticipantView>>,
}

impl VisitBody {
    pub fn new(r: VisitRecord, now: DateTime<Utc>) -> Self {
        let (status, ended_reason) = r.effective_status(now);
        Self {
            id: r.id,
            status,
            ended_reason,
            external_ref: r.external_ref,
            created_at: r.created_at,
            not_before: r.not_before,
            expires_at: r.expires_at,
            started_at: r.started_at,
            ended_at: r
                .ended_at
                .or_else(|| (status == VisitStatus::Ended).then_some(r.expires_at)),
            max_participants: r.max_participants,
            metadata: r.metadata,
            connected: None,
            waiting: None,
        }
    }

    pub fn with_participants(mut self, participants: Vec<ParticipantView>) -> Self {
        let (admitted, waiting) = participants
            .into_iter()
            .partition(|p| p.state == ParticipantState::Admitted);
        self.connected = Some(admitted);
        self.waiting = Some(waiting);
        self
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only visits with this status.
    pub status: Option<VisitStatus>,
    /// Page size, 1 to 200; default 50.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VisitList {
    pub visits: Vec<VisitBody>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A page position: the last visit of the previous page.
pub fn encode_cursor(v: &VisitRecord) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}.{}", v.created_at.timestamp_micros(), v.id))
}

pub fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, VisitId), ApiError> {
    let bad = || ApiError::BadRequest("invalid cursor".into());
    let text = URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let (micros, id) = text.split_once('.').ok_or_else(bad)?;
    let at = micros
        .parse()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad)?;
    Ok((at, id.parse().map_err(|_| bad())?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MintToken {
    pub role: Role,
    /// The participant's opaque id in the clinic's systems (never a name): 1-128 bytes.
    pub identity: String,
    /// Display name shown to the others, at most 100 characters.
    pub name: Option<String>,
    /// Lifetime in seconds, 60 to 31 days; default 24 hours. Never outlives the visit.
    pub ttl_seconds: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenBody {
    /// The join token (a JWT).
    pub token: String,
    pub expires_at: DateTime<Utc>,
    /// Link to the web client, with the token in the URL fragment.
    pub join_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventBody {
    /// Position in the trail.
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub kind: AuditKind,
    pub participant_id: Option<ParticipantId>,
    pub identity: Option<String>,
    pub role: Option<Role>,
    /// Who caused it, when not the participant: a doctor's participant id or `api`.
    pub actor: Option<String>,
    /// A reason code, e.g. `expired` or `waiting`.
    pub detail: Option<String>,
}

impl From<AuditRecord> for EventBody {
    fn from(r: AuditRecord) -> Self {
        let e = r.event;
        Self {
            seq: r.seq,
            at: e.at,
            kind: e.kind,
            participant_id: e.participant_id,
            identity: e.identity,
            role: e.role,
            actor: e.actor.map(|a| a.to_string()),
            detail: e.detail,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventBody>,
}

/// Whether a visit's audit trail is intact: each row carries the hash of the one before.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrailCheck {
    pub intact: bool,
    /// Rows covered by the hash chain.
    pub chained_rows: u64,
    /// Rows written before the chain existed (older databases).
    pub unchained_rows: u64,
    /// The first broken link, if any.
    pub broken: Option<TrailBreak>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrailBreak {
    /// The row at which the chain breaks.
    pub seq: i64,
    /// `edited`, `deleted`, `reordered` or `inserted`.
    pub kind: &'static str,
    pub message: String,
}

impl From<bedside_visit::ChainReport> for TrailCheck {
    fn from(r: bedside_visit::ChainReport) -> Self {
        Self {
            intact: r.is_intact(),
            chained_rows: r.chained_rows,
            unchained_rows: r.unchained_rows,
            broken: r.broken.first().map(|b| TrailBreak {
                seq: b.at.seq,
                kind: b.at.label(),
                message: b.at.to_string(),
            }),
        }
    }
}
