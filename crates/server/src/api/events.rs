//! `GET /v1/events`: the tenant's visit events, for reconciliation, so nothing is ever only
//! in a webhook. The same events, ids and per-visit sequence numbers as the deliveries.

use super::extract::ApiQuery;
use super::tenant::Tenant;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use bedside_rooms::storage::StoredEvent;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Unknown parameters are refused (`422`), as for `GET /v1/visits`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Events after this one: its `seq`, or its `id`. Absent or empty: from the first.
    #[param(
        pattern = r"^(|0|[1-9][0-9]{0,17}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$",
        example = "42"
    )]
    pub after: Option<String>,
    /// Page size, 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000, example = 100)]
    pub limit: Option<u32>,
}

/// One visit event, as webhooks deliver it, plus its place among the tenant's events.
#[derive(Debug, Serialize, ToSchema)]
pub struct VisitEventBody {
    /// The tenant's own numbering of its events (1, 2, 3... with no gaps left by other
    /// tenants); pass the last one as `after`.
    pub seq: i64,
    pub id: String,
    /// `visit.created`, `visit.started`, `visit.ended`, `participant.waiting`,
    /// `participant.admitted`, `participant.denied`, `participant.joined`, `participant.left`.
    #[serde(rename = "type")]
    pub kind: String,
    pub created_at: DateTime<Utc>,
    pub visit_id: String,
    /// 1, 2, 3... within the visit, with no gaps.
    pub sequence: i64,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VisitEventList {
    pub events: Vec<VisitEventBody>,
    /// Pass as `after` for the next page; absent when there is nothing more yet.
    pub next_after: Option<i64>,
}

impl From<StoredEvent> for VisitEventBody {
    fn from(e: StoredEvent) -> Self {
        Self {
            seq: e.seq,
            id: e.id,
            kind: e.kind,
            created_at: e.at,
            visit_id: e.visit_id,
            sequence: e.visit_seq,
            data: e.data,
        }
    }
}

/// Where a page starts: after a `seq`, or after the event with an `id`.
enum Position<'a> {
    Seq(i64),
    Id(&'a str),
}

impl<'a> Position<'a> {
    /// A `seq` is digits without a leading zero (at most 18); an id is a lowercase UUID, as
    /// events carry them. Anything else names no event: `404 event_not_found`, as an
    /// unknown id does.
    fn of(after: &'a str) -> Result<Self, ApiError> {
        let digits = after.bytes().all(|b| b.is_ascii_digit());
        if digits
            && after.len() <= 18
            && (after == "0" || !after.starts_with('0'))
            && let Ok(seq) = after.parse()
        {
            return Ok(Position::Seq(seq));
        }
        let uuid = after.len() == 36
            && after.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
            });
        if uuid {
            return Ok(Position::Id(after));
        }
        Err(ApiError::EventNotFound)
    }
}

/// List the tenant's visit events in order.
#[utoipa::path(
    get, path = "/events", tag = "visits",
    params(EventParams),
    responses((status = 200, description = "The page: events oldest first, and where the next page starts", body = VisitEventList), (status = 404, description = "`after` is neither a `seq` nor the id of an event of this tenant", body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list_events(
    State(state): State<AppState>,
    tenant: Tenant,
    ApiQuery(params): ApiQuery<EventParams>,
) -> Result<Json<VisitEventList>, ApiError> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be 1 to 1000"));
    }
    let storage = state.registry.storage();
    // Include what live visits wrote a moment ago.
    super::caught_up(&state).await?;
    let after = match params.after.as_deref() {
        None | Some("") => 0,
        Some(after) => match Position::of(after)? {
            Position::Seq(seq) => seq,
            Position::Id(id) => storage
                .event_seq(&tenant.id, id)
                .await?
                .ok_or(ApiError::EventNotFound)?,
        },
    };
    let events = storage.events(&tenant.id, after, limit).await?;
    let next_after = events.last().map(|e| e.seq);
    Ok(Json(VisitEventList {
        events: events.into_iter().map(VisitEventBody::from).collect(),
        next_after,
    }))
}
