//! Call quality against the real binary (docs/quality.md): `stats` and `precheck` frames,
//! what the doctor and the reporting participant are told, `GET /v1/visits/{id}/quality`,
//! the summaries in the `visit.ended` event (what webhooks deliver), across a restart, and
//! the metrics. Runs on SQLite, and on PostgreSQL in its pass.

use bedside_tests::{CLINIC_A, CLINIC_B, Client, Pair, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

/// Reports are refused closer than 4 s apart: tests wait this long between two.
const INTERVAL: Duration = Duration::from_millis(4100);

/// A `stats` frame of one peer connection with this inbound loss.
fn stats(loss: f64, local: &str) -> Value {
    json!({"type": "stats", "peers": [{
        "rtt_ms": 42.0, "jitter_ms": 4.5,
        "inbound": {"loss": loss, "audio_kbps": 32, "video_kbps": 800, "fps": 30, "width": 640, "height": 480},
        "outbound": {"loss": 0.0, "audio_kbps": 32, "video_kbps": 900, "fps": 30, "width": 640, "height": 480,
                     "limitation": "none"},
        "pair": {"local": local, "remote": "host", "protocol": "udp"},
        // What a careless client might add: never read, never stored.
        "address": "203.0.113.77", "port": 51234
    }]})
}

async fn quality(api: &bedside_tests::Api, visit: &str) -> Value {
    let (status, body) = api
        .call(Method::GET, &format!("/v1/visits/{visit}/quality"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["visit_id"], visit);
    body
}

fn summary_of<'a>(body: &'a Value, participant_id: &str) -> &'a Value {
    body["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .find(|p| p["participant_id"] == participant_id)
        .unwrap_or_else(|| panic!("no summary for {participant_id} in {body}"))
}

#[tokio::test]
async fn stats_are_checked_and_a_change_of_class_reaches_the_doctor_and_the_patient() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let mut pair = Pair::admitted(&server, &api).await;

    pair.patient.send(stats(0.0, "srflx")).await;
    let own = pair.patient.expect("quality").await;
    assert_eq!(own["quality"], "good");
    assert!(own.get("reason").is_none(), "{own}");
    let seen = pair.doctor.expect("participant_updated").await;
    assert_eq!(
        seen["participant"]["participant_id"],
        pair.patient.participant_id
    );
    assert_eq!(seen["participant"]["quality"], "good");

    // Too soon: refused, and the connection stays open.
    pair.patient.send(stats(0.0, "srflx")).await;
    let err = pair.patient.expect("error").await;
    assert_eq!(err["code"], "too_frequent", "{err}");

    // Malformed reports: an error naming the field, never the value; still connected.
    for (frame, field) in [
        (json!({"type": "stats"}), "peers"),
        (
            json!({"type": "stats", "peers": [{"rtt_ms": -3}]}),
            "peers[0].rtt_ms",
        ),
        (
            json!({"type": "stats", "peers": [{"inbound": {"loss": 2}}]}),
            "peers[0].inbound.loss",
        ),
        (
            json!({"type": "stats", "peers": [{"pair": {"local": "198.51.100.9", "remote": "host", "protocol": "udp"}}]}),
            "peers[0].pair.local",
        ),
        (
            json!({"type": "stats", "peers": vec![json!({}); 8]}),
            "peers",
        ),
    ] {
        pair.patient.send(frame.clone()).await;
        let err = pair.patient.expect("error").await;
        assert_eq!(err["code"], "invalid_stats", "{frame}: {err}");
        let message = err["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{field}:")),
            "{frame}: {message}"
        );
        assert!(!message.contains("198.51.100.9"), "{message}");
    }
    pair.patient.alive().await;

    // Loss of 15%: poor at once, for both.
    tokio::time::sleep(INTERVAL).await;
    pair.patient.send(stats(0.15, "srflx")).await;
    let own = pair.patient.expect("quality").await;
    assert_eq!(
        (&own["quality"], &own["reason"]),
        (&json!("poor"), &json!("packet_loss"))
    );
    let seen = pair.doctor.expect("participant_updated").await;
    assert_eq!(seen["participant"]["quality"], "poor");
    assert_eq!(seen["participant"]["quality_reason"], "packet_loss");

    // The same again: nothing new to tell anyone.
    tokio::time::sleep(INTERVAL).await;
    pair.patient.send(stats(0.15, "srflx")).await;
    pair.doctor.silent(Duration::from_millis(500)).await;
    pair.patient.silent(Duration::from_millis(10)).await;

    // The visit as the API shows it carries the class on the participant too.
    let visit = api.get_visit(&pair.visit).await;
    let connected = visit["connected"].as_array().expect("connected");
    let patient = connected
        .iter()
        .find(|p| p["participant_id"] == pair.patient.participant_id)
        .expect("patient listed");
    assert_eq!(patient["quality"], "poor", "{visit}");
}

#[tokio::test]
async fn a_waiting_participant_reports_a_precheck_not_stats_and_doctors_see_it() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let visit = api.visit().await;
    let (mut doctor, _) =
        Client::join(&server, &api.mint(&visit, "doctor", "dr-1", "Dr").await).await;
    doctor.expect("admitted").await;
    doctor.expect("lobby").await;
    let (mut patient, _) =
        Client::join(&server, &api.mint(&visit, "patient", "pt-1", "Pat").await).await;
    patient.expect("waiting").await;
    doctor.expect("lobby").await;

    patient.send(stats(0.0, "host")).await;
    assert_eq!(patient.expect("error").await["code"], "not_admitted");

    for (frame, field) in [
        (
            json!({"type": "precheck", "camera": true, "microphone": true}),
            "network",
        ),
        (
            json!({"type": "precheck", "camera": "yes", "microphone": true, "network": "direct"}),
            "camera",
        ),
    ] {
        patient.send(frame).await;
        let err = patient.expect("error").await;
        assert_eq!(err["code"], "invalid_precheck");
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}:")),
            "{err}"
        );
    }

    patient
        .send(
            json!({"type": "precheck", "camera": false, "microphone": true, "network": "relay",
                     "turn": {"udp": false, "tls": true}}),
        )
        .await;
    let lobby = doctor.expect("lobby").await;
    let entry = &lobby["waiting"][0];
    assert_eq!(entry["participant_id"], patient.participant_id);
    assert_eq!(entry["precheck"]["network"], "relay");
    assert_eq!(entry["precheck"]["camera"], false);
    assert_eq!(
        entry["precheck"]["turn"],
        json!({"udp": false, "tls": true})
    );
    assert!(entry["precheck"]["at"].is_string());

    // The clinic sees it in the summary, before any call.
    let body = quality(&api, &visit).await;
    assert_eq!(
        summary_of(&body, &patient.participant_id)["precheck"]["network"],
        "relay"
    );

    // Once admitted, a precheck is refused.
    doctor
        .send(json!({"type": "admit", "participant_id": patient.participant_id}))
        .await;
    patient.expect("admitted").await;
    tokio::time::sleep(INTERVAL).await;
    patient
        .send(json!({"type": "precheck", "camera": true, "microphone": true, "network": "direct"}))
        .await;
    assert_eq!(patient.expect("error").await["code"], "not_waiting");
}

#[tokio::test]
async fn the_summary_is_in_the_api_the_ended_event_and_survives_a_restart() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let mut pair = Pair::admitted(&server, &api).await;
    pair.patient.send(stats(0.0, "relay")).await;
    pair.patient.until("quality").await;
    pair.doctor.send(stats(0.0, "host")).await;
    pair.doctor.until("quality").await;
    tokio::time::sleep(INTERVAL).await;
    pair.patient.send(stats(0.25, "relay")).await;
    pair.patient.until("quality").await;

    // Live: read from the visit as it runs.
    let body = quality(&api, &pair.visit).await;
    let pt = summary_of(&body, &pair.patient.participant_id);
    assert_eq!(pt["identity"], "pt-1");
    assert_eq!(pt["role"], "patient");
    assert_eq!(pt["quality"], "poor");
    assert_eq!(pt["worst_quality"], "poor");
    assert_eq!(pt["samples"], 2);
    assert_eq!(pt["rtt_ms"], json!({"p50": 50.0, "p95": 50.0}));
    assert_eq!(pt["packet_loss"]["max"], 0.25);
    assert!(pt["relay_seconds"].as_i64().unwrap() >= 9, "{pt}");
    assert_eq!(pt["worst_window"]["quality"], "poor");
    let dr = summary_of(&body, &pair.doctor.participant_id);
    assert_eq!(dr["quality"], "good");
    assert_eq!(dr["relay_seconds"], 0);

    // Another tenant cannot see it.
    let (status, _) = server
        .api(CLINIC_B)
        .call(
            Method::GET,
            &format!("/v1/visits/{}/quality", pair.visit),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    pair.doctor.send(json!({"type": "end_visit"})).await;
    pair.doctor.until("visit_ended").await;
    let ended = api.call(Method::GET, "/v1/events?limit=200", None).await.1;
    let event = ended["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "visit.ended" && e["visit_id"] == pair.visit.as_str())
        .cloned()
        .expect("visit.ended");
    let in_event = event["data"]["quality"]
        .as_array()
        .expect("quality in visit.ended");
    assert_eq!(in_event.len(), 2, "{event}");
    let body = quality(&api, &pair.visit).await;
    assert_eq!(
        json!(
            in_event
                .iter()
                .find(|p| p["participant_id"] == pair.patient.participant_id)
        ),
        json!(summary_of(&body, &pair.patient.participant_id)),
        "the webhook's summary is the stored one"
    );

    // Nothing of a candidate's address reached storage.
    let server = server.restart().await;
    let after = quality(&server.api(CLINIC_A), &pair.visit).await;
    assert_eq!(after, body, "read back from storage after a restart");
    let stored = server
        .sql_text("SELECT tracker FROM participant_quality LIMIT 1")
        .await
        .expect("a stored tracker");
    assert!(!stored.contains("203.0.113"), "{stored}");
    assert!(!server.logs().contains("203.0.113"));
}

#[tokio::test]
async fn a_restarted_server_carries_on_with_the_class_it_showed() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let mut pair = Pair::admitted(&server, &api).await;
    pair.patient.send(stats(0.2, "srflx")).await;
    pair.patient.expect("quality").await;
    // An API read waits for storage to hold what the visit wrote: then a SIGKILL loses
    // nothing (a report's write is not waited for; a restart may lose the last one).
    assert_eq!(
        quality(&api, &pair.visit).await["participants"][0]["quality"],
        "poor"
    );
    let server = server.restart().await;
    let mut patient = Client::resume(&server.ws_url(), &pair.patient).await;
    let _doctor = Client::resume(&server.ws_url(), &pair.doctor).await;
    // The doctor, back, sees the patient still poor: the class was stored when it changed.
    let visit = server.api(CLINIC_A).get_visit(&pair.visit).await;
    let listed = visit["connected"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["participant_id"] == pair.patient.participant_id)
        .cloned()
        .expect("patient");
    assert_eq!(listed["quality"], "poor", "{visit}");
    // A clean report does not flip it back at once (hysteresis carried over the restart).
    tokio::time::sleep(INTERVAL).await;
    patient.send(stats(0.0, "srflx")).await;
    patient.alive().await;
    none_of(&mut patient, "quality", Duration::from_millis(500)).await;
}

/// Asserts no frame of type `kind` arrives within `wait` (others may).
async fn none_of(client: &mut Client, kind: &str, wait: Duration) {
    let found = tokio::time::timeout(wait, async {
        loop {
            let v = client.recv().await;
            if v["type"] == kind {
                return v;
            }
        }
    })
    .await;
    if let Ok(v) = found {
        panic!("unexpected {v}");
    }
}

#[tokio::test]
async fn metrics_aggregate_round_trip_loss_and_relay_time_across_visits() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let mut pair = Pair::admitted(&server, &api).await;
    pair.patient.send(stats(0.02, "relay")).await;
    pair.patient.expect("quality").await;
    let text = server.metrics().await;
    let value = |line: &str| -> f64 {
        bedside_tests::sample(&text, line).unwrap_or_else(|| panic!("no {line} in /metrics"))
    };
    assert_eq!(value("bedside_call_rtt_seconds_bucket{le=\"0.05\"}"), 1.0);
    assert_eq!(value("bedside_call_rtt_seconds_bucket{le=\"0.025\"}"), 0.0);
    assert_eq!(
        value("bedside_call_packet_loss_ratio_bucket{le=\"0.02\"}"),
        1.0
    );
    assert_eq!(value("bedside_call_packet_loss_ratio_count"), 1.0);
    assert_eq!(value("bedside_call_relay_seconds_total"), 5.0);
    assert_eq!(value("bedside_call_measured_seconds_total"), 5.0);
    assert_eq!(
        value("bedside_call_quality_changes_total{quality=\"good\"}"),
        1.0
    );
}

/// Three nodes (tests/src/cluster.rs): a patient on another node than the visit's owner
/// reports through it, the doctor and the patient are told, and any node's API and the
/// `visit.ended` event have the summary from the shared database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_reports_reach_the_owner_and_any_node_reads_the_summary() {
    use bedside_tests::cluster::Cluster;
    let c = Cluster::start(&[]).await;
    let api = c.nodes[0].api(CLINIC_A);
    let visit = api.visit().await;
    let (mut doctor, _) = Client::join_url(
        &c.nodes[0].ws_url(),
        &api.mint(&visit, "doctor", "dr-1", "Dr").await,
    )
    .await;
    doctor.expect("admitted").await;
    doctor.expect("lobby").await;
    let (mut patient, _) = Client::join_url(
        &c.nodes[1].ws_url(),
        &api.mint(&visit, "patient", "pt-1", "Pat").await,
    )
    .await;
    patient.expect("waiting").await;
    patient
        .send(json!({"type": "precheck", "camera": true, "microphone": true, "network": "relay"}))
        .await;
    let lobby = doctor.until("lobby").await;
    let lobby = if lobby["waiting"][0]["precheck"].is_null() {
        doctor.until("lobby").await
    } else {
        lobby
    };
    assert_eq!(
        lobby["waiting"][0]["precheck"]["network"], "relay",
        "{lobby}"
    );
    doctor
        .send(json!({"type": "admit", "participant_id": patient.participant_id}))
        .await;
    patient.expect("admitted").await;
    assert_eq!(c.owner_of(&visit).await, Some(0));

    patient.send(stats(0.3, "relay")).await;
    let own = patient.until("quality").await;
    assert_eq!(own["quality"], "poor");
    let seen = doctor.until("participant_updated").await;
    assert_eq!(seen["participant"]["quality"], "poor", "{seen}");

    // A node that does not run the visit reads the summary from the shared database.
    let api3 = c.nodes[2].api(CLINIC_A);
    let deadline = std::time::Instant::now() + bedside_tests::STEP;
    loop {
        let body = quality(&api3, &visit).await;
        let done = body["participants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["participant_id"] == patient.participant_id && p["quality"] == "poor");
        if done {
            let pt = summary_of(&body, &patient.participant_id);
            assert_eq!(pt["precheck"]["network"], "relay");
            assert_eq!(pt["relay_seconds"], 5);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never stored: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (code, _) = api3
        .call(Method::POST, &format!("/v1/visits/{visit}/end"), None)
        .await;
    assert_eq!(code, StatusCode::OK);
    let events = api3.call(Method::GET, "/v1/events?limit=200", None).await.1;
    let ended = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "visit.ended" && e["visit_id"] == visit.as_str())
        .cloned()
        .expect("visit.ended");
    let patient_id = patient.participant_id.as_str();
    let in_event = ended["data"]["quality"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["participant_id"] == patient_id)
        .cloned()
        .expect("the patient's summary in visit.ended");
    assert_eq!(in_event["worst_quality"], "poor");
}
