//! At any log level, `RUST_LOG=trace` included, a whole visit leaves no token, secret, SDP,
//! ICE candidate, chat text, display name or identity in the logs: only pseudonymous ids.

use bedside_tests::{CLINIC_A, Client, TestServer, forge_token};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn logs_of_a_whole_visit_hold_no_secrets_or_personal_data() {
    a_whole_visit_logged_at("info").await;
}

/// The WebSocket and HTTP libraries log every frame and request line at trace level; the
/// server clamps them whatever `RUST_LOG` says (crates/server/src/telemetry.rs).
#[tokio::test]
async fn nothing_personal_is_logged_at_trace_level_either() {
    let logs = a_whole_visit_logged_at("trace").await;
    // The filter did open up: Bedside's own debug events are there.
    assert!(logs.contains("DEBUG") || logs.contains("TRACE"), "{logs}");
}

/// Runs a whole visit (API calls, joins, a bad token, signals, chat, a resume, a removal,
/// the end) with `RUST_LOG=level`, checks the logs and the audit trail, returns the logs.
async fn a_whole_visit_logged_at(level: &str) -> String {
    let mut server = TestServer::start_with(&[("RUST_LOG", level)]).await;
    let api = server.api(CLINIC_A);
    let visit = api
        .create_visit(
            json!({"external_ref": "EXTREF-MARKER-991", "metadata": {"mrn": "MRN-MARKER-445"}}),
        )
        .await;
    let id = visit["id"].as_str().unwrap().to_owned();

    let doctor_token = api
        .mint(&id, "doctor", "IDENTITY-DR-MARKER", "Dr Zelda Quixote")
        .await;
    // Integrators may mint their own tokens, with whatever they put in the name.
    let now = chrono::Utc::now().timestamp();
    let patient_token = forge_token(
        CLINIC_A.1,
        "clinic-a",
        &json!({"iss": "clinic-a", "sub": "IDENTITY-PT-MARKER", "visit": id, "role": "patient",
                "name": "Ygritte\nINFO forged log line", "iat": now, "nbf": now, "exp": now + 600, "jti": "j"}),
    );
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
    doctor.expect("participant_joined").await;
    doctor.expect("lobby").await;

    let offer =
        json!({"type": "offer", "sdp": "v=0\r\no=- SDP-MARKER-0001 2 IN IP4 198.51.100.7\r\n"});
    let candidate = json!({"candidate": "candidate:CANDIDATE-MARKER 1 udp 2122260223 203.0.113.9 54321 typ host", "sdpMid": "0"});
    doctor
        .send(json!({"type": "signal", "to": patient.participant_id, "data": offer}))
        .await;
    patient.expect("signal").await;
    patient
        .send(json!({"type": "signal", "to": doctor.participant_id, "data": candidate}))
        .await;
    doctor.expect("signal").await;
    patient
        .send(json!({"type": "chat", "text": "CHAT-MARKER my chest hurts"}))
        .await;
    patient.expect("chat").await;
    doctor.expect("chat").await;
    // A guest link from the call: the name the doctor types and the token minted for it
    // (and the fresh identity it carries) stay out of the logs; the guest joins with it.
    doctor
        .send(json!({"type": "invite", "role": "guest", "name": "Wilhelmina GUESTNAME-MARKER"}))
        .await;
    let link = doctor.until("invite_link").await;
    let guest_token = link["token"].as_str().unwrap().to_owned();
    let guest_identity = bedside_tests::claims_of(&guest_token)["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut guest, _) = Client::join(&server, &guest_token).await;
    guest.expect("waiting").await;
    // Failures are logged too; they must not echo what was sent.
    let mut bad = Client::connect(&server).await;
    bad.send(json!({"type": "join", "token": "BADTOKEN-MARKER.x.y"}))
        .await;
    bad.expect("error").await;
    let resume = patient.resume_token.clone();
    patient.drop_abruptly();
    let mut back = Client::connect(&server).await;
    back.send(json!({"type": "join", "resume_token": resume}))
        .await;
    back.expect("joined").await;
    // The clinic revokes a guest's link by identity (it travels in the API path).
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/v1/visits/{id}/participants/IDENTITY-GUEST-MARKER"),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::NO_CONTENT);
    doctor.send(json!({"type": "end_visit"})).await;
    doctor.until("visit_ended").await;
    let (_, trail) = api
        .call(Method::GET, &format!("/v1/visits/{id}/events"), None)
        .await;
    assert!(server.terminate().await.success());

    // docs/security.md: the audit trail holds pseudonymous ids and times, never tokens, SDP or
    // candidates (nor what was said, nor the names people go by).
    let trail = trail.to_string();
    assert!(trail.contains(&doctor.participant_id), "{trail}");
    for needle in [
        doctor_token.as_str(),
        patient_token.as_str(),
        resume.as_str(),
        guest_token.as_str(),
        "SDP-MARKER",
        "CANDIDATE-MARKER",
        "CHAT-MARKER",
        "GUESTNAME-MARKER",
        "Zelda",
        "Ygritte",
    ] {
        assert!(
            !trail.contains(needle),
            "{needle:?} in the audit trail: {trail}"
        );
    }

    let logs = server.logs();
    let basic = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", CLINIC_A.0, CLINIC_A.1))
    };
    let forbidden = [
        basic.as_str(),
        doctor_token.as_str(),
        patient_token.as_str(),
        resume.as_str(),
        CLINIC_A.1,
        "Zelda",
        "Ygritte",
        "forged log line",
        "IDENTITY-DR-MARKER",
        "IDENTITY-PT-MARKER",
        "IDENTITY-GUEST-MARKER",
        "SDP-MARKER",
        "CANDIDATE-MARKER",
        "198.51.100.7",
        "203.0.113.9",
        "CHAT-MARKER",
        "GUESTNAME-MARKER",
        guest_token.as_str(),
        guest_identity.as_str(),
        "BADTOKEN-MARKER",
        "EXTREF-MARKER",
        "MRN-MARKER",
    ];
    for needle in forbidden {
        assert!(
            !logs.contains(needle),
            "{needle:?} appears in the logs:\n{logs}"
        );
    }
    // The logs do describe the visit, by its pseudonymous ids.
    assert!(logs.contains(&id), "visit id missing from logs:\n{logs}");
    assert!(
        logs.contains(&doctor.participant_id),
        "participant id missing from logs:\n{logs}"
    );
    assert!(logs.lines().all(|l| !l.starts_with("INFO forged")));
    logs
}
