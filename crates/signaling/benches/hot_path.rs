//! Micro-benchmarks of the relay's hot path, to catch regressions: decode a client frame,
//! authorize and route it in the visit, push it through the registry to the peer's outbox,
//! and encode the frame the peer receives. Run with `cargo bench -p bedside-signaling`.

use async_trait::async_trait;
use bedside_auth::{Role, TenantId};
use bedside_protocol::{ClientMsg, JoinedExtras, encode};
use bedside_rooms::storage::{
    AccessBlocks, Attempt, AuditRecord, AuditTrail, EventOutbox, Fencing, ListQuery, Secrets,
    Storage, StorageError, StorageWriter, StoredEvent, Visits, WriteOp,
};
use bedside_rooms::{NextConnId, Outbox, Outgoing, RandomId, Registry};
use bedside_visit::{
    Block, ConnId, Credential, Input, JoinRequest, Notice, ParticipantId, Payload,
    StoredParticipant, Visit, VisitId, VisitRecord, VisitStatus,
};
use chrono::{TimeDelta, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const SIGNAL_BYTES: usize = 1500;

fn record(id: VisitId) -> VisitRecord {
    let now = Utc::now();
    VisitRecord {
        id,
        tenant: TenantId::new("clinic-a").expect("tenant"),
        external_ref: None,
        status: VisitStatus::Open,
        ended_reason: None,
        created_at: now,
        not_before: None,
        expires_at: now + TimeDelta::hours(2),
        started_at: None,
        ended_at: None,
        max_participants: 2,
        metadata: None,
        provider: None,
        consent: None,
    }
}

/// A signal's `data` about as big as a relayed candidate batch or small SDP.
fn data() -> String {
    format!(
        r#"{{"type":"offer","sdp":"v=0\r\n{}"}}"#,
        "a".repeat(SIGNAL_BYTES - 60)
    )
}

fn join(conn: ConnId, identity: &str, role: Role) -> JoinRequest {
    JoinRequest {
        conn,
        identity: identity.into(),
        role,
        name: identity.into(),
        new_id: ParticipantId::random(),
        credential: Credential::token("jti", Utc::now().timestamp()),
    }
}

/// Storage that holds one visit and forgets every write: the registry without the disk.
struct OneVisit(VisitRecord);

#[async_trait]
impl Visits for OneVisit {
    async fn insert_visit(
        &self,
        _: &VisitRecord,
        _: &bedside_visit::AuditEvent,
    ) -> Result<(), StorageError> {
        Ok(())
    }
    async fn visit(&self, _: VisitId) -> Result<Option<VisitRecord>, StorageError> {
        Ok(Some(self.0.clone()))
    }
    async fn list_visits(
        &self,
        _: &TenantId,
        _: &ListQuery,
    ) -> Result<Vec<VisitRecord>, StorageError> {
        Ok(Vec::new())
    }
    async fn participants(&self, _: VisitId) -> Result<Vec<StoredParticipant>, StorageError> {
        Ok(Vec::new())
    }
    async fn quality(
        &self,
        _: VisitId,
    ) -> Result<Vec<bedside_visit::quality::StoredQuality>, StorageError> {
        Ok(Vec::new())
    }
    async fn apply(&self, _: &[WriteOp]) -> Result<Vec<VisitId>, StorageError> {
        Ok(Vec::new())
    }
    async fn count_by_status(&self) -> Result<Vec<(VisitStatus, u64)>, StorageError> {
        Ok(Vec::new())
    }
    async fn due_for_expiry(
        &self,
        _: chrono::DateTime<Utc>,
        _: u32,
    ) -> Result<Vec<VisitId>, StorageError> {
        Ok(Vec::new())
    }
    async fn consultations(
        &self,
        _: &TenantId,
        _: &bedside_visit::ProviderId,
        _: u32,
    ) -> Result<Vec<TimeDelta>, StorageError> {
        Ok(Vec::new())
    }
}

/// The registry takes the whole storage; the hot path touches none of this.
#[async_trait]
impl AuditTrail for OneVisit {
    async fn audit(
        &self,
        _: VisitId,
        _: &TenantId,
        _: &bedside_visit::AuditEvent,
    ) -> Result<(), StorageError> {
        Ok(())
    }
    async fn audit_trail(&self, _: VisitId) -> Result<Vec<AuditRecord>, StorageError> {
        Ok(Vec::new())
    }
    async fn verify_audit(
        &self,
        _: Option<VisitId>,
    ) -> Result<bedside_visit::ChainReport, StorageError> {
        Ok(Default::default())
    }
}

#[async_trait]
impl EventOutbox for OneVisit {
    async fn events(&self, _: &TenantId, _: i64, _: u32) -> Result<Vec<StoredEvent>, StorageError> {
        Ok(Vec::new())
    }
    async fn event_seq(&self, _: &TenantId, _: &str) -> Result<Option<i64>, StorageError> {
        Ok(None)
    }
    async fn undelivered(
        &self,
        _: &TenantId,
        _: u32,
    ) -> Result<Vec<(StoredEvent, chrono::DateTime<Utc>)>, StorageError> {
        Ok(Vec::new())
    }
    async fn record_attempt(&self, _: i64, _: Attempt) -> Result<(), StorageError> {
        Ok(())
    }
}

#[async_trait]
impl Secrets for OneVisit {
    async fn secret(&self, _: &str, fresh: &[u8]) -> Result<Vec<u8>, StorageError> {
        Ok(fresh.to_vec())
    }
}

#[async_trait]
impl Fencing for OneVisit {
    async fn claim(&self, _: VisitId) -> Result<Option<i64>, StorageError> {
        Ok(None)
    }
    async fn epochs(&self, _: &[VisitId]) -> Result<Vec<(VisitId, i64)>, StorageError> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl AccessBlocks for OneVisit {
    async fn blocks(&self, _: VisitId) -> Result<Vec<Block>, StorageError> {
        Ok(Vec::new())
    }
    async fn blocked_at(
        &self,
        _: VisitId,
        _: &str,
    ) -> Result<Option<chrono::DateTime<Utc>>, StorageError> {
        Ok(None)
    }
    async fn blocks_since(
        &self,
        _: chrono::DateTime<Utc>,
    ) -> Result<Vec<(VisitId, Block)>, StorageError> {
        Ok(Vec::new())
    }
    async fn used_links(&self, _: VisitId) -> Result<Vec<String>, StorageError> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl Storage for OneVisit {
    async fn ping(&self) -> Result<(), StorageError> {
        Ok(())
    }
    async fn close(&self) {}
}

/// An outbox that counts what reaches it.
/// The peer's end: encodes each notice into the frame its socket would send, as the
/// connection task does, and counts the bytes.
#[derive(Default)]
struct Encoding(AtomicU64);

impl Outbox for Encoding {
    fn push(&self, item: Outgoing) {
        if let Outgoing::Notice(notice) = item {
            let extras = JoinedExtras {
                ice_servers: &[],
                resume_token: "",
            };
            let frame = encode(*notice, &extras);
            self.0
                .fetch_add(black_box(frame).len() as u64, Ordering::Relaxed);
        }
    }
}

fn hot_path(c: &mut Criterion) {
    let data = data();
    let frame = format!(r#"{{"type":"signal","to":"p_00000000000000ff","data":{data}}}"#);
    let mut group = c.benchmark_group("relay");
    group.throughput(Throughput::Elements(1));

    group.bench_function("decode client signal frame", |b| {
        b.iter(|| ClientMsg::decode(black_box(&frame)).expect("valid"))
    });

    // A visit with an admitted doctor and patient.
    let now = Utc::now();
    let mut visit = Visit::new(record(VisitId::random()), TimeDelta::seconds(30));
    let (doctor, patient) = (ConnId::next(), ConnId::next());
    let mut out = Vec::new();
    visit
        .handle(Input::Join(join(doctor, "dr", Role::Doctor)), now, &mut out)
        .expect("join");
    visit
        .handle(
            Input::Join(join(patient, "pt", Role::Patient)),
            now,
            &mut out,
        )
        .expect("join");
    let pid = visit.participant_of(patient).expect("patient");
    visit
        .handle(
            Input::Admit {
                conn: doctor,
                target: pid,
            },
            now,
            &mut out,
        )
        .expect("admit");
    let raw = Payload::new(data.clone());
    group.bench_function("authorize and route in the visit", |b| {
        b.iter(|| {
            out.clear();
            let input = Input::Signal {
                conn: doctor,
                to: pid,
                data: raw.clone(),
            };
            visit
                .handle(black_box(input), now, &mut out)
                .expect("relayed");
        })
    });

    let extras = JoinedExtras {
        ice_servers: &[],
        resume_token: "",
    };
    let notice = Notice::Signal {
        from: pid,
        data: raw.clone(),
    };
    // Encoding consumes the notice: each run gets a copy made outside the timing.
    group.bench_function("encode server signal frame", |b| {
        b.iter_batched(
            || notice.clone(),
            |notice| encode(black_box(notice), &extras),
            BatchSize::SmallInput,
        )
    });

    // Through the registry: lock, handle, route to the peer's outbox.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let id = VisitId::random();
    let tenant = TenantId::new("clinic-a").expect("tenant");
    let (registry, handle, sender, target, sink) = rt.block_on(async {
        let storage: Arc<dyn Storage> = Arc::new(OneVisit(record(id)));
        let (writer, _task) = StorageWriter::spawn(storage.clone());
        let registry = Registry::new(storage, writer, TimeDelta::seconds(30), Utc::now());
        let sink = Arc::new(Encoding::default());
        let (handle, doctor_id) = registry
            .join(
                id,
                &tenant,
                join(doctor, "dr", Role::Doctor),
                sink.clone(),
                now,
            )
            .await
            .expect("join");
        let (_, pid) = registry
            .join(
                id,
                &tenant,
                join(patient, "pt", Role::Patient),
                sink.clone(),
                now,
            )
            .await
            .expect("join");
        registry
            .handle(
                &handle,
                Input::Admit {
                    conn: doctor,
                    target: pid,
                },
                now,
            )
            .expect("admit");
        (registry, handle, doctor_id, pid, sink)
    });
    group.bench_function("decode, route through the registry, encode", |b| {
        b.iter(|| {
            let ClientMsg::Signal { to, data } =
                ClientMsg::decode_from(black_box(&frame), Some(sender)).expect("valid")
            else {
                unreachable!()
            };
            let _ = to;
            registry
                .handle(
                    &handle,
                    Input::Signal {
                        conn: doctor,
                        to: target,
                        data,
                    },
                    now,
                )
                .expect("relayed");
        })
    });
    assert!(sink.0.load(Ordering::Relaxed) > 0);
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
