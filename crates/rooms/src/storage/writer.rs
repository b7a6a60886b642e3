//! The storage writer: one task that applies live visits' changes in the order they
//! happened, many per transaction, so a visit never waits on the disk.
//!
//! What one input to a visit changed (its state, its audit rows, its events) is pushed as
//! one group and written in one transaction, so a crash never keeps a change without the
//! event that reports it.
//!
//! Every change pushed gets a position; [`StorageWriter::wait_for`] waits until everything
//! up to a position is written, which is how a reader makes sure it sees a change.

use super::Storage;
use crate::VisitId;
use crate::audit::AuditEvent;
use crate::event::VisitEvent;
use crate::visit::Change;
use bedside_auth::TenantId;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Most operations written in one transaction.
const MAX_BATCH: usize = 512;
const ATTEMPTS: u32 = 5;

#[derive(Debug, Clone)]
pub enum WriteOp {
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

struct Progress {
    /// Operations pushed so far.
    pushed: AtomicU64,
    /// Operations written (or given up on) so far.
    written: watch::Sender<u64>,
}

/// Handle to the writer task. Cheap to clone; pushing never blocks.
#[derive(Clone)]
pub struct StorageWriter {
    /// Each operation, and whether it closes its group.
    tx: mpsc::UnboundedSender<(WriteOp, bool)>,
    progress: Arc<Progress>,
}

impl StorageWriter {
    pub fn spawn(storage: Arc<dyn Storage>) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let progress = Arc::new(Progress {
            pushed: AtomicU64::new(0),
            written: watch::Sender::new(0),
        });
        (
            Self {
                tx,
                progress: progress.clone(),
            },
            tokio::spawn(run(storage, rx, progress)),
        )
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
        for (i, op) in ops.into_iter().enumerate() {
            if self.tx.send((op, i + 1 == n)).is_err() {
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
}

async fn run(
    storage: Arc<dyn Storage>,
    mut rx: mpsc::UnboundedReceiver<(WriteOp, bool)>,
    progress: Arc<Progress>,
) {
    let mut queued = Vec::with_capacity(MAX_BATCH);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while next_batch(&mut rx, &mut queued, &mut batch).await {
        write(&*storage, &batch).await;
        let n = batch.len() as u64;
        batch.clear();
        progress.written.send_modify(|written| *written += n);
    }
}

/// Fills `batch` with what is queued, up to [`MAX_BATCH`] operations and beyond only to
/// finish a group. False when the writer is closed and drained.
async fn next_batch(
    rx: &mut mpsc::UnboundedReceiver<(WriteOp, bool)>,
    queued: &mut Vec<(WriteOp, bool)>,
    batch: &mut Vec<WriteOp>,
) -> bool {
    if rx.recv_many(queued, MAX_BATCH).await == 0 {
        return false;
    }
    // The rest of a group was pushed in the same breath, so it is already queued (or the
    // process is going away).
    while queued.last().is_some_and(|(_, closes)| !closes) {
        match rx.recv().await {
            Some(op) => queued.push(op),
            None => break,
        }
    }
    batch.extend(queued.drain(..).map(|(op, _)| op));
    true
}

async fn write(storage: &dyn Storage, batch: &[WriteOp]) {
    for attempt in 1..=ATTEMPTS {
        match storage.apply(batch).await {
            Ok(()) => return,
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!(error = %e, attempt, ops = batch.len(), "storage write failed; retrying");
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, ops = batch.len(), "storage write failed; changes dropped")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        };
        for i in 0..MAX_BATCH - 1 {
            writer.push(op(i));
        }
        // Straddles the batch limit.
        writer.push_group((0..3).map(op).collect());
        writer.push(op(0));
        assert_eq!(writer.position(), MAX_BATCH as u64 + 3);

        let (mut queued, mut batch) = (Vec::new(), Vec::new());
        assert!(next_batch(&mut rx, &mut queued, &mut batch).await);
        assert_eq!(
            batch.len(),
            MAX_BATCH + 2,
            "the whole group in the first batch"
        );
        batch.clear();
        assert!(next_batch(&mut rx, &mut queued, &mut batch).await);
        assert_eq!(batch.len(), 1);
        drop(writer);
        batch.clear();
        assert!(!next_batch(&mut rx, &mut queued, &mut batch).await);
    }
}
