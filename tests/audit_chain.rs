//! The tamper-evident audit trail, end to end: a real visit through the real binary, then
//! `bedside audit verify` against its database before and after someone edits and deletes
//! rows straight in the database (SQLite, or PostgreSQL with `BEDSIDE_TEST_DATABASE=postgres`).

use bedside_tests::{CLINIC_A, Pair, TestServer, binary, pg};
use serde_json::{Value, json};
use std::time::Duration;

/// Runs `bedside audit verify [--visit ID]` on the database at `db` (a
/// `BEDSIDE_DATABASE_URL`); exit code and stdout.
async fn verify(db: &str, visit: Option<&str>) -> (i32, String) {
    let mut cmd = tokio::process::Command::new(binary());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BEDSIDE_DATABASE_URL", db)
        .args(["audit", "verify"]);
    if let Some(visit) = visit {
        cmd.args(["--visit", visit]);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("verify finishes")
        .expect("run bedside");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    (
        out.status.code().expect("exit code"),
        format!("{stdout}{stderr}"),
    )
}

fn seq_of(events: &[Value], kind: &str) -> i64 {
    events
        .iter()
        .find(|e| e["kind"] == kind)
        .and_then(|e| e["seq"].as_i64())
        .unwrap_or_else(|| panic!("no {kind} event in {events:?}"))
}

fn broken_lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("broken:")).collect()
}

#[tokio::test]
async fn verify_finds_an_edited_and_a_deleted_row_and_nothing_else() {
    let mut server = TestServer::start().await;
    let api = server.api(CLINIC_A);

    // A whole visit: created, tokens, joins, waiting room, admission, leave, end.
    let Pair {
        visit,
        mut doctor,
        mut patient,
    } = Pair::admitted(&server, &api).await;
    patient.send(json!({"type": "leave"})).await;
    assert_eq!(patient.closed().await, 1000);
    doctor.until("participant_left").await;
    doctor.send(json!({"type": "end_visit"})).await;
    doctor.until("visit_ended").await;
    // Another visit, which nobody touches.
    let other = api.visit().await;
    api.mint(&other, "patient", "pt-9", "Pat Nine").await;
    assert!(server.terminate().await.success());

    // A new process continues the same chains (the token is appended to `other`'s).
    let mut server = server.restart().await;
    let api = server.api(CLINIC_A);
    api.mint(&other, "doctor", "dr-9", "Dr Nine").await;
    let events = api.events(&visit).await;
    let kinds: Vec<_> = events
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or(""))
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
            "left",
            "ended"
        ]
    );
    assert!(server.terminate().await.success());
    let db = server.database_url();

    let (code, out) = verify(&db, None).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("audit trail intact: 2 visits, 11 rows chained"),
        "{out}"
    );

    // Someone rewrites who admitted the patient.
    let admitted = seq_of(&events, "admitted");
    let actor = server
        .sql_text(&format!(
            "SELECT actor FROM audit_events WHERE seq = {admitted}"
        ))
        .await;
    assert_eq!(
        server
            .sql(&format!(
                "UPDATE audit_events SET actor = 'api', detail = 'forged' WHERE seq = {admitted}"
            ))
            .await,
        1
    );
    let (code, out) = verify(&db, None).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        broken_lines(&out),
        [format!(
            "broken: visit {visit} seq {admitted}: edited (the row does not match its hash)"
        )],
        "{out}"
    );
    assert!(out.contains("audit trail BROKEN in 1 of 2 visits"), "{out}");
    // The untouched visit, on its own, is intact.
    let (code, out) = verify(&db, Some(&other)).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("audit trail intact: 1 visit, 3 rows chained"),
        "{out}"
    );

    // Put it back: the chain checks content, so it verifies again.
    let actor = actor.map_or_else(
        || "NULL".to_owned(),
        |a| format!("'{}'", a.replace('\'', "''")),
    );
    server
        .sql(&format!(
            "UPDATE audit_events SET actor = {actor}, detail = NULL WHERE seq = {admitted}"
        ))
        .await;
    assert_eq!(verify(&db, None).await.0, 0);

    // Someone deletes the patient's departure from the middle of the trail.
    let left = seq_of(&events, "left");
    let ended = seq_of(&events, "ended");
    assert_eq!(
        server
            .sql(&format!("DELETE FROM audit_events WHERE seq = {left}"))
            .await,
        1
    );
    let (code, out) = verify(&db, None).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        broken_lines(&out),
        [format!(
            "broken: visit {visit} seq {ended}: deleted (the row before it is missing; it now follows seq {admitted})"
        )],
        "{out}"
    );
    let (code, out) = verify(&db, Some(&visit)).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(verify(&db, Some(&other)).await.0, 0);

    // The clinic's backend sees the same over the API.
    let server = server.restart().await;
    let api = server.api(CLINIC_A);
    let (status, check) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/visits/{visit}/events/verify"),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(check["intact"], false);
    assert_eq!(check["broken"]["seq"], ended);
    assert_eq!(check["broken"]["kind"], "deleted");
    let (_, check) = api
        .call(
            reqwest::Method::GET,
            &format!("/v1/visits/{other}/events/verify"),
            None,
        )
        .await;
    assert_eq!(
        (check["intact"].as_bool(), check["broken"].is_null()),
        (Some(true), true),
        "{check}"
    );
}

#[tokio::test]
async fn verify_reports_errors_with_exit_code_2() {
    if pg::selected() {
        // No such database on the server: an error, not "intact" (connecting to
        // PostgreSQL never creates a database).
        let url = pg::shared().await.url("no_such_database");
        let (code, out) = verify(&url, None).await;
        assert_eq!(code, 2, "{out}");
    } else {
        let dir = tempfile::tempdir().expect("temp dir");
        // No database there: not created, not "intact".
        let missing = dir.path().join("missing.db");
        let (code, out) = verify(&format!("sqlite://{}", missing.display()), None).await;
        assert_eq!(code, 2, "{out}");
        assert!(!missing.exists());
    }

    let mut server = TestServer::start().await;
    server.api(CLINIC_A).visit().await;
    assert!(server.terminate().await.success());
    let (code, out) = verify(&server.database_url(), Some("not-a-visit")).await;
    assert_eq!(code, 2, "{out}");
    let unknown = "00000000-0000-4000-8000-000000000000";
    let (code, out) = verify(&server.database_url(), Some(unknown)).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no audit trail"), "{out}");
}
