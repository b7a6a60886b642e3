//! Request and response bodies of the REST API, with their validation.

use crate::error::ApiError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bedside_auth::Role;
use bedside_rooms::storage::AuditRecord;
use bedside_visit::{
    AuditKind, ConsentText, EndReason, MAX_PARTICIPANTS, ParticipantId, ParticipantState,
    ParticipantView, ProviderId, QueueEntry, VisitId, VisitRecord, VisitStatus,
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

/// An integer as JSON Schema counts them: `60` or `60.0` (a number with no fractional part),
/// so what the OpenAPI document calls an integer is taken as one.
fn whole<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(f))
            .map(|f| f as u64)
    });
    whole
        .and_then(|n| T::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("{n} is not a whole number in range")))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVisit {
    /// The clinic's own reference (appointment id). Opaque to Bedside, at most 200 characters.
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub external_ref: Option<String>,
    /// Joins before this time are refused (`visit_not_started`).
    pub not_before: Option<DateTime<Utc>>,
    /// When the visit ends by itself; default 12 hours after `not_before` (or now).
    pub expires_at: Option<DateTime<Utc>>,
    /// 2 to 8; default 4.
    #[schema(minimum = 2, maximum = 8)]
    #[serde(default, deserialize_with = "whole")]
    pub max_participants: Option<u8>,
    /// A JSON object of at most 4 KiB (as JSON), returned as given; never logged.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// The provider whose queue the visit is in: the clinic's opaque identity of a
    /// clinician, 1-128 characters, no control characters.
    #[schema(
        value_type = Option<String>,
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub provider: Option<String>,
    /// What patients and guests must agree to before they knock; default: the tenant's
    /// configured consent (`clinic.consents`), if any.
    pub consent: Option<ConsentInput>,
}

/// A consent text and its version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentInput {
    /// 1-64 of `A-Z a-z 0-9 . _ -`.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub version: String,
    /// 1-8000 characters, not only spaces; no control characters but line breaks and tabs.
    #[schema(
        min_length = 1,
        max_length = 8000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub text: String,
}

/// A consent as a visit shows it: with the SHA-256 of the text, as the audit trail
/// records it for each patient's agreement.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentBody {
    pub version: String,
    pub text: String,
    /// Hex SHA-256 of the text's UTF-8 bytes.
    pub sha256: String,
}

impl From<ConsentText> for ConsentBody {
    fn from(c: ConsentText) -> Self {
        Self {
            sha256: c.sha256(),
            version: c.version().to_owned(),
            text: c.text().to_owned(),
        }
    }
}

/// A validated [`CreateVisit`].
pub struct NewVisit {
    pub external_ref: Option<String>,
    pub not_before: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub max_participants: u8,
    pub metadata: Option<serde_json::Value>,
    pub provider: Option<ProviderId>,
    pub consent: Option<ConsentText>,
}

/// A provider named in a request.
pub fn provider_id(field: &'static str, p: String) -> Result<ProviderId, ApiError> {
    ProviderId::new(p)
        .map_err(|_| ApiError::invalid(field, "1-128 characters, no control characters"))
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
        let provider = self
            .provider
            .map(|p| provider_id("provider", p))
            .transpose()?;
        let consent = self
            .consent
            .map(|c| ConsentText::new(c.version, c.text))
            .transpose()
            .map_err(|e| ApiError::invalid("consent", e.to_string()))?;
        Ok(NewVisit {
            external_ref: self.external_ref,
            not_before,
            expires_at,
            max_participants,
            metadata: self.metadata,
            provider,
            consent,
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
    /// The provider whose queue the visit is in.
    #[schema(value_type = Option<String>)]
    pub provider: Option<ProviderId>,
    /// What patients and guests agree to before they knock.
    pub consent: Option<ConsentBody>,
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
            provider: r.provider,
            consent: r.consent.map(ConsentBody::from),
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

/// Unknown parameters are refused (`422`), as unknown body fields are: a misspelt filter
/// must not silently list everything.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only visits with this status.
    pub status: Option<VisitStatus>,
    /// Page size, 1 to 200; default 50.
    #[param(minimum = 1, maximum = 200, example = 50)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = r"^[0-9]{1,16}\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        example = "1764892800000000.6f1c0d4e-8a2b-4c1d-9e3f-5a6b7c8d9e0f"
    )]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VisitList {
    pub visits: Vec<VisitBody>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A page position: the last visit of the previous page, `MICROS.UUID` (its creation time in
/// microseconds since the epoch, and its id), as the OpenAPI document describes it.
pub fn encode_cursor(v: &VisitRecord) -> String {
    format!("{}.{}", v.created_at.timestamp_micros(), v.id)
}

/// Reads a cursor: that form, or the base64url of it that earlier
/// versions handed out (so a listing in progress survives an upgrade). Anything else is a
/// cursor no page ever gave: `400 bad_request`.
pub fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, VisitId), ApiError> {
    let bad = || ApiError::BadRequest("invalid cursor: not a next_cursor this API gave".into());
    let legacy = || {
        URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
    };
    let plain = cursor
        .bytes()
        .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b'-');
    let text = if plain {
        cursor.to_owned()
    } else {
        legacy().ok_or_else(bad)?
    };
    let (micros, id) = text.split_once('.').ok_or_else(bad)?;
    let canonical = id.len() == 36 && !id.bytes().any(|b| b.is_ascii_uppercase());
    if micros.is_empty()
        || micros.len() > 16
        || !micros.bytes().all(|b| b.is_ascii_digit())
        || (plain && !canonical)
    {
        return Err(bad());
    }
    let at = micros
        .parse()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad)?;
    Ok((at, id.parse().map_err(|_| bad())?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// The provider whose queue the visit moves to: 1-128 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub provider: String,
}

/// Only a JSON object: every field is optional, and serde would otherwise take an array.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(
    try_from = "serde_json::Map<String, serde_json::Value>",
    deny_unknown_fields
)]
pub struct MintProviderToken {
    /// The provider's name as their waiting patients see it, at most 100 characters, no
    /// control characters.
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub name: Option<String>,
    /// Lifetime in seconds, 60 to 31 days; default 24 hours.
    #[schema(minimum = 60, maximum = 2_678_400)]
    pub ttl_seconds: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintProviderTokenFields {
    name: Option<String>,
    #[serde(default, deserialize_with = "whole")]
    ttl_seconds: Option<u32>,
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for MintProviderToken {
    type Error = serde_json::Error;
    fn try_from(fields: serde_json::Map<String, serde_json::Value>) -> Result<Self, Self::Error> {
        let f: MintProviderTokenFields = serde_json::from_value(fields.into())?;
        Ok(Self {
            name: f.name,
            ttl_seconds: f.ttl_seconds,
        })
    }
}

/// A provider's queue: everyone waiting in their live visits, oldest knock first.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueBody {
    pub entries: Vec<QueueEntry>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MintToken {
    pub role: Role,
    /// The participant's opaque id in the clinic's systems (never a name): 1-128
    /// characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub identity: String,
    /// Display name shown to the others, at most 100 characters, no control characters.
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    pub name: Option<String>,
    /// Lifetime in seconds, 60 to 31 days; default 24 hours. Never outlives the visit.
    #[schema(minimum = 60, maximum = 2_678_400)]
    #[serde(default, deserialize_with = "whole")]
    pub ttl_seconds: Option<u32>,
    /// A link that lets one person in once: the first join with it (knocking counts) uses
    /// it up, and any later join with it is refused (`token_used`, close 4001); the person
    /// it let in comes back with their `resume_token`. Default false.
    #[serde(default)]
    pub single_use: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_may_be_written_as_json_schema_allows() {
        let parse = |body: &str| serde_json::from_str::<MintToken>(body).map(|m| m.ttl_seconds);
        let with = |ttl: &str| {
            format!(r#"{{"role": "patient", "identity": "p-1", "ttl_seconds": {ttl}}}"#)
        };
        assert_eq!(parse(&with("472")).unwrap(), Some(472));
        assert_eq!(parse(&with("472.0")).unwrap(), Some(472));
        assert_eq!(parse(&with("null")).unwrap(), None);
        assert_eq!(
            parse(r#"{"role": "patient", "identity": "p-1"}"#).unwrap(),
            None
        );
        for bad in ["472.5", "-1", "4294967296", "\"60\""] {
            assert!(parse(&with(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn cursors_read_back_and_malformed_ones_are_refused() {
        let id: VisitId = "6f1c0d4e-8a2b-4c1d-9e3f-5a6b7c8d9e0f".parse().unwrap();
        let at = DateTime::from_timestamp_micros(1_763_805_480_123_456).unwrap();
        let plain = format!("{}.{id}", at.timestamp_micros());
        assert_eq!(decode_cursor(&plain).unwrap(), (at, id));
        // What earlier versions handed out.
        let legacy = URL_SAFE_NO_PAD.encode(&plain);
        assert_eq!(decode_cursor(&legacy).unwrap(), (at, id));
        for bad in [
            "",
            "é",
            "12345",
            "1.6F1C0D4E-8A2B-4C1D-9E3F-5A6B7C8D9E0F",
            "1.6f1c0d4e8a2b4c1d9e3f5a6b7c8d9e0f",
            "12345678901234567.6f1c0d4e-8a2b-4c1d-9e3f-5a6b7c8d9e0f",
        ] {
            assert!(decode_cursor(bad).is_err(), "{bad:?}");
        }
    }
}

/// Each participant's call quality over a visit (docs/quality.md).
#[derive(Debug, Serialize, ToSchema)]
pub struct QualityBody {
    pub visit_id: VisitId,
    /// Everyone who reported statistics or a pre-call check, whether still there or not.
    pub participants: Vec<bedside_visit::quality::ParticipantQuality>,
}
