//! A local connection's outbox: a bounded queue between the visit and the socket task.
//!
//! The visit pushes without waiting. When the queue is full the reader is too slow to keep
//! up with its visit; rather than buffer without bound or slow the visit down, the outbox
//! raises its `overflowed` alarm and the connection task closes the socket (4008).
//!
//! The queue is futures-channel's unbounded one with the bound counted here: it allocates
//! one small node per queued notice and nothing up front, where tokio's bounded channel
//! reserves a 512-byte channel and a 32-slot block for every connection, queued or not
//! (about 1 KiB of an idle connection's memory, BENCHMARKS.md). The bound is the same
//! `ws.queue_capacity`, counted exactly.

use bedside_rooms::{Outbox, Outgoing};
use futures_channel::mpsc;
use futures_util::StreamExt;
use futures_util::task::AtomicWaker;
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

pub struct LocalOutbox {
    tx: mpsc::UnboundedSender<Outgoing>,
    capacity: usize,
    overflowed: Arc<Alarm>,
}

/// The connection task's end of an outbox.
pub struct Inbox {
    pub rx: Queue,
    /// Raised once the queue overflowed: the reader must go.
    pub overflowed: Arc<Alarm>,
}

/// What the visit queued for the connection, oldest first.
pub struct Queue {
    rx: mpsc::UnboundedReceiver<Outgoing>,
    /// Shares the count of queued items with the outbox.
    alarm: Arc<Alarm>,
}

/// Nothing is queued right now.
#[derive(Debug)]
pub struct Empty;

impl LocalOutbox {
    pub fn new(capacity: usize) -> (Arc<Self>, Inbox) {
        let (tx, rx) = mpsc::unbounded();
        let overflowed = Arc::new(Alarm::default());
        (
            Arc::new(Self {
                tx,
                capacity,
                overflowed: overflowed.clone(),
            }),
            Inbox {
                rx: Queue {
                    rx,
                    alarm: overflowed.clone(),
                },
                overflowed,
            },
        )
    }
}

impl Outbox for LocalOutbox {
    fn push(&self, item: Outgoing) {
        // Counted before it is queued, so concurrent pushers can never pass the bound.
        if self.overflowed.queued.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.overflowed.queued.fetch_sub(1, Ordering::AcqRel);
            self.overflowed.raise();
            return;
        }
        // Fails only once the connection task is gone: nothing is waiting for it then.
        if self.tx.unbounded_send(item).is_err() {
            self.overflowed.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Queue {
    /// The next queued item; `None` once every outbox is dropped and the queue is empty.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        let item = poll_fn(|cx| self.rx.poll_next_unpin(cx)).await;
        self.taken(item)
    }

    /// The next queued item, if one is there now.
    pub fn try_recv(&mut self) -> Result<Outgoing, Empty> {
        let item = self.rx.try_recv().ok();
        self.taken(item).ok_or(Empty)
    }

    fn taken(&self, item: Option<Outgoing>) -> Option<Outgoing> {
        if item.is_some() {
            self.alarm.queued.fetch_sub(1, Ordering::AcqRel);
        }
        item
    }
}

/// A one-shot alarm from the visit to one connection task: a flag and the waiting task's
/// waker. Checking it is an atomic load, so it can sit in the relay loop's `select!` and be
/// polled on every frame; a `CancellationToken` or `Notify` there takes a mutex each poll,
/// which showed up at several percent of the relay's CPU in profiles. It also counts what
/// is queued, which is what raises it (one allocation per connection for both).
#[derive(Default)]
pub struct Alarm {
    raised: AtomicBool,
    waker: AtomicWaker,
    queued: AtomicUsize,
}

impl Alarm {
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Ready once the alarm is raised; otherwise the task is woken when it is.
    pub fn poll_raised(&self, cx: &mut Context<'_>) -> Poll<()> {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bedside_visit::CloseCode;

    #[tokio::test]
    async fn the_bound_is_the_configured_capacity_and_receiving_frees_room() {
        let (outbox, mut inbox) = LocalOutbox::new(3);
        for _ in 0..3 {
            outbox.push(Outgoing::Heartbeat);
        }
        assert!(
            !inbox.overflowed.is_raised(),
            "three fit in a queue of three"
        );
        assert!(matches!(inbox.rx.try_recv(), Ok(Outgoing::Heartbeat)));
        outbox.push(Outgoing::Close(CloseCode::GoingAway));
        assert!(
            !inbox.overflowed.is_raised(),
            "a received item frees its slot"
        );
        outbox.push(Outgoing::Heartbeat);
        assert!(inbox.overflowed.is_raised(), "a fourth overflows");
        // What was queued before the overflow is still there, in order; the rejected one is not.
        assert!(matches!(inbox.rx.recv().await, Some(Outgoing::Heartbeat)));
        assert!(matches!(inbox.rx.recv().await, Some(Outgoing::Heartbeat)));
        assert!(matches!(
            inbox.rx.recv().await,
            Some(Outgoing::Close(CloseCode::GoingAway))
        ));
        assert!(inbox.rx.try_recv().is_err());
        drop(outbox);
        assert!(
            inbox.rx.recv().await.is_none(),
            "ends once the outbox is gone"
        );
    }
}
