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
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process serves HTTP", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        reason: None,
    })
}

/// Whether this node should take traffic, and how each dependency answered.
pub(crate) struct Readiness {
    pub ready: bool,
    /// Why not, when not ready: `shutting_down`, `redis_unavailable`, `storage_unavailable`.
    pub reason: Option<&'static str>,
    pub storage: bool,
    /// In a cluster: whether Redis answers.
    pub redis: Option<bool>,
}

/// Not shutting down, storage answers, and (in a cluster) so does Redis. Storage is asked
/// only when the rest is fine, unless `every_dependency` (metrics report each one), so a
/// draining node or a Redis outage is answered at once.
pub(crate) async fn readiness(state: &AppState, every_dependency: bool) -> Readiness {
    let draining = !state.ready.load(Ordering::Relaxed);
    // In a cluster, the router is ready when Redis answers; one node's always is.
    let redis = Some(state.router.ready());
    let ask_storage = every_dependency || (!draining && redis != Some(false));
    let storage = ask_storage
        && matches!(
            tokio::time::timeout(Duration::from_secs(2), state.registry.storage().ping()).await,
            Ok(Ok(()))
        );
    let reason = if draining {
        Some("shutting_down")
    } else if redis == Some(false) {
        Some("redis_unavailable")
    } else if !storage {
        Some("storage_unavailable")
    } else {
        None
    };
    Readiness {
        ready: reason.is_none(),
        reason,
        storage,
        redis,
    }
}

/// Readiness: not shutting down, storage answers, and (in a cluster) so does Redis.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready: send traffic here", body = Health),
    (status = 503, description = "Not ready (`reason`: `shutting_down`, `redis_unavailable` or `storage_unavailable`): take it out of rotation, do not restart it", body = Health),
))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match readiness(&state, false).await.reason {
        None => Json(Health {
            status: "ready",
            reason: None,
        })
        .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "not_ready",
                reason: Some(reason),
            }),
        )
            .into_response(),
    }
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus metrics in the text exposition format (docs/operations.md, \"Monitoring\")", content_type = "text/plain")))]
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
    metrics::gauge!("bedside_tasks_alive").set(state.threads.alive_tasks() as f64);
    metrics::gauge!("bedside_runtime_workers").set(state.threads.threads() as f64);
    for (thread, alive) in state.threads.connection_tasks().enumerate() {
        metrics::gauge!("bedside_runtime_thread_tasks", "thread" => thread.to_string())
            .set(alive as f64);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        // Less the one the listing itself holds open.
        metrics::gauge!("bedside_open_fds").set(fds.count().saturating_sub(1) as f64);
    }
    crate::prometheus::readiness(&state).await;
    crate::prometheus::refresh(&state.prometheus);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.prometheus.render(),
    )
        .into_response()
}
