//! A local connection's outbox: a bounded queue between the visit and the socket task.
//!
//! The visit pushes without waiting. When the queue is full the reader is too slow to keep
//! up with its visit; rather than buffer without bound or slow the visit down, the outbox
//! raises `overflowed` and the connection task closes the socket (4008).

use bedside_rooms::{Outbox, Outgoing};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub struct LocalOutbox {
    tx: mpsc::Sender<Outgoing>,
    overflowed: CancellationToken,
}

/// The connection task's end of an outbox.
pub struct Inbox {
    pub rx: mpsc::Receiver<Outgoing>,
    /// Cancelled once the queue overflowed: the reader must go.
    pub overflowed: CancellationToken,
}

impl LocalOutbox {
    pub fn new(capacity: usize) -> (Arc<Self>, Inbox) {
        let (tx, rx) = mpsc::channel(capacity);
        let overflowed = CancellationToken::new();
        (
            Arc::new(Self {
                tx,
                overflowed: overflowed.clone(),
            }),
            Inbox { rx, overflowed },
        )
    }
}

impl Outbox for LocalOutbox {
    fn push(&self, item: Outgoing) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(item) {
            self.overflowed.cancel();
        }
    }
}
