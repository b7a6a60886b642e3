//! Visit events in PostgreSQL: appending them inside the writer's transactions, and the
//! reads and updates webhook delivery needs.
//!
//! Two guarantees must hold with several writers (nodes) at once, not only one:
//! - `visit_seq` is 1, 2, 3... per visit with no gaps: it comes from the visit's row in
//!   `visit_event_counters`, incremented by the inserting transaction, which holds that
//!   row's lock until it commits or rolls back (a rollback undoes the increment too).
//! - a tenant's events commit in `seq` order, so a reader paging with `after=SEQ` never
//!   sees an event with a lower seq appear behind one it already has: a transaction locks
//!   its tenants' rows in `event_tenants` (in name order, against deadlocks) before it takes
//!   any seq for their events. `seq` is unique across tenants (delivery outcomes are
//!   recorded by seq alone) and, as in SQLite, not gapless within a tenant.

use super::columns::{event_columns, event_from_row};
use super::{Attempt, StorageError, StoredEvent};
use crate::VisitId;
use crate::event::VisitEvent;
use bedside_auth::TenantId;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Row, Transaction};
use std::collections::BTreeSet;

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time(us: i64) -> Result<DateTime<Utc>, StorageError> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| StorageError::Corrupt(format!("time {us}")))
}

/// Appends events within one transaction.
#[derive(Default)]
pub(super) struct EventWriter {
    /// Tenants whose `event_tenants` row this transaction holds.
    locked: BTreeSet<String>,
}

impl EventWriter {
    /// Locks the rows of these tenants, in order; call it before any append so that
    /// transactions touching several tenants take their locks in the same order.
    pub(super) async fn lock_tenants(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        tenants: impl IntoIterator<Item = &TenantId>,
    ) -> Result<(), StorageError> {
        let wanted: BTreeSet<String> = tenants
            .into_iter()
            .map(|t| t.as_str().to_owned())
            .filter(|t| !self.locked.contains(t))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = wanted.iter().cloned().collect();
        // Creates missing rows and locks existing ones; rows are processed in array order,
        // and the array is sorted.
        sqlx::query(
            "INSERT INTO event_tenants (tenant) SELECT * FROM UNNEST($1::text[]) \
             ON CONFLICT (tenant) DO UPDATE SET tenant = EXCLUDED.tenant",
        )
        .bind(&names)
        .execute(&mut **tx)
        .await?;
        self.locked.extend(wanted);
        Ok(())
    }

    pub(super) async fn append(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        visit: VisitId,
        tenant: &TenantId,
        event: &VisitEvent,
    ) -> Result<(), StorageError> {
        if !self.locked.contains(tenant.as_str()) {
            self.lock_tenants(tx, [tenant]).await?;
        }
        let visit_id = visit.to_string();
        sqlx::query(
            "WITH n AS ( \
                 INSERT INTO visit_event_counters (visit_id, last_seq) VALUES ($1, 1) \
                 ON CONFLICT (visit_id) DO UPDATE SET last_seq = visit_event_counters.last_seq + 1 \
                 RETURNING last_seq) \
             INSERT INTO visit_events (id, tenant, visit_id, visit_seq, kind, at, data, next_attempt_at) \
             SELECT $2, $3, $1, n.last_seq, $4, $5, $6, $5 FROM n",
        )
        .bind(&visit_id)
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(tenant.as_str())
        .bind(event.kind.as_str())
        .bind(micros(event.at))
        .bind(event.data().to_string())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// A tenant's events after `after` (a tenant-wide sequence number), oldest first.
pub(super) async fn list(
    pool: &PgPool,
    tenant: &TenantId,
    after: i64,
    limit: u32,
) -> Result<Vec<StoredEvent>, StorageError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        event_columns!(),
        " FROM visit_events WHERE tenant = $1 AND seq > $2 ORDER BY seq LIMIT $3"
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
    pool: &PgPool,
    tenant: &TenantId,
    id: &str,
) -> Result<Option<i64>, StorageError> {
    Ok(
        sqlx::query_scalar("SELECT seq FROM visit_events WHERE tenant = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .fetch_optional(pool)
            .await?,
    )
}

/// The tenant's oldest events not yet delivered or given up on, in order.
pub(super) async fn undelivered(
    pool: &PgPool,
    tenant: &TenantId,
    limit: u32,
) -> Result<Vec<(StoredEvent, DateTime<Utc>)>, StorageError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        event_columns!(),
        ", next_attempt_at FROM visit_events \
         WHERE tenant = $1 AND delivered_at IS NULL AND failed_at IS NULL ORDER BY seq LIMIT $2"
    ))
    .bind(tenant.as_str())
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((event_from_row(r)?, time(r.try_get("next_attempt_at")?)?)))
        .collect()
}

/// Records a delivery attempt's outcome.
pub(super) async fn record_attempt(
    pool: &PgPool,
    seq: i64,
    outcome: Attempt,
) -> Result<(), StorageError> {
    let query = match outcome {
        Attempt::Delivered(at) => sqlx::query(
            "UPDATE visit_events SET attempts = attempts + 1, delivered_at = $1 WHERE seq = $2",
        )
        .bind(micros(at)),
        Attempt::Retry(next) => sqlx::query(
            "UPDATE visit_events SET attempts = attempts + 1, next_attempt_at = $1 WHERE seq = $2",
        )
        .bind(micros(next)),
        Attempt::GaveUp(at) => sqlx::query(
            "UPDATE visit_events SET attempts = attempts + 1, failed_at = $1 WHERE seq = $2",
        )
        .bind(micros(at)),
    };
    query.bind(seq).execute(pool).await?;
    Ok(())
}
