//! The threads Bedside runs on: one tokio current-thread scheduler per thread, and each
//! accepted connection placed on one of them for its whole life.
//!
//! Why not tokio's multi-thread scheduler: it runs the task a message just woke before
//! anything else, and spills a burst of ready sockets to a global queue it checks only now
//! and then, so under saturation the relay's p99 was twice the lean relay's. A
//! current-thread scheduler serves its queue first in, first out (BENCHMARKS.md, "The
//! runtime"). One per core keeps every core busy without work stealing: connections are
//! many and long-lived, so placing each on the least busy thread spreads the load.
//!
//! The first thread (the caller's) also runs everything that is not a connection: the
//! accept loop, the storage writer, background sweeps, webhook delivery, the cluster
//! router and the embedded TURN server. Tasks a connection spawns stay on its thread.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::oneshot;

/// The running threads; dropped, the extra threads stop and are joined.
pub struct Threads {
    main: Runtime,
    extra: Vec<Extra>,
    spread: Spread,
}

struct Extra {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Where new connections go: the handles of every thread's scheduler, the caller's first.
#[derive(Clone, Debug)]
pub struct Spread {
    handles: Arc<[Handle]>,
}

impl Threads {
    /// `count` threads, the caller's included; `None` is one per core.
    pub fn start(count: Option<NonZeroUsize>) -> std::io::Result<Self> {
        let count = count
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get);
        let main = Builder::new_current_thread().enable_all().build()?;
        let mut handles = vec![main.handle().clone()];
        let mut extra = Vec::with_capacity(count - 1);
        for i in 1..count {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            // The runtime lives and is dropped on its own thread: dropping one inside
            // another's async context would panic.
            let thread = std::thread::Builder::new()
                .name(format!("bedside-{i}"))
                .spawn(move || {
                    let _ = runtime.block_on(stopped);
                })?;
            extra.push(Extra {
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Self {
            main,
            extra,
            spread: Spread {
                handles: handles.into(),
            },
        })
    }

    pub fn spread(&self) -> Spread {
        self.spread.clone()
    }

    /// Runs `future` on the caller's thread; the other threads run what is placed on them
    /// meanwhile, and keep running until `self` is dropped.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.main.block_on(future)
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        for extra in &mut self.extra {
            if let Some(stop) = extra.stop.take() {
                let _ = stop.send(());
            }
        }
        for extra in &mut self.extra {
            if let Some(thread) = extra.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl Spread {
    /// Only the current scheduler: for code that runs outside `Threads` (tests, tools).
    pub fn current() -> Self {
        Self {
            handles: Arc::new([Handle::current()]),
        }
    }

    /// The scheduler a new connection goes to, and its place (0 is the caller's, where
    /// connections are accepted): the one with the fewest live tasks, so a thread whose
    /// connections closed fills up again first. The first such on a tie.
    pub fn least_busy(&self) -> (usize, &Handle) {
        let mut best = (0, &self.handles[0]);
        let mut fewest = usize::MAX;
        for (i, handle) in self.handles.iter().enumerate() {
            let alive = handle.metrics().num_alive_tasks();
            if alive < fewest {
                (best, fewest) = ((i, handle), alive);
            }
        }
        best
    }

    pub fn threads(&self) -> usize {
        self.handles.len()
    }

    /// Live tasks on every thread.
    pub fn alive_tasks(&self) -> usize {
        self.handles
            .iter()
            .map(|h| h.metrics().num_alive_tasks())
            .sum()
    }

    /// Live tasks on each thread, the caller's first.
    pub fn alive_tasks_per_thread(&self) -> impl Iterator<Item = usize> + '_ {
        self.handles.iter().map(|h| h.metrics().num_alive_tasks())
    }
}
