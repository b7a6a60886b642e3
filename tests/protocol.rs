//! The WebSocket protocol against the real binary: every close code of docs/protocol.md, error
//! frames that keep the connection open, returning within the grace period, resume tokens,
//! replacement.

use bedside_tests::{CLINIC_A, CLINIC_B, Client, Pair, TestServer, forge_token};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn claims(visit: &str, role: &str, sub: &str, exp_in: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"iss": "clinic-a", "sub": sub, "visit": visit, "role": role, "name": "N",
           "iat": now, "nbf": now, "exp": now + exp_in, "jti": uuid::Uuid::new_v4().to_string()})
}

/// Sends `join` with `frame` and expects an error code and then a close code.
async fn refused(server: &TestServer, frame: Value, code: &str, close: u16) {
    let mut c = Client::connect(server).await;
    c.send(frame.clone()).await;
    let err = c.expect("error").await;
    assert_eq!(err["code"], code, "{frame}");
    assert!(!err["message"].as_str().unwrap().is_empty());
    assert_eq!(c.closed().await, close, "{frame}");
}

#[tokio::test]
async fn bad_tokens_close_with_4001() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let visit = api.visit().await;
    let good = claims(&visit, "patient", "pt", 600);
    let mut expired = good.clone();
    expired["exp"] = json!(chrono::Utc::now().timestamp() - 60);
    expired["nbf"] = json!(chrono::Utc::now().timestamp() - 600);
    let mut other_tenant = good.clone();
    other_tenant["iss"] = json!("clinic-b");
    let none_alg = {
        use base64::Engine;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            e.encode(r#"{"alg":"none","kid":"clinic-a"}"#),
            e.encode(good.to_string())
        )
    };
    let cases = [
        ("garbage".to_owned(), "invalid_token"),
        (
            forge_token("not-the-secret-0123456789", "clinic-a", &good),
            "invalid_token",
        ),
        (
            forge_token(CLINIC_A.1, "no-such-kid", &good),
            "invalid_token",
        ),
        (
            forge_token(CLINIC_A.1, "clinic-a", &expired),
            "token_expired",
        ),
        (none_alg, "invalid_token"),
    ];
    for (token, code) in cases {
        refused(&server, json!({"type": "join", "token": token}), code, 4001).await;
    }
    // clinic-b signs a token for clinic-a's visit: answered exactly like an unknown visit,
    // so a token of one tenant cannot probe which visits another has.
    let mut unknown = other_tenant.clone();
    unknown["visit"] = json!(uuid::Uuid::new_v4().to_string());
    let mut answers = Vec::new();
    for claims in [&other_tenant, &unknown] {
        let token = forge_token(CLINIC_B.1, "clinic-b", claims);
        let mut c = Client::connect(&server).await;
        c.send(json!({"type": "join", "token": token})).await;
        let err = c.expect("error").await;
        answers.push((err, c.closed().await));
    }
    assert_eq!(
        answers[0], answers[1],
        "another tenant's visit reads as unknown"
    );
    assert_eq!(
        (answers[0].0["code"].as_str(), answers[0].1),
        (Some("visit_not_found"), 4004)
    );
    refused(
        &server,
        json!({"type": "join", "resume_token": "not.a.token"}),
        "invalid_token",
        4001,
    )
    .await;
    // The good token still works afterwards: nothing was disturbed.
    let (_, joined) = Client::join(&server, &forge_token(CLINIC_A.1, "clinic-a", &good)).await;
    assert_eq!(joined["role"], "patient");
}

#[tokio::test]
async fn unknown_and_ended_visits_close_with_4004() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let nowhere = claims(&uuid::Uuid::new_v4().to_string(), "doctor", "dr", 600);
    refused(
        &server,
        json!({"type": "join", "token": forge_token(CLINIC_A.1, "clinic-a", &nowhere)}),
        "visit_not_found",
        4004,
    )
    .await;
    let not_a_uuid = claims("visit-1", "doctor", "dr", 600);
    refused(
        &server,
        json!({"type": "join", "token": forge_token(CLINIC_A.1, "clinic-a", &not_a_uuid)}),
        "visit_not_found",
        4004,
    )
    .await;

    // Ended over the API while both are in: both are told, then closed with 4004.
    let mut pair = Pair::admitted(&server, &api).await;
    let (status, _) = api
        .call(
            Method::POST,
            &format!("/v1/visits/{}/end", pair.visit),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for c in [&mut pair.doctor, &mut pair.patient] {
        assert_eq!(c.expect("visit_ended").await["reason"], "ended_by_api");
        assert_eq!(c.closed().await, 4004);
    }
    let token = forge_token(
        CLINIC_A.1,
        "clinic-a",
        &claims(&pair.visit, "doctor", "dr-1", 600),
    );
    refused(
        &server,
        json!({"type": "join", "token": token}),
        "visit_ended",
        4004,
    )
    .await;
}

#[tokio::test]
async fn denied_and_removed_participants_close_with_4003() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let mut pair = Pair::admitted(&server, &api).await;

    // A second patient is denied from the waiting room, with the doctor's words.
    let (mut other, _) = Client::join(
        &server,
        &api.mint(&pair.visit, "patient", "pt-2", "Two").await,
    )
    .await;
    other.expect("waiting").await;
    pair.doctor.expect("lobby").await;
    pair.doctor.send(json!({"type": "deny", "participant_id": other.participant_id, "reason": "Wrong appointment"})).await;
    assert_eq!(other.expect("denied").await["reason"], "Wrong appointment");
    assert_eq!(other.closed().await, 4003);
    assert_eq!(pair.doctor.expect("lobby").await["waiting"], json!([]));

    // Coming back means waiting again.
    let (mut back, _) = Client::join(
        &server,
        &api.mint(&pair.visit, "patient", "pt-2", "Two").await,
    )
    .await;
    back.expect("waiting").await;
    pair.doctor.expect("lobby").await;

    // The doctor removes the admitted patient.
    pair.doctor
        .send(json!({"type": "remove", "participant_id": pair.patient.participant_id}))
        .await;
    assert_eq!(pair.patient.expect("denied").await["reason"], "removed");
    assert_eq!(pair.patient.closed().await, 4003);
    let left = pair.doctor.expect("participant_left").await;
    assert_eq!(
        (left["participant_id"].as_str(), left["reason"].as_str()),
        (Some(pair.patient.participant_id.as_str()), Some("removed"))
    );

    // The clinic's backend removes the waiting one by identity.
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/v1/visits/{}/participants/pt-2", pair.visit),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(back.expect("denied").await["reason"], "removed");
    assert_eq!(back.closed().await, 4003);

    let events = api.events(&pair.visit).await;
    let kinds: Vec<_> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(
        kinds.contains(&"denied") && kinds.iter().filter(|k| **k == "removed").count() == 2,
        "{kinds:?}"
    );
    let removed_by_api = events
        .iter()
        .find(|e| e["kind"] == "removed" && e["actor"] == "api:clinic-a")
        .unwrap();
    assert_eq!(removed_by_api["identity"], "pt-2");
    // The doctor's words stay out of the audit trail.
    assert!(
        !serde_json::to_string(&events)
            .unwrap()
            .contains("Wrong appointment")
    );
}

#[tokio::test]
async fn a_second_connection_replaces_the_first_with_4009() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let mut pair = Pair::admitted(&server, &api).await;
    let token = api.mint(&pair.visit, "patient", "pt-1", "Pat One").await;
    let (mut tab2, joined) = Client::join(&server, &token).await;
    assert_eq!(
        joined["participant_id"],
        pair.patient.participant_id.as_str(),
        "same participant"
    );
    tab2.expect("admitted").await;
    assert_eq!(pair.patient.closed().await, 4009);
    let update = pair.doctor.until("participant_updated").await;
    assert_eq!(update["participant"]["connected"], true);
    // The new connection is the one that talks.
    pair.doctor
        .send(json!({"type": "signal", "to": tab2.participant_id, "data": {"x": 1}}))
        .await;
    assert_eq!(tab2.expect("signal").await["data"], json!({"x": 1}));
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_connection_stays_open() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let visit = api.visit().await;

    // Before join: only join is accepted.
    let mut early = Client::connect(&server).await;
    early.send(json!({"type": "chat", "text": "hi"})).await;
    assert_eq!(early.expect("error").await["code"], "not_joined");
    early.send(json!({"type": "join"})).await;
    assert_eq!(early.expect("error").await["code"], "invalid_message");
    early.send(json!({"type": "ping"})).await;
    early.expect("pong").await;

    let (mut doctor, _) =
        Client::join(&server, &api.mint(&visit, "doctor", "dr", "Dr").await).await;
    doctor.expect("admitted").await;
    doctor.expect("lobby").await;
    let (mut patient, _) =
        Client::join(&server, &api.mint(&visit, "patient", "pt", "Pat").await).await;
    patient.expect("waiting").await;
    doctor.expect("lobby").await;

    let waiting_cases = [
        (
            json!({"type": "signal", "to": doctor.participant_id, "data": {"sdp": "x"}}),
            "not_admitted",
        ),
        (json!({"type": "chat", "text": "let me in"}), "not_admitted"),
        (
            json!({"type": "admit", "participant_id": patient.participant_id}),
            "forbidden",
        ),
        (json!({"type": "end_visit"}), "forbidden"),
        (json!({"type": "shout"}), "unknown_type"),
        (json!({"no_type": 1}), "invalid_message"),
        (
            json!({"type": "signal", "to": doctor.participant_id}),
            "invalid_message",
        ),
        (json!({"type": "join", "token": "again"}), "already_joined"),
    ];
    for (frame, code) in waiting_cases {
        patient.send(frame.clone()).await;
        assert_eq!(patient.expect("error").await["code"], code, "{frame}");
    }
    patient.send_text("{not json").await;
    assert_eq!(patient.expect("error").await["code"], "invalid_json");
    patient
        .send_message(Message::binary(vec![0u8, 159, 146, 150]))
        .await
        .unwrap();
    assert_eq!(
        patient.expect("error").await["code"],
        "binary_not_supported"
    );
    patient.alive().await;
    doctor.silent(Duration::from_millis(200)).await;

    let doctor_cases = [
        (
            json!({"type": "signal", "to": patient.participant_id, "data": {}}),
            "unknown_participant",
        ),
        (
            json!({"type": "signal", "to": "p_0000000000000001", "data": {}}),
            "unknown_participant",
        ),
        (
            json!({"type": "signal", "to": "nobody", "data": {}}),
            "invalid_message",
        ),
        (
            json!({"type": "admit", "participant_id": doctor.participant_id}),
            "not_waiting",
        ),
        (
            json!({"type": "remove", "participant_id": doctor.participant_id}),
            "invalid_target",
        ),
        (json!({"type": "chat", "text": "   "}), "invalid_chat"),
        (
            json!({"type": "chat", "text": "x".repeat(2001)}),
            "invalid_chat",
        ),
    ];
    for (frame, code) in doctor_cases {
        doctor.send(frame.clone()).await;
        assert_eq!(doctor.expect("error").await["code"], code, "{frame}");
    }
    doctor.alive().await;
    // And the visit works as before.
    doctor
        .send(json!({"type": "admit", "participant_id": patient.participant_id}))
        .await;
    patient.expect("admitted").await;
}

/// Unknown fields are ignored whatever their type: `role` and `name` mean something only
/// to `invite` (where another type is `invalid_message`), so a join or a chat that carries
/// them as numbers or objects is not refused for it.
#[tokio::test]
async fn role_and_name_of_any_type_are_ignored_outside_invite() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let visit = api.visit().await;
    let token = api.mint(&visit, "doctor", "dr", "Dr").await;
    let (mut doctor, _) = Client::try_join(
        &server.ws_url(),
        json!({"type": "join", "token": token, "role": 7, "name": {"first": "Ana"}}),
    )
    .await
    .expect("a join with odd extra fields is a join");
    doctor.expect("admitted").await;
    let token = api.mint(&visit, "patient", "pt", "Pat").await;
    let (mut patient, _) = Client::join(&server, &token).await;
    patient.expect("waiting").await;
    doctor
        .send(json!({"type": "admit", "participant_id": patient.participant_id}))
        .await;
    patient.expect("admitted").await;
    doctor
        .send(json!({"type": "chat", "text": "hello", "role": ["x"], "name": false}))
        .await;
    assert_eq!(patient.until("chat").await["text"], "hello");
    for (frame, code) in [
        (
            json!({"type": "invite", "role": "guest", "name": 7}),
            "invalid_message",
        ),
        (
            json!({"type": "invite", "role": {"guest": true}, "name": "Ana"}),
            "invalid_message",
        ),
    ] {
        doctor.send(frame.clone()).await;
        assert_eq!(doctor.until("error").await["code"], code, "{frame}");
    }
    doctor.alive().await;
}

#[tokio::test]
async fn a_socket_that_never_joins_is_closed_with_4008() {
    let server = TestServer::start().await;
    let mut c = Client::connect(&server).await;
    let started = std::time::Instant::now();
    assert_eq!(c.expect("error").await["code"], "join_timeout");
    assert_eq!(c.closed().await, 4008);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(12),
        "{waited:?}"
    );
}

#[tokio::test]
async fn returning_within_the_grace_period_keeps_the_admission() {
    let server = TestServer::start_with(&[("BEDSIDE_GRACE_SECONDS", "3")]).await;
    let api = server.api(CLINIC_A);
    let Pair {
        visit,
        mut doctor,
        patient,
    } = Pair::admitted(&server, &api).await;
    let patient_id = patient.participant_id.clone();
    let token = api.mint(&visit, "patient", "pt-1", "Pat One").await;

    // A network blip: the socket dies without a close frame.
    patient.drop_abruptly();
    let update = doctor.expect("participant_updated").await;
    assert_eq!(update["participant"]["connected"], false);
    let (mut back, joined) = Client::join(&server, &token).await;
    assert_eq!(joined["participant_id"], patient_id.as_str());
    back.expect("admitted").await;
    assert_eq!(
        doctor.expect("participant_updated").await["participant"]["connected"],
        true
    );

    // Gone longer than the grace period: the place is freed and the return means waiting.
    back.drop_abruptly();
    doctor.expect("participant_updated").await;
    let left = doctor.expect("participant_left").await;
    assert_eq!(left["reason"], "timed_out");
    let (mut late, joined) = Client::join(&server, &token).await;
    assert_ne!(joined["participant_id"], patient_id.as_str());
    late.expect("waiting").await;
    assert_eq!(
        doctor.expect("lobby").await["waiting"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn the_resume_token_outlives_the_join_token() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let visit = api.visit().await;
    let (mut doctor, _) =
        Client::join(&server, &api.mint(&visit, "doctor", "dr", "Dr").await).await;
    doctor.expect("admitted").await;
    doctor.expect("lobby").await;
    // A join token that dies in two seconds (plus the verifier's 10 s leeway).
    let short = forge_token(
        CLINIC_A.1,
        "clinic-a",
        &claims(&visit, "patient", "pt-short", 2),
    );
    let (mut patient, _) = Client::join(&server, &short).await;
    patient.expect("waiting").await;
    doctor.expect("lobby").await;
    doctor
        .send(json!({"type": "admit", "participant_id": patient.participant_id}))
        .await;
    patient.expect("admitted").await;
    let resume = patient.resume_token.clone();
    let id = patient.participant_id.clone();
    patient.drop_abruptly();
    doctor.until("participant_updated").await;

    tokio::time::sleep(Duration::from_secs(13)).await;
    refused(
        &server,
        json!({"type": "join", "token": short}),
        "token_expired",
        4001,
    )
    .await;
    let mut back = Client::connect(&server).await;
    back.send(json!({"type": "join", "token": short, "resume_token": resume}))
        .await;
    let joined = back.expect("joined").await;
    assert_eq!(joined["participant_id"], id.as_str());
    back.expect("admitted").await;
}

#[tokio::test]
async fn a_visit_warns_then_ends_at_its_expiry_and_its_links_die_with_it() {
    let server = TestServer::start_with(&[("BEDSIDE_EXPIRY_WARNING_SECS", "3")]).await;
    let api = server.api(CLINIC_A);
    let expires_at = chrono::Utc::now() + chrono::Duration::seconds(6);
    let visit = api
        .create_visit(json!({"expires_at": expires_at.to_rfc3339()}))
        .await;
    let id = visit["id"].as_str().unwrap().to_owned();
    let doctor_token = api.mint(&id, "doctor", "dr", "Dr").await;
    let patient_token = api.mint(&id, "patient", "pt", "Pat").await;
    let (mut doctor, _) = Client::join(&server, &doctor_token).await;
    doctor.expect("admitted").await;
    doctor.expect("lobby").await;
    let (mut patient, _) = Client::join(&server, &patient_token).await;
    patient.expect("waiting").await;
    doctor.expect("lobby").await;
    doctor
        .send(json!({"type": "admit", "participant_id": patient.participant_id}))
        .await;
    patient.expect("admitted").await;
    let resume = patient.resume_token.clone();

    // A warning some time before the end, to everyone, with the time it ends.
    for c in [&mut doctor, &mut patient] {
        let warning = c.until("visit_expiring").await;
        assert_eq!(warning["expires_at"], visit["expires_at"]);
    }
    let warned_at = chrono::Utc::now();
    assert!(
        expires_at - warned_at > chrono::Duration::seconds(1),
        "warned too late"
    );
    // Then the end, for everyone, with the reason.
    for c in [&mut doctor, &mut patient] {
        assert_eq!(c.until("visit_ended").await["reason"], "expired");
        assert_eq!(c.closed().await, 4004);
    }
    assert!(chrono::Utc::now() >= expires_at, "ended before its time");

    // Nothing opens it again: not the join links, not the resume token, not a new link.
    refused(
        &server,
        json!({"type": "join", "token": doctor_token}),
        "visit_ended",
        4004,
    )
    .await;
    refused(
        &server,
        json!({"type": "join", "resume_token": resume}),
        "visit_ended",
        4004,
    )
    .await;
    let (status, body) = api
        .call(
            Method::POST,
            &format!("/v1/visits/{id}/tokens"),
            Some(json!({"role": "patient", "identity": "x"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("visit_ended"))
    );
    let ended = api.get_visit(&id).await;
    assert_eq!(
        (ended["status"].as_str(), ended["ended_reason"].as_str()),
        (Some("ended"), Some("expired"))
    );
    let last = api.events(&id).await.last().cloned().unwrap();
    assert_eq!(
        (last["kind"].as_str(), last["detail"].as_str()),
        (Some("ended"), Some("expired"))
    );
}

#[tokio::test]
async fn full_and_not_yet_open_visits_refuse_joins_with_4003() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);

    // A visit for two: a doctor and a waiting patient fill it.
    let visit = api.create_visit(json!({"max_participants": 2})).await;
    let visit = visit["id"].as_str().unwrap();
    let (mut doctor, _) =
        Client::join(&server, &api.mint(visit, "doctor", "dr-1", "D").await).await;
    doctor.expect("admitted").await;
    let (mut patient, _) =
        Client::join(&server, &api.mint(visit, "patient", "pt-1", "P").await).await;
    patient.expect("waiting").await;
    let guest = api.mint(visit, "guest", "g-1", "G").await;
    refused(
        &server,
        json!({"type": "join", "token": guest}),
        "visit_full",
        4003,
    )
    .await;
    // Those inside did not notice.
    doctor.until("lobby").await;
    doctor.alive().await;
    patient.alive().await;

    // A visit that opens in an hour: links can be minted now, joins wait for the time.
    let opens = chrono::Utc::now() + chrono::TimeDelta::hours(1);
    let later = api
        .create_visit(json!({"not_before": opens.to_rfc3339()}))
        .await;
    let not_before = chrono::DateTime::parse_from_rfc3339(later["not_before"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert_eq!(not_before, opens.timestamp(), "{later}");
    let expires_at = chrono::DateTime::parse_from_rfc3339(later["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert_eq!(
        expires_at - not_before,
        12 * 3600,
        "12 hours after it opens"
    );
    let token = api
        .mint(later["id"].as_str().unwrap(), "doctor", "dr-1", "D")
        .await;
    refused(
        &server,
        json!({"type": "join", "token": token}),
        "visit_not_started",
        4003,
    )
    .await;
}

#[tokio::test]
async fn a_deny_without_words_says_denied() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let visit = api.visit().await;
    let (mut doctor, _) =
        Client::join(&server, &api.mint(&visit, "doctor", "dr-1", "D").await).await;
    doctor.expect("admitted").await;
    let (mut patient, _) =
        Client::join(&server, &api.mint(&visit, "patient", "pt-1", "P").await).await;
    patient.expect("waiting").await;
    doctor
        .send(json!({"type": "deny", "participant_id": patient.participant_id}))
        .await;
    assert_eq!(
        patient.expect("denied").await,
        json!({"type": "denied", "reason": "denied"})
    );
    assert_eq!(patient.closed().await, 4003);
}

#[tokio::test]
async fn a_signal_to_someone_reconnecting_says_participant_unavailable() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let mut pair = Pair::admitted(&server, &api).await;
    let patient = pair.patient.participant_id.clone();
    pair.patient.drop_abruptly();
    // The doctor hears nothing yet: the patient keeps the place for the grace period.
    pair.doctor.until("participant_updated").await;
    pair.doctor
        .send(json!({"type": "signal", "to": patient, "data": {"candidate": "x"}}))
        .await;
    let err = pair.doctor.until("error").await;
    assert_eq!(err["code"], "participant_unavailable", "{err}");
    pair.doctor.alive().await;
}

/// docs/protocol.md: nothing crosses visits or tenants, chat and signals alike, whatever ids a
/// participant learns.
#[tokio::test]
async fn chat_and_signals_stay_inside_their_visit_and_tenant() {
    let server = TestServer::start().await;
    let a = server.api(CLINIC_A);
    let b = server.api(CLINIC_B);
    let mut in_a = Pair::admitted(&server, &a).await;
    let mut in_b = Pair::admitted(&server, &b).await;

    // A's doctor names B's patient: an unknown participant, nothing delivered.
    in_a.doctor
        .send(json!({"type": "signal", "to": in_b.patient.participant_id, "data": {"sdp": "x"}}))
        .await;
    assert_eq!(
        in_a.doctor.expect("error").await["code"],
        "unknown_participant"
    );
    in_a.doctor
        .send(json!({"type": "chat", "text": "for visit A only"}))
        .await;
    assert_eq!(in_a.doctor.expect("chat").await["text"], "for visit A only");
    assert_eq!(
        in_a.patient.expect("chat").await["text"],
        "for visit A only"
    );
    in_b.doctor.silent(Duration::from_millis(500)).await;
    in_b.patient.silent(Duration::from_millis(100)).await;
}
