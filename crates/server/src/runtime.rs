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
//!
//! A connection that names its visit in the upgrade's URL (`/ws?visit=ID`, which the SDK
//! adds) goes to that visit's thread, so the frames its participants relay to each other
//! never wake another thread: below saturation about 6% of the CPU a relayed message costs
//! and a fifth of the relay's p99 (BENCHMARKS.md, "Placing a visit's connections on one
//! thread, built"). The name is a hint, trusted for nothing else, and a thread that already
//! runs more than its share (see [`Spread::for_visit`]) is not given more by it.

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

    /// The scheduler for a connection to `visit`: the visit's own thread, unless that one
    /// runs more than [`SHARE`] of the least busy thread's tasks (plus [`SLACK`]); then the
    /// least busy. Without the bound, connections naming one visit, which anyone can send,
    /// would all land on one core.
    pub fn for_visit(&self, visit: &str) -> &Handle {
        let least = self.least_busy();
        let Some(home) = self.handles.get(home_thread(visit, self.handles.len())) else {
            return least;
        };
        let (home_tasks, least_tasks) = (
            home.metrics().num_alive_tasks(),
            least.metrics().num_alive_tasks(),
        );
        if within_share(home_tasks, least_tasks) {
            home
        } else {
            least
        }
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

/// How much busier than the least busy thread a visit's thread may be and still take its
/// connections, as a fraction of the least busy thread's tasks...
const SHARE: f64 = 1.25;
/// ... plus this many tasks, so a few visits' connections on an idle node stay together.
const SLACK: usize = 64;

/// The thread of `threads` a visit's connections go to: a hash of its id, the same for
/// every connection of the visit and spread evenly over the threads.
fn home_thread(visit: &str, threads: usize) -> usize {
    // FNV-1a: stable across processes and releases, unlike std's hasher. Its low bits are
    // weak (the lowest is the parity of the bytes' lowest bits), and a modulo by a small
    // thread count reads little else, so they are mixed first (MurmurHash3's finalizer).
    let mut h = visit.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h % threads.max(1) as u64) as usize
}

/// Whether a thread running `tasks` may take another visit connection while the least busy
/// runs `least`.
fn within_share(tasks: usize, least: usize) -> bool {
    tasks as f64 <= least as f64 * SHARE + SLACK as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_visit_has_one_home_and_visits_spread_over_the_threads() {
        for threads in 1..=8 {
            let mut per_thread = vec![0usize; threads];
            for i in 0..8_000u64 {
                // Shaped like the ids visits get (UUIDs), sequential to stress the hash.
                let visit = format!("c5a07f13-e742-4d4f-b0a4-{i:012x}");
                let home = home_thread(&visit, threads);
                assert_eq!(home, home_thread(&visit, threads), "stable");
                per_thread[home] += 1;
            }
            let expected = 8_000 / threads;
            for n in per_thread {
                assert!(
                    n.abs_diff(expected) < expected / 10,
                    "{n} visits of 8,000 on one of {threads} threads"
                );
            }
        }
    }

    #[test]
    fn a_busy_home_gives_way_to_the_least_busy_thread() {
        assert!(within_share(SLACK, 0), "an idle node keeps visits together");
        assert!(!within_share(SLACK + 1, 0));
        assert!(within_share(1_250 + SLACK, 1_000));
        assert!(!within_share(1_251 + SLACK, 1_000));
    }
}
