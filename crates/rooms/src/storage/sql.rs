//! [`SqlStorage`]: the storage over either database, its SQL written once (here and in
//! `visits.rs`, `audit.rs`, `events.rs`) and run unchanged on both; what really differs is
//! asked of the [`Dialect`].
//!
//! Here: the write transaction every change of a visit goes through, fencing, secrets.

use super::audit::ChainWriter;
use super::blocks::{BLOCKS, USED_LINKS, blocks_from, used_links_from};
use super::columns::{parse, visit_columns, visit_from_row};
use super::dialect::{self, Dialect};
use super::driver::{Arg, Col};
use super::events::write_events;
use super::pending::Pending;
use super::visits::{
    PARTICIPANTS, ParticipantRows, QUALITY, VisitUpdates, apply_change, participants_from,
    quality_from, visit_of,
};
use super::{Fencing, Secrets, Storage, StorageError, StoredVisit, WriteOp};
use crate::VisitId;
use crate::record::{VisitRecord, VisitStatus};
use crate::visit::Change;
use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::{Database, Executor, Pool, Row, Transaction};
use std::collections::{BTreeMap, BTreeSet};

/// Visits, their audit trail and events, secrets and epochs in a database `D`.
pub struct SqlStorage<D: Database> {
    pool: Pool<D>,
    /// Where loading a visit reads: connections no writer holds. SQLite lets one writer
    /// in at a time, and writers waiting for it (a burst of visits created over the API)
    /// hold their pooled connections while they wait; a join loading its visit from that
    /// pool waited behind them (tens of milliseconds at the median in a setup burst,
    /// BENCHMARKS.md). PostgreSQL has no such wait: there it is the same pool.
    reads: Pool<D>,
    /// Visit creations in progress hold at most half the pool: they queue on their tenant's
    /// event numbering (one at a time per tenant, until each commits), each holding a
    /// pooled connection meanwhile, and a burst of them (64 at once, BENCHMARKS.md) held
    /// every connection, so joins and the storage writer waited behind them for one.
    creating: tokio::sync::Semaphore,
}

impl<D: Dialect> SqlStorage<D> {
    /// `reads` may be `pool` itself.
    pub(super) fn new(pool: Pool<D>, reads: Pool<D>) -> Self {
        let creating =
            tokio::sync::Semaphore::new((pool.options().get_max_connections() / 2).max(1) as usize);
        Self {
            pool,
            reads,
            creating,
        }
    }

    /// Waits for a turn to create a visit (see [`SqlStorage::creating`]). The semaphore is
    /// never closed (were it, creations would only go unlimited).
    pub(super) async fn creation_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.creating.acquire().await.ok()
    }

    /// A pooled connection, for statements that each commit as they end.
    pub(super) async fn connection(&self) -> Result<PoolConnection<D>, StorageError> {
        Ok(self.pool.acquire().await?)
    }

    /// Where a statement outside a transaction runs.
    pub(super) fn db(&self) -> impl Executor<'_, Database = D> {
        D::pooled(&self.pool)
    }

    /// Where the statements that load a visit run (see [`SqlStorage::reads`]).
    pub(super) fn reads(&self) -> impl Executor<'_, Database = D> {
        D::pooled(&self.reads)
    }

    pub(super) async fn begin(
        &self,
        statement: &'static str,
    ) -> Result<Transaction<'static, D>, StorageError> {
        Ok(self.pool.begin_with(statement).await?)
    }

    /// Applies `ops` in order, in one transaction; see [`super::Visits::apply`].
    pub(super) async fn apply_ops(&self, ops: &[WriteOp]) -> Result<Vec<VisitId>, StorageError> {
        let fences = fences(ops);
        let mut tx = self.begin(D::BEGIN_WRITE).await?;
        // Where writers lock rows, every visit the batch appends to is locked once, in id
        // order (no deadlock with another node's writer or claim); the fences are checked
        // under those locks. Elsewhere the write transaction already excludes every writer.
        let mut locked: BTreeSet<VisitId> = fences.keys().copied().collect();
        if D::LOCK_EACH_VISIT {
            locked.extend(ops.iter().filter_map(|op| match op {
                WriteOp::Audit { visit, .. } | WriteOp::Event { visit, .. } => Some(*visit),
                _ => None,
            }));
        }
        let epochs = lock_visits::<D>(&mut tx, &locked).await?;
        let fenced: Vec<VisitId> = fences
            .iter()
            .filter(|(visit, epoch)| epochs.get(visit) != Some(epoch))
            .map(|(visit, _)| *visit)
            .collect();
        write::<D>(&mut tx, Pending::default(), &unfenced(ops, &fenced)).await?;
        tx.commit().await?;
        Ok(fenced)
    }
}

/// Writes `ops` within a write transaction: changes, audit rows chained onto their visits'
/// trails, and events numbered on from their visits' last.
///
/// Each statement is a round trip that the whole batch waits for, so rows go in together
/// where order allows: participants' rows in one upsert (written before anything that
/// deletes participants), visits' status moves and starts in one update (written before any
/// other change), and audit rows and events, numbered and chained in order here,
/// in one insert each at the end (no change reads them). Those writes are held
/// ([`Pending`]) and sent with the statement that takes the events' numbers. The tenants'
/// event numbering, which every other writer of those tenants (another node, the API
/// creating a visit) waits for until this transaction ends, is taken there, last: on
/// PostgreSQL it is then held for that statement and the commit. In a setup burst nearly
/// every lock wait is on it (BENCHMARKS.md), so each round trip it is held for is one
/// every other writer waits. On PostgreSQL a batch of joins is five round trips: begin,
/// lock the visits, chain heads and audit seqs, the held writes with the events, commit.
///
/// `conn` is in a write transaction, or (a visit's creation on PostgreSQL, see
/// `insert_visit`) the writes end in one statement that commits on its own. `held` may hold
/// writes already, sent with the rest.
pub(super) async fn write<D: Dialect>(
    conn: &mut D::Connection,
    mut held: Pending,
    ops: &[&WriteOp],
) -> Result<(), StorageError> {
    let mut chain = ChainWriter::start::<D>(conn, ops).await?;
    let mut participants = ParticipantRows::new();
    let mut updates = VisitUpdates::new();
    let mut numbered = Vec::new();
    for op in ops {
        match op {
            WriteOp::Change {
                visit,
                change: Change::Participant(p),
            } => participants.push::<D>(*visit, p),
            WriteOp::Change { visit, change } if VisitUpdates::takes(change) => {
                updates.push(*visit, change)
            }
            WriteOp::Change { visit, change } => {
                updates.hold::<D>(&mut held)?;
                if ParticipantRows::needed_before(change) {
                    participants.hold::<D>(&mut held)?;
                }
                held.run::<D>(conn).await?;
                apply_change::<D>(conn, *visit, change).await?
            }
            WriteOp::Audit {
                visit,
                tenant,
                event,
            } => chain.append::<D>(*visit, tenant, event)?,
            WriteOp::Event { .. } => numbered.push(*op),
            WriteOp::Fence { .. } => {}
        }
    }
    participants.hold::<D>(&mut held)?;
    updates.hold::<D>(&mut held)?;
    chain.finish::<D>(&mut held)?;
    write_events::<D>(conn, &mut held, &numbered).await
}

/// The epochs of those of `visits` that exist, locked until `conn`'s transaction ends
/// where writers lock rows.
async fn lock_visits<D: Dialect>(
    conn: &mut D::Connection,
    visits: &BTreeSet<VisitId>,
) -> Result<BTreeMap<VisitId, i64>, StorageError> {
    if visits.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows = sqlx::query(D::LOCK_VISITS)
        .arg(dialect::json(visits)?)
        .fetch_all(D::on(conn))
        .await?;
    epochs(&rows)
}

/// Visits and their epochs from `id, epoch` rows.
fn epochs<R: Row>(rows: &[R]) -> Result<BTreeMap<VisitId, i64>, StorageError>
where
    R::Database: Dialect,
{
    rows.iter()
        .map(|r| Ok((parse(&r.col::<String>("id")?)?, r.col("epoch")?)))
        .collect()
}

/// The epoch each fenced visit of a batch was written under.
fn fences(ops: &[WriteOp]) -> BTreeMap<VisitId, i64> {
    ops.iter()
        .filter_map(|op| match op {
            WriteOp::Fence { visit, epoch } => Some((*visit, *epoch)),
            _ => None,
        })
        .collect()
}

/// The operations of a batch that are to be written: no fences, nothing of a visit whose
/// fence failed.
fn unfenced<'a>(ops: &'a [WriteOp], fenced: &[VisitId]) -> Vec<&'a WriteOp> {
    ops.iter()
        .filter(|op| !matches!(op, WriteOp::Fence { .. }) && !fenced.contains(&op.visit()))
        .collect()
}

#[async_trait]
impl<D: Dialect> Fencing for SqlStorage<D> {
    async fn claim(&self, visit: VisitId) -> Result<Option<i64>, StorageError> {
        sqlx::query("UPDATE visits SET epoch = epoch + 1 WHERE id = $1 RETURNING epoch")
            .arg(visit.to_string())
            .fetch_optional(self.db())
            .await?
            .map(|r| r.col("epoch"))
            .transpose()
            .map_err(Into::into)
    }

    /// One connection, and the raise returns the visit's row: two round trips fewer than a
    /// claim followed by a load (and one acquire, with PostgreSQL's check of the connection,
    /// fewer). Not one transaction, as before: each statement reads what was committed when
    /// it ran, and all run after the raise, so nothing the previous owner wrote after it
    /// can be missing (it is refused).
    async fn claim_loading(
        &self,
        visit: VisitId,
    ) -> Result<Option<(i64, Option<StoredVisit>)>, StorageError> {
        let mut conn = self.connection().await?;
        let Some(row) = sqlx::query(concat!(
            "UPDATE visits SET epoch = epoch + 1 WHERE id = $1 RETURNING epoch, ",
            visit_columns!()
        ))
        .arg(visit.to_string())
        .fetch_optional(D::on(&mut conn))
        .await?
        else {
            return Ok(None);
        };
        let epoch = row.col("epoch")?;
        let record = visit_from_row(&row)?;
        let stored = rest_of(&mut conn, record).await?;
        Ok(Some((epoch, Some(stored))))
    }

    async fn epochs(&self, visits: &[VisitId]) -> Result<Vec<(VisitId, i64)>, StorageError> {
        let rows = sqlx::query(D::VISIT_EPOCHS)
            .arg(dialect::json(visits)?)
            .fetch_all(self.db())
            .await?;
        Ok(epochs(&rows)?.into_iter().collect())
    }
}

#[async_trait]
impl<D: Dialect> Secrets for SqlStorage<D> {
    async fn secret(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>, StorageError> {
        let name = D::text(name);
        // The first writer wins, across nodes too; everyone reads back what it wrote.
        sqlx::query(
            "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .arg(&*name)
        .arg(fresh.to_vec())
        .execute(self.db())
        .await?;
        let row = sqlx::query("SELECT value FROM server_secrets WHERE name = $1")
            .arg(&*name)
            .fetch_one(self.db())
            .await?;
        Ok(row.col("value")?)
    }
}

/// The rest of a visit whose row is `record`, read on `conn` in one statement: its blocks
/// and used links, and unless it has ended its participants and their call quality. (A
/// join that takes a visit over waits for this: one round trip, not four.)
async fn rest_of<D: Dialect>(
    conn: &mut PoolConnection<D>,
    record: VisitRecord,
) -> Result<StoredVisit, StorageError> {
    // Built from this folder's fixed texts: no value is in it.
    let sql = format!(
        "SELECT {} AS blocks, {} AS links, {} AS participants, {} AS quality",
        BLOCKS.expr::<D>(),
        USED_LINKS.expr::<D>(),
        PARTICIPANTS.expr::<D>(),
        QUALITY.expr::<D>()
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .arg(record.id.to_string())
        .fetch_one(D::on(&mut *conn))
        .await?;
    let blocks = blocks_from(BLOCKS.decode(&row.col::<String>("blocks")?)?)?;
    let used_links = used_links_from(USED_LINKS.decode(&row.col::<String>("links")?)?);
    let (participants, quality) = if record.status == VisitStatus::Ended {
        (Vec::new(), Vec::new())
    } else {
        (
            participants_from(PARTICIPANTS.decode(&row.col::<String>("participants")?)?)?,
            quality_from(QUALITY.decode(&row.col::<String>("quality")?)?)?,
        )
    };
    Ok(StoredVisit {
        record,
        participants,
        blocks,
        used_links,
        quality,
    })
}

#[async_trait]
impl<D: Dialect> Storage for SqlStorage<D> {
    /// On one connection: a join that loads a visit takes the pool (and PostgreSQL's check
    /// of the connection it hands out, a round trip) once rather than five times.
    async fn load_visit(&self, id: VisitId) -> Result<Option<StoredVisit>, StorageError> {
        let mut conn = self.reads.acquire().await?;
        let Some(record) = visit_of(D::on(&mut conn), id).await? else {
            return Ok(None);
        };
        Ok(Some(rest_of(&mut conn, record).await?))
    }

    async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(self.db()).await?;
        Ok(())
    }

    async fn close(&self) {
        self.reads.close().await;
        self.pool.close().await;
    }
}
