//! The SQLite storage and the registry over it, on a real database file.

use bedside_auth::{Role, TenantId};
use bedside_rooms::storage::{self, ListQuery, Storage, StorageWriter};
use bedside_rooms::{
    Actor, AuditEvent, AuditKind, ConnId, EndReason, Input, JoinRequest, Notice, Outbox, Outgoing,
    ParticipantId, Registry, RoomError, VisitId, VisitRecord, VisitStatus,
};
use chrono::{DateTime, TimeDelta, Utc};
use parking_lot::Mutex;
use std::sync::Arc;

fn tenant(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn record(t: &str, created_at: DateTime<Utc>) -> VisitRecord {
    VisitRecord {
        id: VisitId::random(),
        tenant: tenant(t),
        external_ref: Some("appt-1".into()),
        status: VisitStatus::Open,
        ended_reason: None,
        created_at,
        not_before: None,
        expires_at: created_at + TimeDelta::hours(1),
        started_at: None,
        ended_at: None,
        max_participants: 4,
        metadata: Some(serde_json::json!({"room": "3B"})),
    }
}

async fn open(dir: &tempfile::TempDir) -> Arc<dyn Storage> {
    let url = format!("sqlite://{}", dir.path().join("bedside.db").display());
    storage::connect(&url).await.unwrap()
}

/// Collects what a visit sends to one connection.
#[derive(Default)]
struct Recorder(Mutex<Vec<Outgoing>>);

impl Outbox for Recorder {
    fn push(&self, item: Outgoing) {
        self.0.lock().push(item);
    }
}

impl Recorder {
    fn kinds(&self) -> Vec<String> {
        self.0
            .lock()
            .iter()
            .map(|o| match o {
                Outgoing::Notice(n) => format!("{n:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap()
                    .to_owned(),
                Outgoing::Close(code) => format!("close {}", code.as_u16()),
                Outgoing::Heartbeat => "heartbeat".to_owned(),
            })
            .collect()
    }
}

#[tokio::test]
async fn visits_round_trip_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let now = Utc::now();
    let v = record("clinic-a", now);
    {
        let db = open(&dir).await;
        db.insert_visit(&v, &AuditEvent::new(AuditKind::Created, now).actor("api"))
            .await
            .unwrap();
        db.close().await;
    }
    let db = open(&dir).await;
    let back = db.visit(v.id).await.unwrap().unwrap();
    // Stored at microsecond precision.
    assert_eq!(
        back.created_at.timestamp_micros(),
        v.created_at.timestamp_micros()
    );
    assert_eq!(back.metadata, v.metadata);
    assert_eq!(back.external_ref, v.external_ref);
    assert_eq!(back.status, VisitStatus::Open);
    assert!(db.visit(VisitId::random()).await.unwrap().is_none());
    let trail = db.audit_trail(v.id).await.unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].event.kind, AuditKind::Created);
}

#[tokio::test]
async fn listing_pages_newest_first_and_stays_within_the_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let base = Utc::now();
    let mut mine = Vec::new();
    for i in 0..5 {
        let v = record("clinic-a", base + TimeDelta::seconds(i));
        db.insert_visit(&v, &AuditEvent::new(AuditKind::Created, base))
            .await
            .unwrap();
        mine.push(v.id);
        let other = record("clinic-b", base + TimeDelta::seconds(i));
        db.insert_visit(&other, &AuditEvent::new(AuditKind::Created, base))
            .await
            .unwrap();
    }
    mine.reverse();
    let page1 = db
        .list_visits(
            &tenant("clinic-a"),
            &ListQuery {
                limit: 3,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let last = page1.last().unwrap();
    let page2 = db
        .list_visits(
            &tenant("clinic-a"),
            &ListQuery {
                limit: 3,
                after: Some((last.created_at, last.id)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ids: Vec<_> = page1.iter().chain(&page2).map(|v| v.id).collect();
    assert_eq!(ids, mine);
    let ended = db
        .list_visits(
            &tenant("clinic-a"),
            &ListQuery {
                limit: 10,
                status: Some(VisitStatus::Ended),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(ended.is_empty());
}

#[tokio::test]
async fn server_secrets_are_generated_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let first = db.secret("resume", b"aaaa").await.unwrap();
    assert_eq!(first, b"aaaa");
    assert_eq!(db.secret("resume", b"bbbb").await.unwrap(), b"aaaa");
}

fn join(identity: &str, role: Role) -> JoinRequest {
    JoinRequest {
        conn: ConnId::next(),
        identity: identity.into(),
        role,
        name: "n".into(),
        new_id: ParticipantId::random(),
    }
}

#[tokio::test]
async fn the_registry_persists_admissions_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let now = Utc::now();
    let v = record("clinic-a", now);
    let grace = TimeDelta::seconds(30);
    let (patient_id, t);
    {
        let db = open(&dir).await;
        db.insert_visit(&v, &AuditEvent::new(AuditKind::Created, now))
            .await
            .unwrap();
        let (writer, _task) = StorageWriter::spawn(db.clone());
        let registry = Registry::new(db.clone(), writer.clone(), grace, now);
        let doctor_box = Arc::new(Recorder::default());
        let patient_box = Arc::new(Recorder::default());
        let doc = join("dr-1", Role::Doctor);
        let doc_conn = doc.conn;
        let (handle, _) = registry
            .join(v.id, &tenant("clinic-a"), doc, doctor_box.clone(), now)
            .await
            .unwrap();
        let pt = join("pt-1", Role::Patient);
        registry
            .join(v.id, &tenant("clinic-a"), pt, patient_box.clone(), now)
            .await
            .unwrap();
        assert_eq!(patient_box.kinds(), ["Joined", "Waiting"]);
        let waiting = registry.participants(v.id).unwrap();
        patient_id = waiting
            .iter()
            .find(|p| p.identity == "pt-1")
            .unwrap()
            .participant_id;
        registry
            .handle(
                &handle,
                Input::Admit {
                    conn: doc_conn,
                    target: patient_id,
                },
                now,
            )
            .unwrap();
        assert_eq!(patient_box.kinds(), ["Joined", "Waiting", "Admitted"]);
        // The process dies here: no disconnects are recorded, only what was flushed.
        writer.flush().await;
        t = now + TimeDelta::seconds(5);
        db.close().await;
    }
    let db = open(&dir).await;
    assert_eq!(
        db.visit(v.id).await.unwrap().unwrap().status,
        VisitStatus::Active
    );
    let (writer, _task) = StorageWriter::spawn(db.clone());
    let registry = Registry::new(db.clone(), writer.clone(), grace, t);
    let again = Arc::new(Recorder::default());
    registry
        .join(
            v.id,
            &tenant("clinic-a"),
            join("pt-1", Role::Patient),
            again.clone(),
            t + TimeDelta::seconds(3),
        )
        .await
        .unwrap();
    assert_eq!(
        again.kinds(),
        ["Joined", "Admitted"],
        "admission survived the restart"
    );
    match &again.0.lock()[0] {
        Outgoing::Notice(n) => match **n {
            Notice::Joined { participant_id, .. } => assert_eq!(participant_id, patient_id),
            ref other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }

    // Another tenant's token opens nothing; an unknown visit is not found.
    let e = registry
        .join(
            v.id,
            &tenant("clinic-b"),
            join("x", Role::Doctor),
            again.clone(),
            t,
        )
        .await
        .err();
    assert_eq!(e, Some(RoomError::WrongTenant));
    let e = registry
        .join(
            VisitId::random(),
            &tenant("clinic-a"),
            join("x", Role::Doctor),
            again.clone(),
            t,
        )
        .await
        .err();
    assert_eq!(e, Some(RoomError::VisitNotFound));
    assert_eq!(
        registry
            .end(&tenant("clinic-b"), v.id, Actor::api("k"), t)
            .await
            .err(),
        Some(RoomError::VisitNotFound)
    );

    let ended = registry
        .end(&tenant("clinic-a"), v.id, Actor::api("k"), t)
        .await
        .unwrap();
    assert_eq!(ended.ended_reason, Some(EndReason::EndedByApi));
    assert_eq!(again.kinds().last().unwrap(), "close 4004");
    // Idempotent for the clinic's retries.
    assert_eq!(
        registry
            .end(&tenant("clinic-a"), v.id, Actor::api("k"), t)
            .await
            .unwrap()
            .status,
        VisitStatus::Ended
    );
    writer.flush().await;
    let trail: Vec<_> = db
        .audit_trail(v.id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event.kind)
        .collect();
    assert_eq!(
        trail,
        [
            AuditKind::Created,
            AuditKind::Joined,
            AuditKind::Joined,
            AuditKind::Admitted,
            AuditKind::Rejoined,
            AuditKind::Ended
        ]
    );
    assert!(db.participants(v.id).await.unwrap().is_empty());
    assert_eq!(registry.live_visits(), 0, "an empty visit leaves memory");
}

#[tokio::test]
async fn expired_visits_nobody_is_in_are_ended_by_the_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let now = Utc::now();
    let v = record("clinic-a", now - TimeDelta::hours(2));
    db.insert_visit(&v, &AuditEvent::new(AuditKind::Created, now))
        .await
        .unwrap();
    let (writer, _task) = StorageWriter::spawn(db.clone());
    let registry = Registry::new(db.clone(), writer.clone(), TimeDelta::seconds(30), now);
    assert_eq!(registry.expire_due(now).await.unwrap(), 1);
    writer.flush().await;
    let stored = db.visit(v.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.ended_reason),
        (VisitStatus::Ended, Some(EndReason::Expired))
    );
    assert_eq!(registry.expire_due(now).await.unwrap(), 0);
}
