//! Restarts: graceful (SIGTERM) and not (`kill -9`), on the same SQLite file.

use bedside_tests::{CLINIC_A, Client, Pair, TestServer};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn visits_and_their_audit_trail_survive_sigterm_and_kill_9() {
    let mut server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let first = api
        .create_visit(json!({"external_ref": "before-sigterm"}))
        .await;
    let status = server.terminate().await;
    assert!(status.success(), "a SIGTERM exits 0, got {status:?}");
    assert!(server.logs().contains("stopped"));

    let mut server = server.restart().await;
    let api = server.api(CLINIC_A);
    assert_eq!(
        api.get_visit(first["id"].as_str().unwrap()).await["external_ref"],
        "before-sigterm"
    );
    let second = api
        .create_visit(json!({"external_ref": "before-kill"}))
        .await;
    let ended = api.visit().await;
    api.call(Method::POST, &format!("/v1/visits/{ended}/end"), None)
        .await;
    server.kill9().await;

    let server = server.restart().await;
    let api = server.api(CLINIC_A);
    for (visit, status) in [(&first, "open"), (&second, "open")] {
        let id = visit["id"].as_str().unwrap();
        let back = api.get_visit(id).await;
        assert_eq!(back["status"], status);
        assert_eq!(back["created_at"], visit["created_at"]);
        assert_eq!(back["expires_at"], visit["expires_at"]);
    }
    let back = api.get_visit(&ended).await;
    assert_eq!(
        (back["status"].as_str(), back["ended_reason"].as_str()),
        (Some("ended"), Some("ended_by_api"))
    );
    let kinds: Vec<_> = api
        .events(&ended)
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["created", "ended"]);
    let (_, list) = api.call(Method::GET, "/v1/visits", None).await;
    assert_eq!(list["visits"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn sigterm_tells_clients_to_reconnect_and_they_keep_their_places() {
    let mut server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let Pair {
        visit,
        mut doctor,
        mut patient,
    } = Pair::admitted(&server, &api).await;
    let patient_id = patient.participant_id.clone();
    let resume = patient.resume_token.clone();

    let stopping = tokio::spawn(async move {
        let status = server.terminate().await;
        (server, status)
    });
    assert_eq!(doctor.closed().await, 1001);
    assert_eq!(patient.closed().await, 1001);
    let (server, status) = stopping.await.unwrap();
    assert!(status.success());

    let server = server.restart().await;
    let mut back = Client::connect(&server).await;
    back.send(json!({"type": "join", "resume_token": resume}))
        .await;
    assert_eq!(
        back.expect("joined").await["participant_id"],
        patient_id.as_str()
    );
    let admitted = back.expect("admitted").await;
    // The doctor has not come back yet: shown as reconnecting.
    assert_eq!(admitted["participants"][0]["connected"], false);
    let api = server.api(CLINIC_A);
    let (mut doctor, _) =
        Client::join(&server, &api.mint(&visit, "doctor", "dr-1", "Dr One").await).await;
    doctor.expect("admitted").await;
    back.send(json!({"type": "signal", "to": doctor.participant_id, "data": {"after": "restart"}}))
        .await;
    assert_eq!(
        doctor.until("signal").await["data"],
        json!({"after": "restart"})
    );
}

#[tokio::test]
async fn after_kill_9_admissions_hold_for_one_grace_period() {
    let mut server = TestServer::start_with(&[("BEDSIDE_GRACE_SECONDS", "4")]).await;
    let api = server.api(CLINIC_A);
    let pair = Pair::admitted(&server, &api).await;
    let early = api.mint(&pair.visit, "guest", "guest-1", "Early").await;
    let (mut guest, _) = Client::join(&server, &early).await;
    guest.expect("waiting").await;
    // What the API reads is durable: the admission is on disk.
    let kinds: Vec<_> = api
        .events(&pair.visit)
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert!(kinds.contains(&"admitted".to_owned()));
    let patient_id = pair.patient.participant_id.clone();
    server.kill9().await;

    let server = server.restart().await;
    let api = server.api(CLINIC_A);
    let token = api.mint(&pair.visit, "patient", "pt-1", "Pat One").await;
    let (mut back, joined) = Client::join(&server, &token).await;
    assert_eq!(joined["participant_id"], patient_id.as_str());
    back.expect("admitted").await;
    // The guest was waiting, and still is.
    let (mut guest, _) = Client::join(&server, &early).await;
    guest.expect("waiting").await;

    // The doctor does not come back in time: their place is gone, but the visit is not.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let left = back.until("participant_left").await;
    assert_eq!(left["reason"], "timed_out");
    assert_eq!(api.get_visit(&pair.visit).await["status"], "active");
}

/// Ctrl-C stops Bedside the way SIGTERM does: clients told to reconnect, exit 0, and what
/// happened is on disk for the next start.
#[tokio::test]
async fn ctrl_c_stops_gracefully_like_sigterm() {
    let mut server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let Pair {
        visit,
        mut doctor,
        mut patient,
    } = Pair::admitted(&server, &api).await;
    let stopping = tokio::spawn(async move {
        let status = server.interrupt().await;
        (server, status)
    });
    assert_eq!(doctor.closed().await, 1001);
    assert_eq!(patient.closed().await, 1001);
    let (server, status) = stopping.await.unwrap();
    assert!(status.success(), "{status:?}");
    assert!(server.logs().contains("stopped"), "{}", server.logs());
    let server = server.restart().await;
    let kinds: Vec<_> = server
        .api(CLINIC_A)
        .events(&visit)
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("?").to_owned())
        .collect();
    assert!(kinds.iter().any(|k| k == "admitted"), "{kinds:?}");
}
