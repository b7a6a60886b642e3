//! The embedded default: one SQLite file, WAL mode, `synchronous=FULL` so a committed
//! change survives a crash of the process or the machine.
//!
//! SQLite serializes writers, so every write transaction starts with `BEGIN IMMEDIATE`:
//! holding the write lock from the start, it reads the end of each visit's hash chain and
//! the last seqs, then appends, and no other connection (the writer task, an API handler)
//! can append in between. Nothing else needs locking.

use super::dialect::{Dialect, EventNumbers};
use super::{SqlStorage, StorageError};
use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;

pub type SqliteStorage = SqlStorage<Sqlite>;

/// Connections that only read (loading visits), besides the pool every write goes through.
const READERS: u32 = 4;
/// Each reader's page cache: SQLite's `cache_size` pragma, negative for KiB.
const READER_CACHE_KIB: &str = "-256";

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
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        // Readers of their own, which WAL lets read while a writer writes (see
        // `SqlStorage::reads`); read-only, so nothing can write through them by mistake.
        // A small page cache each: they read a few rows per visit loaded, the kernel caches
        // the file anyway, and SQLite's default (2 MiB a connection) would add up to 8 MiB
        // of resident memory on a node that loads many visits.
        let reads = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(
                options
                    .read_only(true)
                    .pragma("cache_size", READER_CACHE_KIB),
            )
            .await?;
        Ok(Self::new(pool, reads))
    }
}

impl Dialect for Sqlite {
    /// Holds SQLite's write lock from the outset (waiting up to the busy timeout for it).
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    /// In WAL mode a transaction reads one snapshot from its first read on.
    const BEGIN_SNAPSHOT: &'static str = "BEGIN";
    const LOCK_EACH_VISIT: bool = false;
    /// In the same process a statement costs no round trip: SQLite cannot run writes as
    /// `WITH` parts, and needs not.
    const COMBINES_WRITES: bool = false;
    const JSON_ROWS: &'static str = "json_each($1)";
    const LOCK_VISITS: &'static str = Self::VISIT_EPOCHS;
    const VISIT_EPOCHS: &'static str =
        "SELECT id, epoch FROM visits WHERE id IN (SELECT value FROM json_each($1))";
    /// Seqs are assigned here rather than by AUTOINCREMENT because the hash covers the
    /// seq. Reading `sqlite_sequence` too keeps the AUTOINCREMENT rule of never reusing the
    /// seq of a deleted last row.
    const AUDIT_HEADS_AND_SEQS: &'static str = "SELECT visit_id, hash, NULL AS seq FROM audit_heads \
         WHERE visit_id IN (SELECT value FROM json_each($1)) \
         UNION ALL SELECT NULL, NULL, key + 1 + MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'audit_events'), 0), \
         COALESCE((SELECT MAX(seq) FROM audit_events), 0)) FROM json_each($2)";
    /// `WHERE true` tells SQLite's parser the ON CONFLICT belongs to the INSERT.
    const WRITE_AUDIT_HEADS: &'static str = "INSERT INTO audit_heads (visit_id, seq, hash) \
         SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each($1) WHERE true \
         ON CONFLICT (visit_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash";
    const UPDATE_VISITS: &'static str = "UPDATE visits SET \
         status = CASE WHEN visits.status = 'open' AND u.status IS NOT NULL THEN u.status ELSE visits.status END, \
         started_at = COALESCE(visits.started_at, u.started_at) \
         FROM (SELECT value ->> 0 AS id, value ->> 1 AS status, value ->> 2 AS started_at \
         FROM json_each($1)) AS u \
         WHERE visits.id = u.id";
    /// The writer holds the database, so a tenant's or a visit's next number is its
    /// highest plus one.
    const EVENT_NUMBERS: EventNumbers = EventNumbers::Read(
        "SELECT 'tenant' AS counter, key, value + \
         COALESCE((SELECT MAX(tenant_seq) FROM visit_events WHERE tenant = key), 0) AS last_seq \
         FROM json_each($1) \
         UNION ALL SELECT 'visit', key, value + \
         COALESCE((SELECT MAX(visit_seq) FROM visit_events WHERE visit_id = key), 0) \
         FROM json_each($2)",
    );
    /// Rows from before the chain keep NULL hashes; this mark (see the 0002 migration) says
    /// which rows those are. A missing mark reads as 0: every row must then be chained.
    const LEGACY_MAX_SEQ: &'static str =
        "SELECT COALESCE(MAX(legacy_max_seq), 0) AS seq FROM audit_chain_start";

    fn json_array_of(columns: &str, order: &str) -> String {
        format!("json_group_array(json_array({columns}) ORDER BY {order})")
    }
}
