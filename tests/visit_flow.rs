//! A whole visit against the real binary: create, mint, doctor joins, patient waits, the
//! doctor sees the lobby and admits, WebRTC negotiation is relayed byte for byte, chat and
//! media state flow, the doctor ends the visit.

use bedside_tests::{CLINIC_A, Client, STEP, TestServer, sample};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_full_visit() {
    full_visit(&TestServer::start().await).await;
}

/// The same visit on a server with one scheduler thread (`worker_threads`, BENCHMARKS.md
/// "The runtime"): nothing on these paths may wait on another thread to make progress.
#[tokio::test]
async fn a_full_visit_on_one_worker_thread() {
    let server = TestServer::start_with(&[("BEDSIDE_WORKER_THREADS", "1")]).await;
    full_visit(&server).await;
    assert!(
        server
            .metrics()
            .await
            .lines()
            .any(|l| l == "bedside_runtime_workers 1"),
        "the setting is not what runs"
    );
}

/// Two connection threads, as on a two-core machine by default (`runtime.rs` in the
/// server): held connections fill the thread with the fewer tasks first, so both hold
/// about half, and a visit runs beside them.
#[tokio::test]
async fn connections_are_spread_over_the_scheduler_threads() {
    let server = TestServer::start_with(&[("BEDSIDE_WORKER_THREADS", "2")]).await;
    let api = server.api(CLINIC_A);
    let mut held = Vec::new();
    for i in 0..HELD {
        let waiting_room = api.visit().await;
        let token = api
            .mint(&waiting_room, "patient", &format!("pt-held-{i}"), "Held")
            .await;
        let (mut patient, _) = Client::join(&server, &token).await;
        patient.expect("waiting").await;
        held.push(patient);
    }
    full_visit(&server).await;
    let metrics = server.metrics().await;
    let gauge = |name: &str| sample(&metrics, name).unwrap_or_else(|| panic!("no {name}"));
    assert_eq!(gauge("bedside_runtime_workers "), 2.0);
    for thread in ["0", "1"] {
        let tasks = gauge(&format!(
            "bedside_runtime_thread_tasks{{thread=\"{thread}\"}} "
        ));
        assert!(
            tasks >= (HELD / 3) as f64,
            "thread {thread} runs {tasks} tasks with {HELD} connections held"
        );
    }
    drop(held);
}

const HELD: usize = 24;

/// The tasks on each of the two connection threads.
async fn thread_tasks(server: &TestServer) -> [f64; 2] {
    let metrics = server.metrics().await;
    ["0", "1"].map(|thread| {
        sample(
            &metrics,
            &format!("bedside_runtime_thread_tasks{{thread=\"{thread}\"}} "),
        )
        .expect("per-thread tasks")
    })
}

/// Connections that name their visit in the URL (`/ws?visit=ID`, as the SDK's do) run on
/// the visit's thread, so its participants' frames never cross threads; but a name anyone
/// can send does not pile connections onto one core past the threads' share.
#[tokio::test]
async fn the_connections_of_a_visit_share_a_thread_within_the_threads_share() {
    let server = TestServer::start_with(&[("BEDSIDE_WORKER_THREADS", "2")]).await;
    let visit = server.api(CLINIC_A).visit().await;
    let url = format!("{}?visit={visit}", server.ws_url());
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(Client::connect_url(&url, None).await.expect("upgraded"));
    }
    // Besides them, only the HTTP connections of the API call and of the metrics request
    // (two tasks at most each).
    let [a, b] = thread_tasks(&server).await;
    assert!(
        a.max(b) >= 16.0 && a.min(b) <= 4.0,
        "16 connections of one visit left {a} and {b} tasks on the two threads"
    );
    // Far more than one visit has: the busier thread stops taking them.
    for _ in 0..184 {
        held.push(Client::connect_url(&url, None).await.expect("upgraded"));
    }
    let [a, b] = thread_tasks(&server).await;
    assert!(
        a.min(b) >= 40.0,
        "200 connections naming one visit left {a} and {b} tasks on the two threads"
    );
    drop(held);
}

async fn full_visit(server: &TestServer) {
    let api = server.api(CLINIC_A);
    let visit = api
        .create_visit(json!({"external_ref": "appt-77", "max_participants": 2}))
        .await;
    let id = visit["id"].as_str().unwrap();
    assert_eq!(visit["status"], "open");

    let doctor_token = api.mint(id, "doctor", "dr-lee", "Dr Lee").await;
    let patient_token = api.mint(id, "patient", "pt-42", "Sam Patient").await;

    // The doctor is admitted at once and sees an empty waiting room.
    let (mut doctor, joined) = Client::join(server, &doctor_token).await;
    assert_eq!(joined["role"], "doctor");
    assert_eq!(joined["visit"], json!({"id": id, "status": "active"}));
    assert!(joined["ice_servers"].is_array());
    assert!(!doctor.resume_token.is_empty());
    assert_eq!(doctor.expect("admitted").await["participants"], json!([]));
    assert_eq!(doctor.expect("lobby").await["waiting"], json!([]));

    // The patient waits; the doctor sees them in the lobby with name and time.
    let (mut patient, joined) = Client::join(server, &patient_token).await;
    assert_eq!(joined["role"], "patient");
    patient.expect("waiting").await;
    let lobby = doctor.expect("lobby").await;
    let waiting = lobby["waiting"].as_array().unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(
        waiting[0]["participant_id"],
        patient.participant_id.as_str()
    );
    assert_eq!(waiting[0]["name"], "Sam Patient");
    assert_eq!(waiting[0]["role"], "patient");
    assert!(waiting[0]["since"].as_str().unwrap().ends_with('Z'));

    // The clinic's backend sees the same.
    let seen = api.get_visit(id).await;
    assert_eq!(seen["status"], "active");
    assert_eq!(seen["waiting"][0]["identity"], "pt-42");
    assert_eq!(seen["connected"][0]["identity"], "dr-lee");

    // Nothing reaches the waiting patient.
    doctor
        .send(json!({"type": "chat", "text": "one moment"}))
        .await;
    doctor.expect("chat").await;
    patient.silent(Duration::from_millis(300)).await;

    // Admission.
    doctor
        .send(json!({"type": "admit", "participant_id": patient.participant_id}))
        .await;
    let admitted = patient.expect("admitted").await;
    let others = admitted["participants"].as_array().unwrap();
    assert_eq!(others.len(), 1);
    assert_eq!(others[0]["participant_id"], doctor.participant_id.as_str());
    assert_eq!(others[0]["role"], "doctor");
    assert_eq!(others[0]["name"], "Dr Lee");
    assert_eq!(others[0]["state"], "admitted");
    let pj = doctor.expect("participant_joined").await;
    assert_eq!(
        pj["participant"]["participant_id"],
        patient.participant_id.as_str()
    );
    assert_eq!(
        pj["participant"]["media"],
        json!({"audio": false, "video": false, "screen": false})
    );
    assert_eq!(doctor.expect("lobby").await["waiting"], json!([]));

    // Offer, answer and trickled candidates arrive byte for byte.
    let offer = r#"{"type":"offer","sdp":"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"}"#;
    let answer = r#"{ "type" : "answer", "sdp" : "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n" , "extra": [1.0, 2e3, "\u00e9"] }"#;
    let candidate = r#"{"candidate":"candidate:842163049 1 udp 1677729535 192.0.2.3 46154 typ srflx raddr 10.0.0.1 rport 46154","sdpMid":"0","sdpMLineIndex":0}"#;
    doctor
        .send_text(&format!(
            r#"{{"type":"signal","to":"{}","data":{offer}}}"#,
            patient.participant_id
        ))
        .await;
    let got = patient.recv_text().await;
    assert_eq!(
        got,
        format!(
            r#"{{"type":"signal","from":"{}","data":{offer}}}"#,
            doctor.participant_id
        )
    );
    patient
        .send_text(&format!(
            r#"{{"type":"signal","to":"{}","data":{answer}}}"#,
            doctor.participant_id
        ))
        .await;
    assert_eq!(
        doctor.recv_text().await,
        format!(
            r#"{{"type":"signal","from":"{}","data":{answer}}}"#,
            patient.participant_id
        )
    );
    for _ in 0..5 {
        patient
            .send_text(&format!(
                r#"{{"type":"signal","to":"{}","data":{candidate}}}"#,
                doctor.participant_id
            ))
            .await;
    }
    for _ in 0..5 {
        assert!(
            doctor
                .recv_text()
                .await
                .ends_with(&format!(r#""data":{candidate}}}"#))
        );
    }

    // Chat goes both ways and is echoed, so both hold the same transcript.
    patient
        .send(json!({"type": "chat", "text": "Hello doctor"}))
        .await;
    for c in [&mut patient, &mut doctor] {
        let chat = c.expect("chat").await;
        assert_eq!(chat["text"], "Hello doctor");
        assert!(chat["at"].is_string());
    }
    doctor
        .send(json!({"type": "chat", "text": "Hello Sam"}))
        .await;
    let doctor_id = doctor.participant_id.clone();
    for c in [&mut doctor, &mut patient] {
        assert_eq!(c.expect("chat").await["from"], doctor_id.as_str());
    }

    // Mute is reflected on the other side.
    patient
        .send(json!({"type": "media", "audio": false, "video": true, "screen": false}))
        .await;
    let update = doctor.expect("participant_updated").await;
    assert_eq!(
        update["participant"]["media"],
        json!({"audio": false, "video": true, "screen": false})
    );
    assert_eq!(update["participant"]["connected"], true);

    // The doctor ends the visit: both are told and closed with 4004.
    doctor.send(json!({"type": "end_visit"})).await;
    for c in [&mut doctor, &mut patient] {
        assert_eq!(c.expect("visit_ended").await["reason"], "ended_by_doctor");
        assert_eq!(c.closed().await, 4004);
    }

    let ended = api.get_visit(id).await;
    assert_eq!(ended["status"], "ended");
    assert_eq!(ended["ended_reason"], "ended_by_doctor");
    let kinds: Vec<String> = api
        .events(id)
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "token_issued",
            "token_issued",
            "joined",
            "joined",
            "admitted",
            "ended"
        ],
        "audit trail"
    );

    // An ended visit refuses joins and token minting.
    let (status, body) = api
        .call(
            Method::POST,
            &format!("/v1/visits/{id}/tokens"),
            Some(json!({"role": "patient", "identity": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "visit_ended");
    let mut late = Client::connect(server).await;
    late.send(json!({"type": "join", "token": patient_token}))
        .await;
    assert_eq!(late.expect("error").await["code"], "visit_ended");
    assert_eq!(late.closed().await, 4004);
}

#[tokio::test]
async fn a_guest_waits_and_three_people_share_the_visit() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let id = api.visit().await;
    let (mut doctor, _) = Client::join(&server, &api.mint(&id, "doctor", "dr", "Dr").await).await;
    doctor.expect("admitted").await;
    doctor.expect("lobby").await;
    let (mut patient, _) =
        Client::join(&server, &api.mint(&id, "patient", "pt", "Pat").await).await;
    patient.expect("waiting").await;
    doctor.expect("lobby").await;
    let (mut guest, _) =
        Client::join(&server, &api.mint(&id, "guest", "interpreter", "Ana").await).await;
    assert_eq!(guest.expect("waiting").await["type"], "waiting");
    assert_eq!(
        doctor.expect("lobby").await["waiting"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    for c in [&patient, &guest] {
        doctor
            .send(json!({"type": "admit", "participant_id": c.participant_id}))
            .await;
    }
    patient.expect("admitted").await;
    let admitted = guest.expect("admitted").await;
    assert_eq!(
        admitted["participants"].as_array().unwrap().len(),
        2,
        "doctor and patient"
    );
    assert_eq!(
        patient.expect("participant_joined").await["participant"]["role"],
        "guest"
    );

    guest
        .send(json!({"type": "chat", "text": "interpreter here"}))
        .await;
    for c in [&mut doctor, &mut patient, &mut guest] {
        assert_eq!(c.until("chat").await["text"], "interpreter here");
    }
    // A signal reaches only the participant it names.
    guest
        .send(json!({"type": "signal", "to": patient.participant_id, "data": {"n": 1}}))
        .await;
    assert_eq!(
        patient.expect("signal").await["from"],
        guest.participant_id.as_str()
    );
    doctor.silent(Duration::from_millis(300)).await;

    guest.send(json!({"type": "leave"})).await;
    assert_eq!(guest.closed().await, 1000);
    for c in [&mut doctor, &mut patient] {
        let left = c.until("participant_left").await;
        assert_eq!(left["reason"], "left");
    }
    tokio::time::timeout(STEP, doctor.alive()).await.unwrap();
}
