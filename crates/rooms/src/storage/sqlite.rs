//! The embedded default: one SQLite file, WAL mode, `synchronous=FULL` so a committed
//! change survives a crash of the process or the machine.
//!
//! Every transaction that appends audit rows starts with `BEGIN IMMEDIATE`: it reads the
//! end of each visit's hash chain and then extends it, and SQLite serializes writers, so
//! holding the write lock from the start means no other connection (the writer task, an
//! API handler) can append to the same chain in between.

use super::columns::{
    micros, opt_time, parse, role, stored_fields, time, visit_columns, visit_from_row,
};
use super::sqlite_events::{self, EventWriter};
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
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

pub struct SqliteStorage {
    pool: SqlitePool,
}

/// Starts a write transaction holding SQLite's write lock from the outset (waiting up to
/// the busy timeout for it), so reading a chain's end and appending to it are one step.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

impl SqliteStorage {
    /// Opens (creating if missing) the database at `sqlite://PATH` and migrates it.
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        Self::open(url, true).await
    }

    /// Opens an existing database and migrates it; a missing file is an error rather than
    /// a new empty database (for tools that inspect one, such as `bedside audit verify`).
    pub async fn connect_existing(url: &str) -> Result<Self, StorageError> {
        Self::open(url, false).await
    }

    async fn open(url: &str, create: bool) -> Result<Self, StorageError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }

    async fn apply_change(
        tx: &mut Transaction<'_, Sqlite>,
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
                sqlx::query("UPDATE visits SET status = 'ended', ended_reason = ?, ended_at = ? WHERE id = ? AND status <> 'ended'")
                    .bind(reason.map(|r| r.as_str()))
                    .bind(micros(*at))
                    .bind(&id)
                    .execute(&mut **tx)
                    .await?;
                sqlx::query("DELETE FROM participants WHERE visit_id = ?")
                    .bind(&id)
                    .execute(&mut **tx)
                    .await?;
            }
            Change::Started { at } => {
                sqlx::query("UPDATE visits SET started_at = COALESCE(started_at, ?) WHERE id = ?")
                    .bind(micros(*at))
                    .bind(&id)
                    .execute(&mut **tx)
                    .await?;
            }
            Change::Status { status, .. } => {
                sqlx::query("UPDATE visits SET status = ? WHERE id = ? AND status = 'open'")
                    .bind(status.as_str())
                    .bind(&id)
                    .execute(&mut **tx)
                    .await?;
            }
            Change::Participant(p) => {
                sqlx::query(
                    "INSERT INTO participants (visit_id, participant_id, identity, role, name, state, since, dropped_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (visit_id, participant_id) DO UPDATE SET identity = excluded.identity, \
                     role = excluded.role, name = excluded.name, state = excluded.state, \
                     since = excluded.since, dropped_at = excluded.dropped_at",
                )
                .bind(&id)
                .bind(p.participant_id.to_string())
                .bind(&p.identity)
                .bind(p.role.as_str())
                .bind(&p.name)
                .bind(p.state.as_str())
                .bind(micros(p.since))
                .bind(p.dropped_at.map(micros))
                .execute(&mut **tx)
                .await?;
            }
            Change::ParticipantGone { participant_id } => {
                sqlx::query("DELETE FROM participants WHERE visit_id = ? AND participant_id = ?")
                    .bind(&id)
                    .bind(participant_id.to_string())
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Ok(())
    }
}

/// Appends audit rows to visits' hash chains within one write transaction.
///
/// The chain ends of every visit a batch touches are read in one statement up front
/// ([`ChainWriter::load`]) and kept in memory while the batch appends, then written back in
/// one statement ([`ChainWriter::finish`]) before commit: a batch costs three statements
/// more than it did without the chain, however many visits and events it holds. A
/// rolled-back transaction drops the writer with it, so nothing stale outlives it.
#[derive(Default)]
struct ChainWriter {
    /// The seq the next row gets.
    next_seq: Option<i64>,
    /// Per visit: the hash its next row chains from, and the seq of its last row if this
    /// transaction appended one (only those heads are written back).
    ends: HashMap<VisitId, (Hash, Option<i64>)>,
}

impl ChainWriter {
    /// Reads the chain ends of `visits` (duplicates are fine), and the next seq if not yet
    /// known, in one statement. A visit with no recorded head starts from its genesis value.
    async fn load(
        &mut self,
        tx: &mut Transaction<'_, Sqlite>,
        visits: impl IntoIterator<Item = VisitId>,
    ) -> Result<(), StorageError> {
        let mut wanted = Vec::new();
        for visit in visits {
            if let std::collections::hash_map::Entry::Vacant(e) = self.ends.entry(visit) {
                let id = visit.to_string();
                e.insert((audit_chain::genesis(&id), None));
                wanted.push(id);
            }
        }
        if wanted.is_empty() && self.next_seq.is_some() {
            return Ok(());
        }
        // Seqs are assigned here rather than by AUTOINCREMENT because the hash covers the
        // seq. The write lock is held (BEGIN IMMEDIATE), so no one else takes one meanwhile;
        // reading `sqlite_sequence` too keeps the AUTOINCREMENT rule of never reusing the
        // seq of a deleted last row. It rides along as one extra row (with no visit id) so
        // a batch pays one round trip to the database for all of this.
        let rows = sqlx::query(
            "SELECT visit_id, hash, NULL AS last_seq FROM audit_heads \
             WHERE visit_id IN (SELECT value FROM json_each(?1)) \
             UNION ALL \
             SELECT NULL, NULL, MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'audit_events'), 0), \
             COALESCE((SELECT MAX(seq) FROM audit_events), 0)) WHERE ?2",
        )
        .bind(serde_json::Value::from(wanted).to_string())
        .bind(self.next_seq.is_none())
        .fetch_all(&mut **tx)
        .await?;
        for row in rows {
            if let Some(last) = row.try_get::<Option<i64>, _>("last_seq")? {
                self.next_seq = Some(last + 1);
                continue;
            }
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
                    self.ends.insert(visit, (hash, None));
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
        Ok(())
    }

    async fn append(
        &mut self,
        tx: &mut Transaction<'_, Sqlite>,
        visit: VisitId,
        tenant: &TenantId,
        e: &AuditEvent,
    ) -> Result<(), StorageError> {
        if self.next_seq.is_none() || !self.ends.contains_key(&visit) {
            self.load(tx, [visit]).await?;
        }
        let seq = self
            .next_seq
            .ok_or_else(|| StorageError::Corrupt("no next audit seq".into()))?;
        let prev = self.ends.get(&visit).map_or_else(
            || audit_chain::genesis(&visit.to_string()),
            |&(hash, _)| hash,
        );
        let visit_id = visit.to_string();
        let participant_id = e.participant_id.map(|p| p.to_string());
        let actor = e.actor.as_ref().map(ToString::to_string);
        let at = micros(e.at);
        let entry = Entry {
            visit_id: &visit_id,
            tenant: tenant.as_str(),
            seq,
            at,
            kind: e.kind.as_str(),
            participant_id: participant_id.as_deref(),
            identity: e.identity.as_deref(),
            role: e.role.map(Role::as_str),
            actor: actor.as_deref(),
            detail: e.detail.as_deref(),
        };
        let hash = audit_chain::link_hash(&entry, &prev);
        sqlx::query(
            "INSERT INTO audit_events (seq, visit_id, tenant, at, kind, participant_id, identity, role, actor, detail, prev_hash, hash) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        self.next_seq = Some(seq + 1);
        self.ends.insert(visit, (hash, Some(seq)));
        Ok(())
    }

    /// Records, in one statement, the new end of every chain this transaction extended.
    async fn finish(self, tx: &mut Transaction<'_, Sqlite>) -> Result<(), StorageError> {
        let heads: Vec<serde_json::Value> = self
            .ends
            .into_iter()
            .filter_map(|(visit, (hash, seq))| {
                seq.map(|seq| {
                    serde_json::json!([visit.to_string(), seq, audit_chain::to_hex(&hash)])
                })
            })
            .collect();
        if heads.is_empty() {
            return Ok(());
        }
        // `WHERE true` tells SQLite's parser the ON CONFLICT belongs to the INSERT.
        sqlx::query(
            "INSERT INTO audit_heads (visit_id, seq, hash) \
             SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]') \
             FROM json_each(?) WHERE true \
             ON CONFLICT (visit_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        )
        .bind(serde_json::Value::from(heads).to_string())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

impl SqliteStorage {
    /// Checks one visit's chain, reading its rows and head in one snapshot so a write
    /// committed meanwhile cannot make them disagree. `None` when the visit has neither.
    async fn verify_visit(
        &self,
        visit_id: &str,
        legacy_max_seq: i64,
    ) -> Result<Option<audit_chain::VisitCheck>, StorageError> {
        let mut tx = self.pool.begin().await?;
        let head = sqlx::query("SELECT seq, hash FROM audit_heads WHERE visit_id = ?")
            .bind(visit_id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| -> Result<Head, sqlx::Error> {
                Ok(Head {
                    seq: r.try_get("seq")?,
                    // A head whose hash is not text compares unequal to every row.
                    hash: r.try_get("hash").unwrap_or_default(),
                })
            })
            .transpose()?;
        let rows = sqlx::query(
            "SELECT seq, tenant, at, kind, participant_id, identity, role, actor, detail, prev_hash, hash \
             FROM audit_events WHERE visit_id = ? ORDER BY seq",
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
        Ok(Some(audit_chain::verify(
            visit_id,
            legacy_max_seq,
            &rows,
            head.as_ref(),
        )))
    }
}

#[async_trait]
impl Storage for SqliteStorage {
    async fn insert_visit(
        &self,
        v: &VisitRecord,
        created: &AuditEvent,
    ) -> Result<(), StorageError> {
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        sqlx::query(concat!(
            "INSERT INTO visits (",
            visit_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(v.id.to_string())
        .bind(v.tenant.as_str())
        .bind(v.external_ref.as_deref())
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
        let mut chain = ChainWriter::default();
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

    async fn events(
        &self,
        tenant: &TenantId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        sqlite_events::list(&self.pool, tenant, after, limit).await
    }

    async fn event_seq(&self, tenant: &TenantId, id: &str) -> Result<Option<i64>, StorageError> {
        sqlite_events::seq_of(&self.pool, tenant, id).await
    }

    async fn undelivered(
        &self,
        tenant: &TenantId,
        limit: u32,
    ) -> Result<Vec<(StoredEvent, DateTime<Utc>)>, StorageError> {
        sqlite_events::undelivered(&self.pool, tenant, limit).await
    }

    async fn record_attempt(&self, seq: i64, outcome: Attempt) -> Result<(), StorageError> {
        sqlite_events::record_attempt(&self.pool, seq, outcome).await
    }

    async fn visit(&self, id: VisitId) -> Result<Option<VisitRecord>, StorageError> {
        sqlx::query(concat!(
            "SELECT ",
            visit_columns!(),
            " FROM visits WHERE id = ?"
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
            " FROM visits WHERE tenant = ?1 AND (?2 IS NULL OR status = ?2) \
             AND (?3 IS NULL OR created_at < ?3 OR (created_at = ?3 AND id < ?4)) \
             ORDER BY created_at DESC, id DESC LIMIT ?5"
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
             WHERE visit_id = ? ORDER BY since",
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
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        // The write transaction excludes every other writer, so the epochs read here hold
        // until commit.
        let mut fenced = Vec::new();
        for (visit, epoch) in super::fences(ops) {
            let stored: Option<i64> = sqlx::query_scalar("SELECT epoch FROM visits WHERE id = ?")
                .bind(visit.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            if stored != Some(epoch) {
                fenced.push(visit);
            }
        }
        let ops = super::unfenced(ops, &fenced);
        let mut chain = ChainWriter::default();
        let mut events = EventWriter::default();
        chain
            .load(
                &mut tx,
                ops.iter().filter_map(|op| match op {
                    WriteOp::Audit { visit, .. } => Some(*visit),
                    _ => None,
                }),
            )
            .await?;
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
        let mut found = Vec::with_capacity(visits.len());
        for visit in visits {
            let epoch: Option<i64> = sqlx::query_scalar("SELECT epoch FROM visits WHERE id = ?")
                .bind(visit.to_string())
                .fetch_optional(&self.pool)
                .await?;
            found.extend(epoch.map(|e| (*visit, e)));
        }
        Ok(found)
    }

    async fn claim(&self, visit: VisitId) -> Result<Option<i64>, StorageError> {
        Ok(
            sqlx::query_scalar("UPDATE visits SET epoch = epoch + 1 WHERE id = ? RETURNING epoch")
                .bind(visit.to_string())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn audit_trail(&self, id: VisitId) -> Result<Vec<AuditRecord>, StorageError> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, participant_id, identity, role, actor, detail FROM audit_events \
             WHERE visit_id = ? ORDER BY seq",
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
        // The highest seq written before the chain existed (see the 0002 migration). A
        // missing mark reads as 0: every row must then be chained.
        let legacy_max_seq: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(legacy_max_seq), 0) FROM audit_chain_start")
                .fetch_one(&self.pool)
                .await?;
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
            if let Some(check) = self.verify_visit(id, legacy_max_seq).await? {
                report.add(id, check);
            }
        }
        Ok(report)
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
            "SELECT id FROM visits WHERE status IN ('open', 'active') AND expires_at <= ? LIMIT ?",
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
        sqlx::query("INSERT OR IGNORE INTO server_secrets (name, value) VALUES (?, ?)")
            .bind(name)
            .bind(fresh)
            .execute(&self.pool)
            .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = ?")
                .bind(name)
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
