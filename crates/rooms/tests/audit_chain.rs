//! The audit trail's hash chain on a real SQLite file: every write path extends it,
//! concurrent writers never fork it, and edits or deletions made behind the server's back
//! (straight in the database) are reported at the right visit and seq.

use bedside_auth::{KeyId, Role, TenantId};
use bedside_rooms::RandomId;
use bedside_rooms::storage::{self, Storage, StorageWriter, WriteOp};
use bedside_visit::audit_chain::{self, BreakKind};
use bedside_visit::{
    AuditActor, AuditEvent, AuditKind, Break, ChainReport, Change, ParticipantId, VisitId,
    VisitRecord, VisitStatus,
};
use chrono::{TimeDelta, Utc};
use sqlx::SqlitePool;
use std::sync::Arc;

fn tenant() -> TenantId {
    TenantId::new("clinic-a").unwrap()
}

fn record() -> VisitRecord {
    let now = Utc::now();
    VisitRecord {
        id: VisitId::random(),
        tenant: tenant(),
        external_ref: None,
        status: VisitStatus::Open,
        ended_reason: None,
        created_at: now,
        not_before: None,
        expires_at: now + TimeDelta::hours(1),
        started_at: None,
        ended_at: None,
        max_participants: 4,
        metadata: None,
        provider: None,
        consent: None,
    }
}

fn url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("bedside.db").display())
}

async fn open(dir: &tempfile::TempDir) -> Arc<dyn Storage> {
    storage::connect(&url(dir)).await.unwrap()
}

/// A second, raw connection to the same file: someone with database access.
async fn raw(dir: &tempfile::TempDir) -> SqlitePool {
    SqlitePool::connect(&url(dir)).await.unwrap()
}

fn event(kind: AuditKind, participant: ParticipantId) -> AuditEvent {
    AuditEvent {
        participant_id: Some(participant),
        identity: Some("pt-1".into()),
        role: Some(Role::Patient),
        ..AuditEvent::new(kind, Utc::now())
    }
}

fn audit(visit: VisitId, e: AuditEvent) -> WriteOp {
    WriteOp::Audit {
        visit,
        tenant: tenant(),
        event: e,
    }
}

async fn new_visit(db: &dyn Storage) -> VisitId {
    let v = record();
    db.insert_visit(
        &v,
        &AuditEvent::new(AuditKind::Created, v.created_at)
            .actor(AuditActor::Api(KeyId::new("k").unwrap())),
    )
    .await
    .unwrap();
    v.id
}

/// Seqs of a visit's rows, in order.
async fn seqs(pool: &SqlitePool, visit: VisitId) -> Vec<i64> {
    sqlx::query_scalar("SELECT seq FROM audit_events WHERE visit_id = ? ORDER BY seq")
        .bind(visit.to_string())
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Runs `sql` (with one `?`, the row's seq) on the audit row `seq`, behind the storage's back.
async fn tamper(pool: &SqlitePool, sql: &'static str, seq: i64) {
    sqlx::query(sql).bind(seq).execute(pool).await.unwrap();
}

fn broken_at(report: &ChainReport, visit: VisitId) -> Option<Break> {
    report
        .broken
        .iter()
        .find(|b| b.visit_id == visit.to_string())
        .map(|b| b.at)
}

#[tokio::test]
async fn every_write_path_extends_the_chain_of_its_own_visit() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let (a, b) = (new_visit(&*db).await, new_visit(&*db).await);
    let p = ParticipantId::random();
    // One batch, as the writer sends them: both visits' events interleaved with changes.
    db.apply(&[
        audit(a, event(AuditKind::Joined, p)),
        WriteOp::Change {
            visit: a,
            change: Change::Status {
                status: VisitStatus::Active,
                reason: None,
                at: Utc::now(),
            },
        },
        audit(b, event(AuditKind::Joined, p)),
        audit(
            a,
            event(AuditKind::Admitted, p)
                .actor(AuditActor::Participant(ParticipantId::from_bits(1))),
        ),
        audit(a, event(AuditKind::Left, p).detail("left")),
        audit(b, event(AuditKind::Dropped, p)),
    ])
    .await
    .unwrap();
    // A token issued through the API, outside the writer.
    db.audit(
        a,
        &tenant(),
        &AuditEvent::new(AuditKind::TokenIssued, Utc::now()).detail("jti-1"),
    )
    .await
    .unwrap();

    let report = db.verify_audit(None).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(
        (report.visits, report.chained_rows, report.unchained_rows),
        (2, 8, 0)
    );

    // The links, read straight from the table: genesis first, then each row's predecessor.
    let pool = raw(&dir).await;
    for (visit, n) in [(a, 5), (b, 3)] {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT prev_hash, hash FROM audit_events WHERE visit_id = ? ORDER BY seq",
        )
        .bind(visit.to_string())
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(rows.len(), n);
        assert_eq!(
            rows[0].0,
            audit_chain::to_hex(&audit_chain::genesis(&visit.to_string()))
        );
        for pair in rows.windows(2) {
            assert_eq!(pair[1].0, pair[0].1);
        }
        let head: (i64, String) =
            sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE visit_id = ?")
                .bind(visit.to_string())
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(head.0, *seqs(&pool, visit).await.last().unwrap());
        assert_eq!(head.1, rows[n - 1].1);
    }
    // The public trail is unchanged by the chain.
    let trail = db.audit_trail(a).await.unwrap();
    let kinds: Vec<_> = trail.iter().map(|r| r.event.kind).collect();
    assert_eq!(
        kinds,
        [
            AuditKind::Created,
            AuditKind::Joined,
            AuditKind::Admitted,
            AuditKind::Left,
            AuditKind::TokenIssued
        ]
    );
    assert!(trail.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[tokio::test]
async fn concurrent_writers_never_fork_a_chain() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let visits = [new_visit(&*db).await, new_visit(&*db).await];
    let (writer, _task) = StorageWriter::spawn(db.clone());
    // The writer task and API handlers (tokens issued, visits created) all at once, on
    // the same visits, from the pool's several connections.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let db = db.clone();
        let visit = visits[i % 2];
        tasks.push(tokio::spawn(async move {
            let e = AuditEvent::new(AuditKind::TokenIssued, Utc::now()).detail(format!("jti-{i}"));
            db.audit(visit, &tenant(), &e).await.unwrap();
            new_visit(&*db).await;
        }));
    }
    let p = ParticipantId::random();
    for i in 0..400 {
        let kind = if i % 2 == 0 {
            AuditKind::Dropped
        } else {
            AuditKind::Rejoined
        };
        writer.push(audit(visits[i % 2], event(kind, p)));
        if i % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    writer.flush().await;

    let report = db.verify_audit(None).await.unwrap();
    assert!(report.is_intact(), "{:?}", report.broken);
    // 2 + 40 visits; 42 created, 40 tokens, 400 writer events.
    assert_eq!((report.visits, report.chained_rows), (42, 482));
    for visit in visits {
        let one = db.verify_audit(Some(visit)).await.unwrap();
        assert_eq!((one.visits, one.chained_rows), (1, 1 + 20 + 200));
    }
}

#[tokio::test]
async fn edits_and_deletions_in_the_database_are_reported_at_their_visit_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let p = ParticipantId::random();
    let mut visits = Vec::new();
    for _ in 0..5 {
        let v = new_visit(&*db).await;
        db.apply(&[
            audit(v, event(AuditKind::Joined, p)),
            audit(v, event(AuditKind::Admitted, p)),
            audit(v, event(AuditKind::Left, p)),
        ])
        .await
        .unwrap();
        visits.push(v);
    }
    let [edited, moved_in_time, deleted, truncated, intact] = visits[..] else {
        unreachable!()
    };
    let pool = raw(&dir).await;
    let s = seqs(&pool, edited).await;
    tamper(
        &pool,
        "UPDATE audit_events SET detail = 'forged' WHERE seq = ?",
        s[2],
    )
    .await;
    let t = seqs(&pool, moved_in_time).await;
    tamper(
        &pool,
        "UPDATE audit_events SET at = at - 3600000000 WHERE seq = ?",
        t[1],
    )
    .await;
    let d = seqs(&pool, deleted).await;
    tamper(&pool, "DELETE FROM audit_events WHERE seq = ?", d[1]).await;
    let u = seqs(&pool, truncated).await;
    tamper(&pool, "DELETE FROM audit_events WHERE seq = ?", u[3]).await;

    let report = db.verify_audit(None).await.unwrap();
    assert_eq!(report.visits, 5);
    assert_eq!(report.broken.len(), 4, "{:?}", report.broken);
    assert_eq!(
        broken_at(&report, edited),
        Some(Break {
            seq: s[2],
            kind: BreakKind::Edited
        })
    );
    assert_eq!(
        broken_at(&report, moved_in_time).map(|b| (b.seq, b.label())),
        Some((t[1], "edited"))
    );
    assert_eq!(
        broken_at(&report, deleted),
        Some(Break {
            seq: d[2],
            kind: BreakKind::Deleted { after: Some(d[0]) }
        })
    );
    assert_eq!(
        broken_at(&report, truncated),
        Some(Break {
            seq: u[3],
            kind: BreakKind::Truncated { last: Some(u[2]) }
        })
    );
    assert_eq!(broken_at(&report, intact), None);
    assert!(db.verify_audit(Some(intact)).await.unwrap().is_intact());

    // Putting the edited value back makes the row match its hash again: the chain checks
    // content, not a "was touched" flag.
    tamper(
        &pool,
        "UPDATE audit_events SET detail = NULL WHERE seq = ?",
        s[2],
    )
    .await;
    assert!(db.verify_audit(Some(edited)).await.unwrap().is_intact());
}

#[tokio::test]
async fn a_mangled_head_does_not_stop_the_trail_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let v = new_visit(&*db).await;
    let pool = raw(&dir).await;
    sqlx::query("UPDATE audit_heads SET hash = 'junk' WHERE visit_id = ?")
        .bind(v.to_string())
        .execute(&pool)
        .await
        .unwrap();
    // Still written (the writer must not drop a batch over it)...
    db.audit(
        v,
        &tenant(),
        &AuditEvent::new(AuditKind::TokenIssued, Utc::now()),
    )
    .await
    .unwrap();
    assert_eq!(db.audit_trail(v).await.unwrap().len(), 2);
    // ...and the restart it forced is visible.
    let report = db.verify_audit(Some(v)).await.unwrap();
    let s = seqs(&pool, v).await;
    assert_eq!(
        broken_at(&report, v),
        Some(Break {
            seq: s[1],
            kind: BreakKind::Reordered {
                links_to: None,
                after: Some(s[0])
            }
        })
    );
}

#[tokio::test]
async fn rows_written_before_the_chain_existed_are_counted_as_unchained() {
    let dir = tempfile::tempdir().unwrap();
    // A database as the previous version left it: only the first migration applied.
    let old = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/migrations/sqlite/0001_init.sql"
        ),
        old.path().join("0001_init.sql"),
    )
    .unwrap();
    let v = VisitId::random();
    {
        let options = url(&dir)
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .unwrap()
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        sqlx::migrate::Migrator::new(old.path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO visits (id, tenant, status, created_at, expires_at, max_participants) \
             VALUES (?, 'clinic-a', 'open', 0, 9999999999999999, 4)",
        )
        .bind(v.to_string())
        .execute(&pool)
        .await
        .unwrap();
        for kind in ["created", "token_issued"] {
            sqlx::query("INSERT INTO audit_events (visit_id, tenant, at, kind) VALUES (?, 'clinic-a', 1, ?)")
                .bind(v.to_string())
                .bind(kind)
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    }
    // This version migrates it and carries on writing to the same visit.
    let db = open(&dir).await;
    db.audit(
        v,
        &tenant(),
        &AuditEvent::new(AuditKind::TokenIssued, Utc::now()),
    )
    .await
    .unwrap();
    let report = db.verify_audit(None).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(
        (report.visits, report.chained_rows, report.unchained_rows),
        (1, 1, 2)
    );
    assert_eq!(db.audit_trail(v).await.unwrap().len(), 3);

    // A chained row stripped of its hashes does not pass for an old one.
    let pool = raw(&dir).await;
    let s = seqs(&pool, v).await;
    tamper(
        &pool,
        "UPDATE audit_events SET prev_hash = NULL, hash = NULL WHERE seq = ?",
        s[2],
    )
    .await;
    let report = db.verify_audit(None).await.unwrap();
    assert_eq!(
        broken_at(&report, v),
        Some(Break {
            seq: s[2],
            kind: BreakKind::Edited
        })
    );
}

#[tokio::test]
async fn a_missing_database_is_not_created_by_inspection() {
    let dir = tempfile::tempdir().unwrap();
    assert!(storage::connect_existing(&url(&dir)).await.is_err());
    assert!(!dir.path().join("bedside.db").exists());
    let db = open(&dir).await;
    db.close().await;
    let db = storage::connect_existing(&url(&dir)).await.unwrap();
    assert_eq!(db.verify_audit(None).await.unwrap(), ChainReport::default());
}
