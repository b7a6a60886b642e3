//! The storage writer: one task that applies live visits' changes in the order they
//! happened, many per transaction, so a visit never waits on the disk.
//!
//! What one input to a visit changed (its state, its audit rows, its events) is pushed as
//! one group and written in one transaction, so a crash never keeps a change without the
//! event that reports it.
//!
//! Every change pushed gets a position; [`StorageWriter::wait_for`] waits until everything
//! up to a position is written, which is how a reader makes sure it sees a change.

use super::Visits;
use crate::VisitId;
use crate::audit::AuditEvent;
use crate::event::VisitEvent;
use crate::visit::Change;
use bedside_auth::TenantId;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Most operations written in one transaction.
const MAX_BATCH: usize = 512;
/// Attempts at a batch that fails for a reason other than an unreachable database.
const ATTEMPTS: u32 = 5;
/// Longest pause between attempts while the database is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Heads a group of a visit owned in a cluster: the group is written only if the
    /// visit's stored epoch is still this one (see [`super::Fencing::claim`]).
    Fence {
        visit: VisitId,
        epoch: i64,
    },
    Change {
        visit: VisitId,
        change: Change,
    },
    Audit {
        visit: VisitId,
        tenant: TenantId,
        event: AuditEvent,
    },
    Event {
        visit: VisitId,
        tenant: TenantId,
        event: VisitEvent,
    },
}

impl WriteOp {
    pub fn visit(&self) -> VisitId {
        match self {
            WriteOp::Fence { visit, .. }
            | WriteOp::Change { visit, .. }
            | WriteOp::Audit { visit, .. }
            | WriteOp::Event { visit, .. } => *visit,
        }
    }
}

struct Progress {
    /// Operations pushed so far.
    pushed: AtomicU64,
    /// Operations written (or given up on) so far.
    written: watch::Sender<u64>,
}

/// An operation as queued: whether it closes its group, and when its group was pushed.
type Queued = (WriteOp, bool, Instant);

/// Handle to the writer task. Cheap to clone; pushing never blocks.
#[derive(Clone)]
pub struct StorageWriter {
    tx: mpsc::UnboundedSender<Queued>,
    progress: Arc<Progress>,
    /// Visits whose writes were refused for a stale epoch, until someone takes them.
    fenced: Arc<parking_lot::Mutex<Option<mpsc::UnboundedReceiver<VisitId>>>>,
    /// The same visits, marked before the writes are counted as done, until the registry
    /// has stopped acting for them: nothing waiting on those writes may take them as made.
    refused: Arc<dashmap::DashSet<VisitId>>,
}

impl StorageWriter {
    pub fn spawn(storage: Arc<dyn Visits>) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (fenced_tx, fenced_rx) = mpsc::unbounded_channel();
        let progress = Arc::new(Progress {
            pushed: AtomicU64::new(0),
            written: watch::Sender::new(0),
        });
        let refused = Arc::new(dashmap::DashSet::new());
        (
            Self {
                tx,
                progress: progress.clone(),
                fenced: Arc::new(parking_lot::Mutex::new(Some(fenced_rx))),
                refused: refused.clone(),
            },
            tokio::spawn(run(storage, rx, progress, fenced_tx, refused)),
        )
    }

    /// Whether storage refused writes of `visit` for a stale epoch (another node runs it).
    pub fn refused(&self, visit: VisitId) -> bool {
        self.refused.contains(&visit)
    }

    /// The registry has stopped acting for `visit`: a later owner here starts afresh.
    pub fn clear_refused(&self, visit: VisitId) {
        self.refused.remove(&visit);
    }

    /// The visits whose writes storage refused because another node has taken them over
    /// (a stale epoch). Whoever runs the cluster takes this once and stops acting for them.
    pub fn take_fenced(&self) -> Option<mpsc::UnboundedReceiver<VisitId>> {
        self.fenced.lock().take()
    }

    pub fn push(&self, op: WriteOp) {
        self.push_group(vec![op]);
    }

    /// Pushes operations that are written in the same transaction.
    pub fn push_group(&self, ops: Vec<WriteOp>) {
        // Counted before they are queued: anything queued ahead was counted ahead, so a
        // position taken after a push covers that push.
        self.progress
            .pushed
            .fetch_add(ops.len() as u64, Ordering::SeqCst);
        let n = ops.len();
        let pushed = Instant::now();
        for (i, op) in ops.into_iter().enumerate() {
            if self.tx.send((op, i + 1 == n, pushed)).is_err() {
                tracing::error!("storage writer is gone; a change was not written");
                return;
            }
        }
    }

    /// The position of the last change pushed so far.
    pub fn position(&self) -> u64 {
        self.progress.pushed.load(Ordering::SeqCst)
    }

    /// Whether everything up to `position` has been written.
    pub fn has_written(&self, position: u64) -> bool {
        *self.progress.written.borrow() >= position
    }

    /// Waits until everything up to `position` has been written (or given up on).
    pub async fn wait_for(&self, position: u64) {
        let mut rx = self.progress.written.subscribe();
        let _ = rx.wait_for(|written| *written >= position).await;
    }

    /// Waits until everything pushed before this call has been written.
    pub async fn flush(&self) {
        self.wait_for(self.position()).await;
    }

    /// [`Self::wait_for`], for at most `limit`; whether everything up to `position` was
    /// written by then. Readers use it so a database outage, during which the writer keeps
    /// its changes and waits, turns into a prompt "unavailable" rather than a hang.
    pub async fn wait_within(&self, position: u64, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.wait_for(position))
            .await
            .is_ok()
    }
}

async fn run(
    storage: Arc<dyn Visits>,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    progress: Arc<Progress>,
    fenced: mpsc::UnboundedSender<VisitId>,
    refused: Arc<dashmap::DashSet<VisitId>>,
) {
    let mut queued = Vec::with_capacity(MAX_BATCH);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut pushed = Vec::with_capacity(MAX_BATCH);
    let queueing = metrics::histogram!("bedside_storage_write_wait_seconds", "stage" => "queued");
    let stored = metrics::histogram!("bedside_storage_write_wait_seconds", "stage" => "stored");
    while next_batch(&mut rx, &mut queued, &mut batch, &mut pushed).await {
        // What a group's notices wait for in a cluster (durable before visible): the
        // batches ahead of theirs, then their own transaction.
        let started = Instant::now();
        for at in &pushed {
            queueing.record(started.saturating_duration_since(*at));
        }
        let result = write(&*storage, &batch).await;
        let done = Instant::now();
        for at in pushed.drain(..) {
            stored.record(done.saturating_duration_since(at));
        }
        for visit in result.unwrap_or_default() {
            tracing::warn!(%visit, "writes refused: another node owns this visit now");
            refused.insert(visit);
            let _ = fenced.send(visit);
        }
        let n = batch.len() as u64;
        batch.clear();
        progress.written.send_modify(|written| *written += n);
    }
}

/// Fills `batch` with what is queued, up to [`MAX_BATCH`] operations and beyond only to
/// finish a group, and `pushed` with when each of its groups was pushed. False when the
/// writer is closed and drained.
async fn next_batch(
    rx: &mut mpsc::UnboundedReceiver<Queued>,
    queued: &mut Vec<Queued>,
    batch: &mut Vec<WriteOp>,
    pushed: &mut Vec<Instant>,
) -> bool {
    if rx.recv_many(queued, MAX_BATCH).await == 0 {
        return false;
    }
    // The rest of a group was pushed in the same breath, so it is already queued (or the
    // process is going away).
    while queued.last().is_some_and(|(_, closes, _)| !closes) {
        match rx.recv().await {
            Some(op) => queued.push(op),
            None => break,
        }
    }
    for (op, closes, at) in queued.drain(..) {
        if closes {
            pushed.push(at);
        }
        batch.push(op);
    }
    true
}

/// Writes one batch. While the database is unreachable the batch (and everything queued
/// behind it) is kept and retried until it is back: visits go on meanwhile, readiness
/// reports the outage, and nothing of the audit trail is lost. Any other failure is
/// retried a few times, then the batch is dropped, so one bad write cannot stall every
/// visit's storage for good.
async fn write(storage: &dyn Visits, batch: &[WriteOp]) -> Option<Vec<VisitId>> {
    let started = std::time::Instant::now();
    let written = retrying(batch.len(), || storage.apply(batch)).await;
    metrics::histogram!("bedside_storage_write_duration_seconds").record(started.elapsed());
    written
}

/// The retry policy of [`write`], over any way of applying the batch; what applying it
/// returned, if it was written.
async fn retrying<T, F, Fut>(ops: usize, mut apply: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, super::StorageError>>,
{
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        match apply().await {
            Ok(applied) => {
                if attempt > 1 {
                    tracing::info!(attempt, ops, "storage writes resumed");
                }
                return Some(applied);
            }
            Err(e) if e.is_transient() => {
                // Once at the start of an outage, then every few minutes at most.
                if attempt == 1 || attempt.is_multiple_of(50) {
                    tracing::warn!(error = %e, attempt, ops, "database unreachable; keeping the changes and retrying");
                }
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!(error = %e, attempt, ops, "storage write failed; retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, ops, "storage write failed; changes dropped");
                return None;
            }
        }
    }
}

/// 100 ms, doubling, at most [`MAX_BACKOFF`].
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50u64 << attempt.min(16)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RandomId;
    use crate::visit::Change;
    use chrono::Utc;

    fn op(i: usize) -> WriteOp {
        WriteOp::Change {
            visit: VisitId::random(),
            change: Change::Started {
                at: Utc::now() + chrono::TimeDelta::seconds(i as i64),
            },
        }
    }

    #[tokio::test]
    async fn a_group_is_never_split_across_transactions() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let writer = StorageWriter {
            tx,
            progress: Arc::new(Progress {
                pushed: AtomicU64::new(0),
                written: watch::Sender::new(0),
            }),
            fenced: Arc::default(),
            refused: Arc::default(),
        };
        for i in 0..MAX_BATCH - 1 {
            writer.push(op(i));
        }
        // Straddles the batch limit.
        writer.push_group((0..3).map(op).collect());
        writer.push(op(0));
        assert_eq!(writer.position(), MAX_BATCH as u64 + 3);

        let (mut queued, mut batch, mut pushed) = (Vec::new(), Vec::new(), Vec::new());
        assert!(next_batch(&mut rx, &mut queued, &mut batch, &mut pushed).await);
        assert_eq!(
            batch.len(),
            MAX_BATCH + 2,
            "the whole group in the first batch"
        );
        assert_eq!(pushed.len(), MAX_BATCH, "one time per group");
        batch.clear();
        pushed.clear();
        assert!(next_batch(&mut rx, &mut queued, &mut batch, &mut pushed).await);
        assert_eq!(batch.len(), 1);
        drop(writer);
        batch.clear();
        assert!(!next_batch(&mut rx, &mut queued, &mut batch, &mut pushed).await);
    }

    /// Applies nothing, failing the first `fails` attempts with `error`.
    fn flaky(
        fails: u32,
        error: fn() -> super::super::StorageError,
    ) -> (
        Arc<AtomicU64>,
        impl FnMut() -> std::future::Ready<Result<(), super::super::StorageError>>,
    ) {
        let calls = Arc::new(AtomicU64::new(0));
        let counter = calls.clone();
        let apply = move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            std::future::ready(if n < u64::from(fails) {
                Err(error())
            } else {
                Ok(())
            })
        };
        (calls, apply)
    }

    fn unreachable() -> super::super::StorageError {
        sqlx::Error::PoolTimedOut.into()
    }

    fn refused() -> super::super::StorageError {
        sqlx::Error::RowNotFound.into()
    }

    #[tokio::test(start_paused = true)]
    async fn changes_wait_out_a_database_outage_of_any_length() {
        // 200 attempts with pauses of up to 3 s: a ten-minute outage.
        let (calls, apply) = flaky(200, unreachable);
        let started = tokio::time::Instant::now();
        assert!(
            retrying(3, apply).await.is_some(),
            "written once the database is back"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 201);
        assert!(started.elapsed() >= Duration::from_secs(9 * 60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_keeps_failing_otherwise_is_dropped_after_a_few_attempts() {
        let (calls, apply) = flaky(u32::MAX, refused);
        assert!(retrying(3, apply).await.is_none());
        assert_eq!(calls.load(Ordering::SeqCst), u64::from(ATTEMPTS));
        let (calls, apply) = flaky(2, refused);
        assert!(
            retrying(3, apply).await.is_some(),
            "a passing failure is retried"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn unreachable_and_busy_databases_are_transient_and_nothing_else() {
        assert!(unreachable().is_transient());
        assert!(
            super::super::StorageError::from(sqlx::Error::Io(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused
            )))
            .is_transient()
        );
        assert!(!refused().is_transient());
        assert!(!super::super::StorageError::Corrupt("x".into()).is_transient());
        for code in ["08006", "08001", "57P01", "57P03", "53300", "5", "517", "6"] {
            assert!(super::super::transient_code(code), "{code}");
        }
        for code in ["23505", "42P01", "19", "2067", "13"] {
            assert!(!super::super::transient_code(code), "{code}");
        }
    }
}
