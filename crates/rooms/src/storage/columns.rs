//! How domain values sit in database columns, shared by the SQLite and PostgreSQL
//! storages so both read and write them identically (the audit chain hashes them):
//! times as integer microseconds, enums and ids as their text form, visits and audit
//! rows decoded from any sqlx row with the same column names.

use super::{StorageError, StoredEvent};
use crate::audit_chain::StoredFields;
use crate::record::VisitRecord;
use bedside_auth::{Role, TenantId};
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Row, Type};
use std::str::FromStr;

/// The columns [`visit_from_row`] reads, in `SELECT` order.
macro_rules! visit_columns {
    () => {
        "id, tenant, external_ref, status, ended_reason, created_at, not_before, \
         expires_at, started_at, ended_at, max_participants, metadata"
    };
}
pub(super) use visit_columns;

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

pub(super) fn role(s: &str) -> Result<Role, StorageError> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| StorageError::Corrupt(format!("role {s:?}")))
}

/// A visit from a row holding [`visit_columns!`].
pub(super) fn visit_from_row<R>(row: &R) -> Result<VisitRecord, StorageError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    for<'r> &'r str: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
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

/// Reads an audit row's hashed columns back. Any column that no longer reads as it was
/// written (a number turned into text, say) makes the whole row unreadable: verification
/// then reports it as edited instead of failing.
pub(super) fn stored_fields<R>(r: &R) -> Result<StoredFields, sqlx::Error>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(StoredFields {
        tenant: r.try_get("tenant")?,
        at: r.try_get("at")?,
        kind: r.try_get("kind")?,
        participant_id: r.try_get("participant_id")?,
        identity: r.try_get("identity")?,
        role: r.try_get("role")?,
        actor: r.try_get("actor")?,
        detail: r.try_get("detail")?,
    })
}

/// The columns [`event_from_row`] reads, in `SELECT` order.
macro_rules! event_columns {
    () => {
        "seq, id, tenant, visit_id, visit_seq, kind, at, data, attempts"
    };
}
pub(super) use event_columns;

/// A webhook event from a row holding [`event_columns!`].
pub(super) fn event_from_row<R>(r: &R) -> Result<StoredEvent, StorageError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let data: String = r.try_get("data")?;
    Ok(StoredEvent {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        tenant: r.try_get("tenant")?,
        visit_id: r.try_get("visit_id")?,
        visit_seq: r.try_get("visit_seq")?,
        kind: r.try_get("kind")?,
        at: time(r.try_get("at")?)?,
        data: serde_json::from_str(&data).map_err(|e| StorageError::Corrupt(e.to_string()))?,
        attempts: r.try_get("attempts")?,
    })
}
