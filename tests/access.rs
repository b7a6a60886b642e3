//! Access the clinic can take back (docs/security.md, "Revocation"), against the real
//! binary: a removal or a denial blocks that identity in that visit, so the link and the
//! resume token it held are refused from then on (after restarts too) while a link the
//! clinic mints afterwards works; a resume token reopens only a place still held; only
//! doctors see identities; the audit trail names the credential of each join.
//!
//! Runs on SQLite, and on PostgreSQL with `BEDSIDE_TEST_DATABASE=postgres`.

use bedside_tests::{CLINIC_A, Client, Pair, TestServer, claims_of};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

/// Sends `join` with `frame` on a new connection: the `error` code it got and the close code.
async fn refusal(url: &str, frame: Value) -> (String, u16) {
    let mut c = Client::connect_url(url, None).await.expect("connect");
    c.send(frame).await;
    let err = c.expect("error").await;
    let code = err["code"].as_str().expect("code").to_owned();
    (code, c.closed().await)
}

fn with_token(token: &str) -> Value {
    json!({"type": "join", "token": token})
}

fn with_resume(resume_token: &str) -> Value {
    json!({"type": "join", "resume_token": resume_token})
}

const REVOKED: (&str, u16) = ("access_revoked", 4003);

fn revoked(got: (String, u16)) {
    assert_eq!((got.0.as_str(), got.1), REVOKED);
}

async fn delete(server: &TestServer, visit: &str, identity: &str) -> StatusCode {
    server
        .api(CLINIC_A)
        .call(
            Method::DELETE,
            &format!("/v1/visits/{visit}/participants/{identity}"),
            None,
        )
        .await
        .0
}

#[tokio::test]
async fn a_removed_patient_stays_out_across_rejoin_resume_and_restart_until_a_new_link() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let visit = api.visit().await;
    let doctor_link = api.mint(&visit, "doctor", "dr-1", "Dr One").await;
    let link = api.mint(&visit, "patient", "pt-1", "Pat One").await;
    let (mut doctor, _) = Client::join(&server, &doctor_link).await;
    doctor.expect("admitted").await;
    doctor.expect("lobby").await;
    let (mut patient, _) = Client::join(&server, &link).await;
    patient.expect("waiting").await;
    doctor.expect("lobby").await;
    doctor
        .send(json!({"type": "admit", "participant_id": patient.participant_id}))
        .await;
    patient.expect("admitted").await;
    doctor.expect("participant_joined").await;
    doctor.expect("lobby").await;

    doctor
        .send(json!({"type": "remove", "participant_id": patient.participant_id}))
        .await;
    assert_eq!(patient.expect("denied").await["reason"], "removed");
    assert_eq!(patient.closed().await, 4003);
    doctor.expect("participant_left").await;

    // The link, again and again, and the resume token from its first join: refused.
    let url = server.ws_url();
    for _ in 0..3 {
        revoked(refusal(&url, with_token(&link)).await);
    }
    revoked(refusal(&url, with_resume(&patient.resume_token)).await);
    // Both at once: neither is good.
    revoked(
        refusal(
            &url,
            json!({"type": "join", "token": link, "resume_token": patient.resume_token}),
        )
        .await,
    );
    // The doctor never heard of any of it: nobody knocked.
    doctor.silent(Duration::from_millis(300)).await;

    // After a restart, the block holds.
    let server = server.restart().await;
    let url = server.ws_url();
    revoked(refusal(&url, with_token(&link)).await);
    revoked(refusal(&url, with_resume(&patient.resume_token)).await);

    // The clinic decides to let them back: a link minted now works (right after the block,
    // within its second too), and the old one stays refused.
    let api = server.api(CLINIC_A);
    let new_link = api.mint(&visit, "patient", "pt-1", "Pat One").await;
    assert!(
        claims_of(&new_link)["iat"].as_i64() > claims_of(&link)["iat"].as_i64(),
        "minted after the block"
    );
    let (mut back, joined) = Client::join(&server, &new_link).await;
    assert_ne!(joined["participant_id"], patient.participant_id.as_str());
    back.expect("waiting").await;
    revoked(refusal(&url, with_token(&link)).await);
    back.alive().await;

    // The trail: the removal, and no join for any refused attempt.
    let events = api.events(&visit).await;
    let joins = events
        .iter()
        .filter(|e| e["kind"] == "joined" && e["identity"] == "pt-1")
        .count();
    assert_eq!(joins, 2, "the first join and the one with the new link");
    assert!(events.iter().any(|e| e["kind"] == "removed"));
}

#[tokio::test]
async fn a_denied_patient_cannot_knock_again_with_the_same_link_or_resume_token() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let visit = api.visit().await;
    let (mut doctor, _) =
        Client::join(&server, &api.mint(&visit, "doctor", "dr-1", "Dr").await).await;
    doctor.expect("admitted").await;
    doctor.expect("lobby").await;
    let link = api.mint(&visit, "patient", "pt-1", "Pat").await;
    let (mut patient, _) = Client::join(&server, &link).await;
    patient.expect("waiting").await;
    doctor.expect("lobby").await;
    doctor
        .send(json!({"type": "deny", "participant_id": patient.participant_id}))
        .await;
    patient.expect("denied").await;
    assert_eq!(patient.closed().await, 4003);
    doctor.expect("lobby").await;

    let url = server.ws_url();
    for _ in 0..5 {
        revoked(refusal(&url, with_token(&link)).await);
        revoked(refusal(&url, with_resume(&patient.resume_token)).await);
    }
    // No knock reached the doctor's waiting room.
    doctor.silent(Duration::from_millis(300)).await;
    let denied = api
        .events(&visit)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "denied")
        .count();
    assert_eq!(denied, 1);
}

#[tokio::test]
async fn a_doctor_removed_by_the_clinic_is_out_like_anyone() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let visit = api.visit().await;
    let doctor_link = api.mint(&visit, "doctor", "dr-1", "Dr").await;
    let (mut doctor, _) = Client::join(&server, &doctor_link).await;
    doctor.expect("admitted").await;
    doctor.expect("lobby").await;
    assert_eq!(
        delete(&server, &visit, "dr-1").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(doctor.expect("denied").await["reason"], "removed");
    assert_eq!(doctor.closed().await, 4003);
    let url = server.ws_url();
    revoked(refusal(&url, with_token(&doctor_link)).await);
    revoked(refusal(&url, with_resume(&doctor.resume_token)).await);
    // A patient knocking meanwhile finds no doctor to admit them.
    let (mut patient, _) =
        Client::join(&server, &api.mint(&visit, "patient", "pt-1", "Pat").await).await;
    patient.expect("waiting").await;
    patient.silent(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn the_clinic_revokes_a_link_never_used_and_an_identity_never_seen() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let visit = api.visit().await;
    let leaked = api.mint(&visit, "doctor", "dr-9", "Dr Nine").await;
    assert_eq!(
        delete(&server, &visit, "dr-9").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        delete(&server, &visit, "never-seen").await,
        StatusCode::NO_CONTENT
    );
    revoked(refusal(&server.ws_url(), with_token(&leaked)).await);
    let events = api.events(&visit).await;
    let removed: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "removed")
        .map(|e| (e["identity"].as_str(), e["actor"].as_str()))
        .collect();
    assert_eq!(
        removed,
        [
            (Some("dr-9"), Some("api:clinic-a")),
            (Some("never-seen"), Some("api:clinic-a"))
        ]
    );
    // Unknown visits stay unknown.
    let missing = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        delete(&server, &missing, "dr-9").await,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_resume_token_dies_with_its_place() {
    let server = TestServer::start_with(&[("BEDSIDE_GRACE_SECONDS", "2")]).await;
    let api = server.api(CLINIC_A);
    let url = server.ws_url();
    let Pair {
        visit,
        mut doctor,
        patient,
    } = Pair::admitted(&server, &api).await;

    // Within the grace period it reopens the same place, without a new admission.
    let (token, pid) = (patient.resume_token.clone(), patient.participant_id.clone());
    patient.drop_abruptly();
    doctor.expect("participant_updated").await;
    let (mut patient, joined) = Client::try_join(&url, with_resume(&token))
        .await
        .expect("resumed within the grace period");
    assert_eq!(joined["participant_id"], pid.as_str());
    patient.expect("admitted").await;
    doctor.expect("participant_updated").await;

    // After `leave`, the place is gone and its token with it.
    patient.send(json!({"type": "leave"})).await;
    doctor.until("participant_left").await;
    assert_eq!(
        refusal(&url, with_resume(&token)).await,
        ("invalid_token".to_owned(), 4001)
    );
    // Sent with a valid join token, that token is used: they knock again as new.
    let link = api.mint(&visit, "patient", "pt-1", "Pat One").await;
    let (mut again, joined) = Client::try_join(
        &url,
        json!({"type": "join", "token": link, "resume_token": token}),
    )
    .await
    .expect("the join token is used");
    assert_ne!(joined["participant_id"], pid.as_str());
    again.expect("waiting").await;

    // After a timeout (dropped for longer than the grace period): gone too.
    let token = again.resume_token.clone();
    again.drop_abruptly();
    doctor.until("lobby").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        refusal(&url, with_resume(&token)).await,
        ("invalid_token".to_owned(), 4001)
    );
}

#[tokio::test]
async fn only_doctors_see_identities() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let Pair {
        visit,
        mut doctor,
        mut patient,
    } = Pair::admitted(&server, &api).await;
    let (mut guest, _) = Client::join(
        &server,
        &api.mint(&visit, "guest", "mrn-55501", "Interp").await,
    )
    .await;
    guest.expect("waiting").await;
    let lobby = doctor.expect("lobby").await;
    assert!(lobby.to_string().contains("participant_id"));
    doctor
        .send(json!({"type": "admit", "participant_id": guest.participant_id}))
        .await;
    let admitted = guest.expect("admitted").await;
    let joined_for_doctor = doctor.expect("participant_joined").await;
    let joined_for_patient = patient.expect("participant_joined").await;

    assert_eq!(joined_for_doctor["participant"]["identity"], "mrn-55501");
    assert!(
        joined_for_patient["participant"].get("identity").is_none(),
        "{joined_for_patient}"
    );
    let seen: Vec<_> = admitted["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .map(|p| (p["role"].as_str(), p.get("identity").is_some()))
        .collect();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|(_, has)| !has), "{admitted}");
    // Nothing the guest or the patient receives names anyone's identity.
    patient
        .send(json!({"type": "media", "audio": true, "video": false, "screen": false}))
        .await;
    let update = guest.expect("participant_updated").await;
    assert!(update["participant"].get("identity").is_none(), "{update}");
    assert_eq!(
        doctor.until("participant_updated").await["participant"]["identity"],
        "pt-1"
    );
    // The clinic's backend sees them all.
    let v = api.get_visit(&visit).await;
    assert!(v.to_string().contains("mrn-55501"));
}

#[tokio::test]
async fn each_join_in_the_trail_names_the_token_that_was_used() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let visit = api.visit().await;
    let link = api.mint(&visit, "patient", "pt-1", "Pat").await;
    let jti = claims_of(&link)["jti"].as_str().expect("jti").to_owned();
    let (patient, _) = Client::join(&server, &link).await;
    let token = patient.resume_token.clone();
    let pid = patient.participant_id.clone();
    patient.drop_abruptly();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (again, joined) = Client::try_join(&server.ws_url(), with_resume(&token))
        .await
        .expect("resumed");
    assert_eq!(joined["participant_id"], pid.as_str());
    drop(again);
    let events = api.events(&visit).await;
    let issued = events
        .iter()
        .find(|e| e["kind"] == "token_issued")
        .expect("token_issued");
    assert_eq!(issued["detail"], jti.as_str());
    let joined = events
        .iter()
        .find(|e| e["kind"] == "joined")
        .expect("joined");
    assert_eq!(joined["detail"], jti.as_str(), "traced to the mint");
    let rejoined = events
        .iter()
        .find(|e| e["kind"] == "rejoined")
        .expect("rejoined");
    assert_eq!(rejoined["detail"], "resume");
}

/// `seq` of `GET /v1/events` counts the tenant's own events: no gaps left by another
/// tenant's, which would tell it how busy that tenant is.
#[tokio::test]
async fn each_tenant_numbers_its_own_events_without_gaps() {
    let server = TestServer::start().await;
    let tenants = [server.api(CLINIC_A), server.api(bedside_tests::CLINIC_B)];
    // Interleaved: a visit and a knock for A, then for B, three times over.
    let mut held = Vec::new();
    for round in 0..3 {
        for api in &tenants {
            let visit = api.visit().await;
            let link = api
                .mint(&visit, "patient", &format!("pt-{round}"), "Pat")
                .await;
            let (mut c, _) = Client::join(&server, &link).await;
            c.expect("waiting").await;
            held.push(c);
        }
    }
    for api in &tenants {
        let mut seqs = Vec::new();
        // Events are written a moment after the joins: wait until all are listed.
        for _ in 0..100 {
            let (status, page) = api.call(Method::GET, "/v1/events?after=0", None).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            seqs = page["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(|e| e["seq"].as_i64().expect("seq"))
                .collect();
            if seqs.len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(seqs.len() >= 3, "{seqs:?}");
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(
            seqs, expected,
            "the tenant's own numbers, from 1, without gaps"
        );
    }
}

/// Mints a link for `identity` in `visit` with `single_use` as given.
async fn mint_single_use(server: &TestServer, visit: &str, identity: &str) -> String {
    let (status, body) = server
        .api(CLINIC_A)
        .call(
            Method::POST,
            &format!("/v1/visits/{visit}/tokens"),
            Some(
                json!({"role": "patient", "identity": identity, "name": "Pat", "single_use": true}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"].as_str().expect("token").to_owned()
}

const USED: (&str, u16) = ("token_used", 4001);

fn used(got: (String, u16)) {
    assert_eq!((got.0.as_str(), got.1), USED);
}

/// Issue 14 item 4 (docs/security.md, "Single-use links"): a single-use link lets one
/// person in once. Its first join uses it up (knocking counts: a leaked copy cannot take
/// the waiting holder's place); every later join with it is refused with `token_used` and
/// close 4001, before and after the admission and after a restart; the person it let in
/// comes back with their resume token. An ordinary link of the same visit is not affected.
#[tokio::test]
async fn a_single_use_link_lets_one_person_in_once_and_their_resume_token_still_works() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let visit = api.visit().await;
    let doctor_link = api.mint(&visit, "doctor", "dr-1", "Dr One").await;
    let link = mint_single_use(&server, &visit, "pt-1").await;
    assert_eq!(claims_of(&link)["single_use"], true);
    let jti = claims_of(&link)["jti"].as_str().expect("jti").to_owned();
    let (mut doctor, _) = Client::join(&server, &doctor_link).await;
    doctor.expect("admitted").await;
    doctor.expect("lobby").await;

    let (mut patient, _) = Client::join(&server, &link).await;
    patient.expect("waiting").await;
    doctor.expect("lobby").await;
    // While the holder waits, the link is spent: a second join does not replace them.
    let url = server.ws_url();
    used(refusal(&url, with_token(&link)).await);
    patient.alive().await;
    doctor.silent(Duration::from_millis(300)).await;

    doctor
        .send(json!({"type": "admit", "participant_id": patient.participant_id}))
        .await;
    patient.expect("admitted").await;
    used(refusal(&url, with_token(&link)).await);

    // The holder's connection drops: the resume token brings them back, admitted, with or
    // without the spent link beside it.
    let token = patient.resume_token.clone();
    let pid = patient.participant_id.clone();
    patient.drop_abruptly();
    let (mut back, joined) = Client::try_join(&url, with_resume(&token))
        .await
        .expect("resumed");
    assert_eq!(joined["participant_id"], pid.as_str());
    back.expect("admitted").await;
    let token = back.resume_token.clone();
    back.drop_abruptly();
    let (mut back, joined) = Client::try_join(
        &url,
        json!({"type": "join", "token": link, "resume_token": token}),
    )
    .await
    .expect("resumed beside the spent link");
    assert_eq!(joined["participant_id"], pid.as_str());
    back.expect("admitted").await;
    let token = back.resume_token.clone();

    // An ordinary link of the same visit still works twice.
    let plain = api.mint(&visit, "guest", "gu-1", "Guest").await;
    for _ in 0..2 {
        let (mut guest, _) = Client::join(&server, &plain).await;
        guest.expect("waiting").await;
        guest.close().await;
    }

    // After a restart, the link stays spent and the resume token still works.
    drop(back);
    let server = server.restart().await;
    let url = server.ws_url();
    used(refusal(&url, with_token(&link)).await);
    let (_back, joined) = Client::try_join(&url, with_resume(&token))
        .await
        .expect("resumed after the restart");
    assert_eq!(joined["participant_id"], pid.as_str());

    // The trail: the one join the link was used for names it; nothing else does.
    let events = server.api(CLINIC_A).events(&visit).await;
    let with_link: Vec<&str> = events
        .iter()
        .filter(|e| e["detail"] == jti.as_str())
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(with_link, ["token_issued", "joined"], "{events:?}");
}

/// `single_use` must be a boolean: anything else is refused and mints nothing.
#[tokio::test]
async fn single_use_must_be_a_boolean() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let visit = api.visit().await;
    let (status, body) = api
        .call(
            Method::POST,
            &format!("/v1/visits/{visit}/tokens"),
            Some(json!({"role": "patient", "identity": "pt-1", "single_use": "yes"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed", "{body}");
    let events = api.events(&visit).await;
    assert!(
        events.iter().all(|e| e["kind"] != "token_issued"),
        "{events:?}"
    );
}
