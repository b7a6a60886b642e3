//! The threads Bedside runs on: one tokio current-thread scheduler per core for
//! connections, each accepted connection placed on one of them for its whole life, and a
//! multi-thread scheduler for the service work.
//!
//! Why not tokio's multi-thread scheduler: it runs the task a message just woke before
//! anything else, and spills a burst of ready sockets to a global queue it checks only now
//! and then, so under saturation the relay's p99 was twice the lean relay's. A
//! current-thread scheduler serves its queue first in, first out (BENCHMARKS.md, "The
//! runtime"). One per core keeps every core busy without work stealing: connections are
//! many and long-lived, so placing each on the least busy thread spreads the load.
//!
//! First in, first out is fair to connections and wrong for a pipeline: the storage writer
//! takes a turn per statement, and behind a thread's queue of busy connections it fell
//! seconds behind under load. So the service work runs apart, on tokio's multi-thread
//! scheduler, where a task just woken runs next: the accept loop, the storage writer, the
//! background sweeps, webhook delivery, the cluster router (lease renewal, frames from other
//! nodes) and the embedded TURN server. Its workers are idle most of the time, so the OS runs
//! them as soon as they are woken. Tasks a connection spawns stay on the connection's thread.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::oneshot;

/// The running threads; dropped, the connection threads stop and are joined.
pub struct Threads {
    main: Runtime,
    /// Dropped, each ends its connection thread's wait.
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    spread: Spread,
}

/// Where new connections go: the connection threads' schedulers.
#[derive(Clone, Debug)]
pub struct Spread {
    handles: Arc<[Handle]>,
    /// The service scheduler's: counted in the task figures, given no connections.
    service: Handle,
}

impl Threads {
    /// `count` connection threads, and as many service workers; `None` is one per core.
    pub fn start(count: Option<NonZeroUsize>) -> std::io::Result<Self> {
        let count = count
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get);
        let main = Builder::new_multi_thread()
            .worker_threads(count)
            .thread_name("bedside-service")
            .enable_all()
            .build()?;
        let service = main.handle().clone();
        let mut handles = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            // The runtime lives and is dropped on its own thread: dropping one inside
            // another's async context would panic.
            threads.push(
                std::thread::Builder::new()
                    .name(format!("bedside-conn-{i}"))
                    .spawn(move || {
                        let _ = runtime.block_on(stopped);
                    })?,
            );
            stops.push(stop);
        }
        Ok(Self {
            main,
            stops,
            threads,
            spread: Spread {
                handles: handles.into(),
                service,
            },
        })
    }

    pub fn spread(&self) -> Spread {
        self.spread.clone()
    }

    /// Runs `future`, the service work, on the service scheduler; the connection threads run
    /// what is placed on them meanwhile, and keep running until `self` is dropped.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.main.block_on(future)
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        // Every thread is told before any is waited for.
        self.stops.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Spread {
    /// The scheduler a new connection goes to: the one with the fewest live tasks, so a
    /// thread whose connections closed fills up again first.
    pub fn least_busy(&self) -> &Handle {
        self.handles
            .iter()
            .min_by_key(|h| h.metrics().num_alive_tasks())
            .unwrap_or(&self.service)
    }

    /// Connection threads.
    pub fn threads(&self) -> usize {
        self.handles.len()
    }

    /// Live tasks on every thread, the service scheduler's included.
    pub fn alive_tasks(&self) -> usize {
        self.service.metrics().num_alive_tasks() + self.connection_tasks().sum::<usize>()
    }

    /// Live tasks on each connection thread.
    pub fn connection_tasks(&self) -> impl Iterator<Item = usize> + '_ {
        self.handles.iter().map(|h| h.metrics().num_alive_tasks())
    }
}
