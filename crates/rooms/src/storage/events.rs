//! Visit events in either database: the outbox webhooks are delivered from and
//! `GET /v1/events` reads. Appended inside the writer's transactions, each visit's numbered
//! 1, 2, 3... with no gaps (`visit_seq`), and each tenant's too (`tenant_seq`, which the
//! API and webhook bodies call `seq`), so no tenant sees gaps left by another's events.
//! The row's own `seq` stays the storage key.

use super::columns::{event_columns, event_from_row, micros, time};
use super::dialect::{self, Dialect};
use super::driver::{Arg, Col};
use super::rows::Rows;
use super::sql::SqlStorage;
use super::{Attempt, EventOutbox, StorageError, StoredEvent, WriteOp};
use crate::VisitId;
use crate::event::VisitEvent;
use async_trait::async_trait;
use bedside_auth::TenantId;
use chrono::{DateTime, Utc};
use sqlx::Transaction;
use std::collections::{BTreeMap, HashMap};

/// Appends events within one write transaction.
///
/// [`EventWriter::start`] makes the transaction the only writer of its tenants' events
/// where that takes a lock, and takes the numbers of all the batch's events in two
/// statements; the events appended are then inserted together ([`EventWriter::finish`]).
pub(super) struct EventWriter {
    /// The next `visit_seq` per visit.
    next: HashMap<VisitId, i64>,
    /// The next `tenant_seq` per tenant.
    next_of_tenant: HashMap<String, i64>,
    rows: Rows,
}

impl Default for EventWriter {
    fn default() -> Self {
        Self {
            next: HashMap::new(),
            next_of_tenant: HashMap::new(),
            rows: Rows::new(
                "INSERT INTO visit_events (id, tenant, visit_id, visit_seq, kind, at, data, next_attempt_at, tenant_seq)",
                9,
                "",
            ),
        }
    }
}

impl EventWriter {
    pub(super) async fn start<D: Dialect>(
        tx: &mut Transaction<'_, D>,
        ops: &[&WriteOp],
    ) -> Result<Self, StorageError> {
        let mut writer = Self::default();
        let mut counts = BTreeMap::<VisitId, i64>::new();
        let mut tenants = BTreeMap::<&str, i64>::new();
        for op in ops {
            if let WriteOp::Event { visit, tenant, .. } = op {
                *counts.entry(*visit).or_default() += 1;
                *tenants.entry(tenant.as_str()).or_default() += 1;
            }
        }
        if counts.is_empty() {
            return Ok(writer);
        }
        // Tenants first: on PostgreSQL this takes their rows' locks, in the order
        // docs/postgres.md gives.
        let rows = sqlx::query(D::TENANT_EVENT_SEQS)
            .arg(dialect::json(&tenants)?)
            .fetch_all(D::on(tx))
            .await?;
        for row in rows {
            let tenant: String = row.col("tenant")?;
            let last: i64 = row.col("last_seq")?;
            let n = tenants.get(tenant.as_str()).copied().unwrap_or_default();
            writer.next_of_tenant.insert(tenant, last - n + 1);
        }
        let rows = sqlx::query(D::VISIT_EVENT_SEQS)
            .arg(dialect::json(&counts)?)
            .fetch_all(D::on(tx))
            .await?;
        for row in rows {
            let visit: VisitId = super::columns::parse(&row.col::<String>("visit_id")?)?;
            let last: i64 = row.col("last_seq")?;
            let n = counts.get(&visit).copied().unwrap_or_default();
            writer.next.insert(visit, last - n + 1);
        }
        Ok(writer)
    }

    /// Numbers an event; it is inserted by [`EventWriter::finish`].
    pub(super) fn append(
        &mut self,
        visit: VisitId,
        tenant: &TenantId,
        event: &VisitEvent,
    ) -> Result<(), StorageError> {
        let missing = || StorageError::Corrupt("no number taken for an event".into());
        let tenant_seq = self
            .next_of_tenant
            .get_mut(tenant.as_str())
            .ok_or_else(missing)?;
        let number = *tenant_seq;
        *tenant_seq += 1;
        let seq = self.next.get_mut(&visit).ok_or_else(missing)?;
        self.rows.push([
            uuid::Uuid::new_v4().to_string().into(),
            tenant.as_str().into(),
            visit.to_string().into(),
            (*seq).into(),
            event.kind.as_str().into(),
            micros(event.at).into(),
            event.data().to_string().into(),
            micros(event.at).into(),
            number.into(),
        ]);
        *seq += 1;
        Ok(())
    }

    /// Inserts the events appended, in order.
    pub(super) async fn finish<D: Dialect>(
        mut self,
        tx: &mut Transaction<'_, D>,
    ) -> Result<(), StorageError> {
        self.rows.flush(tx).await
    }
}

#[async_trait]
impl<D: Dialect> EventOutbox for SqlStorage<D> {
    async fn events(
        &self,
        tenant: &TenantId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM visit_events WHERE tenant = $1 AND tenant_seq > $2 ORDER BY tenant_seq LIMIT $3"
        ))
        .arg(tenant.as_str())
        .arg(after)
        .arg(i64::from(limit))
        .fetch_all(self.db())
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn event_seq(&self, tenant: &TenantId, id: &str) -> Result<Option<i64>, StorageError> {
        sqlx::query("SELECT tenant_seq FROM visit_events WHERE tenant = $1 AND id = $2")
            .arg(tenant.as_str())
            .arg(id)
            .fetch_optional(self.db())
            .await?
            .map(|r| r.col("tenant_seq"))
            .transpose()
            .map_err(Into::into)
    }

    async fn undelivered(
        &self,
        tenant: &TenantId,
        limit: u32,
    ) -> Result<Vec<(StoredEvent, DateTime<Utc>)>, StorageError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            ", next_attempt_at FROM visit_events \
             WHERE tenant = $1 AND delivered_at IS NULL AND failed_at IS NULL ORDER BY seq LIMIT $2"
        ))
        .arg(tenant.as_str())
        .arg(i64::from(limit))
        .fetch_all(self.db())
        .await?;
        rows.iter()
            .map(|r| Ok((event_from_row(r)?, time(r.col("next_attempt_at")?)?)))
            .collect()
    }

    async fn record_attempt(&self, row: i64, outcome: Attempt) -> Result<(), StorageError> {
        let (sql, at) = match outcome {
            Attempt::Delivered(at) => (
                "UPDATE visit_events SET attempts = attempts + 1, delivered_at = $1 WHERE seq = $2",
                at,
            ),
            Attempt::Retry(next) => (
                "UPDATE visit_events SET attempts = attempts + 1, next_attempt_at = $1 WHERE seq = $2",
                next,
            ),
            Attempt::GaveUp(at) => (
                "UPDATE visit_events SET attempts = attempts + 1, failed_at = $1 WHERE seq = $2",
                at,
            ),
        };
        sqlx::query(sql)
            .arg(micros(at))
            .arg(row)
            .execute(self.db())
            .await?;
        Ok(())
    }
}
