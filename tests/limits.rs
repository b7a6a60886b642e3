//! Limits on the WebSocket side, against the real binary: message size, message rate, slow
//! readers, the connection cap and the browser origin check.

use bedside_tests::{CLINIC_A, Client, Pair, STEP, TestServer};
use reqwest::StatusCode;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn an_oversized_message_is_refused_and_nobody_else_notices() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let mut bystanders = Pair::admitted(&server, &api).await;
    let mut pair = Pair::admitted(&server, &api).await;

    // 64 KiB is the limit; this frame is a little over.
    let sdp = "a".repeat(64 * 1024);
    pair.patient
        .send_text(&format!(
            r#"{{"type":"signal","to":"{}","data":{{"sdp":"{sdp}"}}}}"#,
            pair.doctor.participant_id
        ))
        .await;
    let code = pair.patient.closed().await;
    // docs/protocol.md promises 1009 for this.
    assert_eq!(code, 1009, "a frame over 64 KiB");
    // The doctor only hears that the patient dropped (and may come back); nothing was relayed.
    assert_eq!(
        pair.doctor.expect("participant_updated").await["participant"]["connected"],
        false
    );
    pair.doctor.silent(Duration::from_millis(200)).await;

    // Just under the limit is relayed whole.
    let sdp = "b".repeat(60 * 1024);
    pair.doctor.alive().await;
    bystanders
        .doctor
        .send_text(&format!(
            r#"{{"type":"signal","to":"{}","data":{{"sdp":"{sdp}"}}}}"#,
            bystanders.patient.participant_id
        ))
        .await;
    assert_eq!(
        bystanders.patient.expect("signal").await["data"]["sdp"]
            .as_str()
            .unwrap()
            .len(),
        60 * 1024
    );
    bystanders.patient.alive().await;
    let health = reqwest::get(format!("{}/healthz", server.base))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_client_sending_too_fast_is_closed_with_4008() {
    let server = TestServer::start_with(&[
        ("BEDSIDE_WS__RATE_PER_SECOND", "5"),
        ("BEDSIDE_WS__RATE_BURST", "10"),
    ])
    .await;
    let api = server.api(CLINIC_A);
    let mut pair = Pair::admitted(&server, &api).await;
    for _ in 0..30 {
        pair.patient.send(json!({"type": "ping"})).await;
    }
    assert_eq!(pair.patient.closed().await, 4008);
    // The other side is unaffected and the patient may come back.
    pair.doctor.alive().await;
}

/// Unsolicited WebSocket pong frames count toward the frame rate like any other frame.
#[tokio::test]
async fn unsolicited_pongs_count_toward_the_rate_limit() {
    let server = TestServer::start_with(&[
        ("BEDSIDE_WS__RATE_PER_SECOND", "5"),
        ("BEDSIDE_WS__RATE_BURST", "10"),
    ])
    .await;
    let api = server.api(CLINIC_A);
    let mut pair = Pair::admitted(&server, &api).await;
    for _ in 0..30 {
        if pair
            .patient
            .send_message(Message::Pong(Vec::new().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(pair.patient.closed().await, 4008);
    pair.doctor.alive().await;
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_dropped_without_slowing_anyone() {
    let server = TestServer::start_with(&[
        ("BEDSIDE_WS__QUEUE_CAPACITY", "16"),
        ("BEDSIDE_WS__RATE_PER_SECOND", "100000"),
        ("BEDSIDE_WS__RATE_BURST", "100000"),
    ])
    .await;
    let api = server.api(CLINIC_A);
    let mut neighbours = Pair::admitted(&server, &api).await;
    let Pair {
        mut doctor,
        patient: stalled,
        ..
    } = Pair::admitted(&server, &api).await;

    // A neighbouring visit's round trips, measured before and during the flood.
    async fn round_trips(pair: &mut Pair, n: usize) -> Vec<Duration> {
        let mut took = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            pair.doctor
                .send(
                    json!({"type": "signal", "to": pair.patient.participant_id, "data": {"i": i}}),
                )
                .await;
            pair.patient.expect("signal").await;
            took.push(t.elapsed());
        }
        took
    }
    fn p99(mut d: Vec<Duration>) -> Duration {
        d.sort();
        d[(d.len() * 99 / 100).min(d.len() - 1)]
    }
    let quiet = p99(round_trips(&mut neighbours, 200).await);
    let flooding = Arc::new(AtomicBool::new(true));
    let neighbour = {
        let flooding = flooding.clone();
        tokio::spawn(async move {
            let mut took = Vec::new();
            while flooding.load(Ordering::Relaxed) {
                took.extend(round_trips(&mut neighbours, 10).await);
            }
            took
        })
    };

    // The stalled patient never reads again; the doctor keeps sending large signals.
    let payload = format!(
        r#"{{"type":"signal","to":"{}","data":{{"sdp":"{}"}}}}"#,
        stalled.participant_id,
        "s".repeat(48 * 1024)
    );
    let started = Instant::now();
    let mut dropped = false;
    for i in 0..2000 {
        doctor.send_text(&payload).await;
        if i % 20 == 19 {
            // Has the doctor been told the patient is gone?
            doctor.send(json!({"type": "ping"})).await;
            loop {
                let v = doctor.recv().await;
                if v["type"] == "participant_updated" && v["participant"]["connected"] == false {
                    dropped = true;
                }
                if v["type"] == "pong" {
                    break;
                }
            }
            if dropped {
                break;
            }
        }
        assert!(
            started.elapsed() < STEP,
            "the stalled reader was never dropped"
        );
    }
    assert!(dropped, "the stalled reader was never dropped");
    // Keep the neighbour measuring a little past the drop, then compare.
    tokio::time::sleep(Duration::from_millis(200)).await;
    flooding.store(false, Ordering::Relaxed);
    let during = neighbour.await.unwrap();
    assert!(
        during.len() >= 10,
        "the neighbour was starved: {} round trips",
        during.len()
    );
    let during = p99(during);
    eprintln!(
        "neighbouring visit round trip p99: quiet {quiet:?}, while a reader stalled {during:?}"
    );
    assert!(
        during < Duration::from_millis(250).max(quiet * 10),
        "neighbouring visit p99 {during:?} (quiet {quiet:?})"
    );
    // The sender itself was never held up or closed.
    doctor.alive().await;
    drop(stalled);
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_until_one_closes() {
    let server = TestServer::start_with(&[("BEDSIDE_MAX_CONNECTIONS", "2")]).await;
    let a = Client::connect(&server).await;
    let _b = Client::connect(&server).await;
    assert_eq!(
        Client::connect_url(&server.ws_url(), None).await.err(),
        Some(StatusCode::SERVICE_UNAVAILABLE)
    );
    a.close().await;
    let deadline = Instant::now() + STEP;
    loop {
        match Client::connect_url(&server.ws_url(), None).await {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
                assert!(
                    Instant::now() < deadline,
                    "the closed connection's slot was never freed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
async fn browsers_from_other_origins_are_refused() {
    let server = TestServer::start().await;
    let own = format!("http://{}", server.addr);
    assert!(
        Client::connect_url(&server.ws_url(), Some(&own))
            .await
            .is_ok()
    );
    assert!(
        Client::connect_url(&server.ws_url(), None).await.is_ok(),
        "non-browser clients send no Origin"
    );
    for evil in [
        "http://evil.example",
        "null",
        &format!("{own}.evil.example"),
        &format!("https://{}", server.addr),
    ] {
        assert_eq!(
            Client::connect_url(&server.ws_url(), Some(evil))
                .await
                .err(),
            Some(StatusCode::FORBIDDEN),
            "{evil}"
        );
    }

    let configured = TestServer::start_with(&[(
        "BEDSIDE_ALLOWED_ORIGINS",
        "https://clinic.example,https://portal.example",
    )])
    .await;
    assert!(
        Client::connect_url(&configured.ws_url(), Some("https://portal.example"))
            .await
            .is_ok()
    );
    let own = format!("http://{}", configured.addr);
    assert_eq!(
        Client::connect_url(&configured.ws_url(), Some(&own))
            .await
            .err(),
        Some(StatusCode::FORBIDDEN)
    );
}

#[tokio::test]
async fn a_peer_that_vanishes_without_a_close_is_found_by_server_pings() {
    let server = TestServer::start_with(&[
        ("BEDSIDE_WS__PING_INTERVAL_SECS", "1"),
        ("BEDSIDE_WS__IDLE_TIMEOUT_SECS", "3"),
    ])
    .await;
    let api = server.api(CLINIC_A);
    let Pair {
        mut doctor,
        patient,
        ..
    } = Pair::admitted(&server, &api).await;
    // The patient's process freezes: it neither reads nor answers pings, and never closes.
    let frozen = patient;
    let started = Instant::now();
    loop {
        let v = doctor.recv().await;
        if v["type"] == "participant_updated" && v["participant"]["connected"] == false {
            break;
        }
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "found after {took:?}"
    );
    // The doctor, who answers pings (its client reads), is still there.
    doctor.alive().await;
    drop(frozen);
}

#[tokio::test]
async fn with_default_settings_a_vanished_peer_is_found_within_30_seconds() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let Pair {
        mut doctor,
        patient,
        ..
    } = Pair::admitted(&server, &api).await;
    let frozen = patient;
    let started = Instant::now();
    loop {
        let v = tokio::time::timeout(Duration::from_secs(40), doctor.recv())
            .await
            .expect("found in time");
        if v["type"] == "participant_updated" && v["participant"]["connected"] == false {
            break;
        }
    }
    let took = started.elapsed();
    eprintln!("a frozen peer was found after {took:?}");
    assert!(took <= Duration::from_secs(30), "found after {took:?}");
    drop(frozen);
}
