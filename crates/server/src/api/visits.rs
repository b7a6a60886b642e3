//! `/v1/visits`: thin handlers over the registry and storage.

use super::dto::{
    CreateVisit, EventBody, EventList, ListParams, MintToken, QualityBody, TokenBody, TrailCheck,
    Transfer, VisitBody, VisitList, decode_cursor, encode_cursor, provider_id,
};
use super::extract::{ApiJson, ApiQuery};
use super::tenant::Tenant;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use bedside_auth::{MAX_TOKEN_LIFETIME_SECS, check_identity};
use bedside_rooms::storage::ListQuery;
use bedside_rooms::{LinkRequest, RandomId};
use bedside_visit::access::issued_at_after;
use bedside_visit::{AuditActor, AuditEvent, AuditKind, VisitId, VisitRecord, VisitStatus};
use chrono::{SubsecRound, TimeDelta, Utc};

pub(super) const DEFAULT_TOKEN_TTL_SECS: i64 = 24 * 3600;

/// A visit of the caller's tenant; any other visit does not exist as far as it can tell.
async fn owned_visit(state: &AppState, tenant: &Tenant, id: &str) -> Result<VisitRecord, ApiError> {
    let id: VisitId = id.parse().map_err(|_| ApiError::VisitNotFound)?;
    // Read what live visits wrote a moment ago, not a version from before it.
    super::caught_up(state).await?;
    match state.registry.storage().visit(id).await? {
        Some(v) if v.tenant == tenant.id => Ok(v),
        _ => Err(ApiError::VisitNotFound),
    }
}

/// Create a visit.
#[utoipa::path(
    post, path = "/visits", tag = "visits",
    request_body = CreateVisit,
    responses(
        (status = 201, description = "The visit was created; `Location` names it", body = VisitBody,
            headers(("Location" = String, description = "`/v1/visits/{id}`"))),
        (status = 429, description = "Too many visits created by this key; retry after the `Retry-After` header", body = ErrorBody,
            headers(("Retry-After" = String, description = "Seconds to wait"))),
    ),
    security(("api_key" = []))
)]
pub async fn create_visit(
    State(state): State<AppState>,
    tenant: Tenant,
    ApiJson(body): ApiJson<CreateVisit>,
) -> Result<(StatusCode, HeaderMap, Json<VisitBody>), ApiError> {
    if !state.limits.visit_creation(tenant.key.as_str()) {
        return Err(ApiError::RateLimited);
    }
    let now = Utc::now().trunc_subsecs(6);
    let new = body.validate(now)?;
    let record = VisitRecord {
        id: VisitId::random(),
        tenant: tenant.id.clone(),
        external_ref: new.external_ref,
        status: VisitStatus::Open,
        ended_reason: None,
        created_at: now,
        not_before: new.not_before,
        expires_at: new.expires_at,
        started_at: None,
        ended_at: None,
        max_participants: new.max_participants,
        metadata: new.metadata,
        provider: new.provider,
        consent: new
            .consent
            .or_else(|| state.consents.get(&tenant.id).cloned()),
    };
    let created =
        AuditEvent::new(AuditKind::Created, now).actor(AuditActor::Api(tenant.key.clone()));
    state
        .registry
        .storage()
        .insert_visit(&record, &created)
        .await?;
    tracing::info!(visit = %record.id, tenant = %tenant.id, "visit created");
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/visits/{}", record.id)) {
        headers.insert(header::LOCATION, location);
    }
    Ok((
        StatusCode::CREATED,
        headers,
        Json(VisitBody::new(record, now)),
    ))
}

/// List the tenant's visits, newest first.
#[utoipa::path(
    get, path = "/visits", tag = "visits",
    params(ListParams),
    responses(
        (status = 200, description = "A page of visits, newest first", body = VisitList),
        (status = 400, description = "`cursor` is not a `next_cursor` this API gave", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list_visits(
    State(state): State<AppState>,
    tenant: Tenant,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<VisitList>, ApiError> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be 1 to 200"));
    }
    let after = params.cursor.as_deref().map(decode_cursor).transpose()?;
    // Like a single visit: list what live visits wrote a moment ago (a join that just made
    // a visit active), not a version from before it.
    super::caught_up(&state).await?;
    let query = ListQuery {
        status: params.status,
        limit: limit + 1,
        after,
    };
    let mut visits = state
        .registry
        .storage()
        .list_visits(&tenant.id, &query)
        .await?;
    let next_cursor = if visits.len() > limit as usize {
        visits.truncate(limit as usize);
        visits.last().map(encode_cursor)
    } else {
        None
    };
    let now = Utc::now();
    Ok(Json(VisitList {
        visits: visits.into_iter().map(|v| VisitBody::new(v, now)).collect(),
        next_cursor,
    }))
}

/// Get a visit, with who is connected and who is waiting.
#[utoipa::path(
    get, path = "/visits/{id}", tag = "visits",
    params(("id" = uuid::Uuid, Path, description = "Visit id")),
    responses(
        (status = 200, description = "The visit, with who is connected and who is waiting", body = VisitBody),
        (status = 404, description = "No visit of this tenant has that id", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn get_visit(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<Json<VisitBody>, ApiError> {
    let record = owned_visit(&state, &tenant, &id).await?;
    let participants = state.router.participants(record.id).await;
    Ok(Json(
        VisitBody::new(record, Utc::now()).with_participants(participants),
    ))
}

/// Mint a join token for a doctor, patient or guest.
#[utoipa::path(
    post, path = "/visits/{id}/tokens", tag = "visits",
    params(("id" = uuid::Uuid, Path, description = "Visit id")),
    request_body = MintToken,
    responses(
        (status = 201, description = "The join token and the link carrying it", body = TokenBody),
        (status = 404, description = "No visit of this tenant has that id", body = ErrorBody),
        (status = 409, description = "The visit has ended", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn mint_token(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<MintToken>,
) -> Result<(StatusCode, Json<TokenBody>), ApiError> {
    let record = owned_visit(&state, &tenant, &id).await?;
    let now = Utc::now();
    if record.effective_status(now).0 == VisitStatus::Ended {
        return Err(ApiError::VisitEnded);
    }
    check_identity(&body.identity).map_err(|m| ApiError::invalid("identity", m))?;
    let name = token_name(body.name)?;
    let ttl = token_ttl(body.ttl_seconds)?;
    // A token never outlives its visit.
    let expires_at = (now + TimeDelta::seconds(ttl)).min(record.expires_at);
    // An identity removed or denied in this visit gets a token issued after the block, so
    // the clinic's new link works while the old ones stay refused.
    let blocked = state
        .registry
        .storage()
        .blocked_at(record.id, &body.identity)
        .await?;
    // The same path as a doctor's guest link from the call (`bedside_rooms::Links`).
    let link = state
        .links
        .mint(
            &tenant.key,
            LinkRequest {
                visit: record.id,
                identity: body.identity.clone(),
                role: body.role,
                name,
                issued_at: issued_at_after(blocked, now),
                now,
                expires_at,
                single_use: body.single_use,
            },
        )
        .map_err(|_| ApiError::Internal)?;
    let issued = AuditEvent {
        identity: Some(body.identity),
        role: Some(body.role),
        ..AuditEvent::new(AuditKind::TokenIssued, now)
            .actor(AuditActor::Api(tenant.key.clone()))
            .detail(link.jti.clone())
    };
    state
        .registry
        .storage()
        .audit(record.id, &tenant.id, &issued)
        .await?;
    // The join with this token continues this request's trace (by the token's id only).
    bedside_signaling::trace_links::remember(
        bedside_signaling::trace_links::Key::Token(link.jti),
        &tracing::Span::current(),
    );
    let (token, join_url) = (link.token, link.join_url);
    Ok((
        StatusCode::CREATED,
        Json(TokenBody {
            token,
            expires_at,
            join_url,
        }),
    ))
}

/// End a visit: everyone connected gets `visit_ended`. Ending an ended visit returns it as is.
#[utoipa::path(
    post, path = "/visits/{id}/end", tag = "visits",
    params(("id" = uuid::Uuid, Path, description = "Visit id")),
    responses(
        (status = 200, description = "The ended visit (also when it had ended before)", body = VisitBody),
        (status = 404, description = "No visit of this tenant has that id", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn end_visit(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<Json<VisitBody>, ApiError> {
    let id: VisitId = id.parse().map_err(|_| ApiError::VisitNotFound)?;
    let now = Utc::now();
    let record = state.router.end(&tenant.id, &tenant.key, id).await?;
    // Answer once the end is on disk.
    super::caught_up(&state).await?;
    tracing::info!(visit = %id, "visit ended by api");
    Ok(Json(VisitBody::new(record, now)))
}

/// Move a visit to another provider's queue; whoever waits or is admitted stays in place.
#[utoipa::path(
    post, path = "/visits/{id}/transfer", tag = "visits",
    params(("id" = uuid::Uuid, Path, description = "Visit id")),
    request_body = Transfer,
    responses(
        (status = 200, description = "The visit, now in that provider's queue", body = VisitBody),
        (status = 404, description = "No visit of this tenant has that id", body = ErrorBody),
        (status = 409, description = "The visit has ended", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn transfer_visit(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Transfer>,
) -> Result<Json<VisitBody>, ApiError> {
    let id: VisitId = id.parse().map_err(|_| ApiError::VisitNotFound)?;
    let provider = provider_id("provider", body.provider)?;
    state
        .router
        .transfer(&tenant.id, &tenant.key, id, provider)
        .await?;
    let record = owned_visit(&state, &tenant, &id.to_string()).await?;
    tracing::info!(visit = %id, "visit transferred by api");
    Ok(Json(VisitBody::new(record, Utc::now())))
}

/// Remove a participant (by identity) from a visit, and revoke that identity's links.
#[utoipa::path(
    delete, path = "/visits/{id}/participants/{identity}", tag = "visits",
    params(
        ("id" = uuid::Uuid, Path, description = "Visit id"),
        ("identity" = String, Path, description = "The participant's identity: 1-128 characters, no control characters",
            min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"),
    ),
    responses(
        (status = 204, description = "Removed and blocked: a connected participant is told `denied {reason: removed}` and closed with 4003; whether connected, holding a link never used, or never seen, every join and resume token of that identity issued until now is refused (`access_revoked`), and tokens minted afterwards work"),
        (status = 404, description = "No visit of this tenant has that id", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn remove_participant(
    State(state): State<AppState>,
    tenant: Tenant,
    Path((id, identity)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id: VisitId = id.parse().map_err(|_| ApiError::VisitNotFound)?;
    check_identity(&identity).map_err(|m| ApiError::invalid("identity", m))?;
    state
        .router
        .remove(&tenant.id, &tenant.key, id, &identity)
        .await?;
    super::caught_up(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The visit's audit trail, oldest first.
#[utoipa::path(
    get, path = "/visits/{id}/events", tag = "visits",
    params(("id" = uuid::Uuid, Path, description = "Visit id")),
    responses(
        (status = 200, description = "The audit trail, oldest first", body = EventList),
        (status = 404, description = "No visit of this tenant has that id", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn visit_events(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<Json<EventList>, ApiError> {
    let record = owned_visit(&state, &tenant, &id).await?;
    let trail = state.registry.storage().audit_trail(record.id).await?;
    Ok(Json(EventList {
        events: trail.into_iter().map(EventBody::from).collect(),
    }))
}

/// Checks the visit's audit trail against its hash chain: reports the first edited,
/// deleted or reordered row.
#[utoipa::path(
    get, path = "/visits/{id}/events/verify", tag = "visits",
    params(("id" = uuid::Uuid, Path, description = "Visit id")),
    responses(
        (status = 200, description = "Whether the trail's hash chain holds, and its first break", body = TrailCheck),
        (status = 404, description = "No visit of this tenant has that id", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn verify_events(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<Json<TrailCheck>, ApiError> {
    let record = owned_visit(&state, &tenant, &id).await?;
    let report = state
        .registry
        .storage()
        .verify_audit(Some(record.id))
        .await?;
    let result = if report.is_intact() {
        "intact"
    } else {
        "broken"
    };
    metrics::counter!("bedside_audit_verifications_total", "result" => result).increment(1);
    Ok(Json(TrailCheck::from(report)))
}

/// Each participant's call quality so far: round trip, loss and jitter over the visit, time
/// on a TURN relay, the worst class and the worst 30 seconds, and the pre-call check.
#[utoipa::path(
    get, path = "/visits/{id}/quality", tag = "visits",
    params(("id" = uuid::Uuid, Path, description = "Visit id")),
    responses(
        (status = 200, description = "One summary per participant who reported statistics or a pre-call check", body = QualityBody),
        (status = 404, description = "No visit of this tenant has that id", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn visit_quality(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<Json<QualityBody>, ApiError> {
    let record = owned_visit(&state, &tenant, &id).await?;
    // A visit running here answers with what it holds now; storage has the rest (a live
    // visit's summaries are written on every change of class and at least once a minute).
    let participants = match state.registry.quality(record.id) {
        Some(live) => live,
        None => state
            .registry
            .storage()
            .quality(record.id)
            .await?
            .iter()
            .map(|q| q.summary())
            .collect(),
    };
    Ok(Json(QualityBody {
        visit_id: record.id,
        participants,
    }))
}

/// A token's display name: optional, bounded, no control characters.
pub(crate) fn token_name(name: Option<String>) -> Result<String, ApiError> {
    let name = name.unwrap_or_default();
    if !bedside_auth::is_display_name(&name) {
        return Err(ApiError::invalid(
            "name",
            format!(
                "at most {} characters, no control characters",
                bedside_auth::MAX_NAME_CHARS
            ),
        ));
    }
    Ok(name)
}

/// A token's lifetime in seconds: the default, or one asked for within the bounds.
pub(crate) fn token_ttl(ttl_seconds: Option<u32>) -> Result<i64, ApiError> {
    match ttl_seconds.map(i64::from) {
        Some(ttl) if !(60..=MAX_TOKEN_LIFETIME_SECS).contains(&ttl) => Err(ApiError::invalid(
            "ttl_seconds",
            "must be 60 seconds to 31 days",
        )),
        Some(ttl) => Ok(ttl),
        None => Ok(DEFAULT_TOKEN_TTL_SECS),
    }
}
