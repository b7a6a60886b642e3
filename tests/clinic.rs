//! The clinic's day against the real binary (SQLite, or PostgreSQL with
//! `BEDSIDE_TEST_DATABASE=postgres`): consent before the knock, a provider's queue across
//! visits, where each waiting patient stands and how long they will likely wait, transfers.

use bedside_tests::{CLINIC_A, CLINIC_B, Client, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;

const TERMS: &str = "I agree to be seen by video.\nMy data stays with the clinic.";

/// Skips frames until a `waiting` frame that satisfies `pred` (the first `waiting` goes out
/// at once, the position follows when the provider's queue has been lined up).
async fn waiting_until(c: &mut Client, pred: impl Fn(&Value) -> bool) -> Value {
    loop {
        let v = c.until("waiting").await;
        if pred(&v) {
            return v;
        }
    }
}

fn at(position: u64) -> impl Fn(&Value) -> bool {
    move |v| v["position"] == position
}

async fn queue(api: &bedside_tests::Api, provider: &str) -> Vec<Value> {
    let (status, body) = api
        .call(
            Method::GET,
            &format!("/v1/providers/{provider}/queue"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["entries"].as_array().expect("entries").clone()
}

async fn tenant_events(api: &bedside_tests::Api) -> Vec<Value> {
    let (status, body) = api.call(Method::GET, "/v1/events?limit=1000", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"].as_array().expect("events").clone()
}

#[tokio::test]
async fn consent_comes_before_the_knock_and_is_recorded_with_the_hash_of_the_text() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let visit = api
        .create_visit(json!({"consent": {"version": "2026-11", "text": TERMS}}))
        .await;
    let id = visit["id"].as_str().unwrap();
    let sha256 = hex(&Sha256::digest(TERMS.as_bytes()));
    assert_eq!(
        visit["consent"],
        json!({"version": "2026-11", "text": TERMS, "sha256": sha256})
    );

    let (mut doctor, _) =
        Client::join(&server, &api.mint(id, "doctor", "dr-1", "Dr One").await).await;
    doctor.expect("admitted").await;
    assert_eq!(doctor.expect("lobby").await["waiting"], json!([]));

    let (mut patient, _) =
        Client::join(&server, &api.mint(id, "patient", "pt-1", "Sam").await).await;
    let asked = patient.expect("consent_required").await;
    assert_eq!(
        asked,
        json!({"type": "consent_required", "version": "2026-11", "text": TERMS})
    );
    // Not in the waiting room: the doctor hears nothing and cannot admit them.
    doctor.silent(Duration::from_millis(300)).await;
    doctor
        .send(json!({"type": "admit", "participant_id": patient.participant_id}))
        .await;
    assert_eq!(doctor.expect("error").await["code"], "unknown_participant");

    // A version other than the one shown records nothing.
    patient
        .send(json!({"type": "consent", "version": "2026-10"}))
        .await;
    assert_eq!(
        patient.expect("error").await["code"],
        "wrong_consent_version"
    );
    patient.send(json!({"type": "consent"})).await;
    assert_eq!(patient.expect("error").await["code"], "invalid_message");

    patient
        .send(json!({"type": "consent", "version": "2026-11"}))
        .await;
    patient.expect("waiting").await;
    let lobby = doctor.expect("lobby").await;
    let entry = &lobby["waiting"][0];
    assert_eq!(entry["participant_id"], patient.participant_id.as_str());
    assert_eq!(entry["consent"]["version"], "2026-11");
    assert!(entry["consent"]["at"].is_string());
    // Once is enough; the doctor is never asked.
    patient
        .send(json!({"type": "consent", "version": "2026-11"}))
        .await;
    assert_eq!(
        patient.expect("error").await["code"],
        "consent_not_required"
    );
    doctor
        .send(json!({"type": "consent", "version": "2026-11"}))
        .await;
    assert_eq!(doctor.expect("error").await["code"], "consent_not_required");

    // A second patient who refuses (leaves) never knocked.
    let (mut refuser, _) =
        Client::join(&server, &api.mint(id, "patient", "pt-2", "Alex").await).await;
    refuser.expect("consent_required").await;
    refuser.send(json!({"type": "leave"})).await;
    assert_eq!(refuser.closed().await, 1000);

    doctor
        .send(json!({"type": "admit", "participant_id": patient.participant_id}))
        .await;
    patient.expect("admitted").await;

    let trail = api.events(id).await;
    let consented: Vec<&Value> = trail.iter().filter(|e| e["kind"] == "consented").collect();
    assert_eq!(consented.len(), 1, "{trail:?}");
    assert_eq!(consented[0]["identity"], "pt-1");
    assert_eq!(
        consented[0]["detail"],
        format!("version=2026-11 sha256={sha256}")
    );
    // The chain still verifies with the new kind in it.
    let (status, check) = api
        .call(Method::GET, &format!("/v1/visits/{id}/events/verify"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(check["intact"], true, "{check}");

    let events = tenant_events(&api).await;
    let mine: Vec<&Value> = events.iter().filter(|e| e["visit_id"] == id).collect();
    let kinds: Vec<&str> = mine.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let consent_at = kinds
        .iter()
        .position(|k| *k == "participant.consented")
        .unwrap();
    assert_eq!(kinds[consent_at + 1], "participant.waiting");
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "participant.waiting")
            .count(),
        1,
        "the one who refused never knocked: {kinds:?}"
    );
    let data = &mine[consent_at]["data"];
    assert_eq!(data["version"], "2026-11");
    assert_eq!(data["sha256"], sha256);
    assert_eq!(data["identity"], "pt-1");

    // Bad consent texts are refused when the visit is created.
    for bad in [
        json!({"version": "v 1", "text": "x"}),
        json!({"version": "v1", "text": "   "}),
        json!({"version": "v1", "text": "x".repeat(8001)}),
    ] {
        let (status, body) = api
            .call(Method::POST, "/v1/visits", Some(json!({"consent": bad})))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
}

#[tokio::test]
async fn a_providers_queue_spans_visits_and_each_patient_hears_where_they_stand() {
    // With no history yet, a typical consultation is the configured 10 minutes.
    let server =
        TestServer::start_with(&[("BEDSIDE_CLINIC__DEFAULT_CONSULTATION_SECS", "600")]).await;
    let api = server.api(CLINIC_A);
    let mut visits = Vec::new();
    for n in 1..=3 {
        let v = api
            .create_visit(json!({"provider": "dr-lee", "external_ref": format!("appt-{n}")}))
            .await;
        assert_eq!(v["provider"], "dr-lee");
        visits.push(v["id"].as_str().unwrap().to_owned());
    }
    let mut patients = Vec::new();
    for (n, id) in visits.iter().enumerate() {
        let token = api
            .mint(id, "patient", &format!("pt-{n}"), &format!("Patient {n}"))
            .await;
        let (mut p, _) = Client::join(&server, &token).await;
        let standing = waiting_until(&mut p, at(n as u64 + 1)).await;
        // Nobody ahead sees no wait; each visit ahead counts one typical consultation.
        assert_eq!(standing["expected_wait_secs"], 600 * n as u64, "{standing}");
        patients.push(p);
    }
    let q = queue(&api, "dr-lee").await;
    assert_eq!(q.len(), 3);
    for (n, entry) in q.iter().enumerate() {
        assert_eq!(entry["position"], n as u64 + 1);
        assert_eq!(entry["visit_id"], visits[n].as_str());
        assert_eq!(entry["external_ref"], format!("appt-{}", n + 1));
        assert_eq!(entry["participant"]["name"], format!("Patient {n}"));
        assert_eq!(entry["participant"]["role"], "patient");
        assert!(entry["participant"]["since"].is_string());
    }
    // Providers are the tenant's own: another clinic's dr-lee has nobody waiting.
    assert!(queue(&server.api(CLINIC_B), "dr-lee").await.is_empty());

    // Dr Lee sees the first patient: the others move up and see the provider busy.
    let (mut lee, _) = Client::join(
        &server,
        &api.mint(&visits[0], "doctor", "dr-lee", "Dr Lee").await,
    )
    .await;
    lee.expect("admitted").await;
    lee.expect("lobby").await;
    lee.send(json!({"type": "admit", "participant_id": patients[0].participant_id}))
        .await;
    patients[0].until("admitted").await;
    let second = waiting_until(&mut patients[1], at(1)).await;
    assert_eq!(second["provider"]["presence"], "busy", "{second}");
    // What is left of the current consultation: at most the typical 10 minutes.
    let wait = second["expected_wait_secs"].as_u64().unwrap();
    assert!((540..=600).contains(&wait), "{second}");
    let third = waiting_until(&mut patients[2], at(2)).await;
    assert_eq!(third["expected_wait_secs"].as_u64().unwrap(), wait + 600);

    // The third visit moves to Dr Kim: nobody checks in again, and the patient is first in
    // Dr Kim's queue.
    let (status, moved) = api
        .call(
            Method::POST,
            &format!("/v1/visits/{}/transfer", visits[2]),
            Some(json!({"provider": "dr-kim"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["provider"], "dr-kim");
    let third = waiting_until(&mut patients[2], at(1)).await;
    assert_eq!(third["expected_wait_secs"], 0, "{third}");
    let lee_queue = queue(&api, "dr-lee").await;
    assert_eq!(lee_queue.len(), 1);
    assert_eq!(lee_queue[0]["visit_id"], visits[1].as_str());
    let kim_queue = queue(&api, "dr-kim").await;
    assert_eq!(kim_queue.len(), 1);
    assert_eq!(kim_queue[0]["visit_id"], visits[2].as_str());
    assert_eq!(kim_queue[0]["position"], 1);
    assert_eq!(api.get_visit(&visits[2]).await["provider"], "dr-kim");

    let trail = api.events(&visits[2]).await;
    let transferred = trail
        .iter()
        .find(|e| e["kind"] == "transferred")
        .expect("a transferred row");
    assert_eq!(transferred["identity"], "dr-kim");
    assert_eq!(transferred["detail"], "dr-lee");
    assert_eq!(transferred["actor"], "api:clinic-a");
    let events = tenant_events(&api).await;
    let event = events
        .iter()
        .find(|e| e["type"] == "visit.transferred")
        .expect("a visit.transferred event");
    assert_eq!(event["visit_id"], visits[2].as_str());
    assert_eq!(event["data"]["provider"], "dr-kim");
    assert_eq!(event["data"]["previous_provider"], "dr-lee");

    // Refusals change nothing: an ended visit, another clinic's visit, a bad provider.
    let (status, _) = api
        .call(Method::POST, &format!("/v1/visits/{}/end", visits[1]), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api
        .call(
            Method::POST,
            &format!("/v1/visits/{}/transfer", visits[1]),
            Some(json!({"provider": "dr-kim"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "visit_ended");
    let (status, body) = server
        .api(CLINIC_B)
        .call(
            Method::POST,
            &format!("/v1/visits/{}/transfer", visits[2]),
            Some(json!({"provider": "dr-b"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = api
        .call(
            Method::POST,
            &format!("/v1/visits/{}/transfer", visits[2]),
            Some(json!({"provider": ""})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(api.get_visit(&visits[2]).await["provider"], "dr-kim");
    // The ended visit's patient left Dr Lee's queue.
    assert!(queue(&api, "dr-lee").await.is_empty());
}

#[tokio::test]
async fn a_consultation_joins_the_providers_history_and_survives_a_restart() {
    // No default: no estimate until Dr Lee has a history.
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let first = api.create_visit(json!({"provider": "dr-lee"})).await;
    let first = first["id"].as_str().unwrap();
    let (mut p1, _) = Client::join(&server, &api.mint(first, "patient", "pt-1", "A").await).await;
    let standing = waiting_until(&mut p1, at(1)).await;
    assert!(standing.get("expected_wait_secs").is_none(), "{standing}");
    let (mut lee, _) = Client::join(
        &server,
        &api.mint(first, "doctor", "dr-lee", "Dr Lee").await,
    )
    .await;
    lee.expect("admitted").await;
    lee.send(json!({"type": "admit", "participant_id": p1.participant_id}))
        .await;
    p1.until("admitted").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    lee.send(json!({"type": "end_visit"})).await;
    assert_eq!(lee.closed().await, 4004);

    // A graceful stop flushes storage; the history is read back from it.
    let mut server = server;
    server.terminate().await;
    let server = server.restart().await;
    let api = server.api(CLINIC_A);
    let second = api.create_visit(json!({"provider": "dr-lee"})).await;
    let second = second["id"].as_str().unwrap();
    let (mut p2, _) = Client::join(&server, &api.mint(second, "patient", "pt-2", "B").await).await;
    let third = api.create_visit(json!({"provider": "dr-lee"})).await;
    let third = third["id"].as_str().unwrap();
    let (mut p3, _) = Client::join(&server, &api.mint(third, "patient", "pt-3", "C").await).await;
    waiting_until(&mut p2, at(1)).await;
    // One consultation of about a second, shown rounded up to a whole minute.
    let standing = waiting_until(&mut p3, at(2)).await;
    assert_eq!(standing["expected_wait_secs"], 60, "{standing}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn provider_token(api: &bedside_tests::Api, provider: &str, name: &str) -> String {
    let (status, body) = api
        .call(
            Method::POST,
            &format!("/v1/providers/{provider}/tokens"),
            Some(json!({"name": name})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(body["join_url"].as_str().unwrap().contains("#token="));
    body["token"].as_str().unwrap().to_owned()
}

/// Skips `queue` frames until one with `n` entries.
async fn queue_of(c: &mut Client, n: usize) -> Value {
    loop {
        let q = c.until("queue").await;
        if q["entries"].as_array().map(Vec::len) == Some(n) {
            return q;
        }
    }
}

#[tokio::test]
async fn a_providers_dashboard_runs_the_day() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let mut visits = Vec::new();
    let mut patients = Vec::new();
    for n in 0..3 {
        let v = api.create_visit(json!({"provider": "dr-lee"})).await;
        let id = v["id"].as_str().unwrap().to_owned();
        let token = api
            .mint(&id, "patient", &format!("pt-{n}"), &format!("Patient {n}"))
            .await;
        let (mut p, _) = Client::join(&server, &token).await;
        waiting_until(&mut p, at(n + 1)).await;
        visits.push(id);
        patients.push(p);
    }

    let lee_token = provider_token(&api, "dr-lee", "Dr Lee").await;
    let (mut desk, joined) = Client::join(&server, &lee_token).await;
    assert_eq!(
        joined,
        json!({"type": "joined", "role": "provider", "provider": "dr-lee", "name": "Dr Lee"})
    );
    // The first frame goes out at once; the desk's view of the provider follows.
    let q = loop {
        let q = queue_of(&mut desk, 3).await;
        if q["presence"] == "available" {
            break q;
        }
    };
    assert_eq!(q["chosen"], "available");
    let names: Vec<&str> = q["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["participant"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Patient 0", "Patient 1", "Patient 2"]);
    // The waiting room learns the provider's name and presence.
    let w = waiting_until(&mut patients[2], |v| v["provider"]["name"] == "Dr Lee").await;
    assert_eq!(w["provider"]["presence"], "available");

    desk.send(json!({"type": "presence", "status": "away"}))
        .await;
    waiting_until(&mut patients[0], |v| v["provider"]["presence"] == "away").await;
    desk.send(json!({"type": "presence", "status": "asleep"}))
        .await;
    assert_eq!(desk.until("error").await["code"], "invalid_message");
    desk.send(json!({"type": "presence", "status": "available"}))
        .await;

    // Messages: to everyone waiting, then to one visit.
    desk.send(json!({"type": "notify", "text": "Running ten minutes late."}))
        .await;
    for p in &mut patients {
        let m = p.until("provider_message").await;
        assert_eq!(m["text"], "Running ten minutes late.");
        assert!(m["at"].is_string());
    }
    desk.send(json!({"type": "notify", "visit_id": visits[1], "text": "You are next."}))
        .await;
    assert_eq!(
        patients[1].until("provider_message").await["text"],
        "You are next."
    );
    desk.send(json!({"type": "notify", "text": "x".repeat(1001)}))
        .await;
    assert_eq!(desk.until("error").await["code"], "invalid_text");

    // Refusals: a visit's frame here, another provider's or clinic's visit.
    desk.send(json!({"type": "chat", "text": "hi"})).await;
    assert_eq!(desk.until("error").await["code"], "not_in_visit");
    let kims = api.create_visit(json!({"provider": "dr-kim"})).await;
    desk.send(json!({"type": "take", "visit_id": kims["id"]}))
        .await;
    assert_eq!(desk.until("error").await["code"], "not_your_visit");
    let theirs = server
        .api(CLINIC_B)
        .create_visit(json!({"provider": "dr-lee"}))
        .await;
    desk.send(json!({"type": "take", "visit_id": theirs["id"]}))
        .await;
    assert_eq!(desk.until("error").await["code"], "visit_not_found");
    desk.send(json!({"type": "notify", "visit_id": kims["id"], "text": "hello"}))
        .await;
    assert_eq!(desk.until("error").await["code"], "not_your_visit");
    // A provider's frame from a visit's socket.
    patients[0]
        .send(json!({"type": "presence", "status": "busy"}))
        .await;
    assert_eq!(patients[0].until("error").await["code"], "not_provider");

    // "See patient": take, join the visit with the token, admit.
    desk.send(json!({"type": "take", "visit_id": visits[0]}))
        .await;
    let taken = desk.until("visit_token").await;
    assert_eq!(taken["visit_id"], visits[0].as_str());
    let (mut lee, joined) = Client::join(&server, taken["token"].as_str().unwrap()).await;
    assert_eq!(joined["role"], "doctor");
    lee.expect("admitted").await;
    lee.send(json!({"type": "admit", "participant_id": patients[0].participant_id}))
        .await;
    patients[0].until("admitted").await;
    let q = loop {
        let q = queue_of(&mut desk, 2).await;
        if q["presence"] == "busy" {
            break q;
        }
    };
    assert_eq!(q["entries"][0]["visit_id"], visits[1].as_str());
    assert_eq!(q["chosen"], "available");
    waiting_until(&mut patients[1], |v| {
        v["position"] == 1 && v["provider"]["presence"] == "busy"
    })
    .await;
    let trail = api.events(&visits[0]).await;
    let row = trail.iter().find(|e| e["kind"] == "taken").expect("taken");
    assert_eq!(row["identity"], "dr-lee");
    assert_eq!(row["role"], "doctor");

    // Transfer: Dr Kim's dashboard shows the patient, Dr Lee's no longer does.
    let (mut kim, _) = Client::join(&server, &provider_token(&api, "dr-kim", "Dr Kim").await).await;
    queue_of(&mut kim, 0).await;
    let (status, _) = api
        .call(
            Method::POST,
            &format!("/v1/visits/{}/transfer", visits[2]),
            Some(json!({"provider": "dr-kim"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let q = queue_of(&mut kim, 1).await;
    assert_eq!(q["entries"][0]["participant"]["name"], "Patient 2");
    queue_of(&mut desk, 1).await;

    // A second dashboard of the same provider replaces the first.
    let (mut again, _) = Client::join(&server, &lee_token).await;
    again.until("queue").await;
    assert_eq!(desk.closed().await, 4009);

    // An expired provider token is refused as expired.
    let now = chrono::Utc::now().timestamp();
    let expired = bedside_tests::forge_token(
        CLINIC_A.1,
        CLINIC_A.0,
        &json!({"iss": CLINIC_A.0, "sub": "dr-lee", "provider": "dr-lee", "role": "provider",
                "name": "", "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600, "jti": "x"}),
    );
    let mut c = Client::connect(&server).await;
    c.send(json!({"type": "join", "token": expired})).await;
    assert_eq!(c.expect("error").await["code"], "token_expired");
    assert_eq!(c.closed().await, 4001);
}

/// The `invited` rows of a visit's trail.
async fn invited_rows(api: &bedside_tests::Api, visit: &str) -> Vec<Value> {
    api.events(visit)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "invited")
        .collect()
}

#[tokio::test]
async fn a_doctor_invites_a_guest_from_the_call_and_the_guest_still_waits() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let id = api.visit().await;
    let (mut doctor, _) =
        Client::join(&server, &api.mint(&id, "doctor", "dr-1", "Dr One").await).await;
    doctor.expect("admitted").await;
    doctor.expect("lobby").await;

    doctor
        .send(json!({"type": "invite", "role": "guest", "name": "  Ana (interpreter) "}))
        .await;
    let link = doctor.until("invite_link").await;
    let token = link["token"].as_str().expect("token");
    assert_eq!(link["join_url"], format!("{}/#token={token}", server.base));
    assert_eq!(link["name"], "Ana (interpreter)");
    let claims = bedside_tests::claims_of(token);
    assert_eq!(claims["role"], "guest");
    assert_eq!(claims["visit"], id.as_str());
    assert_eq!(claims["name"], "Ana (interpreter)");
    assert_eq!(claims["iss"], CLINIC_A.0, "signed with the tenant's key");
    let identity = claims["sub"].as_str().expect("sub");
    assert!(identity.starts_with("invite:"), "{identity}");
    // INVITE_TTL: two hours, the visit lasting twelve.
    let lifetime = claims["exp"].as_i64().unwrap() - claims["nbf"].as_i64().unwrap();
    assert_eq!(lifetime, 2 * 3600);
    let expires_at = chrono::DateTime::parse_from_rfc3339(link["expires_at"].as_str().unwrap())
        .expect("expires_at");
    assert_eq!(expires_at.timestamp(), claims["exp"].as_i64().unwrap());

    // The guest knocks like anyone: the doctor admits them.
    let (mut guest, joined) = Client::join(&server, token).await;
    assert_eq!(joined["role"], "guest");
    guest.expect("waiting").await;
    let lobby = doctor.until("lobby").await;
    assert_eq!(
        lobby["waiting"][0]["participant_id"],
        guest.participant_id.as_str()
    );
    assert_eq!(lobby["waiting"][0]["name"], "Ana (interpreter)");
    doctor
        .send(json!({"type": "admit", "participant_id": guest.participant_id}))
        .await;
    guest.until("admitted").await;

    // Recorded in the chain: who asked, for which identity, and the token's id, which the
    // guest's `joined` row carries too. Never the token or the name.
    let events = api.events(&id).await;
    let invited = invited_rows(&api, &id).await;
    assert_eq!(invited.len(), 1, "{events:?}");
    assert_eq!(invited[0]["actor"], doctor.participant_id.as_str());
    assert_eq!(invited[0]["identity"], identity);
    assert_eq!(invited[0]["role"], "guest");
    assert_eq!(invited[0]["detail"], claims["jti"]);
    let joined_row = events
        .iter()
        .find(|e| e["kind"] == "joined" && e["identity"] == identity)
        .expect("the guest's joined row");
    assert_eq!(joined_row["detail"], claims["jti"]);
    let trail = serde_json::to_string(&events).unwrap();
    assert!(!trail.contains(token) && !trail.contains("Ana"), "{trail}");
    let (status, verified) = api
        .call(Method::GET, &format!("/v1/visits/{id}/events/verify"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(verified["intact"], true, "{verified}");
    // Nothing of it in the logs either.
    let logs = server.logs();
    assert!(
        !logs.contains(token) && !logs.contains("Ana"),
        "a token or name was logged"
    );
}

#[tokio::test]
async fn an_invite_is_refused_unless_an_admitted_doctor_asks_for_a_named_guest() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let id = api.visit().await;
    let (mut doctor, _) =
        Client::join(&server, &api.mint(&id, "doctor", "dr-1", "Dr One").await).await;
    doctor.expect("admitted").await;
    let (mut patient, _) =
        Client::join(&server, &api.mint(&id, "patient", "pt-1", "Sam").await).await;
    patient.expect("waiting").await;

    patient
        .send(json!({"type": "invite", "role": "guest", "name": "Ana"}))
        .await;
    assert_eq!(patient.until("error").await["code"], "forbidden");
    let long = "x".repeat(101);
    let cases = [
        (
            json!({"type": "invite", "role": "doctor", "name": "Ana"}),
            "invalid_role",
        ),
        (
            json!({"type": "invite", "role": "patient", "name": "Ana"}),
            "invalid_role",
        ),
        (
            json!({"type": "invite", "role": "admin", "name": "Ana"}),
            "invalid_role",
        ),
        (
            json!({"type": "invite", "role": "guest", "name": ""}),
            "invalid_name",
        ),
        (
            json!({"type": "invite", "role": "guest", "name": "   "}),
            "invalid_name",
        ),
        (
            json!({"type": "invite", "role": "guest", "name": "Ana\nBob"}),
            "invalid_name",
        ),
        (
            json!({"type": "invite", "role": "guest", "name": long}),
            "invalid_name",
        ),
        (
            json!({"type": "invite", "role": "guest"}),
            "invalid_message",
        ),
        (json!({"type": "invite", "name": "Ana"}), "invalid_message"),
        (
            json!({"type": "invite", "role": "guest", "name": 7}),
            "invalid_message",
        ),
    ];
    for (frame, code) in cases {
        doctor.send(frame.clone()).await;
        assert_eq!(doctor.until("error").await["code"], code, "{frame}");
    }
    // Nothing was minted or recorded, and the doctor is still in the visit.
    assert!(invited_rows(&api, &id).await.is_empty());
    doctor.alive().await;

    // A provider's dashboard is in no visit.
    let provider = provider_token(&api, "dr-who", "Dr Who").await;
    let (mut board, _) = Client::join(&server, &provider).await;
    board
        .send(json!({"type": "invite", "role": "guest", "name": "Ana"}))
        .await;
    assert_eq!(board.until("error").await["code"], "not_in_visit");
}

#[tokio::test]
async fn an_ended_visit_hands_out_no_guest_link() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let expires = chrono::Utc::now() + chrono::TimeDelta::seconds(3);
    let visit = api
        .create_visit(json!({"expires_at": expires.to_rfc3339()}))
        .await;
    let id = visit["id"].as_str().unwrap();
    let (mut doctor, _) =
        Client::join(&server, &api.mint(id, "doctor", "dr-1", "Dr One").await).await;
    doctor.expect("admitted").await;
    // Half a second before the end, the link lives only until the visit's end.
    let before = expires - chrono::TimeDelta::milliseconds(1500) - chrono::Utc::now();
    tokio::time::sleep(before.to_std().unwrap_or_default()).await;
    doctor
        .send(json!({"type": "invite", "role": "guest", "name": "Ana"}))
        .await;
    let link = doctor.until("invite_link").await;
    let claims = bedside_tests::claims_of(link["token"].as_str().unwrap());
    assert_eq!(claims["exp"].as_i64().unwrap(), expires.timestamp());
    // Past the end: either the refusal (`visit_ended`) or the end itself arrives first; a
    // link never does.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    doctor
        .send(json!({"type": "invite", "role": "guest", "name": "Ana"}))
        .await;
    loop {
        let frame = match tokio::time::timeout(bedside_tests::STEP, doctor.recv_text()).await {
            Ok(text) => serde_json::from_str::<Value>(&text).unwrap(),
            Err(_) => panic!("neither a refusal nor the end arrived"),
        };
        assert_ne!(frame["type"], "invite_link", "{frame}");
        if frame["type"] == "error" {
            assert_eq!(frame["code"], "visit_ended");
            break;
        }
        if frame["type"] == "visit_ended" {
            assert_eq!(doctor.closed().await, 4004);
            break;
        }
    }
    assert_eq!(invited_rows(&api, id).await.len(), 1);
}

#[tokio::test]
async fn invites_count_against_the_frame_rate_limit() {
    let server = TestServer::start_with(&[
        ("BEDSIDE_WS__RATE_PER_SECOND", "5"),
        ("BEDSIDE_WS__RATE_BURST", "10"),
    ])
    .await;
    let api = server.api(CLINIC_A);
    let id = api.visit().await;
    let (mut doctor, _) =
        Client::join(&server, &api.mint(&id, "doctor", "dr-1", "Dr One").await).await;
    let frame = json!({"type": "invite", "role": "guest", "name": "Ana"}).to_string();
    for _ in 0..40 {
        // The server may close before the last ones are written.
        let _ = doctor
            .send_message(tokio_tungstenite::tungstenite::Message::text(frame.clone()))
            .await;
    }
    assert_eq!(doctor.closed().await, 4008);
    let minted = invited_rows(&api, &id).await.len();
    assert!((1..=12).contains(&minted), "{minted} links minted");
}

/// The clinic takes a guest link back like any other: by the identity its `invited` row
/// names, with `DELETE .../participants/{identity}`.
#[tokio::test]
async fn the_clinic_can_take_a_guest_link_from_the_call_back() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let id = api.visit().await;
    let (mut doctor, _) =
        Client::join(&server, &api.mint(&id, "doctor", "dr-1", "Dr One").await).await;
    doctor.expect("admitted").await;
    doctor
        .send(json!({"type": "invite", "role": "guest", "name": "Ana"}))
        .await;
    let link = doctor.until("invite_link").await;
    let token = link["token"].as_str().unwrap();
    let invited = invited_rows(&api, &id).await;
    let identity = invited[0]["identity"].as_str().unwrap();
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/v1/visits/{id}/participants/{identity}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let mut c = Client::connect(&server).await;
    c.send(json!({"type": "join", "token": token})).await;
    assert_eq!(c.expect("error").await["code"], "access_revoked");
    assert_eq!(c.closed().await, 4003);
}

/// Skips `queue` frames until one whose entries satisfy `pred`.
async fn queue_where(c: &mut Client, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    loop {
        let q = c.until("queue").await;
        let entries = q["entries"].as_array().expect("entries").clone();
        if pred(&entries) {
            return entries;
        }
    }
}

#[tokio::test]
async fn queue_entries_carry_the_patients_pre_call_check() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let v = api.create_visit(json!({"provider": "dr-lee"})).await;
    let id = v["id"].as_str().unwrap();
    let (mut desk, _) =
        Client::join(&server, &provider_token(&api, "dr-lee", "Dr Lee").await).await;
    let (mut p, _) = Client::join(&server, &api.mint(id, "patient", "pt-1", "Sam").await).await;
    waiting_until(&mut p, at(1)).await;
    // Before the check, no `precheck` field at all.
    let entries = queue_where(&mut desk, |e| e.len() == 1).await;
    assert!(entries[0].get("precheck").is_none(), "{entries:?}");
    assert!(queue(&api, "dr-lee").await[0].get("precheck").is_none());

    p.send(
        json!({"type": "precheck", "camera": false, "microphone": true, "network": "relay",
                  "turn": {"udp": false, "tls": true}}),
    )
    .await;
    let entries = queue_where(&mut desk, |e| e.len() == 1 && e[0]["precheck"].is_object()).await;
    // The same representation as doctors' `lobby` entries.
    let check = &entries[0]["precheck"];
    assert_eq!(check["camera"], false);
    assert_eq!(check["microphone"], true);
    assert_eq!(check["network"], "relay");
    assert_eq!(check["turn"], json!({"udp": false, "tls": true}));
    assert!(check["at"].is_string());
    let rest = queue(&api, "dr-lee").await;
    assert_eq!(&rest[0]["precheck"], check);
    // A bad check changes nothing.
    p.send(json!({"type": "precheck", "camera": "yes", "microphone": true, "network": "direct"}))
        .await;
    assert_eq!(p.until("error").await["code"], "invalid_precheck");
    assert_eq!(&queue(&api, "dr-lee").await[0]["precheck"], check);
}

#[tokio::test]
async fn take_is_refused_where_the_providers_identity_is_blocked() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let blocked = api.create_visit(json!({"provider": "dr-lee"})).await;
    let blocked = blocked["id"].as_str().unwrap().to_owned();
    let open = api.create_visit(json!({"provider": "dr-lee"})).await;
    let open = open["id"].as_str().unwrap().to_owned();
    // Dr Lee was in the visit once, and the clinic removed them.
    let (mut lee, _) = Client::join(
        &server,
        &api.mint(&blocked, "doctor", "dr-lee", "Dr Lee").await,
    )
    .await;
    lee.expect("admitted").await;
    let (status, _) = api
        .call(
            Method::DELETE,
            &format!("/v1/visits/{blocked}/participants/dr-lee"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(lee.closed().await, 4003);

    let (mut desk, _) =
        Client::join(&server, &provider_token(&api, "dr-lee", "Dr Lee").await).await;
    desk.send(json!({"type": "take", "visit_id": blocked}))
        .await;
    let refused = desk.until("error").await;
    assert_eq!(refused["code"], "access_revoked", "{refused}");
    // Nothing was recorded, and the dashboard stays open: another visit can be taken.
    let trail = api.events(&blocked).await;
    assert!(!trail.iter().any(|e| e["kind"] == "taken"), "{trail:?}");
    desk.send(json!({"type": "take", "visit_id": open})).await;
    assert_eq!(desk.until("visit_token").await["visit_id"], open.as_str());
    // The clinic lets Dr Lee back with a link of its own; `take` still does not.
    let back = api.mint(&blocked, "doctor", "dr-lee", "Dr Lee").await;
    let (mut lee, _) = Client::join(&server, &back).await;
    lee.expect("admitted").await;
    desk.send(json!({"type": "take", "visit_id": blocked}))
        .await;
    assert_eq!(desk.until("error").await["code"], "access_revoked");
}
