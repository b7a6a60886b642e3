//! Metrics as Prometheus reads them: the one recorder, every family's HELP text and
//! histogram buckets, and what is measured at scrape time (process, build, readiness).
//!
//! The families are recorded where they happen (signaling, the registry, the storage
//! writer, webhooks, the HTTP layer); this file is their catalogue. docs/operations.md
//! ("Monitoring") lists them for operators, and `tests/metrics.rs` runs
//! `promtool check metrics` on a live `/metrics`.

use crate::state::AppState;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The commit the binary was built from (build.rs), or `unknown`.
const COMMIT: &str = env!("BEDSIDE_BUILD_COMMIT");

/// Histograms and their buckets, in seconds: each spans what its quantity does in practice.
const HISTOGRAMS: &[(&str, &[f64], &str)] = &[
    (
        "bedside_join_duration_seconds",
        &[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ],
        "From a join frame's token check to the joined frame being queued (local and forwarded joins).",
    ),
    (
        "bedside_admission_wait_seconds",
        &[
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
        ],
        "How long admitted participants waited in the waiting room, from knocking to a doctor's admit.",
    ),
    (
        "bedside_relay_duration_seconds",
        &[
            0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05,
        ],
        "Time inside the server from a signal or chat frame read off its sender's socket to its copies queued for every recipient (decode, visit, routing); sampled, one frame in 32.",
    ),
    (
        "bedside_http_request_duration_seconds",
        &[
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ],
        "HTTP requests by method, matched route template (never the raw path) and status, until the response head.",
    ),
    (
        "bedside_storage_write_duration_seconds",
        &[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 15.0,
        ],
        "One transaction of the storage writer (a batch of live visits' changes, audit rows and events), retries included.",
    ),
    (
        "bedside_join_stage_seconds",
        &[
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ],
        "Stages of a join, by stage: load (reading the visit from storage), and in a cluster lease (claiming it in Redis), epoch (raising its epoch in storage), owner (finding another node's lease), forwarded (from asking the owner node to its answer), at_owner (the join on the owner).",
    ),
    (
        "bedside_storage_write_wait_seconds",
        &[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
        ],
        "Per group of writes (one input's changes, audit rows and events), by stage: queued (until its transaction began) and stored (until it was written). In a cluster, a participant hears of a change once it is stored.",
    ),
    (
        "bedside_webhook_delivery_lag_seconds",
        &[
            0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0,
            90000.0,
        ],
        "From a visit event happening to its webhook delivery being confirmed by the receiver.",
    ),
    (
        "bedside_call_rtt_seconds",
        &[
            0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 1.0, 2.0, 5.0,
        ],
        "Round-trip time of participants' peer connections as their browsers report it in stats frames (one observation per peer connection per report, about every 5 s), across visits.",
    ),
    (
        "bedside_call_jitter_seconds",
        &[0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5],
        "Jitter of what participants' browsers receive, as reported in stats frames, across visits.",
    ),
    (
        "bedside_call_packet_loss_ratio",
        &[0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0],
        "Packet loss (fraction of packets, the worse direction) of participants' peer connections, as reported in stats frames, across visits.",
    ),
];

/// Counters and gauges: name, HELP text.
const COUNTERS: &[(&str, &str)] = &[
    (
        "bedside_joins_total",
        "Successful joins to a visit over /ws.",
    ),
    (
        "bedside_messages_relayed_total",
        "Signal and chat frames relayed, by kind.",
    ),
    (
        "bedside_errors_total",
        "Error responses (REST) and error frames (WebSocket), by code.",
    ),
    (
        "bedside_ws_closes_total",
        "WebSocket closes Bedside sent, by close code.",
    ),
    (
        "bedside_ws_refused_total",
        "WebSocket upgrades refused, by reason: capacity (max_connections), per_ip, join_rate, origin.",
    ),
    (
        "bedside_connections_refused_total",
        "TCP connections closed before a request, by reason: no_descriptors, handshake_timeout, tls_handshake.",
    ),
    (
        "bedside_webhook_attempts_total",
        "Webhook delivery attempts, by outcome: delivered, retry, gave_up.",
    ),
    (
        "bedside_call_measured_seconds_total",
        "Call time covered by participants' stats reports (each report stands for the time since the previous one, at most 10 s).",
    ),
    (
        "bedside_call_relay_seconds_total",
        "Of that call time, how much media went through a TURN relay.",
    ),
    (
        "bedside_call_quality_changes_total",
        "Changes of a participant's quality class, by the class it became: good, fair, poor.",
    ),
    (
        "bedside_audit_verifications_total",
        "Audit trail checks over the API (GET /v1/visits/{id}/events/verify), by result: intact, broken.",
    ),
];

const GAUGES: &[(&str, &str)] = &[
    (
        "bedside_build_info",
        "Always 1; the labels say which build runs: version and commit.",
    ),
    (
        "bedside_ready",
        "1 when /readyz answers 200 (storage and, in a cluster, Redis reachable, not draining), else 0.",
    ),
    (
        "bedside_dependency_up",
        "1 when a dependency answers, by dependency: storage, and redis in a cluster.",
    ),
    ("bedside_connections", "Open WebSockets on this node."),
    ("bedside_live_visits", "Visits held in memory on this node."),
    (
        "bedside_visits",
        "Visits in the database by status (the same on every node: do not sum across nodes).",
    ),
    (
        "bedside_tasks_alive",
        "Tokio tasks alive in the process (leak checks compare it before and after load).",
    ),
    (
        "bedside_runtime_workers",
        "Threads running connections and the API (the worker_threads setting; one per core by default), besides as many for the service work.",
    ),
    (
        "bedside_runtime_thread_tasks",
        "Tokio tasks alive on each connection thread; a new connection goes to the thread with the fewest.",
    ),
    (
        "bedside_open_fds",
        "File descriptors open in the process (see also process_open_fds and process_max_fds).",
    ),
    (
        "bedside_webhook_oldest_pending_seconds",
        "Age of the oldest event a tenant's webhook receiver has not confirmed yet, by tenant; 0 when none is pending.",
    ),
    (
        "bedside_cluster_leases",
        "Cluster mode: visit leases this node holds in Redis (the visits it runs).",
    ),
    (
        "bedside_cluster_remote_participants",
        "Cluster mode: participants of visits this node runs who are connected to another node.",
    ),
    (
        "bedside_cluster_seated_elsewhere",
        "Cluster mode: participants connected to this node whose visit another node runs.",
    ),
];

/// The process's metrics recorder, installed on first use, with every family described.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for (name, buckets, _) in HISTOGRAMS {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)
                    .expect("bucket lists are not empty");
            }
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    for (name, _, help) in HISTOGRAMS {
        describe_histogram!(*name, Unit::Seconds, *help);
    }
    for (name, help) in COUNTERS {
        describe_counter!(*name, *help);
    }
    for (name, help) in GAUGES {
        describe_gauge!(*name, *help);
    }
    process().describe();
    metrics::gauge!(
        "bedside_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => COMMIT
    )
    .set(1.0);
}

/// Standard `process_*` metrics (CPU, memory, descriptors, threads, start time).
fn process() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Brings what is read at scrape time up to date, and drains recorded histogram samples
/// into their buckets. Also called in the background, so samples never pile up between
/// scrapes (or when nobody scrapes).
pub fn refresh(handle: &PrometheusHandle) {
    process().collect();
    handle.run_upkeep();
}

/// Readiness at scrape time: the same verdict as `/readyz`, and each dependency's.
pub async fn readiness(state: &AppState) {
    let verdict = crate::ops::readiness(state, true).await;
    metrics::gauge!("bedside_ready").set(if verdict.ready { 1.0 } else { 0.0 });
    metrics::gauge!("bedside_dependency_up", "dependency" => "storage").set(up(verdict.storage));
    if let Some(redis) = verdict.redis {
        metrics::gauge!("bedside_dependency_up", "dependency" => "redis").set(up(redis));
    }
}

fn up(ok: bool) -> f64 {
    if ok { 1.0 } else { 0.0 }
}

/// Records each HTTP request's duration by its route template. A layer on the router, so
/// the matched route is known; requests no route matched (the web client's files, 404s)
/// count as `other`.
pub async fn http_duration(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    metrics::histogram!(
        "bedside_http_request_duration_seconds",
        "method" => method.as_str().to_owned(),
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .record(started.elapsed());
    response
}

/// How often [`refresh`] runs in the background.
pub const UPKEEP: Duration = Duration::from_secs(5);
