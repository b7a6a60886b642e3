//! The clinic-facing REST API under `/v1`, and its OpenAPI document generated from the
//! handlers' annotations.

mod dto;
mod events;
mod extract;
mod openapi;
mod providers;
mod tenant;
mod visits;

use crate::error::ApiError;
use crate::state::AppState;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Bedside",
        description = "Telehealth video-visit signaling server: create visits, mint join links, follow the audit trail. \
                       Authenticate with HTTP Basic: API key id and secret. The WebSocket protocol on /ws is described in docs/protocol.md."
    ),
    modifiers(&BasicAuth),
    tags((name = "visits", description = "Visits of the calling tenant"),
         (name = "providers", description = "Providers' queues across the tenant's visits"), (name = "operations", description = "Health and metrics"))
)]
struct ApiDoc;

struct BasicAuth;

impl Modify for BasicAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

/// The `/v1` routes and the OpenAPI document describing them (and the operations routes).
pub fn router() -> (axum::Router<AppState>, serde_json::Value) {
    let v1 = OpenApiRouter::new()
        .routes(routes!(visits::create_visit, visits::list_visits))
        .routes(routes!(visits::get_visit))
        .routes(routes!(visits::mint_token))
        .routes(routes!(visits::end_visit))
        .routes(routes!(visits::remove_participant))
        .routes(routes!(visits::transfer_visit))
        .routes(routes!(providers::provider_queue))
        .routes(routes!(providers::mint_provider_token))
        .routes(routes!(visits::visit_events))
        .routes(routes!(visits::verify_events))
        .routes(routes!(visits::visit_quality))
        .routes(routes!(events::list_events))
        .fallback(|| async { ApiError::RouteNotFound });
    let ops = OpenApiRouter::new()
        .routes(routes!(crate::ops::healthz))
        .routes(routes!(crate::ops::readyz))
        .routes(routes!(crate::ops::metrics));
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/v1", v1)
        .merge(ops)
        .split_for_parts();
    (router, openapi::finish(doc))
}

/// Longest an API read waits for what live visits wrote a moment ago to reach storage.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until storage holds every change live visits made before this call, so a read
/// reflects them; `unavailable` (503, retry later) if the database cannot take them now.
pub(crate) async fn caught_up(state: &AppState) -> Result<(), ApiError> {
    let writer = state.registry.writer();
    if writer.wait_within(writer.position(), CATCH_UP).await {
        Ok(())
    } else {
        Err(ApiError::Unavailable)
    }
}
