//! Visit events in SQLite: appending them inside the writer's transactions with their
//! per-visit sequence numbers, and the reads and updates webhook delivery needs.

use super::columns::{event_columns, event_from_row};
use super::{StorageError, StoredEvent};
use crate::VisitId;
use crate::event::VisitEvent;
use bedside_auth::TenantId;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqlitePool;
use sqlx::{Row, Sqlite, Transaction};
use std::collections::HashMap;

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// Appends events within one transaction, numbering each visit's events on from the last.
#[derive(Default)]
pub(super) struct EventWriter {
    /// Last sequence number given, per visit, in this transaction.
    last: HashMap<VisitId, i64>,
}

impl EventWriter {
    pub(super) async fn append(
        &mut self,
        tx: &mut Transaction<'_, Sqlite>,
        visit: VisitId,
        tenant: &TenantId,
        event: &VisitEvent,
    ) -> Result<(), StorageError> {
        let last = match self.last.get(&visit) {
            Some(n) => *n,
            None => {
                sqlx::query_scalar::<_, i64>(
                    "SELECT COALESCE(MAX(visit_seq), 0) FROM visit_events WHERE visit_id = ?",
                )
                .bind(visit.to_string())
                .fetch_one(&mut **tx)
                .await?
            }
        };
        let seq = last + 1;
        sqlx::query(
            "INSERT INTO visit_events (id, tenant, visit_id, visit_seq, kind, at, data, next_attempt_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(tenant.as_str())
        .bind(visit.to_string())
        .bind(seq)
        .bind(event.kind.as_str())
        .bind(micros(event.at))
        .bind(event.data().to_string())
        .bind(micros(event.at))
        .execute(&mut **tx)
        .await?;
        self.last.insert(visit, seq);
        Ok(())
    }
}

/// A tenant's events after `after` (a tenant-wide sequence number), oldest first.
pub(super) async fn list(
    pool: &SqlitePool,
    tenant: &TenantId,
    after: i64,
    limit: u32,
) -> Result<Vec<StoredEvent>, StorageError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        event_columns!(),
        " FROM visit_events WHERE tenant = ? AND seq > ? ORDER BY seq LIMIT ?"
    ))
    .bind(tenant.as_str())
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(event_from_row).collect()
}

/// The tenant-wide sequence number of the event with this id, if it is the tenant's.
pub(super) async fn seq_of(
    pool: &SqlitePool,
    tenant: &TenantId,
    id: &str,
) -> Result<Option<i64>, StorageError> {
    Ok(
        sqlx::query_scalar("SELECT seq FROM visit_events WHERE tenant = ? AND id = ?")
            .bind(tenant.as_str())
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// The tenant's oldest events not yet delivered or given up on, in order.
pub(super) async fn undelivered(
    pool: &SqlitePool,
    tenant: &TenantId,
    limit: u32,
) -> Result<Vec<(StoredEvent, DateTime<Utc>)>, StorageError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        event_columns!(),
        ", next_attempt_at FROM visit_events \
         WHERE tenant = ? AND delivered_at IS NULL AND failed_at IS NULL ORDER BY seq LIMIT ?"
    ))
    .bind(tenant.as_str())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let next: i64 = r.try_get("next_attempt_at")?;
            let next = DateTime::from_timestamp_micros(next)
                .ok_or_else(|| StorageError::Corrupt(format!("time {next}")))?;
            Ok((event_from_row(r)?, next))
        })
        .collect()
}

/// Records a delivery attempt's outcome.
pub(super) async fn record_attempt(
    pool: &SqlitePool,
    seq: i64,
    outcome: super::Attempt,
) -> Result<(), StorageError> {
    let query = match outcome {
        super::Attempt::Delivered(at) => sqlx::query(
            "UPDATE visit_events SET attempts = attempts + 1, delivered_at = ? WHERE seq = ?",
        )
        .bind(micros(at)),
        super::Attempt::Retry(next) => sqlx::query(
            "UPDATE visit_events SET attempts = attempts + 1, next_attempt_at = ? WHERE seq = ?",
        )
        .bind(micros(next)),
        super::Attempt::GaveUp(at) => sqlx::query(
            "UPDATE visit_events SET attempts = attempts + 1, failed_at = ? WHERE seq = ?",
        )
        .bind(micros(at)),
    };
    query.bind(seq).execute(pool).await?;
    Ok(())
}
