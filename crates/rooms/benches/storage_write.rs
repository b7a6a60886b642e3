//! What the storage writer's transactions cost on a real database: a new visit, one join
//! (the participant's row, its audit entry and its event, fenced as in a cluster), and a busy
//! batch of 64 such joins in different visits. Run with `cargo bench -p bedside-rooms` on a
//! SQLite file (`synchronous=FULL`: each commit waits for the disk), or with
//! `BEDSIDE_TEST_DATABASE=postgres` on a PostgreSQL cluster the bench starts on loopback
//! (the test harness's, `fsync` off: statements and round trips, not the disk).

use bedside_auth::{Role, TenantId};
use bedside_rooms::RandomId;
use bedside_rooms::storage::{self, Storage, WriteOp};
use bedside_visit::event::{EventKind, VisitEvent};
use bedside_visit::{
    AuditEvent, AuditKind, Change, ParticipantId, ParticipantState, StoredParticipant, VisitId,
    VisitRecord, VisitStatus,
};
use chrono::{TimeDelta, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;

#[path = "../../../tests/src/pg.rs"]
#[allow(dead_code)]
mod pg;

fn record() -> VisitRecord {
    let now = Utc::now();
    VisitRecord {
        id: VisitId::random(),
        tenant: TenantId::new("clinic-a").expect("tenant"),
        external_ref: Some("appt-1".into()),
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

/// What the registry writes when a patient knocks: a group headed by the visit's fence.
fn join(v: &VisitRecord) -> Vec<WriteOp> {
    let now = Utc::now();
    let participant = ParticipantId::random();
    vec![
        WriteOp::Fence {
            visit: v.id,
            epoch: 0,
        },
        WriteOp::Change {
            visit: v.id,
            change: Change::Participant(StoredParticipant {
                participant_id: participant,
                identity: "pt-1".into(),
                role: Role::Patient,
                name: "Pat".into(),
                state: ParticipantState::Waiting,
                since: now,
                dropped_at: None,
                consent: None,
            }),
        },
        WriteOp::Audit {
            visit: v.id,
            tenant: v.tenant.clone(),
            event: AuditEvent {
                participant_id: Some(participant),
                identity: Some("pt-1".into()),
                role: Some(Role::Patient),
                ..AuditEvent::new(AuditKind::Joined, now)
            },
        },
        WriteOp::Event {
            visit: v.id,
            tenant: v.tenant.clone(),
            event: VisitEvent::new(EventKind::ParticipantWaiting, now),
        },
    ]
}

fn writes(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let url = if pg::selected() {
        rt.block_on(async { pg::shared().await.create_database().await })
    } else {
        format!("sqlite://{}", dir.path().join("bedside.db").display())
    };
    let db: Arc<dyn Storage> = rt.block_on(storage::connect(&url)).expect("storage");
    let created = |v: &VisitRecord| AuditEvent::new(AuditKind::Created, v.created_at);
    let visits: Vec<VisitRecord> = (0..64).map(|_| record()).collect();
    for v in &visits {
        rt.block_on(db.insert_visit(v, &created(v)))
            .expect("insert");
    }

    let mut group = c.benchmark_group("storage");
    group.throughput(Throughput::Elements(1));
    group.bench_function("insert_visit", |b| {
        b.iter(|| {
            let v = record();
            rt.block_on(db.insert_visit(&v, &created(&v)))
                .expect("insert")
        })
    });
    group.bench_function("apply: one join", |b| {
        b.iter(|| rt.block_on(db.apply(&join(&visits[0]))).expect("apply"))
    });
    let busy: Vec<WriteOp> = visits.iter().flat_map(join).collect();
    group.throughput(Throughput::Elements(visits.len() as u64));
    group.bench_function("apply: 64 joins in 64 visits", |b| {
        b.iter(|| rt.block_on(db.apply(&busy)).expect("apply"))
    });
    group.finish();
    rt.block_on(db.close());
}

criterion_group!(benches, writes);
criterion_main!(benches);
