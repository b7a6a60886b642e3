//! The embedded default: one SQLite file, WAL mode, `synchronous=FULL` so a committed
//! change survives a crash of the process or the machine.

use super::{AuditRecord, ListQuery, Storage, StorageError, WriteOp, kind_of};
use crate::VisitId;
use crate::audit::AuditEvent;
use crate::record::{VisitRecord, VisitStatus};
use crate::visit::{Change, StoredParticipant};
use async_trait::async_trait;
use bedside_auth::{Role, TenantId};
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use std::str::FromStr;
use std::time::Duration;

pub struct SqliteStorage {
    pool: SqlitePool,
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time(us: i64) -> Result<DateTime<Utc>, StorageError> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| StorageError::Corrupt(format!("time {us}")))
}

fn opt_time(us: Option<i64>) -> Result<Option<DateTime<Utc>>, StorageError> {
    us.map(time).transpose()
}

fn parse<T: FromStr>(s: &str) -> Result<T, StorageError> {
    s.parse()
        .map_err(|_| StorageError::Corrupt(format!("value {s:?}")))
}

fn role(s: &str) -> Result<Role, StorageError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| StorageError::Corrupt(format!("role {s:?}")))
}

macro_rules! visit_columns {
    () => {
        "id, tenant, external_ref, status, ended_reason, created_at, not_before, \
         expires_at, started_at, ended_at, max_participants, metadata"
    };
}

fn visit_from_row(row: &SqliteRow) -> Result<VisitRecord, StorageError> {
    let metadata: Option<String> = row.try_get("metadata")?;
    Ok(VisitRecord {
        id: parse(row.try_get::<&str, _>("id")?)?,
        tenant: TenantId::new(row.try_get::<String, _>("tenant")?)
            .map_err(|e| StorageError::Corrupt(e.to_string()))?,
        external_ref: row.try_get("external_ref")?,
        status: parse(row.try_get::<&str, _>("status")?)?,
        ended_reason: row
            .try_get::<Option<&str>, _>("ended_reason")?
            .map(parse)
            .transpose()?,
        created_at: time(row.try_get("created_at")?)?,
        not_before: opt_time(row.try_get("not_before")?)?,
        expires_at: time(row.try_get("expires_at")?)?,
        started_at: opt_time(row.try_get("started_at")?)?,
        ended_at: opt_time(row.try_get("ended_at")?)?,
        max_participants: row
            .try_get::<i64, _>("max_participants")?
            .try_into()
            .map_err(|_| StorageError::Corrupt("max_participants".into()))?,
        metadata: metadata
            .map(|m| serde_json::from_str(&m))
            .transpose()
            .map_err(|e| StorageError::Corrupt(e.to_string()))?,
    })
}

impl SqliteStorage {
    /// Opens (creating if missing) the database at `sqlite://PATH` and migrates it.
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
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

    async fn insert_audit(
        tx: &mut Transaction<'_, Sqlite>,
        visit: VisitId,
        tenant: &TenantId,
        e: &AuditEvent,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO audit_events (visit_id, tenant, at, kind, participant_id, identity, role, actor, detail) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(visit.to_string())
        .bind(tenant.as_str())
        .bind(micros(e.at))
        .bind(e.kind.as_str())
        .bind(e.participant_id.map(|p| p.to_string()))
        .bind(e.identity.as_deref())
        .bind(e.role.map(Role::as_str))
        .bind(e.actor.as_deref())
        .bind(e.detail.as_deref())
        .execute(&mut **tx)
        .await?;
        Ok(())
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
            Change::Status { status, at, .. } => {
                sqlx::query("UPDATE visits SET status = ?, started_at = COALESCE(started_at, ?) WHERE id = ? AND status = 'open'")
                    .bind(status.as_str())
                    .bind(micros(*at))
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

#[async_trait]
impl Storage for SqliteStorage {
    async fn insert_visit(
        &self,
        v: &VisitRecord,
        created: &AuditEvent,
    ) -> Result<(), StorageError> {
        let mut tx = self.pool.begin().await?;
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
        Self::insert_audit(&mut tx, v.id, &v.tenant, created).await?;
        tx.commit().await?;
        Ok(())
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

    async fn apply(&self, ops: &[WriteOp]) -> Result<(), StorageError> {
        let mut tx = self.pool.begin().await?;
        for op in ops {
            match op {
                WriteOp::Change { visit, change } => {
                    Self::apply_change(&mut tx, *visit, change).await?
                }
                WriteOp::Audit {
                    visit,
                    tenant,
                    event,
                } => Self::insert_audit(&mut tx, *visit, tenant, event).await?,
            }
        }
        tx.commit().await?;
        Ok(())
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
                        actor: r.try_get("actor")?,
                        detail: r.try_get("detail")?,
                    },
                })
            })
            .collect()
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
