//! `/v1/providers`: a provider's queue across the tenant's visits, and the tokens that open
//! a provider's dashboard.

use super::dto::{MintProviderToken, QueueBody, TokenBody, provider_id};
use super::extract::ApiJson;
use super::tenant::Tenant;
use super::visits::{token_name, token_ttl};
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bedside_auth::{ProviderClaims, ProviderRole};
use chrono::{TimeDelta, Utc};

/// A provider's queue: one entry per waiting participant of their live visits, oldest knock
/// first.
#[utoipa::path(
    get, path = "/providers/{provider}/queue", tag = "providers",
    params(("provider" = String, Path, description = "The provider's identity: 1-128 characters, no control characters",
        min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")),
    responses(
        (status = 200, description = "The queue, across every node's visits; empty for a provider with nobody waiting (or unknown)", body = QueueBody),
        (status = 503, description = "In a cluster, Redis cannot be read now: retry", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn provider_queue(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(provider): Path<String>,
) -> Result<Json<QueueBody>, ApiError> {
    let provider = provider_id("provider", provider)?;
    // On one node, what visits reported a moment ago has reached the desk (it reads its
    // channel first); in a cluster the board holds every node's parts.
    let entries = state
        .desk
        .queue_everywhere(&tenant.id, &provider)
        .await
        .map_err(ApiError::from)?;
    Ok(Json(QueueBody { entries }))
}

/// Mint a provider token: it opens the provider's dashboard on `/ws`, never a visit.
#[utoipa::path(
    post, path = "/providers/{provider}/tokens", tag = "providers",
    params(("provider" = String, Path, description = "The provider's identity: 1-128 characters, no control characters",
        min_length = 1, max_length = 128, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")),
    request_body = MintProviderToken,
    responses(
        (status = 201, description = "The provider token and the link carrying it", body = TokenBody),
        (status = 422, description = "A field is out of range", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn mint_provider_token(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(provider): Path<String>,
    ApiJson(body): ApiJson<MintProviderToken>,
) -> Result<(StatusCode, Json<TokenBody>), ApiError> {
    let provider = provider_id("provider", provider)?;
    let name = token_name(body.name)?;
    let ttl = token_ttl(body.ttl_seconds)?;
    let now = Utc::now();
    let expires_at = now + TimeDelta::seconds(ttl);
    let claims = ProviderClaims {
        iss: tenant.key.as_str().to_owned(),
        sub: provider.as_str().to_owned(),
        provider: provider.as_str().to_owned(),
        role: ProviderRole::Provider,
        name,
        iat: now.timestamp(),
        nbf: now.timestamp(),
        exp: expires_at.timestamp(),
        jti: uuid::Uuid::new_v4().to_string(),
    };
    let token = state
        .keys
        .mint_provider(&tenant.key, &claims)
        .map_err(|_| ApiError::Internal)?;
    let join_url = state.links.url(&token);
    Ok((
        StatusCode::CREATED,
        Json(TokenBody {
            token,
            expires_at: chrono::DateTime::from_timestamp(expires_at.timestamp(), 0)
                .unwrap_or(expires_at),
            join_url,
        }),
    ))
}
