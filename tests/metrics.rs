//! `/metrics` as Prometheus and its tooling read it: after a real visit (joins, an admission,
//! relayed signals and chat, API calls, a webhook delivery), `promtool check metrics` finds
//! nothing to complain about, every family has HELP text, the histograms operators need are
//! there, HTTP durations are labelled by route template (never a raw path with an id), and
//! `bedside audit verify --metrics-file` writes a file promtool accepts too.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use bedside_tests::{CLINIC_A, Pair, TestServer, binary};
use reqwest::Method;
use serde_json::json;
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Families a scrape must have after a visit; each is documented in docs/operations.md.
const EXPECTED: &[&str] = &[
    "bedside_build_info",
    "bedside_ready",
    "bedside_dependency_up",
    "bedside_connections",
    "bedside_live_visits",
    "bedside_visits",
    "bedside_joins_total",
    "bedside_messages_relayed_total",
    "bedside_errors_total",
    "bedside_ws_closes_total",
    "bedside_webhook_attempts_total",
    "bedside_webhook_oldest_pending_seconds",
    "bedside_audit_verifications_total",
    "bedside_tasks_alive",
    "bedside_runtime_workers",
    "bedside_runtime_thread_tasks",
    "bedside_open_fds",
    "bedside_join_duration_seconds",
    "bedside_admission_wait_seconds",
    "bedside_relay_duration_seconds",
    "bedside_http_request_duration_seconds",
    "bedside_storage_write_duration_seconds",
    "bedside_webhook_delivery_lag_seconds",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

/// Runs `promtool check metrics` on `text`: its verdict and what it said.
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; ./scripts/test-prerequisites installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

fn families(text: &str, kind: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("# {kind} ")))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// A webhook receiver that confirms everything.
async fn receiver() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route("/hook", post(|| async { StatusCode::NO_CONTENT }));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
    format!("http://{addr}/hook")
}

#[tokio::test]
async fn after_a_visit_promtool_finds_nothing_wrong_and_every_family_is_there() {
    let url = receiver().await;
    let hooks = format!("clinic-a {url} whsec_clinic_a_0123456789");
    let server = TestServer::start_with(&[
        ("BEDSIDE_WEBHOOKS", hooks.as_str()),
        ("BEDSIDE_WEBHOOK_DELIVERY__POLL_MS", "50"),
    ])
    .await;
    let api = server.api(CLINIC_A);
    let mut pair = Pair::admitted(&server, &api).await;
    // Enough signals for the sampled relay histogram (one frame in 32).
    for i in 0..40 {
        pair.doctor
            .send(json!({"type": "signal", "to": pair.patient.participant_id, "data": {"candidate": i}}))
            .await;
        pair.patient.expect("signal").await;
    }
    pair.doctor
        .send(json!({"type": "chat", "text": "hello"}))
        .await;
    pair.patient.until("chat").await;
    let (status, _) = api
        .call(Method::GET, &format!("/v1/visits/{}", pair.visit), None)
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let (status, _) = api
        .call(
            Method::GET,
            &format!("/v1/visits/{}/events/verify", pair.visit),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let missing = uuid::Uuid::new_v4();
    let (status, _) = api
        .call(Method::GET, &format!("/v1/visits/{missing}"), None)
        .await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    pair.doctor.send(json!({"type": "end_visit"})).await;
    pair.doctor.until("visit_ended").await;

    // Wait for a confirmed webhook delivery (the lag histogram).
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let text = server.metrics().await;
        if text.contains("bedside_webhook_attempts_total{outcome=\"delivered\"}") {
            break text;
        }
        assert!(Instant::now() < deadline, "no webhook delivered:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let (ok, said) = promtool_check(&text);
    assert!(ok && said.trim().is_empty(), "promtool:\n{said}\n{text}");
    let typed = families(&text, "TYPE");
    let helped = families(&text, "HELP");
    assert_eq!(typed, helped, "every family has HELP text");
    for family in EXPECTED {
        assert!(typed.contains(*family), "{family} missing from\n{text}");
    }
    eprintln!(
        "{} families after a visit: {}",
        typed.len(),
        typed.iter().cloned().collect::<Vec<_>>().join(" ")
    );

    // Routes by template: the visit's own id is nowhere in /metrics.
    assert!(
        text.contains(r#"route="/v1/visits/{id}""#),
        "route templates:\n{text}"
    );
    assert!(!text.contains(&pair.visit) && !text.contains(&missing.to_string()));
    for sample in [
        "bedside_admission_wait_seconds_count 1",
        "bedside_ready 1",
        r#"bedside_dependency_up{dependency="storage"} 1"#,
        r#"bedside_audit_verifications_total{result="intact"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == sample), "{sample} in\n{text}");
    }
    let build = text
        .lines()
        .find(|l| l.starts_with("bedside_build_info{"))
        .expect("build info");
    assert!(
        build.contains(&format!(r#"version="{}""#, env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    assert!(
        !build.contains(r#"commit="""#) && build.ends_with(" 1"),
        "{build}"
    );
    // Nothing personal in any label: no identity, display name or chat text.
    for personal in ["dr-1", "pt-1", "Dr One", "Pat One", "hello"] {
        assert!(!text.contains(personal), "{personal} in /metrics");
    }

    // The scheduled audit check's file, for node_exporter's textfile collector.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("bedside_audit.prom");
    let status = tokio::process::Command::new(binary())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BEDSIDE_DATABASE_URL", server.database_url())
        .args(["audit", "verify", "--metrics-file"])
        .arg(&file)
        .stdout(Stdio::null())
        .status()
        .await
        .expect("bedside audit verify");
    assert!(status.success());
    let written = std::fs::read_to_string(&file).expect("metrics file");
    let (ok, said) = promtool_check(&written);
    assert!(ok && said.trim().is_empty(), "promtool:\n{said}\n{written}");
    assert!(
        written
            .lines()
            .any(|l| l == "bedside_audit_verify_broken_visits 0")
    );
}
