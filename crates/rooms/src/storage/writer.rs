//! The storage writer: one task that applies live visits' changes in the order they
//! happened, many per transaction, so a visit never waits on the disk.

use super::Storage;
use crate::VisitId;
use crate::audit::AuditEvent;
use crate::visit::Change;
use bedside_auth::TenantId;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
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

enum Msg {
    Op(WriteOp),
    Flush(oneshot::Sender<()>),
}

/// Handle to the writer task. Cheap to clone; pushing never blocks.
#[derive(Clone)]
pub struct StorageWriter {
    tx: mpsc::UnboundedSender<Msg>,
}

impl StorageWriter {
    pub fn spawn(storage: Arc<dyn Storage>) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, tokio::spawn(run(storage, rx)))
    }

    pub fn push(&self, op: WriteOp) {
        if self.tx.send(Msg::Op(op)).is_err() {
            tracing::error!("storage writer is gone; a change was not written");
        }
    }

    /// Waits until everything pushed before this call has been written (or given up on).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

async fn run(storage: Arc<dyn Storage>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut waiters = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Op(op) => batch.push(op),
                Msg::Flush(done) => waiters.push(done),
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            write(&*storage, &batch).await;
            batch.clear();
        }
        for done in waiters.drain(..) {
            let _ = done.send(());
        }
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
