//! Visit events in either database: the outbox webhooks are delivered from and
//! `GET /v1/events` reads. Appended inside the writer's transactions, each visit's numbered
//! 1, 2, 3... with no gaps (`visit_seq`), and each tenant's too (`tenant_seq`, which the
//! API and webhook bodies call `seq`), so no tenant sees gaps left by another's events.
//! The row's own `seq` stays the storage key.

use super::columns::{event_columns, event_from_row, micros, time};
use super::dialect::{self, Dialect, EventNumbers};
use super::driver::{Arg, Col};
use super::pending::Pending;
use super::rows::Rows;
use super::sql::SqlStorage;
use super::{Attempt, EventOutbox, StorageError, StoredEvent, WriteOp};
use crate::VisitId;
use crate::event::VisitEvent;
use async_trait::async_trait;
use bedside_auth::TenantId;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};

/// Runs what `held` holds, then inserts the events among `ops`, in their order, each
/// numbered on from its visit's last (`visit_seq`) and its tenant's (`tenant_seq`): the
/// numbers are taken for the whole batch in one statement, sent with the held writes, and
/// where the dialect allows the events go in that same statement ([`EventNumbers`]).
pub(super) async fn write_events<D: Dialect>(
    conn: &mut D::Connection,
    held: &mut Pending,
    ops: &[&WriteOp],
) -> Result<(), StorageError> {
    let events: Vec<(VisitId, &TenantId, &VisitEvent)> = ops
        .iter()
        .filter_map(|op| match op {
            WriteOp::Event {
                visit,
                tenant,
                event,
            } => Some((*visit, tenant, event)),
            _ => None,
        })
        .collect();
    if events.is_empty() {
        return held.run::<D>(conn).await;
    }
    let mut visits = BTreeMap::<VisitId, i64>::new();
    let mut tenants = BTreeMap::<&str, i64>::new();
    for (visit, tenant, _) in &events {
        *visits.entry(*visit).or_default() += 1;
        *tenants.entry(tenant.as_str()).or_default() += 1;
    }
    let counts = vec![
        dialect::json(&tenants)?.into(),
        dialect::json(&visits)?.into(),
    ];
    match D::EVENT_NUMBERS {
        EventNumbers::Insert(sql) => {
            let (mut after_in_visit, mut after_in_tenant) = (visits, tenants);
            let mut rows = Vec::with_capacity(events.len());
            for (visit, tenant, event) in &events {
                let in_visit = after_in_visit.get_mut(visit).ok_or_else(missing)?;
                let in_tenant = after_in_tenant
                    .get_mut(tenant.as_str())
                    .ok_or_else(missing)?;
                *in_visit -= 1;
                *in_tenant -= 1;
                rows.push(serde_json::json!([
                    uuid::Uuid::new_v4().to_string(),
                    tenant.as_str(),
                    visit.to_string(),
                    *in_visit,
                    event.kind.as_str(),
                    micros(event.at),
                    event.data().to_string(),
                    *in_tenant,
                ]));
            }
            let mut values = counts;
            values.push(dialect::json(&rows)?.into());
            // An event whose numbers the statement did not find would be left out, not refused.
            if held.run_then_fetch::<D>(conn, sql, values).await?.len() != events.len() {
                return Err(missing());
            }
            Ok(())
        }
        EventNumbers::Read(sql) => {
            let mut next_in_visit = HashMap::new();
            let mut next_in_tenant = HashMap::new();
            for row in held.run_then_fetch::<D>(conn, sql, counts).await? {
                let key: String = row.col("key")?;
                let last: i64 = row.col("last_seq")?;
                if row.col::<String>("counter")? == "tenant" {
                    let n = tenants.get(key.as_str()).copied().unwrap_or_default();
                    next_in_tenant.insert(key, last - n + 1);
                } else {
                    let visit: VisitId = super::columns::parse(&key)?;
                    let n = visits.get(&visit).copied().unwrap_or_default();
                    next_in_visit.insert(visit, last - n + 1);
                }
            }
            let mut rows = Rows::new(
                "INSERT INTO visit_events (id, tenant, visit_id, visit_seq, kind, at, data, next_attempt_at, tenant_seq)",
                9,
                "",
            );
            for (visit, tenant, event) in &events {
                let in_tenant = next_in_tenant
                    .get_mut(tenant.as_str())
                    .ok_or_else(missing)?;
                let in_visit = next_in_visit.get_mut(visit).ok_or_else(missing)?;
                rows.push([
                    uuid::Uuid::new_v4().to_string().into(),
                    tenant.as_str().into(),
                    visit.to_string().into(),
                    (*in_visit).into(),
                    event.kind.as_str().into(),
                    micros(event.at).into(),
                    event.data().to_string().into(),
                    micros(event.at).into(),
                    (*in_tenant).into(),
                ]);
                *in_visit += 1;
                *in_tenant += 1;
            }
            rows.hold::<D>(held)?;
            held.run::<D>(conn).await
        }
    }
}

fn missing() -> StorageError {
    StorageError::Corrupt("no number taken for an event".into())
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
