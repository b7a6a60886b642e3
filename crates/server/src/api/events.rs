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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Events after this one: its `seq`, or its `id`. Absent: from the first.
    pub after: Option<String>,
    /// Page size, 1 to 1000; default 100.
    pub limit: Option<u32>,
}

/// One visit event, as webhooks deliver it, plus its place among the tenant's events.
#[derive(Debug, Serialize, ToSchema)]
pub struct VisitEventBody {
    /// Order across the tenant's events; pass the last one as `after`.
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

/// List the tenant's visit events in order.
#[utoipa::path(
    get, path = "/events", tag = "visits",
    params(EventParams),
    responses((status = 200, body = VisitEventList), (status = 401, body = ErrorBody), (status = 404, description = "`after` names no event of this tenant", body = ErrorBody), (status = 422, body = ErrorBody)),
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
        Some(after) => match after.parse::<i64>() {
            Ok(seq) => seq,
            Err(_) => storage
                .event_seq(&tenant.id, after)
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
