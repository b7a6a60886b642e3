//! The storage and the registry over it, on a real database: a SQLite file, or with
//! `BEDSIDE_TEST_DATABASE=postgres` a fresh database on a PostgreSQL cluster this test
//! process starts on loopback (the black-box suite's harness, `tests/src/pg.rs`).

use bedside_auth::{KeyId, Role, TenantId};
use bedside_rooms::storage::{self, ListQuery, Storage, StorageWriter};
use bedside_rooms::{NextConnId, RandomId};
use bedside_rooms::{Outbox, Outgoing, Registry, RoomError};
use bedside_visit::{
    Actor, AuditActor, AuditEvent, AuditKind, ConnId, Credential, EndReason, Input, JoinRequest,
    Notice, ParticipantId, Refusal, VisitId, VisitRecord, VisitStatus,
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
        provider: Some(bedside_visit::ProviderId::new("dr-lee").unwrap()),
        consent: None,
    }
}

#[path = "../../../tests/src/pg.rs"]
#[allow(dead_code)]
mod pg;

/// A database of its own for one test, reopened as often as the test likes.
struct TestDb {
    url: String,
    _dir: tempfile::TempDir,
}

async fn tempdb() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = if pg::selected() {
        pg::shared().await.create_database().await
    } else {
        format!("sqlite://{}", dir.path().join("bedside.db").display())
    };
    TestDb { url, _dir: dir }
}

async fn open(db: &TestDb) -> Arc<dyn Storage> {
    storage::connect(&db.url).await.unwrap()
}

/// A new visit of `tenant`, stored.
async fn stored(db: &dyn Storage, tenant: &str, now: DateTime<Utc>) -> VisitRecord {
    let v = record(tenant, now);
    db.insert_visit(&v, &AuditEvent::new(AuditKind::Created, now))
        .await
        .unwrap();
    v
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
                    .split([' ', '{', '('])
                    .next()
                    .unwrap()
                    .to_owned(),
                Outgoing::Close(code) => format!("close {}", code.as_u16()),
                other => format!("{other:?}"),
            })
            .collect()
    }
}

#[tokio::test]
async fn visits_round_trip_and_survive_reopening() {
    let dir = tempdb().await;
    let now = Utc::now();
    let v = record("clinic-a", now);
    {
        let db = open(&dir).await;
        db.insert_visit(
            &v,
            &AuditEvent::new(AuditKind::Created, now)
                .actor(AuditActor::Api(KeyId::new("k").unwrap())),
        )
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
    let dir = tempdb().await;
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
    let dir = tempdb().await;
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
        credential: Credential::token("jti", Utc::now().timestamp()),
    }
}

#[tokio::test]
async fn the_registry_persists_admissions_across_a_restart() {
    let dir = tempdb().await;
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
            .find(|p| p.identity.as_deref() == Some("pt-1"))
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

    // Another tenant's token opens nothing: its visit is not found, like an unknown one.
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
    assert_eq!(e, Some(RoomError::Refused(Refusal::VisitNotFound)));
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
    assert_eq!(e, Some(RoomError::Refused(Refusal::VisitNotFound)));
    assert_eq!(
        registry
            .end(
                &tenant("clinic-b"),
                v.id,
                Actor::Api(KeyId::new("k").unwrap()),
                t
            )
            .await
            .err(),
        Some(RoomError::Refused(Refusal::VisitNotFound))
    );

    let ended = registry
        .end(
            &tenant("clinic-a"),
            v.id,
            Actor::Api(KeyId::new("k").unwrap()),
            t,
        )
        .await
        .unwrap();
    assert_eq!(ended.ended_reason, Some(EndReason::EndedByApi));
    assert_eq!(again.kinds().last().unwrap(), "close 4004");
    // Idempotent for the clinic's retries.
    assert_eq!(
        registry
            .end(
                &tenant("clinic-a"),
                v.id,
                Actor::Api(KeyId::new("k").unwrap()),
                t
            )
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
    let dir = tempdb().await;
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

/// Two storages on one database, as two nodes would be, appending to the same visits at
/// once (in opposite orders; one writes audit rows only, the other events too): every chain
/// stays intact, every visit's events are numbered 1, 2, 3... without gaps, and the
/// tenant's events come out in commit order by seq.
#[tokio::test]
async fn two_writers_at_once_keep_chains_and_event_numbers_intact() {
    use bedside_rooms::storage::WriteOp;
    use bedside_visit::event::{EventKind, VisitEvent};

    const BATCHES: usize = 30;
    let dir = tempdb().await;
    let (a, b) = (open(&dir).await, open(&dir).await);
    let now = Utc::now();
    let visits: Vec<VisitRecord> = (0..3).map(|_| record("clinic-a", now)).collect();
    for v in &visits {
        a.insert_visit(v, &AuditEvent::new(AuditKind::Created, now))
            .await
            .unwrap();
    }
    let write = |db: Arc<dyn Storage>, reverse: bool| {
        let mut order = visits.clone();
        if reverse {
            order.reverse();
        }
        let with_events = reverse;
        tokio::spawn(async move {
            for _ in 0..BATCHES {
                let ops: Vec<WriteOp> = order
                    .iter()
                    .flat_map(|v| {
                        let audit = WriteOp::Audit {
                            visit: v.id,
                            tenant: v.tenant.clone(),
                            event: AuditEvent::new(AuditKind::Joined, now),
                        };
                        let event = WriteOp::Event {
                            visit: v.id,
                            tenant: v.tenant.clone(),
                            event: VisitEvent::new(EventKind::ParticipantWaiting, now),
                        };
                        if with_events {
                            vec![audit, event]
                        } else {
                            vec![audit]
                        }
                    })
                    .collect();
                db.apply(&ops).await.unwrap();
            }
        })
    };
    let (ra, rb) = tokio::join!(write(a.clone(), false), write(b.clone(), true));
    ra.unwrap();
    rb.unwrap();

    let report = a.verify_audit(None).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.visits, 3);
    assert_eq!(report.chained_rows, 3 * (1 + 2 * BATCHES as u64));

    let events = b.events(&tenant("clinic-a"), 0, 10_000).await.unwrap();
    assert_eq!(events.len(), 3 * (1 + BATCHES));
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    for v in &visits {
        let numbers: Vec<i64> = events
            .iter()
            .filter(|e| e.visit_id == v.id.to_string())
            .map(|e| e.visit_seq)
            .collect();
        let expected: Vec<i64> = (1..=(1 + BATCHES as i64)).collect();
        assert_eq!(numbers, expected);
    }
    a.close().await;
    b.close().await;
}

/// The audit chain hashes the same on both databases: the same visit and audit rows written
/// to a fresh SQLite file and a fresh PostgreSQL database (whose seqs both start at 1) get
/// the same `prev_hash` and `hash` in every row. Needs PostgreSQL: the PostgreSQL pass.
#[tokio::test]
async fn the_audit_chain_hashes_the_same_on_sqlite_and_postgres() {
    use sqlx::Row;

    if !pg::selected() {
        eprintln!(
            "skipped: compares SQLite with PostgreSQL, so it runs in the PostgreSQL pass \
             (BEDSIDE_TEST_DATABASE=postgres)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}", dir.path().join("bedside.db").display());
    let postgres_url = pg::shared().await.create_database().await;
    let now = DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap();
    let v = record("clinic-a", now);
    let patient = ParticipantId::random();
    let of_patient = |e: AuditEvent| AuditEvent {
        participant_id: Some(patient),
        identity: Some("pt-1".into()),
        role: Some(Role::Patient),
        ..e
    };
    let events = [
        AuditEvent::new(AuditKind::TokenIssued, now)
            .actor(AuditActor::Api(KeyId::new("k").unwrap()))
            .detail("patient"),
        of_patient(AuditEvent::new(
            AuditKind::Joined,
            now + TimeDelta::microseconds(7),
        )),
        of_patient(
            AuditEvent::new(AuditKind::Admitted, now + TimeDelta::seconds(3))
                .actor(AuditActor::Participant(ParticipantId::from_bits(7))),
        ),
    ];
    let mut chains = Vec::new();
    for url in [&sqlite_url, &postgres_url] {
        let db = storage::connect(url).await.unwrap();
        db.insert_visit(
            &v,
            &AuditEvent::new(AuditKind::Created, now)
                .actor(AuditActor::Api(KeyId::new("k").unwrap())),
        )
        .await
        .unwrap();
        for e in &events {
            db.audit(v.id, &v.tenant, e).await.unwrap();
        }
        assert!(db.verify_audit(None).await.unwrap().is_intact());
        db.close().await;
        let query = "SELECT seq, prev_hash, hash FROM audit_events ORDER BY seq";
        let rows: Vec<(i64, String, String)> = if url.starts_with("sqlite") {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            let rows = sqlx::query(query).fetch_all(&pool).await.unwrap();
            rows.iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect()
        } else {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let rows = sqlx::query(query).fetch_all(&pool).await.unwrap();
            rows.iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect()
        };
        chains.push(rows);
    }
    assert_eq!(chains[0].len(), 4);
    assert_eq!(
        chains[0], chains[1],
        "SQLite and PostgreSQL rows hash alike"
    );
}

#[tokio::test]
async fn writes_under_a_stale_epoch_are_refused_and_the_rest_of_the_batch_is_written() {
    use bedside_rooms::storage::WriteOp;
    use bedside_visit::visit::Change;
    let dir = tempdb().await;
    let db = open(&dir).await;
    let now = Utc::now();
    let (a, b) = (
        stored(&*db, "clinic-a", now).await,
        stored(&*db, "clinic-a", now).await,
    );
    assert_eq!(db.epochs(&[a.id]).await.unwrap(), [(a.id, 0)]);
    assert!(db.epochs(&[]).await.unwrap().is_empty());
    assert_eq!(db.claim(b.id).await.unwrap(), Some(1));
    let mut epochs = db.epochs(&[b.id, VisitId::random(), a.id]).await.unwrap();
    epochs.sort();
    let mut expected = vec![(a.id, 0), (b.id, 1)];
    expected.sort();
    assert_eq!(epochs, expected, "unknown visits are left out");
    assert_eq!(db.claim(a.id).await.unwrap(), Some(1), "node 1 takes it");
    assert_eq!(
        db.claim(a.id).await.unwrap(),
        Some(2),
        "node 2 takes it over"
    );
    assert_eq!(db.claim(VisitId::random()).await.unwrap(), None);

    // Node 1 still believes it runs `a`: its group is refused, node 2's passes, and a
    // visit with no fence in the same batch is written as usual.
    let started = |visit| WriteOp::Change {
        visit,
        change: Change::Started { at: now },
    };
    let joined = |v: &VisitRecord| WriteOp::Audit {
        visit: v.id,
        tenant: v.tenant.clone(),
        event: AuditEvent::new(AuditKind::Joined, now),
    };
    let fenced = db
        .apply(&[
            WriteOp::Fence {
                visit: a.id,
                epoch: 1,
            },
            started(a.id),
            joined(&a),
            started(b.id),
            joined(&b),
        ])
        .await
        .unwrap();
    assert_eq!(fenced, [a.id]);
    assert_eq!(db.visit(a.id).await.unwrap().unwrap().started_at, None);
    assert_eq!(
        db.audit_trail(a.id).await.unwrap().len(),
        1,
        "only `created`"
    );
    assert!(db.visit(b.id).await.unwrap().unwrap().started_at.is_some());
    assert_eq!(db.audit_trail(b.id).await.unwrap().len(), 2);

    let fenced = db
        .apply(&[
            WriteOp::Fence {
                visit: a.id,
                epoch: 2,
            },
            started(a.id),
            joined(&a),
        ])
        .await
        .unwrap();
    assert!(fenced.is_empty());
    assert!(db.visit(a.id).await.unwrap().unwrap().started_at.is_some());
    let report = db.verify_audit(None).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
}

/// A stand-in for the cluster's leases: claims through storage's epoch, and a switch for
/// whether the node can vouch for its claims.
struct Leases {
    db: Arc<dyn Storage>,
    elsewhere: std::sync::atomic::AtomicBool,
    fresh: std::sync::atomic::AtomicBool,
    released: Mutex<Vec<VisitId>>,
}

#[async_trait::async_trait]
impl bedside_rooms::Ownership for Leases {
    async fn claim(&self, visit: VisitId) -> Result<bedside_rooms::Claim, RoomError> {
        use std::sync::atomic::Ordering;
        if self.elsewhere.load(Ordering::SeqCst) {
            return Ok(bedside_rooms::Claim::Elsewhere);
        }
        let epoch = self.db.claim(visit).await.unwrap().unwrap();
        Ok(bedside_rooms::Claim::Mine { epoch })
    }
    /// As the cluster's leases do: the visit read with the epoch's raise.
    async fn claim_loading(
        &self,
        visit: VisitId,
    ) -> Result<(bedside_rooms::Claim, Option<storage::StoredVisit>), RoomError> {
        use std::sync::atomic::Ordering;
        if self.elsewhere.load(Ordering::SeqCst) {
            return Ok((bedside_rooms::Claim::Elsewhere, None));
        }
        let (epoch, read) = self.db.claim_loading(visit).await.unwrap().unwrap();
        Ok((bedside_rooms::Claim::Mine { epoch }, read))
    }
    fn fresh(&self) -> bool {
        self.fresh.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn release(&self, visit: VisitId, _position: u64) {
        self.released.lock().push(visit);
    }
}

#[tokio::test]
async fn a_node_acts_for_a_visit_only_while_it_owns_it() {
    use std::sync::atomic::Ordering;
    let dir = tempdb().await;
    let db = open(&dir).await;
    let now = Utc::now();
    let v = record("clinic-a", now);
    db.insert_visit(&v, &AuditEvent::new(AuditKind::Created, now))
        .await
        .unwrap();
    let leases = Arc::new(Leases {
        db: db.clone(),
        elsewhere: true.into(),
        fresh: true.into(),
        released: Mutex::default(),
    });
    let (writer, _task) = StorageWriter::spawn(db.clone());
    let mut fenced = writer.take_fenced().unwrap();
    let registry = Registry::new(db.clone(), writer.clone(), TimeDelta::seconds(30), now)
        .with_ownership(leases.clone());
    let outbox = Arc::new(Recorder::default());
    let doc = join("dr-1", Role::Doctor);
    let conn = doc.conn;
    let refused = registry
        .join(v.id, &tenant("clinic-a"), doc.clone(), outbox.clone(), now)
        .await;
    assert_eq!(
        refused.err(),
        Some(RoomError::Elsewhere),
        "another node runs it"
    );
    assert_eq!(registry.live_visits(), 0);

    leases.elsewhere.store(false, Ordering::SeqCst);
    let (handle, _) = registry
        .join(v.id, &tenant("clinic-a"), doc, outbox.clone(), now)
        .await
        .unwrap();
    let chat = |text: &str| Input::Chat {
        conn,
        text: text.into(),
    };
    // In a cluster, notices wait for the changes they report to be stored: the doctor hears
    // of their own join only once it is.
    let kinds_now = outbox.kinds().len();
    writer.flush().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while outbox.kinds().len() == kinds_now {
        assert!(
            std::time::Instant::now() < deadline,
            "notices never released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(&outbox.kinds()[..2], ["Joined", "Admitted"]);
    registry.handle(&handle, chat("one"), now).unwrap();
    assert_eq!(
        outbox.kinds().last().map(String::as_str),
        Some("Chat"),
        "nothing held: at once"
    );
    // Unable to vouch for its claim (paused past its lease, say): it does nothing.
    leases.fresh.store(false, Ordering::SeqCst);
    let before = outbox.kinds().len();
    assert_eq!(
        registry.handle(&handle, chat("two"), now),
        Err(RoomError::Unavailable)
    );
    assert_eq!(outbox.kinds().len(), before, "nothing was relayed");
    leases.fresh.store(true, Ordering::SeqCst);

    // Another node takes the visit over: this node's next change is refused by storage
    // (reported on the writer's channel), and evicting the visit tells its connections to
    // reconnect, which brings them to the new owner.
    writer.flush().await;
    assert_eq!(db.claim(v.id).await.unwrap(), Some(2));
    let patient = Arc::new(Recorder::default());
    registry
        .join(
            v.id,
            &tenant("clinic-a"),
            join("pt-1", Role::Patient),
            patient,
            now,
        )
        .await
        .unwrap();
    let refused = tokio::time::timeout(std::time::Duration::from_secs(10), fenced.recv())
        .await
        .unwrap();
    assert_eq!(refused, Some(v.id));
    let stored = db.participants(v.id).await.unwrap();
    assert!(stored.iter().all(|p| p.identity != "pt-1"), "{stored:?}");
    registry.evict(v.id);
    assert_eq!(
        outbox.kinds().last().map(String::as_str),
        Some("close 1001")
    );
    assert_eq!(registry.live_visits(), 0);
    assert_eq!(leases.released.lock().as_slice(), [v.id]);
}

/// A visit's events are numbered 1, 2, 3... whatever batches they come in, several to a
/// batch or one, mixed with other visits' events and changes.
#[tokio::test]
async fn events_are_numbered_per_visit_within_and_across_batches() {
    use bedside_rooms::storage::WriteOp;
    use bedside_visit::event::{EventKind, VisitEvent};
    use bedside_visit::visit::Change;
    let dir = tempdb().await;
    let db = open(&dir).await;
    let now = Utc::now();
    let (a, b) = (
        stored(&*db, "clinic-a", now).await,
        stored(&*db, "clinic-b", now).await,
    );
    // Each event a millisecond later than the one applied before it, so the order they
    // are stored in shows.
    let applied = std::sync::atomic::AtomicI64::new(0);
    let event = |v: &VisitRecord| WriteOp::Event {
        visit: v.id,
        tenant: v.tenant.clone(),
        event: VisitEvent::new(
            EventKind::ParticipantWaiting,
            now + TimeDelta::milliseconds(
                applied.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
            ),
        ),
    };
    let started = |v: &VisitRecord| WriteOp::Change {
        visit: v.id,
        change: Change::Started { at: now },
    };
    let c = stored(&*db, "clinic-a", now).await;
    db.apply(&[
        event(&a),
        started(&b),
        event(&a),
        event(&b),
        event(&c),
        event(&a),
    ])
    .await
    .unwrap();
    db.apply(&[event(&b), event(&a), event(&c)]).await.unwrap();
    for (v, expected) in [(&a, 1..=4), (&b, 1..=2), (&c, 1..=2)] {
        let numbers: Vec<i64> = db
            .events(&v.tenant, 0, 100)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.visit_id == v.id.to_string() && e.kind != "visit.created")
            .map(|e| e.visit_seq)
            .collect();
        let first = numbers.first().copied().unwrap_or_default();
        assert_eq!(
            numbers,
            expected.map(|n| n + first - 1).collect::<Vec<_>>(),
            "numbered on from the visit's last, without gaps"
        );
    }
    // A tenant's events are numbered, and stored (webhooks deliver by storage key), in
    // the order they were applied, across its visits and batches.
    for tenant in [&a.tenant, &b.tenant] {
        let events = db.events(tenant, 0, 100).await.unwrap();
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        let first = seqs.first().copied().unwrap_or_default();
        assert_eq!(seqs, (first..first + seqs.len() as i64).collect::<Vec<_>>());
        let applied: Vec<_> = events
            .iter()
            .filter(|e| e.kind != "visit.created")
            .collect();
        assert!(
            applied
                .windows(2)
                .all(|w| w[0].at < w[1].at && w[0].row < w[1].row)
        );
    }
}

/// An audit seq is never given twice, not even that of the newest row when someone deletes
/// it behind the server's back: no other entry can take a deleted one's place in the trail.
#[tokio::test]
async fn the_seq_of_a_deleted_newest_audit_row_is_never_given_again() {
    let dir = tempdb().await;
    let db = open(&dir).await;
    let now = Utc::now();
    let v = stored(&*db, "clinic-a", now).await;
    let issued = AuditEvent::new(AuditKind::TokenIssued, now);
    db.audit(v.id, &v.tenant, &issued).await.unwrap();
    let newest = db.audit_trail(v.id).await.unwrap()[1].seq;
    let delete = "DELETE FROM audit_events WHERE seq = $1";
    if dir.url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(&dir.url).await.unwrap();
        sqlx::query(delete)
            .bind(newest)
            .execute(&pool)
            .await
            .unwrap();
    } else {
        let pool = sqlx::PgPool::connect(&dir.url).await.unwrap();
        sqlx::query(delete)
            .bind(newest)
            .execute(&pool)
            .await
            .unwrap();
    }
    db.audit(v.id, &v.tenant, &issued).await.unwrap();
    let trail = db.audit_trail(v.id).await.unwrap();
    assert_eq!(trail.len(), 2);
    assert!(trail[1].seq > newest, "{} was given again", trail[1].seq);
}

/// The clinic's day keeps in storage: a visit's provider and consent text, a participant's
/// consent (so it holds across a restart), transfers, and each consultation of a provider
/// (the history their patients' expected wait is estimated from).
#[tokio::test]
async fn providers_consents_and_consultations_are_stored() {
    use bedside_rooms::storage::WriteOp;
    use bedside_visit::{Change, ConsentGiven, ConsentText, ProviderId, StoredParticipant};
    use chrono::SubsecRound;
    let dir = tempdb().await;
    let now = Utc::now().trunc_subsecs(6);
    let db = open(&dir).await;
    let mut v = record("clinic-a", now);
    v.consent = Some(ConsentText::new("2026-11", "I agree.\nLine two, with é.").unwrap());
    db.insert_visit(&v, &AuditEvent::new(AuditKind::Created, now))
        .await
        .unwrap();
    assert_eq!(db.visit(v.id).await.unwrap().unwrap(), v);

    let pt = StoredParticipant {
        participant_id: ParticipantId::random(),
        identity: "pt-1".into(),
        role: Role::Patient,
        name: "n".into(),
        state: bedside_visit::ParticipantState::Waiting,
        since: now,
        dropped_at: None,
        consent: Some(ConsentGiven {
            version: "2026-11".into(),
            at: now,
        }),
    };
    let kim = ProviderId::new("dr-kim").unwrap();
    let change = |change| WriteOp::Change {
        visit: v.id,
        change,
    };
    db.apply(&[
        change(Change::Participant(pt.clone())),
        change(Change::Provider {
            provider: kim.clone(),
        }),
        change(Change::Consultation {
            provider: kim.clone(),
            started_at: now - TimeDelta::minutes(30),
            ended_at: now - TimeDelta::minutes(18),
        }),
        change(Change::Consultation {
            provider: kim.clone(),
            started_at: now - TimeDelta::minutes(10),
            ended_at: now - TimeDelta::minutes(2),
        }),
    ])
    .await
    .unwrap();
    assert_eq!(db.participants(v.id).await.unwrap(), [pt]);
    assert_eq!(
        db.visit(v.id).await.unwrap().unwrap().provider,
        Some(kim.clone())
    );
    // Newest first; another tenant's provider of the same name has none.
    assert_eq!(
        db.consultations(&tenant("clinic-a"), &kim, 20)
            .await
            .unwrap(),
        [TimeDelta::minutes(8), TimeDelta::minutes(12)]
    );
    assert_eq!(
        db.consultations(&tenant("clinic-a"), &kim, 1)
            .await
            .unwrap(),
        [TimeDelta::minutes(8)]
    );
    assert!(
        db.consultations(&tenant("clinic-b"), &kim, 20)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Migration 0011 numbers each tenant's events on their own: events stored before it keep
/// their numbers (stored cursors keep working), and a tenant's new events continue from its
/// highest.
#[tokio::test]
async fn events_stored_before_tenant_numbering_keep_their_seq() {
    // Two tenants' events, interleaved, as the tenant-wide numbering stored them.
    const OLD_EVENTS: &str = "INSERT INTO visit_events \
         (seq, id, tenant, visit_id, visit_seq, kind, at, data, next_attempt_at) VALUES \
         (1, 'e1', 'clinic-a', 'v-a', 1, 'visit.created', 0, '{}', 0), \
         (2, 'e2', 'clinic-b', 'v-b', 1, 'visit.created', 0, '{}', 0), \
         (3, 'e3', 'clinic-a', 'v-a', 2, 'visit.started', 0, '{}', 0), \
         (4, 'e4', 'clinic-b', 'v-b', 2, 'visit.started', 0, '{}', 0)";
    let db = tempdb().await;
    if pg::selected() {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        let migrator = sqlx::migrate!("./migrations/postgres");
        migrator.run_to(9, &pool).await.unwrap();
        sqlx::raw_sql(OLD_EVENTS).execute(&pool).await.unwrap();
        sqlx::raw_sql("SELECT setval('visit_events_seq', 4)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    } else {
        let opts: sqlx::sqlite::SqliteConnectOptions = db.url.parse().unwrap();
        let pool = sqlx::SqlitePool::connect_with(opts.create_if_missing(true))
            .await
            .unwrap();
        let migrator = sqlx::migrate!("./migrations/sqlite");
        migrator.run_to(9, &pool).await.unwrap();
        sqlx::raw_sql(OLD_EVENTS).execute(&pool).await.unwrap();
        pool.close().await;
    }
    let storage = open(&db).await;
    let seqs = |events: Vec<storage::StoredEvent>| -> Vec<(String, i64)> {
        events.into_iter().map(|e| (e.id, e.seq)).collect()
    };
    let of = |s: &[(&str, i64)]| -> Vec<(String, i64)> {
        s.iter().map(|(id, n)| ((*id).to_owned(), *n)).collect()
    };
    let b = tenant("clinic-b");
    assert_eq!(
        seqs(storage.events(&b, 0, 10).await.unwrap()),
        of(&[("e2", 2), ("e4", 4)])
    );
    // A stored cursor still pages from where it was.
    assert_eq!(
        seqs(storage.events(&b, 2, 10).await.unwrap()),
        of(&[("e4", 4)])
    );
    assert_eq!(storage.event_seq(&b, "e4").await.unwrap(), Some(4));
    // New events continue from each tenant's own highest.
    let now = Utc::now();
    storage
        .insert_visit(
            &record("clinic-b", now),
            &AuditEvent::new(AuditKind::Created, now),
        )
        .await
        .unwrap();
    storage
        .insert_visit(
            &record("clinic-a", now),
            &AuditEvent::new(AuditKind::Created, now),
        )
        .await
        .unwrap();
    let numbers = |events: Vec<storage::StoredEvent>| -> Vec<i64> {
        events.into_iter().map(|e| e.seq).collect()
    };
    assert_eq!(numbers(storage.events(&b, 0, 10).await.unwrap()), [2, 4, 5]);
    assert_eq!(
        numbers(storage.events(&tenant("clinic-a"), 0, 10).await.unwrap()),
        [1, 3, 4]
    );
}

/// Storage whose writes wait until the test opens the gate: what a participant is told
/// before then was told before it was stored.
struct Gated {
    inner: Arc<dyn Storage>,
    open: tokio::sync::watch::Receiver<bool>,
}

#[async_trait::async_trait]
impl storage::Visits for Gated {
    async fn insert_visit(
        &self,
        visit: &VisitRecord,
        created: &AuditEvent,
    ) -> Result<(), storage::StorageError> {
        self.inner.insert_visit(visit, created).await
    }
    async fn visit(&self, id: VisitId) -> Result<Option<VisitRecord>, storage::StorageError> {
        self.inner.visit(id).await
    }
    async fn list_visits(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
    ) -> Result<Vec<VisitRecord>, storage::StorageError> {
        self.inner.list_visits(tenant, query).await
    }
    async fn participants(
        &self,
        id: VisitId,
    ) -> Result<Vec<bedside_visit::StoredParticipant>, storage::StorageError> {
        self.inner.participants(id).await
    }
    async fn quality(
        &self,
        id: VisitId,
    ) -> Result<Vec<bedside_visit::quality::StoredQuality>, storage::StorageError> {
        self.inner.quality(id).await
    }
    async fn apply(&self, ops: &[storage::WriteOp]) -> Result<Vec<VisitId>, storage::StorageError> {
        let _ = self.open.clone().wait_for(|open| *open).await;
        self.inner.apply(ops).await
    }
    async fn count_by_status(&self) -> Result<Vec<(VisitStatus, u64)>, storage::StorageError> {
        self.inner.count_by_status().await
    }
    async fn due_for_expiry(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<VisitId>, storage::StorageError> {
        self.inner.due_for_expiry(now, limit).await
    }
    async fn consultations(
        &self,
        tenant: &TenantId,
        provider: &bedside_visit::ProviderId,
        limit: u32,
    ) -> Result<Vec<TimeDelta>, storage::StorageError> {
        self.inner.consultations(tenant, provider, limit).await
    }
}

/// On one node too, a guest link from the call is handed out only once its `invited` row
/// is stored (as the API's links are): never a link the trail cannot account for.
#[tokio::test]
async fn a_guest_link_from_the_call_waits_for_its_invited_row_on_one_node() {
    let dir = tempdb().await;
    let db = open(&dir).await;
    let now = Utc::now();
    let v = record("clinic-a", now);
    db.insert_visit(&v, &AuditEvent::new(AuditKind::Created, now))
        .await
        .unwrap();
    let (gate, open_rx) = tokio::sync::watch::channel(false);
    let gated: Arc<dyn storage::Visits> = Arc::new(Gated {
        inner: db.clone(),
        open: open_rx,
    });
    let (writer, _task) = StorageWriter::spawn(gated);
    let keys = bedside_auth::KeyRing::new([bedside_auth::ApiKey::for_tenant(
        "key-a",
        "0123456789abcdef0123456789abcdef",
        "clinic-a",
    )
    .unwrap()])
    .unwrap();
    let links = bedside_rooms::Links::new(Arc::new(keys), "https://bedside.test".into());
    let registry = Registry::new(db.clone(), writer.clone(), TimeDelta::seconds(30), now)
        .with_links(Arc::new(links));
    let outbox = Arc::new(Recorder::default());
    let doc = join("dr-1", Role::Doctor);
    let conn = doc.conn;
    let (handle, _) = registry
        .join(v.id, &tenant("clinic-a"), doc, outbox.clone(), now)
        .await
        .unwrap();
    let told = outbox.kinds();
    assert_eq!(&told[..2], ["Joined", "Admitted"], "one node: at once");
    registry
        .handle(
            &handle,
            Input::Invite {
                conn,
                role: "guest".into(),
                name: "Sam".into(),
            },
            now,
        )
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(outbox.kinds(), told, "no link while its row is unwritten");
    gate.send_replace(true);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while outbox.kinds().len() == told.len() {
        assert!(std::time::Instant::now() < deadline, "link never released");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        outbox.kinds().last().map(String::as_str),
        Some("InviteLink")
    );
    let trail = db.audit_trail(v.id).await.unwrap();
    assert!(
        trail.iter().any(|r| r.event.kind == AuditKind::Invited),
        "the row came first"
    );
}

/// A batch's participants go in one upsert and its audit rows and events in one insert
/// each: what is stored is still what writing the operations one by one would leave. A
/// participant changed twice is stored as it last was, one removed and back again is
/// there, one removed stays removed, an ended visit keeps none; and the trail and the
/// events are in order.
#[tokio::test]
async fn a_batch_written_together_stores_what_its_operations_say_in_order() {
    use bedside_rooms::storage::WriteOp;
    use bedside_visit::event::{EventKind, VisitEvent};
    use bedside_visit::{Change, ParticipantState, StoredParticipant};
    use chrono::SubsecRound;
    let dir = tempdb().await;
    let db = open(&dir).await;
    let now = Utc::now().trunc_subsecs(6);
    let (a, b, c) = (
        stored(&*db, "clinic-a", now).await,
        stored(&*db, "clinic-a", now).await,
        stored(&*db, "clinic-b", now).await,
    );
    let person = |identity: &str, state| StoredParticipant {
        participant_id: ParticipantId::random(),
        identity: identity.into(),
        role: Role::Patient,
        name: "n".into(),
        state,
        since: now,
        dropped_at: None,
        consent: None,
    };
    let change = |v: &VisitRecord, change| WriteOp::Change {
        visit: v.id,
        change,
    };
    let audit = |v: &VisitRecord, detail: &str| WriteOp::Audit {
        visit: v.id,
        tenant: v.tenant.clone(),
        event: AuditEvent::new(AuditKind::Joined, now).detail(detail.to_owned()),
    };
    let event = |v: &VisitRecord| WriteOp::Event {
        visit: v.id,
        tenant: v.tenant.clone(),
        event: VisitEvent::new(EventKind::ParticipantWaiting, now),
    };
    let first = person("pt-1", ParticipantState::Waiting);
    let admitted = StoredParticipant {
        state: ParticipantState::Admitted,
        ..first.clone()
    };
    let gone = person("pt-2", ParticipantState::Waiting);
    let back = person("pt-3", ParticipantState::Waiting);
    let back_again = StoredParticipant {
        name: "again".into(),
        ..back.clone()
    };
    let in_ended = person("pt-4", ParticipantState::Admitted);
    let mut ops = vec![
        change(&a, Change::Participant(first.clone())),
        audit(&a, "1"),
        event(&a),
        change(&b, Change::Participant(gone.clone())),
        change(&b, Change::Participant(back.clone())),
        audit(&b, "1"),
        change(&a, Change::Participant(admitted.clone())),
        audit(&a, "2"),
        event(&b),
        change(
            &b,
            Change::ParticipantGone {
                participant_id: gone.participant_id,
            },
        ),
        change(
            &b,
            Change::ParticipantGone {
                participant_id: back.participant_id,
            },
        ),
        change(&b, Change::Participant(back_again.clone())),
        change(&c, Change::Participant(in_ended.clone())),
        change(
            &c,
            Change::Status {
                status: VisitStatus::Ended,
                reason: Some(EndReason::EndedByApi),
                at: now,
            },
        ),
        audit(&c, "1"),
        event(&a),
        audit(&a, "3"),
    ];
    // Past one statement's worth of values: the rows are split, in order.
    for n in 0..1_000 {
        ops.push(audit(&b, &(n + 2).to_string()));
    }
    assert!(db.apply(&ops).await.unwrap().is_empty());

    assert_eq!(db.participants(a.id).await.unwrap(), [admitted]);
    assert_eq!(db.participants(b.id).await.unwrap(), [back_again]);
    assert!(db.participants(c.id).await.unwrap().is_empty());
    let details = |v: &VisitRecord| {
        let db = db.clone();
        let id = v.id;
        async move {
            db.audit_trail(id)
                .await
                .unwrap()
                .into_iter()
                .filter(|r| r.event.kind == AuditKind::Joined)
                .map(|r| r.event.detail.unwrap_or_default())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(details(&a).await, ["1", "2", "3"]);
    let expected: Vec<String> = (1..=1_001).map(|n| n.to_string()).collect();
    assert_eq!(details(&b).await, expected);
    let report = db.verify_audit(None).await.unwrap();
    assert!(report.broken.is_empty(), "{report:?}");
    for (v, expected) in [(&a, 1..=2), (&b, 1..=1)] {
        let numbers: Vec<i64> = db
            .events(&v.tenant, 0, 100)
            .await
            .unwrap()
            .iter()
            .filter(|e| {
                e.visit_id == v.id.to_string() && e.kind == EventKind::ParticipantWaiting.as_str()
            })
            .map(|e| e.visit_seq)
            .collect();
        // After the visit's `visit.created`.
        assert_eq!(numbers, expected.map(|n| n + 1).collect::<Vec<_>>());
    }
}

/// A join that takes a visit over in a cluster raises the epoch and reads the visit on one
/// connection (`Fencing::claim_loading`): the same epoch a claim would give, the visit as
/// `load_visit` reads it, and writes under the old epoch refused from then on.
#[tokio::test]
async fn a_claim_that_loads_raises_the_epoch_and_reads_the_visit_as_stored() {
    use bedside_rooms::storage::WriteOp;
    use bedside_visit::{Change, ParticipantState, StoredParticipant};
    use chrono::SubsecRound;
    let dir = tempdb().await;
    let db = open(&dir).await;
    let now = Utc::now().trunc_subsecs(6);
    let (a, ended) = (
        stored(&*db, "clinic-a", now).await,
        stored(&*db, "clinic-a", now).await,
    );
    assert!(db.claim_loading(VisitId::random()).await.unwrap().is_none());
    let person = |identity: &str| StoredParticipant {
        participant_id: ParticipantId::random(),
        identity: identity.into(),
        role: Role::Patient,
        name: "n".into(),
        state: ParticipantState::Admitted,
        since: now,
        dropped_at: None,
        consent: None,
    };
    let change = |v: &VisitRecord, change| WriteOp::Change {
        visit: v.id,
        change,
    };
    // Every list of the visit with more than one entry, written out of the order it is
    // read in, and every optional field set somewhere.
    let later = now + TimeDelta::seconds(1);
    let first = person("pt-1");
    let second = StoredParticipant {
        since: later,
        dropped_at: Some(later),
        consent: Some(bedside_visit::ConsentGiven {
            version: "v2".into(),
            at: later,
        }),
        role: Role::Guest,
        ..person("gu-1")
    };
    let quality = bedside_visit::quality::StoredQuality {
        participant_id: first.participant_id,
        identity: first.identity.clone(),
        role: first.role,
        tracker: Default::default(),
    };
    let fenced = db
        .apply(&[
            change(&a, Change::Participant(second.clone())),
            change(&a, Change::Participant(first.clone())),
            change(&a, Change::Quality(Box::new(quality.clone()))),
            change(
                &a,
                Change::Blocked {
                    identity: "pt-2".into(),
                    at: now,
                },
            ),
            change(
                &a,
                Change::Blocked {
                    identity: "pt-0".into(),
                    at: later,
                },
            ),
            change(
                &a,
                Change::LinkUsed {
                    jti: "link-2".into(),
                    at: later,
                },
            ),
            change(
                &a,
                Change::LinkUsed {
                    jti: "link-1".into(),
                    at: now,
                },
            ),
            change(&a, Change::Started { at: now }),
            change(&ended, Change::Participant(person("pt-3"))),
            change(
                &ended,
                Change::Status {
                    status: VisitStatus::Ended,
                    reason: Some(EndReason::EndedByApi),
                    at: now,
                },
            ),
        ])
        .await
        .unwrap();
    assert!(fenced.is_empty());

    let (epoch, read) = db.claim_loading(a.id).await.unwrap().unwrap();
    assert_eq!(epoch, 1);
    assert_eq!(db.epochs(&[a.id]).await.unwrap(), [(a.id, 1)]);
    let read = read.expect("SQL storage reads the visit with the claim");
    let loaded = db.load_visit(a.id).await.unwrap().unwrap();
    assert_eq!(
        format!("{read:?}"),
        format!("{loaded:?}"),
        "as a load reads it"
    );
    assert_eq!(read.participants, [first, second], "in the order they came");
    assert_eq!(
        read.blocks,
        [
            bedside_visit::Block {
                identity: "pt-0".into(),
                at: later
            },
            bedside_visit::Block {
                identity: "pt-2".into(),
                at: now
            },
        ]
    );
    assert_eq!(read.used_links, ["link-1", "link-2"], "in the order used");
    assert_eq!(read.quality, [quality]);
    assert!(read.record.started_at.is_some());

    // Taken over again: the earlier claim's writes are refused.
    let (epoch, _) = db.claim_loading(a.id).await.unwrap().unwrap();
    assert_eq!(epoch, 2);
    let refused = db
        .apply(&[
            WriteOp::Fence {
                visit: a.id,
                epoch: 1,
            },
            change(&a, Change::Participant(person("pt-4"))),
        ])
        .await
        .unwrap();
    assert_eq!(refused, [a.id], "a write under the old epoch is refused");
    assert_eq!(db.participants(a.id).await.unwrap().len(), 2);

    let (epoch, read) = db.claim_loading(ended.id).await.unwrap().unwrap();
    assert_eq!(epoch, 1);
    let read = read.unwrap();
    assert_eq!(read.record.status, VisitStatus::Ended);
    assert!(
        read.participants.is_empty(),
        "an ended visit has nobody in it"
    );
}

/// A batch's status moves and starts go in one statement: the rows end as writing each
/// change in turn would leave them (the first start wins, a status only moves on from
/// open, an end in the same batch stays an end).
#[tokio::test]
async fn visits_moved_on_in_one_batch_end_as_each_change_in_turn_would_leave_them() {
    use bedside_rooms::storage::WriteOp;
    use bedside_visit::Change;
    use chrono::SubsecRound;
    let dir = tempdb().await;
    let db = open(&dir).await;
    let now = Utc::now().trunc_subsecs(6);
    let later = now + TimeDelta::seconds(5);
    let (a, b, c, d) = (
        stored(&*db, "clinic-a", now).await,
        stored(&*db, "clinic-a", now).await,
        stored(&*db, "clinic-b", now).await,
        stored(&*db, "clinic-a", now).await,
    );
    let change = |v: &VisitRecord, change| WriteOp::Change {
        visit: v.id,
        change,
    };
    let status = |status| Change::Status {
        status,
        reason: (status == VisitStatus::Ended).then_some(EndReason::EndedByApi),
        at: now,
    };
    // `d` ended in an earlier batch: nothing moves it on again.
    db.apply(&[change(&d, status(VisitStatus::Ended))])
        .await
        .unwrap();
    db.apply(&[
        change(&a, status(VisitStatus::Open)),
        change(&a, status(VisitStatus::Active)),
        change(&b, status(VisitStatus::Active)),
        change(&a, Change::Started { at: now }),
        change(&b, status(VisitStatus::Ended)),
        change(&a, Change::Started { at: later }),
        change(&c, Change::Started { at: later }),
        change(&b, status(VisitStatus::Active)),
        change(&d, status(VisitStatus::Active)),
        change(&d, Change::Started { at: now }),
    ])
    .await
    .unwrap();
    let visit = |v: VisitRecord| {
        let db = db.clone();
        async move { db.visit(v.id).await.unwrap().unwrap() }
    };
    let a = visit(a).await;
    assert_eq!(a.status, VisitStatus::Active);
    assert_eq!(a.started_at, Some(now), "the first start wins");
    let b = visit(b).await;
    assert_eq!(b.status, VisitStatus::Ended, "an end is not undone");
    assert!(b.started_at.is_none());
    let c = visit(c).await;
    assert_eq!(c.status, VisitStatus::Open);
    assert_eq!(c.started_at, Some(later));
    let d = visit(d).await;
    assert_eq!(d.status, VisitStatus::Ended);
    assert_eq!(d.started_at, Some(now));
}

/// Visit creations waiting for their tenant's event numbering (held here by another
/// transaction, as the writer or another node holds it in a burst) hold at most half the
/// pool: a join can still raise a visit's epoch and load it. With every creation holding a
/// connection, the claim waited for the pool until it gave up. PostgreSQL: SQLite's writers
/// all wait for the one write lock, claims included.
#[tokio::test]
async fn creations_waiting_for_their_tenant_leave_connections_for_joins() {
    if !pg::selected() {
        return;
    }
    let dir = tempdb().await;
    let db = open(&dir).await;
    let now = Utc::now();
    let visit = stored(&*db, "clinic-a", now).await;
    let holder = sqlx::PgPool::connect(&dir.url).await.unwrap();
    let mut tx = holder.begin().await.unwrap();
    sqlx::query("SELECT last_seq FROM event_tenants WHERE tenant = 'clinic-a' FOR UPDATE")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    // Twice the pool's connections, all waiting for the tenant.
    let creations: Vec<_> = (0..16)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                let v = record("clinic-a", now);
                db.insert_visit(&v, &AuditEvent::new(AuditKind::Created, now))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        creations.iter().all(|c| !c.is_finished()),
        "the creations wait for the tenant"
    );
    let claimed = tokio::time::timeout(
        std::time::Duration::from_secs(1),
        db.claim_loading(visit.id),
    )
    .await
    .expect("a join is not held up by the creations")
    .unwrap()
    .unwrap();
    assert_eq!(claimed.0, 1);
    assert!(db.load_visit(visit.id).await.unwrap().is_some());
    tx.commit().await.unwrap();
    for c in creations {
        tokio::time::timeout(std::time::Duration::from_secs(30), c)
            .await
            .expect("every creation goes through once the tenant is free")
            .unwrap()
            .unwrap();
    }
}
