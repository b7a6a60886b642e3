//! PostgreSQL trouble (issue 7, item 4): while the database is unreachable `/readyz` says
//! not ready and `/healthz` stays up; when it is back, readiness returns by itself, with the
//! same `bedside` process. A node started before its database waits for it; one given a
//! database that waiting cannot mend stops at once. Runs in the PostgreSQL pass
//! (`BEDSIDE_TEST_DATABASE=postgres`).

use bedside_tests::pg::{self, PgCluster};
use bedside_tests::{CLINIC_A, Client, Pair, TestServer, binary};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn status_of(http: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let response = http.get(url).send().await.expect("request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls `GET path` until it answers `want`; how long that took.
async fn wait_for(
    http: &reqwest::Client,
    url: &str,
    want: StatusCode,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let (status, body) = status_of(http, url).await;
        if status == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{url} still {status} {body} after {within:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn readiness_follows_postgres_down_and_back_without_a_restart() {
    if !pg::selected() {
        eprintln!(
            "skipped: this test stops and starts a PostgreSQL server, so it runs in the \
             PostgreSQL pass (BEDSIDE_TEST_DATABASE=postgres, as scripts/test does)"
        );
        return;
    }
    // A cluster of its own: stopping the shared one would fail other tests.
    let mut cluster = PgCluster::start().await;
    let url = cluster.create_database().await;
    let server = TestServer::start_with(&[("BEDSIDE_DATABASE_URL", &url)]).await;
    let pid = server.pid();
    let api = server.api(CLINIC_A);
    let http = bedside_loadtest::http::client_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let readyz = format!("{}/readyz", server.base);
    let healthz = format!("{}/healthz", server.base);
    assert_eq!(
        status_of(&http, &readyz).await,
        (StatusCode::OK, json!({"status": "ready"}))
    );
    let Pair {
        visit: before,
        mut doctor,
        mut patient,
    } = Pair::admitted(&server, &api).await;

    // The patient's link to come back with, minted while the API can still record it.
    let back = api.mint(&before, "patient", "pt-1", "Pat One").await;

    cluster.stop().await;
    let took = wait_for(
        &http,
        &readyz,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(10),
    )
    .await;
    eprintln!("not ready {took:?} after PostgreSQL stopped");
    assert_eq!(
        status_of(&http, &readyz).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not_ready", "reason": "storage_unavailable"})
        )
    );
    // Liveness stays up, and a visit already running keeps relaying.
    assert_eq!(status_of(&http, &healthz).await.0, StatusCode::OK);
    doctor
        .send(json!({"type": "signal", "to": patient.participant_id, "data": {"during": "outage"}}))
        .await;
    assert_eq!(
        patient.until("signal").await["data"],
        json!({"during": "outage"})
    );

    // What happens during the outage is kept until the database is back, however long
    // that takes: the patient leaves, and the outage lasts past the writer's old budget of
    // five attempts (about 11 s with the 2 s acquire timeout).
    patient.send(json!({"type": "leave"})).await;
    assert_eq!(patient.closed().await, 1000);
    let left = doctor.until("participant_left").await;
    assert_eq!(left["reason"], "left");
    // The API does not hang on the outage: it answers 503, retry later, within seconds.
    let asked = Instant::now();
    let (status, body) = api
        .call(reqwest::Method::GET, &format!("/v1/visits/{before}"), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable")),
        "{body}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut patient = Client::join(&server, &back).await.0;

    cluster.run().await;
    let took = wait_for(&http, &readyz, StatusCode::OK, Duration::from_secs(15)).await;
    eprintln!("ready again {took:?} after PostgreSQL came back");
    assert_eq!(server.pid(), pid, "the same process");
    // Storage works again for the API, and the relay never stopped.
    let (status, visit) = api
        .call(reqwest::Method::POST, "/v1/visits", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{visit}\n{}", server.logs());
    let visit = visit["id"].as_str().expect("visit id");
    assert_eq!(api.get_visit(visit).await["status"], "open");
    assert_eq!(api.get_visit(&before).await["status"], "active");
    // The departure written during the outage is in the audit trail, before the return.
    let kinds: Vec<String> = api
        .events(&before)
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("?").to_owned())
        .collect();
    // The trail's tail: the patient's leave and return (both during the outage); the
    // admission that follows is written after it.
    let left_at = kinds.iter().rposition(|k| k == "left");
    let back_at = kinds.iter().rposition(|k| k == "joined");
    assert!(
        left_at.is_some() && left_at < back_at,
        "what happened during the outage was lost: {kinds:?}"
    );
    assert!(
        server.logs().contains("storage writes resumed"),
        "{}",
        server.logs()
    );
    // The patient came back during the outage: into the waiting room, as after any leave.
    patient.expect("waiting").await;
    doctor.until("lobby").await;
    doctor
        .send(json!({"type": "admit", "participant_id": patient.participant_id}))
        .await;
    patient.expect("admitted").await;
    patient
        .send(json!({"type": "signal", "to": doctor.participant_id, "data": {"after": "outage"}}))
        .await;
    assert_eq!(
        doctor.until("signal").await["data"],
        json!({"after": "outage"})
    );
}

/// Nothing orders the start of a node and its database (compose without health conditions,
/// Kubernetes): a node that comes up first waits for PostgreSQL, rather than exiting after
/// the pool's first acquire timeout.
#[tokio::test]
async fn a_node_started_before_postgres_waits_for_it() {
    if !pg::selected() {
        eprintln!("skipped: runs in the PostgreSQL pass (BEDSIDE_TEST_DATABASE=postgres)");
        return;
    }
    let mut cluster = PgCluster::start().await;
    let url = cluster.create_database().await;
    cluster.stop().await;
    let starting =
        tokio::spawn(
            async move { TestServer::start_with(&[("BEDSIDE_DATABASE_URL", &url)]).await },
        );
    // Longer than the pool's own retries (one acquire timeout, 2 s), after which the node
    // used to give up.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !starting.is_finished(),
        "the node did not wait for PostgreSQL"
    );
    cluster.run().await;
    let server = starting
        .await
        .expect("the node started once PostgreSQL was up");
    assert!(
        server
            .logs()
            .contains("PostgreSQL does not accept connections yet"),
        "{}",
        server.logs()
    );
    let api = server.api(CLINIC_A);
    let Pair {
        mut doctor,
        mut patient,
        ..
    } = Pair::admitted(&server, &api).await;
    doctor
        .send(json!({"type": "signal", "to": patient.participant_id, "data": {"n": 1}}))
        .await;
    assert_eq!(patient.until("signal").await["data"], json!({"n": 1}));
}

/// Waiting is for a server that is not up yet. A database that does not exist will not
/// appear by waiting: the node stops at once and says why.
#[tokio::test]
async fn a_missing_database_stops_the_node_at_once() {
    if !pg::selected() {
        eprintln!("skipped: runs in the PostgreSQL pass (BEDSIDE_TEST_DATABASE=postgres)");
        return;
    }
    let url = pg::shared().await.url("bedside_no_such_database");
    let started = Instant::now();
    let out = tokio::process::Command::new("timeout")
        .arg("60")
        .arg(binary())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BEDSIDE_LISTEN", "127.0.0.1:0")
        .env("BEDSIDE_DATABASE_URL", &url)
        .env("BEDSIDE_API_KEYS", format!("{}:{}", CLINIC_A.0, CLINIC_A.1))
        .output()
        .await
        .expect("run bedside");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("does not exist"), "{text}");
    assert!(!text.contains("retrying"), "{text}");
    // Well inside the startup wait (30 s): no retries.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
