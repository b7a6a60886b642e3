//! Durable storage of visits, participants, the audit trail, events, secrets and epochs.
//!
//! The seam is a handful of traits, one per concern ([`Visits`], [`AuditTrail`],
//! [`EventOutbox`], [`Secrets`], [`Fencing`], [`AccessBlocks`]), so that code and test doubles depend on just
//! what they use; [`Storage`] is all of them, which the server opens with [`connect`].
//!
//! Both databases are one implementation, [`SqlStorage`], whose SQL is written once; the
//! few statements where they really differ (writers and locks, how seqs are taken, lists,
//! where the audit chain begins) are its [`Dialect`]: SQLite ([`SqliteStorage`]) is the
//! embedded default, PostgreSQL ([`PostgresStorage`]) the one several nodes can share.
//! Live visits never wait on storage: their changes go through the [`StorageWriter`], which
//! applies them in order, in batches.

mod audit;
mod blocks;
mod columns;
mod dialect;
mod driver;
mod events;
mod pending;
mod postgres;
mod rows;
mod sql;
mod sqlite;
mod visits;
mod writer;

pub use dialect::{Dialect, EventNumbers};
pub use postgres::PostgresStorage;
pub use sql::SqlStorage;
pub use sqlite::SqliteStorage;
pub use writer::{StorageWriter, WriteOp};

use crate::VisitId;
use crate::audit::AuditEvent;
use crate::audit_chain::ChainReport;
use crate::record::{VisitRecord, VisitStatus};
use crate::visit::StoredParticipant;
use async_trait::async_trait;
use bedside_auth::TenantId;
use bedside_visit::quality::StoredQuality;
use bedside_visit::{Block, ProviderId};
use chrono::{DateTime, TimeDelta, Utc};
use std::borrow::Cow;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "unsupported database URL {0:?}: use sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE"
    )]
    UnsupportedUrl(String),
}

impl StorageError {
    /// The database could not be reached, or was busy: the same write may well succeed
    /// later, so it is worth keeping rather than dropping.
    pub fn is_transient(&self) -> bool {
        let StorageError::Database(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
            sqlx::Error::Protocol(_) => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| transient_code(&code)),
            _ => false,
        }
    }
}

/// PostgreSQL: connection exceptions (class 08), the server shutting down or not yet
/// accepting (57P01-57P03), too many connections (53300). SQLite: busy or locked, with
/// their extended codes (the low byte is the primary code).
fn transient_code(code: &str) -> bool {
    if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300") {
        return true;
    }
    code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
}

/// A page of a tenant's visits, newest first.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub status: Option<VisitStatus>,
    pub limit: u32,
    /// Continue after this visit (the last one of the previous page).
    pub after: Option<(DateTime<Utc>, VisitId)>,
}

/// A visit event as stored: its row, its id, its place among the tenant's events (`seq`,
/// 1, 2, 3... with no gaps left by other tenants) and in its visit (`visit_seq`, 1, 2, 3...
/// with no gaps).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The storage key (shared by all tenants): what [`EventOutbox::record_attempt`] names.
    pub row: i64,
    pub seq: i64,
    pub id: String,
    pub tenant: String,
    pub visit_id: String,
    pub visit_seq: i64,
    pub kind: String,
    pub at: DateTime<Utc>,
    pub data: serde_json::Value,
    /// Delivery attempts so far.
    pub attempts: i64,
}

/// How a webhook delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Delivered(DateTime<Utc>),
    /// Failed; try again at this time.
    Retry(DateTime<Utc>),
    /// Failed for too long; stop.
    GaveUp(DateTime<Utc>),
}

/// An audit entry as stored, with its position in the trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: i64,
    pub visit_id: VisitId,
    pub event: AuditEvent,
}

/// Visits and who is in them, and the write path of live visits.
#[async_trait]
pub trait Visits: Send + Sync {
    /// Stores a new visit together with its `created` audit entry and `visit.created` event.
    async fn insert_visit(
        &self,
        visit: &VisitRecord,
        created: &AuditEvent,
    ) -> Result<(), StorageError>;
    async fn visit(&self, id: VisitId) -> Result<Option<VisitRecord>, StorageError>;
    async fn list_visits(
        &self,
        tenant: &TenantId,
        query: &ListQuery,
    ) -> Result<Vec<VisitRecord>, StorageError>;
    async fn participants(&self, id: VisitId) -> Result<Vec<StoredParticipant>, StorageError>;
    /// The call quality of everyone in the visit who reported any, as last written.
    async fn quality(&self, id: VisitId) -> Result<Vec<StoredQuality>, StorageError>;
    /// Applies changes in order, atomically: visits' changes, their audit rows and events.
    /// The groups of a visit whose [`WriteOp::Fence`] names an epoch other than the stored
    /// one are skipped; those visits are returned.
    async fn apply(&self, ops: &[WriteOp]) -> Result<Vec<VisitId>, StorageError>;
    async fn count_by_status(&self) -> Result<Vec<(VisitStatus, u64)>, StorageError>;
    /// Visits not yet ended whose `expires_at` has passed.
    async fn due_for_expiry(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<VisitId>, StorageError>;
    /// How long a provider's last `limit` consultations on this tenant ran, newest first.
    async fn consultations(
        &self,
        tenant: &TenantId,
        provider: &ProviderId,
        limit: u32,
    ) -> Result<Vec<TimeDelta>, StorageError>;
}

/// The audit trail: each visit's entries, hash-chained (see [`crate::audit_chain`]).
/// Live visits append through [`Visits::apply`]; this is for everything else.
#[async_trait]
pub trait AuditTrail: Send + Sync {
    /// Appends one audit entry outside any live visit (e.g. a token was issued).
    async fn audit(
        &self,
        visit: VisitId,
        tenant: &TenantId,
        event: &AuditEvent,
    ) -> Result<(), StorageError>;
    async fn audit_trail(&self, id: VisitId) -> Result<Vec<AuditRecord>, StorageError>;
    /// Walks the hash chain of one visit's audit trail (`Some`), or of every visit's, and
    /// reports the first broken link of each broken chain.
    /// A visit with no trail at all is not counted.
    async fn verify_audit(&self, visit: Option<VisitId>) -> Result<ChainReport, StorageError>;
}

/// Visit events for the clinic's systems: what `GET /v1/events` reads and webhooks deliver.
/// Live visits append through [`Visits::apply`].
#[async_trait]
pub trait EventOutbox: Send + Sync {
    /// A tenant's visit events after the one with the tenant's sequence number `after`.
    async fn events(
        &self,
        tenant: &TenantId,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StorageError>;
    /// The tenant's sequence number of its event with this id.
    async fn event_seq(&self, tenant: &TenantId, id: &str) -> Result<Option<i64>, StorageError>;
    /// The tenant's oldest events not yet delivered or given up on, with when each may be
    /// tried next.
    async fn undelivered(
        &self,
        tenant: &TenantId,
        limit: u32,
    ) -> Result<Vec<(StoredEvent, DateTime<Utc>)>, StorageError>;
    /// Records the outcome of delivering the event stored as `row`.
    async fn record_attempt(&self, row: i64, outcome: Attempt) -> Result<(), StorageError>;
}

/// Secrets the server generates once and keeps (the resume-token key, a dev API key).
#[async_trait]
pub trait Secrets: Send + Sync {
    /// The named server secret, stored as `fresh` if it did not exist yet.
    async fn secret(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>, StorageError>;
}

/// The epochs that fence a visit's writes to the node that owns it in a cluster.
#[async_trait]
pub trait Fencing: Send + Sync {
    /// Takes a visit over for this node: raises its stored epoch and returns the new one
    /// (`None` if there is no such visit). Writes fenced with an older epoch are refused
    /// from then on.
    async fn claim(&self, visit: VisitId) -> Result<Option<i64>, StorageError>;
    /// [`Fencing::claim`], and the visit as stored once its epoch is raised, read on the
    /// way where the storage can (the same connection: a join that takes a visit over
    /// acquires one pooled connection, not two). `None` for the visit: the caller loads it.
    async fn claim_loading(
        &self,
        visit: VisitId,
    ) -> Result<Option<(i64, Option<StoredVisit>)>, StorageError> {
        Ok(self.claim(visit).await?.map(|epoch| (epoch, None)))
    }
    /// The current epochs of those of `visits` that exist.
    async fn epochs(&self, visits: &[VisitId]) -> Result<Vec<(VisitId, i64)>, StorageError>;
}

/// Identities removed or denied in a visit, and when (crates/visit/src/access.rs). Live
/// visits write them through [`Visits::apply`] (`Change::Blocked`).
#[async_trait]
pub trait AccessBlocks: Send + Sync {
    /// A visit's blocks, the latest per identity: loaded with the visit.
    async fn blocks(&self, visit: VisitId) -> Result<Vec<Block>, StorageError>;
    /// When `identity` was last blocked in `visit`, if it was.
    async fn blocked_at(
        &self,
        visit: VisitId,
        identity: &str,
    ) -> Result<Option<DateTime<Utc>>, StorageError>;
    /// Every block at or after `since`, with its visit.
    async fn blocks_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(VisitId, Block)>, StorageError>;
    /// The `jti`s of the visit's single-use links that let someone in (`Change::LinkUsed`):
    /// loaded with the visit.
    async fn used_links(&self, visit: VisitId) -> Result<Vec<String>, StorageError>;
}

/// A visit as the registry loads it into memory.
#[derive(Debug, Clone)]
pub struct StoredVisit {
    pub record: VisitRecord,
    /// Empty once the visit has ended.
    pub participants: Vec<StoredParticipant>,
    pub blocks: Vec<Block>,
    pub used_links: Vec<String>,
    /// Empty once the visit has ended.
    pub quality: Vec<StoredQuality>,
}

/// Everything the server keeps, in one database.
#[async_trait]
pub trait Storage:
    Visits + AuditTrail + EventOutbox + Secrets + Fencing + AccessBlocks + 'static
{
    /// A visit, its blocks and used links, and unless it has ended its participants and
    /// their call quality; `None` if there is no such visit.
    async fn load_visit(&self, id: VisitId) -> Result<Option<StoredVisit>, StorageError> {
        let Some(record) = self.visit(id).await? else {
            return Ok(None);
        };
        let blocks = self.blocks(id).await?;
        let used_links = self.used_links(id).await?;
        let (participants, quality) = if record.status == VisitStatus::Ended {
            (Vec::new(), Vec::new())
        } else {
            (self.participants(id).await?, self.quality(id).await?)
        };
        Ok(Some(StoredVisit {
            record,
            participants,
            blocks,
            used_links,
            quality,
        }))
    }

    async fn ping(&self) -> Result<(), StorageError>;
    async fn close(&self);
}

/// Which storage a `BEDSIDE_DATABASE_URL` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend for `url` by its scheme: `sqlite:` or `postgres://` /
    /// `postgresql://`; `None` for anything else.
    pub fn of(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// `url` fit for a log line or an error message: a password in it (`user:PASSWORD@`, or a
/// `password=` parameter) is replaced by `***`.
pub fn redacted_url(url: &str) -> Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Cow::Borrowed(url);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => Cow::Owned(format!("{user}:***@{host}")),
            None => Cow::Borrowed(authority),
        },
        None => Cow::Borrowed(authority),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) if query.split('&').any(|p| p.starts_with("password=")) => {
            let query: Vec<&str> = query
                .split('&')
                .map(|p| {
                    if p.starts_with("password=") {
                        "password=***"
                    } else {
                        p
                    }
                })
                .collect();
            Cow::Owned(format!("{path}?{}", query.join("&")))
        }
        _ => Cow::Borrowed(tail),
    };
    if matches!((&authority, &tail), (Cow::Borrowed(_), Cow::Borrowed(_))) {
        Cow::Borrowed(url)
    } else {
        Cow::Owned(format!("{scheme}://{authority}{tail}"))
    }
}

/// Opens the storage a `BEDSIDE_DATABASE_URL` names and runs its migrations.
pub async fn connect(url: &str) -> Result<Arc<dyn Storage>, StorageError> {
    match Backend::of(url) {
        Some(Backend::Sqlite) => Ok(Arc::new(SqliteStorage::connect(url).await?)),
        Some(Backend::Postgres) => Ok(Arc::new(PostgresStorage::connect(url).await?)),
        None => Err(StorageError::UnsupportedUrl(redacted_url(url).into_owned())),
    }
}

/// Like [`connect`], but a database that does not exist yet is an error instead of being
/// created: for tools that inspect an existing database.
pub async fn connect_existing(url: &str) -> Result<Arc<dyn Storage>, StorageError> {
    match Backend::of(url) {
        Some(Backend::Sqlite) => Ok(Arc::new(SqliteStorage::connect_existing(url).await?)),
        Some(Backend::Postgres) => Ok(Arc::new(PostgresStorage::connect_existing(url).await?)),
        None => Err(StorageError::UnsupportedUrl(redacted_url(url).into_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_by_scheme() {
        assert_eq!(Backend::of("sqlite://x.db"), Some(Backend::Sqlite));
        assert_eq!(Backend::of("sqlite::memory:"), Some(Backend::Sqlite));
        assert_eq!(Backend::of("postgres://u@h/db"), Some(Backend::Postgres));
        assert_eq!(Backend::of("postgresql://u@h/db"), Some(Backend::Postgres));
        assert_eq!(Backend::of("mysql://u@h/db"), None);
        assert_eq!(Backend::of("postgres:db"), None);
        assert_eq!(Backend::of("bedside.db"), None);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redacted_url("postgres://bedside:s3cr@t@db:5432/bedside?sslmode=require"),
            "postgres://bedside:***@db:5432/bedside?sslmode=require"
        );
        assert_eq!(
            redacted_url("postgres://db/bedside?user=b&password=s3cret"),
            "postgres://db/bedside?user=b&password=***"
        );
        assert_eq!(redacted_url("postgres://b@db/x"), "postgres://b@db/x");
        assert_eq!(redacted_url("sqlite://bedside.db"), "sqlite://bedside.db");
        assert_eq!(redacted_url("no scheme"), "no scheme");
    }
}
