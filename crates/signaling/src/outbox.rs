//! A local connection's outbox: a bounded queue between the visit and the socket task.
//!
//! The visit pushes without waiting. When the queue is full the reader is too slow to keep
//! up with its visit; rather than buffer without bound or slow the visit down, the outbox
//! raises its `overflowed` alarm and the connection task closes the socket (4008).

use bedside_rooms::{Outbox, Outgoing};
use futures_util::task::AtomicWaker;
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use tokio::sync::mpsc;

pub struct LocalOutbox {
    tx: mpsc::Sender<Outgoing>,
    overflowed: Arc<Alarm>,
}

/// The connection task's end of an outbox.
pub struct Inbox {
    pub rx: mpsc::Receiver<Outgoing>,
    /// Raised once the queue overflowed: the reader must go.
    pub overflowed: Arc<Alarm>,
}

impl LocalOutbox {
    pub fn new(capacity: usize) -> (Arc<Self>, Inbox) {
        let (tx, rx) = mpsc::channel(capacity);
        let overflowed = Arc::new(Alarm::default());
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
            self.overflowed.raise();
        }
    }
}

/// A one-shot alarm from the visit to one connection task: a flag and the waiting task's
/// waker. Checking it is an atomic load, so it can sit in the relay loop's `select!` and be
/// polled on every frame; a `CancellationToken` or `Notify` there takes a mutex each poll,
/// which showed up at several percent of the relay's CPU in profiles.
#[derive(Default)]
pub struct Alarm {
    raised: AtomicBool,
    waker: AtomicWaker,
}

impl Alarm {
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Resolves once the alarm is raised.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.is_raised() {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // Raised between the check and the registration: do not sleep through it.
            if self.is_raised() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}
