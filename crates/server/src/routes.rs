//! The whole HTTP surface: `/v1` API, `/ws`, operations endpoints, the web client, and
//! the layers every response passes through.

use crate::error::ApiError;
use crate::state::AppState;
use crate::{api, web, ws};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, header};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

/// Largest REST request body.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Content-Security-Policy of the web client: nothing but this origin, no inline code, and
/// framed by no page but those of the `embed_origins` setting (none by default).
fn content_security_policy(embed_origins: &[String]) -> HeaderValue {
    let ancestors = if embed_origins.is_empty() {
        "'none'".to_owned()
    } else {
        embed_origins.join(" ")
    };
    let csp = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         media-src 'self' blob:; connect-src 'self'; frame-ancestors {ancestors}; base-uri 'none'; form-action 'none'"
    );
    // The setting admits only header-safe origins, so this always holds.
    HeaderValue::try_from(csp).unwrap_or(HeaderValue::from_static("frame-ancestors 'none'"))
}

pub fn router(state: AppState) -> Router {
    let hsts = state.hsts;
    let csp = content_security_policy(&state.embed_origins);
    // X-Frame-Options cannot name several origins: with an embed allow-list, browsers go by
    // the CSP's frame-ancestors alone.
    let deny_frames = state.embed_origins.is_empty();
    let (api, openapi) = api::router();
    let openapi = Arc::new(openapi);
    let trace = TraceLayer::new_for_http()
        .make_span_with(|req: &Request| {
            // The matched route, never the raw path: ids stay out of access logs.
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map_or("-", |p| p.as_str())
                .to_owned();
            let name = format!("{} {route}", req.method());
            tracing::info_span!("http", otel.name = name, method = %req.method(), route)
        })
        .on_request(())
        .on_response(DefaultOnResponse::new().level(Level::INFO));
    let header = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    api.route(
        "/v1/openapi.json",
        get(move || async move { Json(openapi.as_ref().clone()) }),
    )
    .route("/ws", get(ws::upgrade))
    .fallback(web::serve)
    .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
    .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
    .layer(axum::middleware::from_fn(crate::prometheus::http_duration))
    .layer(trace)
    .layer(header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
    .layer(tower::util::option_layer(
        deny_frames.then(|| header(header::X_FRAME_OPTIONS, "DENY")),
    ))
    .layer(header(header::REFERRER_POLICY, "no-referrer"))
    .layer(SetResponseHeaderLayer::if_not_present(
        header::CONTENT_SECURITY_POLICY,
        csp,
    ))
    .layer(header(
        HeaderName::from_static("permissions-policy"),
        "camera=(self), microphone=(self), display-capture=(self)",
    ))
    // Only where browsers reach us over HTTPS: HSTS on plain HTTP would be ignored at best.
    .layer(tower::util::option_layer(hsts.then(|| {
        header(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        )
    })))
    .with_state(state)
}
