//! How domain values sit in database columns, shared by the SQLite and PostgreSQL
//! storages so both read and write them identically (the audit chain hashes them):
//! times as integer microseconds, enums and ids as their text form, visits and audit
//! rows decoded from any sqlx row with the same column names.

use super::dialect::Dialect;
use super::driver::{Arg, Col};
use super::{StorageError, StoredEvent};
use crate::audit::AuditKind;
use crate::audit_chain::StoredFields;
use crate::record::{UnknownValue, VisitRecord};
use bedside_auth::{Role, TenantId};
use bedside_visit::{ConsentText, ProviderId};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::{Executor, Row};
use std::str::FromStr;

/// The columns [`visit_from_row`] reads, in `SELECT` order.
macro_rules! visit_columns {
    () => {
        "id, tenant, external_ref, status, ended_reason, created_at, not_before, \
         expires_at, started_at, ended_at, max_participants, metadata, provider, \
         consent_version, consent_text"
    };
}
pub(super) use visit_columns;

/// One of a visit's lists (its blocks, participants, ...), read as a JSON array of arrays
/// in one column ([`Dialect::json_array_of`]): so the lists of a visit being loaded come
/// back from one statement, one round trip instead of one each.
pub(super) struct VisitList {
    pub table: &'static str,
    /// The columns of each element, in order.
    pub columns: &'static str,
    pub order: &'static str,
}

impl VisitList {
    /// `(SELECT <the visit's rows as a JSON array> FROM table WHERE visit_id = $1)`.
    pub(super) fn expr<D: Dialect>(&self) -> String {
        format!(
            "(SELECT {} FROM {} WHERE visit_id = $1)",
            D::json_array_of(self.columns, self.order),
            self.table
        )
    }

    /// The rows of [`VisitList::expr`]'s text, each as `T` (a tuple of the columns).
    pub(super) fn decode<T: DeserializeOwned>(&self, json: &str) -> Result<Vec<T>, StorageError> {
        serde_json::from_str(json)
            .map_err(|e| StorageError::Corrupt(format!("{} of a visit: {e}", self.table)))
    }

    /// Reads the list of `visit` on `db` (a pool or one connection).
    pub(super) async fn read<'c, D: Dialect, T: DeserializeOwned>(
        &self,
        db: impl Executor<'c, Database = D>,
        visit: crate::VisitId,
    ) -> Result<Vec<T>, StorageError> {
        // Built from this folder's fixed texts: no value is in it.
        let sql = format!("SELECT {} AS list", self.expr::<D>());
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .arg(visit.to_string())
            .fetch_one(db)
            .await?;
        self.decode(&row.col::<String>("list")?)
    }
}

pub(super) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(super) fn time(us: i64) -> Result<DateTime<Utc>, StorageError> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| StorageError::Corrupt(format!("time {us}")))
}

pub(super) fn opt_time(us: Option<i64>) -> Result<Option<DateTime<Utc>>, StorageError> {
    us.map(time).transpose()
}

pub(super) fn parse<T: FromStr>(s: &str) -> Result<T, StorageError> {
    s.parse()
        .map_err(|_| StorageError::Corrupt(format!("value {s:?}")))
}

pub(super) fn audit_kind(s: &str) -> Result<AuditKind, StorageError> {
    s.parse()
        .map_err(|e: UnknownValue| StorageError::Corrupt(e.to_string()))
}

pub(super) fn role(s: &str) -> Result<Role, StorageError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| StorageError::Corrupt(format!("role {s:?}")))
}

/// A visit from a row holding [`visit_columns!`].
pub(super) fn visit_from_row<R: Row>(row: &R) -> Result<VisitRecord, StorageError>
where
    R::Database: Dialect,
{
    let metadata: Option<String> = row.col("metadata")?;
    let corrupt = |e: &dyn std::fmt::Display| StorageError::Corrupt(e.to_string());
    let consent = match (
        row.col::<Option<String>>("consent_version")?,
        row.col::<Option<String>>("consent_text")?,
    ) {
        (Some(version), Some(text)) => {
            Some(ConsentText::new(version, text).map_err(|e| corrupt(&e))?)
        }
        _ => None,
    };
    Ok(VisitRecord {
        id: parse(&row.col::<String>("id")?)?,
        tenant: TenantId::new(row.col::<String>("tenant")?)
            .map_err(|e| StorageError::Corrupt(e.to_string()))?,
        external_ref: row.col("external_ref")?,
        status: parse(&row.col::<String>("status")?)?,
        ended_reason: row
            .col::<Option<String>>("ended_reason")?
            .as_deref()
            .map(parse)
            .transpose()?,
        created_at: time(row.col("created_at")?)?,
        not_before: opt_time(row.col("not_before")?)?,
        expires_at: time(row.col("expires_at")?)?,
        started_at: opt_time(row.col("started_at")?)?,
        ended_at: opt_time(row.col("ended_at")?)?,
        max_participants: row
            .col::<i64>("max_participants")?
            .try_into()
            .map_err(|_| StorageError::Corrupt("max_participants".into()))?,
        metadata: metadata
            .map(|m| serde_json::from_str(&m))
            .transpose()
            .map_err(|e| StorageError::Corrupt(e.to_string()))?,
        provider: row
            .col::<Option<String>>("provider")?
            .map(ProviderId::new)
            .transpose()
            .map_err(|e| corrupt(&e))?,
        consent,
    })
}

/// Reads an audit row's hashed columns back. Any column that no longer reads as it was
/// written (a number turned into text, say) makes the whole row unreadable: verification
/// then reports it as edited instead of failing.
pub(super) fn stored_fields<R: Row>(r: &R) -> Result<StoredFields, sqlx::Error>
where
    R::Database: Dialect,
{
    Ok(StoredFields {
        tenant: r.col("tenant")?,
        at: r.col("at")?,
        kind: r.col("kind")?,
        participant_id: r.col("participant_id")?,
        identity: r.col("identity")?,
        role: r.col("role")?,
        actor: r.col("actor")?,
        detail: r.col("detail")?,
    })
}

/// The columns [`event_from_row`] reads, in `SELECT` order.
macro_rules! event_columns {
    () => {
        "seq, tenant_seq, id, tenant, visit_id, visit_seq, kind, at, data, attempts"
    };
}
pub(super) use event_columns;

/// A webhook event from a row holding [`event_columns!`].
pub(super) fn event_from_row<R: Row>(r: &R) -> Result<StoredEvent, StorageError>
where
    R::Database: Dialect,
{
    let data: String = r.col("data")?;
    Ok(StoredEvent {
        row: r.col("seq")?,
        seq: r.col("tenant_seq")?,
        id: r.col("id")?,
        tenant: r.col("tenant")?,
        visit_id: r.col("visit_id")?,
        visit_seq: r.col("visit_seq")?,
        kind: r.col("kind")?,
        at: time(r.col("at")?)?,
        data: serde_json::from_str(&data).map_err(|e| StorageError::Corrupt(e.to_string()))?,
        attempts: r.col("attempts")?,
    })
}
