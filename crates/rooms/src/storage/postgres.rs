//! PostgreSQL storage, for production and for several `bedside` nodes sharing one
//! database: the same [`Storage`] behaviour as SQLite (same rows, same ordering, integer
//! microsecond times, the same audit hash chain), with locking that holds when more than
//! one process writes.
//!
//! Concurrency, in the order a write transaction takes its locks (always this order, and
//! each kind sorted, so two transactions cannot deadlock on them):
//! 1. the `visits` rows of every visit the transaction appends audit rows or events to
//!    (`SELECT ... FOR UPDATE`): one writer at a time extends a visit's hash chain, and it
//!    reads the chain's head only once it holds the lock;
//! 2. the `event_tenants` rows of the tenants it writes events for (see `postgres_events`).
//!
//! Audit seqs come from a sequence, taken after those locks and before hashing (the hash
//! covers the seq): a later writer of a visit always gets higher seqs than an earlier one,
//! so a visit's rows are in chain order by seq, which is what verification walks.
//!
//! The pool gives up acquiring a connection after [`ACQUIRE_TIMEOUT`] and checks a
//! connection before handing it out, so while the server is unreachable `ping` (and with it
//! `/readyz`) fails quickly, and once it is back new connections replace the dead ones
//! without a restart.

use super::columns::{
    micros, opt_time, parse, role, stored_fields, time, visit_columns, visit_from_row,
};
use super::postgres_events::{self, EventWriter};
use super::{
    Attempt, AuditRecord, ListQuery, Storage, StorageError, StoredEvent, WriteOp, kind_of,
};
use crate::VisitId;
use crate::audit::AuditEvent;
use crate::audit_chain::{self, ChainReport, Entry, Hash, Head, StoredRow};
use crate::event::{EventKind, VisitEvent};
use crate::record::{VisitRecord, VisitStatus};
use crate::visit::{Change, StoredParticipant};
use async_trait::async_trait;
use bedside_auth::{Role, TenantId};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::str::FromStr;
use std::time::Duration;

/// How long a caller waits for a connection before the call fails.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct PostgresStorage {
    pool: PgPool,
}

/// PostgreSQL text cannot hold NUL characters (SQLite's can). Inputs reject control
/// characters before they get here; this keeps a stray one from failing a whole write
/// batch, and the audit chain hashes the text as stored.
fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn opt_text(s: Option<&str>) -> Option<Cow<'_, str>> {
    s.map(text)
}

impl PostgresStorage {
    /// Connects to the database a `postgres://` (or `postgresql://`) URL names and
    /// migrates it. The database itself must exist (PostgreSQL databases are created by
    /// their administrator); its tables are created here.
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        // A node frozen mid-transaction (paused, partitioned) must not hold its visits' rows
        // locked: the server ends such a session, so another node can take the visits over
        // (and the frozen node's commit then fails, and is refused when retried).
        let options = PgConnectOptions::from_str(url)?
            .options([("idle_in_transaction_session_timeout", "2s")]);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(true)
            .connect_with(options)
            .await?;
        // Concurrent nodes are fine: the migrator holds an advisory lock while it runs.
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    /// The same as [`Self::connect`]: connecting never creates a PostgreSQL database, so a
    /// mistyped name fails rather than reading as an empty one.
    pub async fn connect_existing(url: &str) -> Result<Self, StorageError> {
        Self::connect(url).await
    }

    async fn apply_change(
        tx: &mut Transaction<'_, Postgres>,
        visit: VisitId,
        change: &Change,
    ) -> Result<(), StorageError> {
        let id = visit.to_string();
        match change {
            Change::Status {
                status: VisitStatus::Ended,
                reason,
                at,
            } => {
                sqlx::query("UPDATE visits SET status = 'ended', ended_reason = $1, ended_at = $2 WHERE id = $3 AND status <> 'ended'")
                    .bind(reason.map(|r| r.as_str()))
                    .bind(micros(*at))
                    .bind(&id)
                    .execute(&mut **tx)
                    .await?;
                sqlx::query("DELETE FROM participants WHERE visit_id = $1")
                    .bind(&id)
                    .execute(&mut **tx)
                    .await?;
            }
            Change::Started { at } => {
                sqlx::query(
                    "UPDATE visits SET started_at = COALESCE(started_at, $1) WHERE id = $2",
                )
                .bind(micros(*at))
                .bind(&id)
                .execute(&mut **tx)
                .await?;
            }
            Change::Status { status, .. } => {
                sqlx::query("UPDATE visits SET status = $1 WHERE id = $2 AND status = 'open'")
                    .bind(status.as_str())
                    .bind(&id)
                    .execute(&mut **tx)
                    .await?;
            }
            Change::Participant(p) => {
                sqlx::query(
                    "INSERT INTO participants (visit_id, participant_id, identity, role, name, state, since, dropped_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     ON CONFLICT (visit_id, participant_id) DO UPDATE SET identity = EXCLUDED.identity, \
                     role = EXCLUDED.role, name = EXCLUDED.name, state = EXCLUDED.state, \
                     since = EXCLUDED.since, dropped_at = EXCLUDED.dropped_at",
                )
                .bind(&id)
                .bind(p.participant_id.to_string())
                .bind(text(&p.identity))
                .bind(p.role.as_str())
                .bind(text(&p.name))
                .bind(p.state.as_str())
                .bind(micros(p.since))
                .bind(p.dropped_at.map(micros))
                .execute(&mut **tx)
                .await?;
            }
            Change::ParticipantGone { participant_id } => {
                sqlx::query("DELETE FROM participants WHERE visit_id = $1 AND participant_id = $2")
                    .bind(&id)
                    .bind(participant_id.to_string())
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Ok(())
    }
}

/// Locks the `visits` rows of these visits, in id order, until the transaction ends.
/// Locks the rows of `visits` and returns their epochs.
async fn lock_visits(
    tx: &mut Transaction<'_, Postgres>,
    visits: &BTreeSet<VisitId>,
) -> Result<BTreeMap<VisitId, i64>, StorageError> {
    if visits.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut ids: Vec<String> = visits.iter().map(VisitId::to_string).collect();
    ids.sort_unstable();
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT id, epoch FROM visits WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&ids)
            .fetch_all(&mut **tx)
            .await?;
    rows.into_iter()
        .map(|(id, epoch)| Ok((parse(&id)?, epoch)))
        .collect()
}

/// Appends audit rows to visits' hash chains within one write transaction.
///
/// [`ChainWriter::start`] is called once the transaction holds the locks of every visit it
/// appends to: it reads those chains' heads and takes the seqs for all the rows in one
/// statement each. The ends are then kept in memory while the batch appends, and written
/// back in one statement ([`ChainWriter::finish`]) before commit.
#[derive(Default)]
struct ChainWriter {
    /// Seqs taken for this transaction's rows, ascending.
    seqs: VecDeque<i64>,
    /// Per visit: the hash its next row chains from, and the seq of its last row if this
    /// transaction appended one (only those heads are written back).
    ends: HashMap<VisitId, (Hash, Option<i64>)>,
}

impl ChainWriter {
    async fn start(
        tx: &mut Transaction<'_, Postgres>,
        visits: &BTreeSet<VisitId>,
        rows: usize,
    ) -> Result<Self, StorageError> {
        let mut chain = Self::default();
        if rows == 0 {
            return Ok(chain);
        }
        let ids: Vec<String> = visits.iter().map(VisitId::to_string).collect();
        let heads = sqlx::query("SELECT visit_id, hash FROM audit_heads WHERE visit_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut **tx)
            .await?;
        for row in heads {
            // Decoded leniently: a head someone mangled must not fail the batch.
            let Some(visit) = row
                .try_get::<Option<String>, _>("visit_id")
                .ok()
                .flatten()
                .and_then(|id| id.parse::<VisitId>().ok())
            else {
                continue;
            };
            let hash = row.try_get::<Option<String>, _>("hash").ok().flatten();
            match hash.as_deref().and_then(audit_chain::from_hex) {
                Some(hash) => {
                    chain.ends.insert(visit, (hash, None));
                }
                // Refusing to write would drop the writer's whole batch (other visits'
                // changes too); chaining from genesis instead keeps the trail going and
                // leaves a break that verification reports.
                None => tracing::error!(
                    visit = %visit,
                    "audit chain head is not a hash; restarting the chain"
                ),
            }
        }
        let n = i64::try_from(rows).map_err(|_| StorageError::Corrupt("batch size".into()))?;
        let mut seqs: Vec<i64> =
            sqlx::query_scalar("SELECT nextval('audit_events_seq') FROM generate_series(1, $1)")
                .bind(n)
                .fetch_all(&mut **tx)
                .await?;
        seqs.sort_unstable();
        chain.seqs = seqs.into();
        Ok(chain)
    }

    async fn append(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        visit: VisitId,
        tenant: &TenantId,
        e: &AuditEvent,
    ) -> Result<(), StorageError> {
        let seq = self
            .seqs
            .pop_front()
            .ok_or_else(|| StorageError::Corrupt("no audit seq taken for a row".into()))?;
        let prev = self.ends.get(&visit).map_or_else(
            || audit_chain::genesis(&visit.to_string()),
            |&(hash, _)| hash,
        );
        let visit_id = visit.to_string();
        let participant_id = e.participant_id.map(|p| p.to_string());
        let identity = opt_text(e.identity.as_deref());
        let actor = e.actor.as_ref().map(ToString::to_string);
        let actor = opt_text(actor.as_deref());
        let detail = opt_text(e.detail.as_deref());
        let tenant = text(tenant.as_str());
        let at = micros(e.at);
        let entry = Entry {
            visit_id: &visit_id,
            tenant: &tenant,
            seq,
            at,
            kind: e.kind.as_str(),
            participant_id: participant_id.as_deref(),
            identity: identity.as_deref(),
            role: e.role.map(Role::as_str),
            actor: actor.as_deref(),
            detail: detail.as_deref(),
        };
        let hash = audit_chain::link_hash(&entry, &prev);
        sqlx::query(
            "INSERT INTO audit_events (seq, visit_id, tenant, at, kind, participant_id, identity, role, actor, detail, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(seq)
        .bind(entry.visit_id)
        .bind(entry.tenant)
        .bind(at)
        .bind(entry.kind)
        .bind(entry.participant_id)
        .bind(entry.identity)
        .bind(entry.role)
        .bind(entry.actor)
        .bind(entry.detail)
        .bind(audit_chain::to_hex(&prev))
        .bind(audit_chain::to_hex(&hash))
        .execute(&mut **tx)
        .await?;
        self.ends.insert(visit, (hash, Some(seq)));
        Ok(())
    }

    /// Records, in one statement, the new end of every chain this transaction extended.
    async fn finish(self, tx: &mut Transaction<'_, Postgres>) -> Result<(), StorageError> {
        let mut visits = Vec::new();
        let mut seqs = Vec::new();
        let mut hashes = Vec::new();
        for (visit, (hash, seq)) in self.ends {
            if let Some(seq) = seq {
                visits.push(visit.to_string());
                seqs.push(seq);
                hashes.push(audit_chain::to_hex(&hash));
            }
        }
        if visits.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO audit_heads (visit_id, seq, hash) \
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[]) \
             ON CONFLICT (visit_id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash",
        )
        .bind(&visits)
        .bind(&seqs)
        .bind(&hashes)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

impl PostgresStorage {
    /// Checks one visit's chain, reading its rows and head in one snapshot (repeatable
    /// read) so a write committed meanwhile cannot make them disagree. `None` when the
    /// visit has neither.
    async fn verify_visit(
        &self,
        visit_id: &str,
    ) -> Result<Option<audit_chain::VisitCheck>, StorageError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
        let head = sqlx::query("SELECT seq, hash FROM audit_heads WHERE visit_id = $1")
            .bind(visit_id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| -> Result<Head, sqlx::Error> {
                Ok(Head {
                    seq: r.try_get("seq")?,
                    hash: r.try_get("hash").unwrap_or_default(),
                })
            })
            .transpose()?;
        let rows = sqlx::query(
            "SELECT seq, tenant, at, kind, participant_id, identity, role, actor, detail, prev_hash, hash \
             FROM audit_events WHERE visit_id = $1 ORDER BY seq",
        )
        .bind(visit_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.rollback().await?;
        if rows.is_empty() && head.is_none() {
            return Ok(None);
        }
        let rows = rows
            .iter()
            .map(|r| {
                Ok(StoredRow {
                    seq: r.try_get("seq")?,
                    fields: stored_fields(r).ok(),
                    prev_hash: r.try_get("prev_hash").ok().flatten(),
                    hash: r.try_get("hash").ok().flatten(),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        // No rows predate the chain here (see migrations/postgres/0002): every row counts.
        Ok(Some(audit_chain::verify(visit_id, 0, &rows, head.as_ref())))
    }
}

#[async_trait]
impl Storage for PostgresStorage {
    async fn insert_visit(
        &self,
        v: &VisitRecord,
        created: &AuditEvent,
    ) -> Result<(), StorageError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(concat!(
            "INSERT INTO visits (",
            visit_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ))
        .bind(v.id.to_string())
        .bind(v.tenant.as_str())
        .bind(opt_text(v.external_ref.as_deref()))
        .bind(v.status.as_str())
        .bind(v.ended_reason.map(|r| r.as_str()))
        .bind(micros(v.created_at))
        .bind(v.not_before.map(micros))
        .bind(micros(v.expires_at))
        .bind(v.started_at.map(micros))
        .bind(v.ended_at.map(micros))
        .bind(i64::from(v.max_participants))
        .bind(v.metadata.as_ref().map(|m| m.to_string()))
        .execute(&mut *tx)
        .await?;
        // The new row is this transaction's until it commits: no other writer can touch
        // the visit's chain, so no lock is needed beyond the insert's own.
        let mut chain = ChainWriter::start(&mut tx, &BTreeSet::from([v.id]), 1).await?;
        chain.append(&mut tx, v.id, &v.tenant, created).await?;
        chain.finish(&mut tx).await?;
        EventWriter::default()
            .append(
                &mut tx,
                v.id,
                &v.tenant,
                &VisitEvent::new(EventKind::VisitCreated, v.created_at),
            )
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn visit(&self, id: VisitId) -> Result<Option<VisitRecord>, StorageError> {
        sqlx::query(concat!(
            "SELECT ",
            visit_columns!(),
            " FROM visits WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(visit_from_row)
        .transpose()
    }

    async fn list_visits(
        &self,
        tenant: &TenantId,
        q: &ListQuery,
    ) -> Result<Vec<VisitRecord>, StorageError> {
        let (after_time, after_id) = match q.after {
            Some((t, id)) => (Some(micros(t)), Some(id.to_string())),
            None => (None, None),
        };
        let rows = sqlx::query(concat!(
            "SELECT ",
            visit_columns!(),
            " FROM visits WHERE tenant = $1 AND ($2::text IS NULL OR status = $2) \
             AND ($3::bigint IS NULL OR created_at < $3 OR (created_at = $3 AND id < $4)) \
             ORDER BY created_at DESC, id DESC LIMIT $5"
        ))
        .bind(tenant.as_str())
        .bind(q.status.map(VisitStatus::as_str))
        .bind(after_time)
        .bind(after_id)
        .bind(i64::from(q.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(visit_from_row).collect()
    }

    async fn participants(&self, id: VisitId) -> Result<Vec<StoredParticipant>, StorageError> {
        let rows = sqlx::query(
            "SELECT participant_id, identity, role, name, state, since, dropped_at FROM participants \
             WHERE visit_id = $1 ORDER BY since, participant_id",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredParticipant {
                    participant_id: parse(r.try_get::<&str, _>("participant_id")?)?,
                    identity: r.try_get("identity")?,
                    role: role(r.try_get("role")?)?,
                    name: r.try_get("name")?,
                    state: parse(r.try_get::<&str, _>("state")?)?,
                    since: time(r.try_get("since")?)?,
                    dropped_at: opt_time(r.try_get("dropped_at")?)?,
                })
            })
            .collect()
    }

    async fn apply(&self, ops: &[WriteOp]) -> Result<Vec<VisitId>, StorageError> {
        let fences = super::fences(ops);
        let mut tx = self.pool.begin().await?;
        // Every visit the batch touches is locked once, in id order (no deadlock with
        // another node's writer or claim), and the fences are checked under those locks.
        let mut locked: BTreeSet<VisitId> = fences.keys().copied().collect();
        for op in ops {
            if let WriteOp::Audit { visit, .. } | WriteOp::Event { visit, .. } = op {
                locked.insert(*visit);
            }
        }
        let epochs = lock_visits(&mut tx, &locked).await?;
        let fenced: Vec<VisitId> = fences
            .iter()
            .filter(|(visit, epoch)| epochs.get(visit) != Some(epoch))
            .map(|(visit, _)| *visit)
            .collect();
        let ops = super::unfenced(ops, &fenced);
        let mut visits = BTreeSet::new();
        let mut tenants = Vec::new();
        let mut audit_rows = 0;
        for op in &ops {
            match op {
                WriteOp::Audit { visit, .. } => {
                    visits.insert(*visit);
                    audit_rows += 1;
                }
                WriteOp::Event { visit, tenant, .. } => {
                    visits.insert(*visit);
                    tenants.push(tenant);
                }
                WriteOp::Change { .. } | WriteOp::Fence { .. } => {}
            }
        }
        let mut events = EventWriter::default();
        events.lock_tenants(&mut tx, tenants).await?;
        let mut chain = ChainWriter::start(&mut tx, &visits, audit_rows).await?;
        for op in ops {
            match op {
                WriteOp::Change { visit, change } => {
                    Self::apply_change(&mut tx, *visit, change).await?
                }
                WriteOp::Audit {
                    visit,
                    tenant,
                    event,
                } => chain.append(&mut tx, *visit, tenant, event).await?,
                WriteOp::Event {
                    visit,
                    tenant,
                    event,
                } => events.append(&mut tx, *visit, tenant, event).await?,
                WriteOp::Fence { .. } => {}
            }
        }
        chain.finish(&mut tx).await?;
        tx.commit().await?;
        Ok(fenced)
    }

    async fn epochs(&self, visits: &[VisitId]) -> Result<Vec<(VisitId, i64)>, StorageError> {
        let ids: Vec<String> = visits.iter().map(VisitId::to_string).collect();
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT id, epoch FROM visits WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|(id, epoch)| Ok((parse(&id)?, epoch)))
            .collect()
    }

    async fn claim(&self, visit: VisitId) -> Result<Option<i64>, StorageError> {
        Ok(
            sqlx::query_scalar("UPDATE visits SET epoch = epoch + 1 WHERE id = $1 RETURNING epoch")
                .bind(visit.to_string())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn audit_trail(&self, id: VisitId) -> Result<Vec<AuditRecord>, StorageError> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, participant_id, identity, role, actor, detail FROM audit_events \
             WHERE visit_id = $1 ORDER BY seq",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    seq: r.try_get("seq")?,
                    visit_id: id,
                    event: AuditEvent {
                        at: time(r.try_get("at")?)?,
                        kind: kind_of(r.try_get("kind")?)?,
                        participant_id: r
                            .try_get::<Option<&str>, _>("participant_id")?
                            .map(parse)
                            .transpose()?,
                        identity: r.try_get("identity")?,
                        role: r
                            .try_get::<Option<&str>, _>("role")?
                            .map(role)
                            .transpose()?,
                        actor: r
                            .try_get::<Option<&str>, _>("actor")?
                            .map(parse)
                            .transpose()?,
                        detail: r.try_get("detail")?,
                    },
                })
            })
            .collect()
    }

    async fn verify_audit(&self, visit: Option<VisitId>) -> Result<ChainReport, StorageError> {
        let ids: Vec<String> = match visit {
            Some(v) => vec![v.to_string()],
            // Every visit that has, or had, a trail: rows whose visit row is gone still count.
            None => {
                sqlx::query_scalar(
                    "SELECT id FROM visits UNION SELECT visit_id FROM audit_events \
                     UNION SELECT visit_id FROM audit_heads ORDER BY 1",
                )
                .fetch_all(&self.pool)
                .await?
            }
        };
        let mut report = ChainReport::default();
        for id in &ids {
            if let Some(check) = self.verify_visit(id).await? {
                report.add(id, check);
            }
        }
        Ok(report)
    }

    async fn events(
        &self,
        tenant: &TenantId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        postgres_events::list(&self.pool, tenant, after, limit).await
    }

    async fn event_seq(&self, tenant: &TenantId, id: &str) -> Result<Option<i64>, StorageError> {
        postgres_events::seq_of(&self.pool, tenant, id).await
    }

    async fn undelivered(
        &self,
        tenant: &TenantId,
        limit: u32,
    ) -> Result<Vec<(StoredEvent, DateTime<Utc>)>, StorageError> {
        postgres_events::undelivered(&self.pool, tenant, limit).await
    }

    async fn record_attempt(&self, seq: i64, outcome: Attempt) -> Result<(), StorageError> {
        postgres_events::record_attempt(&self.pool, seq, outcome).await
    }

    async fn count_by_status(&self) -> Result<Vec<(VisitStatus, u64)>, StorageError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM visits GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    parse(r.try_get::<&str, _>("status")?)?,
                    r.try_get::<i64, _>("n")?.max(0) as u64,
                ))
            })
            .collect()
    }

    async fn due_for_expiry(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<VisitId>, StorageError> {
        let rows = sqlx::query(
            "SELECT id FROM visits WHERE status IN ('open', 'active') AND expires_at <= $1 LIMIT $2",
        )
        .bind(micros(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| parse(r.try_get::<&str, _>("id")?))
            .collect()
    }

    async fn secret(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>, StorageError> {
        // The first writer wins, across nodes too; everyone reads back what it wrote.
        sqlx::query(
            "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(text(name))
        .bind(fresh)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = $1")
                .bind(text(name))
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
