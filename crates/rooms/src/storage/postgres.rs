//! PostgreSQL, for production and for several `bedside` nodes sharing one database: the
//! same rows as SQLite (integer microsecond times, the same audit hash chain), with locking
//! that holds when more than one process writes.
//!
//! A write transaction takes its locks in this order (always, and each kind sorted, so two
//! transactions cannot deadlock on them):
//! 1. the `visits` rows of every visit it appends audit rows or events to, or writes fenced
//!    (`SELECT ... FOR UPDATE`): one writer at a time extends a visit's hash chain and
//!    numbers its events, and it reads the chain's head only once it holds the lock;
//! 2. the `event_tenants` rows of the tenants it writes events for, raising each tenant's
//!    counter: an event's `tenant_seq` is numbered from it, so with the tenant held a
//!    tenant's events commit in `tenant_seq` order and a reader paging by it never sees a
//!    lower one appear behind it later;
//! 3. the `visit_event_counters` rows of those visits: each visit's events are numbered
//!    1, 2, 3... without gaps, and a rollback undoes the increment too. Taken in the same
//!    statement as the tenants' rows, in either order: only the holder of a visit's row
//!    lock (1) writes its counter, so no one ever waits for one.
//!
//! The tenants' rows are taken last, in the statement that sends the batch's other writes
//! (participants, visit updates, audit rows and chain heads, as parts of one statement),
//! then the events are inserted: every writer of those tenants' events waits for them
//! until the holder commits.
//!
//! Audit seqs come from a sequence, taken after the visits' locks and before hashing (the hash
//! covers the seq): a later writer of a visit always gets higher seqs than an earlier one,
//! so a visit's rows are in chain order by seq, which is what verification walks.
//!
//! The pool gives up acquiring a connection after [`ACQUIRE_TIMEOUT`] and checks a
//! connection before handing it out if it has been idle for [`CHECK_IDLE_AFTER`] or more, so
//! while the server is unreachable `ping` (and with it `/readyz`) fails quickly, and once it
//! is back new connections replace the dead ones without a restart. A connection idle for
//! less was checked when it was given back (sqlx checks every connection it takes back),
//! so it is not checked again: in a burst that check was a round trip per statement, made
//! while holding one of the pool's connections.
//!
//! A node that starts before its database accepts connections waits for it, up to
//! [`STARTUP_WAIT`]: nothing orders the two (Kubernetes starts them in any order, and
//! podman-compose before podman 4.6 ignores `depends_on: service_healthy`). A refusal that
//! waiting cannot mend (a wrong password, a missing database) fails at once.

use super::dialect::{Dialect, EventNumbers};
use super::{SqlStorage, StorageError};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Postgres};
use std::borrow::Cow;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How long a caller waits for a connection before the call fails.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// A pooled connection idle this long is checked (a round trip) before it is handed out.
/// One idle for less was checked as it was given back, that recently: if the server went
/// away since, the statement fails as it would have a moment later, and the pool drops
/// the connection when it is given back (its check fails there).
pub const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// How long a starting node waits for PostgreSQL to accept connections before it gives up.
/// Under the Kubernetes startup probe's minute (deploy/k8s), so the node says why it
/// failed before the probe restarts it.
pub const STARTUP_WAIT: Duration = Duration::from_secs(30);

pub type PostgresStorage = SqlStorage<Postgres>;

impl PostgresStorage {
    /// Connects to the database a `postgres://` (or `postgresql://`) URL names and
    /// migrates it. The database itself must exist (PostgreSQL databases are created by
    /// their administrator); its tables are created here.
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        // A node frozen mid-transaction (paused, partitioned) must not hold its visits' rows
        // locked: the server ends such a session, so another node can take the visits over
        // (and the frozen node's commit then fails, and is refused when retried).
        let options = PgConnectOptions::from_str(url)?
            .options([("idle_in_transaction_session_timeout", "2s")]);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= CHECK_IDLE_AFTER {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options);
        wait_for_server(&pool).await?;
        // Concurrent nodes are fine: the migrator holds an advisory lock while it runs.
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self::new(pool.clone(), pool))
    }

    /// The same as [`Self::connect`]: connecting never creates a PostgreSQL database, so a
    /// mistyped name fails rather than reading as an empty one.
    pub async fn connect_existing(url: &str) -> Result<Self, StorageError> {
        Self::connect(url).await
    }
}

/// Takes a first connection, retrying for [`STARTUP_WAIT`] while the server is not up yet:
/// unreachable, refusing connections, or still starting (the pool itself retries those
/// within one [`ACQUIRE_TIMEOUT`] and then reports a timeout).
async fn wait_for_server(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    let deadline = Instant::now() + STARTUP_WAIT;
    let mut pause = Duration::from_millis(250);
    loop {
        let error = match pool.acquire().await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let not_up_yet = match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => true,
            // cannot_connect_now (still starting up), too_many_connections.
            sqlx::Error::Database(e) => matches!(e.code().as_deref(), Some("57P03" | "53300")),
            _ => false,
        };
        if !not_up_yet || Instant::now() + pause >= deadline {
            return Err(error);
        }
        tracing::warn!(%error, "PostgreSQL does not accept connections yet; retrying until STARTUP_WAIT has passed");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(ACQUIRE_TIMEOUT);
    }
}

/// A list of ids is matched as `= ANY(ARRAY(SELECT json_array_elements_text(...)))` rather
/// than `IN (SELECT ...)`: the array is built once and each id found through the index,
/// where the planner would guess a hundred ids for the subquery and scan the whole table.
impl Dialect for Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";
    const BEGIN_SNAPSHOT: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";
    const LOCK_EACH_VISIT: bool = true;
    const LOCK_VISITS: &'static str = "SELECT id, epoch FROM visits \
         WHERE id = ANY(ARRAY(SELECT json_array_elements_text(CAST($1 AS JSON)))) ORDER BY id FOR UPDATE";
    const VISIT_EPOCHS: &'static str = "SELECT id, epoch FROM visits \
         WHERE id = ANY(ARRAY(SELECT json_array_elements_text(CAST($1 AS JSON))))";
    const JSON_ROWS: &'static str = "jsonb_array_elements(CAST($1 AS JSONB))";
    const COMBINES_WRITES: bool = true;
    /// Creates missing counter rows and locks and raises existing ones, in key order
    /// (`json_each_text` keeps the keys in the order of the text, sorted), then inserts
    /// the events in the batch's order (each takes its storage key, `seq`, as it is
    /// inserted). The two kinds of counter may be taken in either order: a visit's counter
    /// is only ever written under its visit's lock, taken first, so no one waits for it.
    const EVENT_NUMBERS: EventNumbers = EventNumbers::Insert(
        "WITH t AS (INSERT INTO event_tenants (tenant, last_seq) \
         SELECT key, CAST(value AS BIGINT) FROM json_each_text(CAST($1 AS JSON)) \
         ON CONFLICT (tenant) DO UPDATE SET last_seq = event_tenants.last_seq + EXCLUDED.last_seq \
         RETURNING tenant, last_seq), \
         v AS (INSERT INTO visit_event_counters (visit_id, last_seq) \
         SELECT key, CAST(value AS BIGINT) FROM json_each_text(CAST($2 AS JSON)) \
         ON CONFLICT (visit_id) DO UPDATE SET last_seq = visit_event_counters.last_seq + EXCLUDED.last_seq \
         RETURNING visit_id, last_seq) \
         INSERT INTO visit_events (id, tenant, visit_id, visit_seq, kind, at, data, next_attempt_at, tenant_seq) \
         SELECT e.value ->> 0, e.value ->> 1, e.value ->> 2, v.last_seq - CAST(e.value ->> 3 AS BIGINT), \
         e.value ->> 4, CAST(e.value ->> 5 AS BIGINT), e.value ->> 6, CAST(e.value ->> 5 AS BIGINT), \
         t.last_seq - CAST(e.value ->> 7 AS BIGINT) \
         FROM jsonb_array_elements(CAST($3 AS JSONB)) WITH ORDINALITY AS e(value, n) \
         JOIN t ON t.tenant = e.value ->> 1 JOIN v ON v.visit_id = e.value ->> 2 ORDER BY e.n \
         RETURNING 1 AS inserted",
    );
    const AUDIT_HEADS_AND_SEQS: &'static str = "SELECT visit_id, hash, NULL AS seq FROM audit_heads \
         WHERE visit_id = ANY(ARRAY(SELECT json_array_elements_text(CAST($1 AS JSON)))) \
         UNION ALL SELECT NULL, NULL, nextval('audit_events_seq') FROM json_array_elements(CAST($2 AS JSON))";
    const WRITE_AUDIT_HEADS: &'static str = "INSERT INTO audit_heads (visit_id, seq, hash) \
         SELECT value ->> 0, CAST(value ->> 1 AS BIGINT), value ->> 2 FROM jsonb_array_elements(CAST($1 AS JSONB)) \
         ON CONFLICT (visit_id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash";
    const UPDATE_VISITS: &'static str = "UPDATE visits SET \
         status = CASE WHEN visits.status = 'open' AND u.status IS NOT NULL THEN u.status ELSE visits.status END, \
         started_at = COALESCE(visits.started_at, u.started_at) \
         FROM (SELECT value ->> 0 AS id, value ->> 1 AS status, CAST(value ->> 2 AS BIGINT) AS started_at \
         FROM jsonb_array_elements(CAST($1 AS JSONB))) AS u \
         WHERE visits.id = u.id";
    /// No PostgreSQL database held rows from before the chain (see migrations/postgres/0002).
    const LEGACY_MAX_SEQ: &'static str = "SELECT CAST(0 AS BIGINT) AS seq";

    fn json_array_of(columns: &str, order: &str) -> String {
        format!(
            "CAST(COALESCE(json_agg(json_build_array({columns}) ORDER BY {order}), '[]') AS TEXT)"
        )
    }

    /// PostgreSQL text cannot hold NUL characters (SQLite's can). Inputs reject control
    /// characters before they get here; this keeps a stray one from failing a whole write
    /// batch, and the audit chain hashes the text as stored.
    fn text(s: &str) -> Cow<'_, str> {
        if s.contains('\0') {
            Cow::Owned(s.replace('\0', "\u{fffd}"))
        } else {
            Cow::Borrowed(s)
        }
    }
}
