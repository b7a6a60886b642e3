//! The seam between the shared SQL and each database: the few statements that cannot be
//! written once, because the databases really differ there. Everything else in this folder
//! runs unchanged on both (`$N` placeholders, `ON CONFLICT`, `RETURNING`, `CAST`).
//!
//! What differs, and why:
//! - **Writers.** SQLite has one writer at a time: a write transaction takes the database's
//!   write lock up front ([`Dialect::BEGIN_WRITE`]) and so excludes everyone until it
//!   commits. PostgreSQL has many: a write transaction locks the rows of the visits it
//!   appends to ([`Dialect::LOCK_EACH_VISIT`], [`Dialect::LOCK_VISITS`]) and of the tenants
//!   it writes events for ([`Dialect::EVENT_NUMBERS`]), always in id order.
//! - **Numbers.** Audit seqs come from a sequence on PostgreSQL and from the table itself on
//!   SQLite ([`Dialect::AUDIT_HEADS_AND_SEQS`]); a visit's and a tenant's event numbers from
//!   counter rows on PostgreSQL and from their events on SQLite
//!   ([`Dialect::EVENT_NUMBERS`]).
//! - **Round trips.** PostgreSQL runs a batch's writes that read nothing back as parts of
//!   one statement, and numbers and inserts its events in one; SQLite, in the same
//!   process, runs them in turn ([`Dialect::COMBINES_WRITES`]).
//! - **Lists.** A statement about many visits binds them as one JSON text, which SQLite
//!   reads with `json_each` and PostgreSQL with its `json_array_elements` family (rows
//!   as `jsonb`, parsed once for all their columns).
//! - **The chain's first link.** SQLite databases may hold rows from before the audit chain;
//!   PostgreSQL ones never do ([`Dialect::LEGACY_MAX_SEQ`]).
//! - **Text.** PostgreSQL's cannot hold NUL characters ([`Dialect::text`]).
//!
//! A new table or column is a migration in each of `migrations/sqlite` and
//! `migrations/postgres` (DDL differs: `BYTEA`/`BLOB`, `COLLATE "C"`, sequences); the
//! statements that use it are written once, and reach the dialect only if they lock rows,
//! take numbers or bind a list (docs/postgres.md, "Changing the schema").

use super::StorageError;
use super::driver::{Binds, Reads, Runs};
use serde::Serialize;
use sqlx::{Database, IntoArguments};
use std::borrow::Cow;

/// One database's answers to what differs (see the module comment). Implemented for
/// [`sqlx::Sqlite`] and [`sqlx::Postgres`].
///
/// Its supertraits are what the shared SQL does with any database (see `driver.rs`): run
/// statements (kept prepared, or not), bind and read text, integers (both possibly NULL)
/// and bytes.
///
/// Statements that take a list bind it as JSON text: an array of ids (`["v_1", ...]`) or
/// of `[visit_id, seq, hash]` rows, or an object of numbers by visit (`{"v_1": 2}`).
pub trait Dialect:
    Database<Arguments: IntoArguments<Self>>
    + sqlx::database::HasStatementCache
    + Runs
    + for<'a> Binds<&'a str>
    + for<'a> Binds<Option<&'a str>>
    + Binds<String>
    + Binds<Option<String>>
    + Binds<i64>
    + Binds<Option<i64>>
    + Binds<Vec<u8>>
    + Reads<String>
    + Reads<Option<String>>
    + Reads<i64>
    + Reads<Option<i64>>
    + Reads<Vec<u8>>
{
    /// Starts a transaction that appends to audit chains and numbers events.
    const BEGIN_WRITE: &'static str;
    /// Starts a read-only transaction that sees one snapshot throughout.
    const BEGIN_SNAPSHOT: &'static str;
    /// Whether a write transaction must lock every visit it appends to ([`Self::LOCK_VISITS`]);
    /// if not, [`Self::BEGIN_WRITE`] already excludes every other writer, and only fenced
    /// visits' epochs are read.
    const LOCK_EACH_VISIT: bool;
    /// `id, epoch` of the listed visits, locked until the transaction ends where writers
    /// lock rows, in id order.
    const LOCK_VISITS: &'static str;
    /// `id, epoch` of the listed visits, without locking.
    const VISIT_EPOCHS: &'static str;
    /// Where a statement reads rows bound as one JSON array of arrays (`$1`): a table
    /// whose column `value` is each row's array, in order.
    const JSON_ROWS: &'static str;
    /// Whether writes that read nothing back can go as parts of one statement
    /// (data-modifying `WITH` parts; see `pending.rs`).
    const COMBINES_WRITES: bool;
    /// How a batch's events are numbered and inserted (see [`EventNumbers`]).
    const EVENT_NUMBERS: EventNumbers;
    /// The listed visits' chain heads (`visit_id, hash`), then a new audit seq for each
    /// element of the list `$2` (`seq`, on rows of their own, each above every seq taken
    /// before): one round trip.
    const AUDIT_HEADS_AND_SEQS: &'static str;
    /// Stores chain heads from `[visit_id, seq, hash]` rows.
    const WRITE_AUDIT_HEADS: &'static str;
    /// The highest audit seq written before the chain existed (column `seq`): rows up to it
    /// may be unchained.
    const LEGACY_MAX_SEQ: &'static str;
    /// Moves visits on from open and records when they started, one row per visit from
    /// the JSON array `$1` of `[id, status or null, started_at or null]`, as one
    /// `UPDATE ... WHERE status = 'open'` and one `started_at = COALESCE(started_at, ...)`
    /// each would (see `VisitUpdates`).
    const UPDATE_VISITS: &'static str;

    /// An aggregate of the rows a query selects: `columns` of each as a JSON array, all of
    /// them as one JSON array (text) in `order`; `[]` when there are none.
    fn json_array_of(columns: &str, order: &str) -> String;

    /// Text as the database can hold it.
    fn text(s: &str) -> Cow<'_, str> {
        Cow::Borrowed(s)
    }
}

/// How a batch's events get their numbers: a statement for `$1` = `{tenant: n}` and
/// `$2` = `{visit_id: n}` (keys sorted) that raises each tenant's event number
/// (`tenant_seq`) and each visit's (`visit_seq`) by `n`. The transaction is then the only
/// writer of those tenants' events until it ends, so a tenant's events commit in number
/// order, and it holds the numbering of those visits.
pub enum EventNumbers {
    /// Returns rows `counter` (`'tenant'` or `'visit'`), `key`, `last_seq` (the number
    /// after the `n` more); the events are then inserted, numbered, by the next statement.
    Read(&'static str),
    /// Inserts the events, numbered, in the same statement (the tenants' numbering is then
    /// held for one statement less): `$3` is the events in order, as JSON rows
    /// `[id, tenant, visit_id, after_in_visit, kind, at, data, after_in_tenant]`, where
    /// `after_in_…` counts the batch's later events of the same visit or tenant. Returns
    /// a row per event inserted.
    Insert(&'static str),
}

/// The JSON text a list statement binds.
pub(super) fn json<T: Serialize + ?Sized>(value: &T) -> Result<String, StorageError> {
    serde_json::to_string(value).map_err(|e| StorageError::Corrupt(e.to_string()))
}
