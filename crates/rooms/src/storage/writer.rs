//! The storage writer: one task that applies live visits' changes in the order they
//! happened, many per transaction, so a visit never waits on the disk.
//!
//! Every change pushed gets a position; [`StorageWriter::wait_for`] waits until everything
//! up to a position is written, which is how a reader makes sure it sees a change.

use super::Storage;
use crate::VisitId;
use crate::audit::AuditEvent;
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
    tx: mpsc::UnboundedSender<WriteOp>,
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
        // Counted before it is queued: anything queued ahead of it was counted ahead of it,
        // so a position taken after a push covers that push.
        self.progress.pushed.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(op).is_err() {
            tracing::error!("storage writer is gone; a change was not written");
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
    mut rx: mpsc::UnboundedReceiver<WriteOp>,
    progress: Arc<Progress>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        write(&*storage, &batch).await;
        let n = batch.len() as u64;
        batch.clear();
        progress.written.send_modify(|written| *written += n);
    }
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
