//! Operators' endpoints: liveness, readiness, Prometheus metrics.

use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bedside_visit::VisitStatus;
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `not_ready`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// Liveness: the process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        reason: None,
    })
}

/// Readiness: not shutting down, storage answers, and (in a cluster) so does Redis.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let not_ready = |reason| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "not_ready",
                reason: Some(reason),
            }),
        )
    };
    if !state.ready.load(Ordering::Relaxed) {
        return not_ready("shutting_down").into_response();
    }
    if !state.router.ready() {
        return not_ready("redis_unavailable").into_response();
    }
    match tokio::time::timeout(Duration::from_secs(2), state.registry.storage().ping()).await {
        Ok(Ok(())) => Json(Health {
            status: "ready",
            reason: None,
        })
        .into_response(),
        _ => not_ready("storage_unavailable").into_response(),
    }
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus metrics", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Ok(Ok(counts)) = tokio::time::timeout(
        Duration::from_secs(2),
        state.registry.storage().count_by_status(),
    )
    .await
    {
        for status in [VisitStatus::Open, VisitStatus::Active, VisitStatus::Ended] {
            let n = counts
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, n)| *n);
            metrics::gauge!("bedside_visits", "status" => status.as_str()).set(n as f64);
        }
    }
    metrics::gauge!("bedside_live_visits").set(state.registry.live_visits() as f64);
    state.router.record_metrics();
    // Leak checks (bedside-loadtest churn) compare these before and after load: a task or
    // a descriptor that outlives its connection shows up here.
    metrics::gauge!("bedside_tasks_alive").set(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks() as f64,
    );
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        // Less the one the listing itself holds open.
        metrics::gauge!("bedside_open_fds").set(fds.count().saturating_sub(1) as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.prometheus.render(),
    )
        .into_response()
}
