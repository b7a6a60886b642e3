//! `visits`: N concurrent visits, each set up the way a real one is (create, tokens, doctor
//! joins, patient waits and is admitted, offer/answer/candidates, chat), then closed-loop
//! round trips of fixed-size signals for a duration, then everyone leaves.

use super::{Phase, RELAY, Signals, hold, leave, negotiate, pair, relay};
use crate::peer;
use crate::procstat;
use crate::report::{Report, Stats};
use crate::target::{Sources, Target};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};

#[derive(Debug, Clone)]
pub struct Options {
    pub visits: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Size of each relayed signal frame, bytes.
    pub signal_bytes: usize,
    /// Probes each pair keeps in flight.
    pub window: usize,
    /// How long each side waits before answering a probe (zero: full load).
    pub think: Duration,
    pub sdp_bytes: usize,
    pub candidates: usize,
    /// How many of the visits are real WebRTC peers instead of scripted ones.
    pub webrtc: usize,
    /// Each participant also sends a `stats` report this often (Bedside only).
    pub stats_every: Option<Duration>,
    /// Beside the visits, this many patients wait in one provider's queue, with the
    /// provider's dashboard open, and the queue changes every `queue_every` (Bedside only;
    /// see [`super::queue`]).
    pub queue_patients: usize,
    pub queue_every: Duration,
    pub sources: Sources,
    /// The server's pid, to report its CPU time and memory.
    pub server_pid: Option<u32>,
}

/// Each visit's own median and tail of the relay, one value per visit. A tail every visit
/// shares (the machine, the scheduler) shows as visits' p99s close to the run's own p99; one
/// that a few visits carry (connections served unfairly) shows as a wide spread of them.
pub const EACH_VISIT_P50: &str = "relay one-way, each visit's p50";
pub const EACH_VISIT_P99: &str = "relay one-way, each visit's p99";

fn each_visit(stats: &mut Stats, sides: [&Stats; 2]) {
    let mut visit = crate::report::histogram();
    for side in sides {
        if let Some(h) = side.latencies.get(RELAY) {
            // Same bounds on both sides: adding cannot fail.
            let _ = visit.add(h);
        }
    }
    if visit.is_empty() {
        return;
    }
    stats.record(
        EACH_VISIT_P50,
        Duration::from_micros(visit.value_at_quantile(0.5)),
    );
    stats.record(
        EACH_VISIT_P99,
        Duration::from_micros(visit.value_at_quantile(0.99)),
    );
}

pub async fn run(target: Target, opts: Options) -> anyhow::Result<Report> {
    let setup = Arc::new(Semaphore::new(64));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (go_tx, go_rx) = watch::channel(false);
    let measuring = Arc::new(AtomicBool::new(false));
    let pad = Arc::new(crate::payload::padding(opts.signal_bytes));
    let bar = ProgressBar::new(opts.visits as u64).with_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("setting up");
    let ready = Arc::new(AtomicUsize::new(0));

    let mut tasks = Vec::new();
    for n in 0..opts.visits {
        let (target, opts, setup, bar, ready) = (
            target.clone(),
            opts.clone(),
            setup.clone(),
            bar.clone(),
            ready.clone(),
        );
        let (mut go, phase) = (
            go_rx.clone(),
            Phase {
                measuring: measuring.clone(),
                stop: stop_rx.clone(),
            },
        );
        let pad = pad.clone();
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::default();
            let permit = setup.acquire_owned().await;
            let visit = match &target {
                Target::Bedside { .. } => match target.create_visit(2).await {
                    Ok(v) => v,
                    Err(e) => {
                        stats.error(format!("setup: {e}"));
                        bar.inc(1);
                        ready.fetch_add(1, Ordering::Relaxed);
                        return stats;
                    }
                },
                Target::Baseline { .. } | Target::PeerJs { .. } => String::new(),
            };
            if n < opts.webrtc {
                drop(permit);
                bar.inc(1);
                ready.fetch_add(1, Ordering::Relaxed);
                let _ = go.wait_for(|g| *g).await;
                peer::visit(&target, &visit, n, &opts.sources, &mut stats).await;
                return stats;
            }
            let set_up = async {
                let (mut d, mut p) = pair(&target, &visit, n, &opts.sources, &mut stats).await?;
                negotiate(&target, &mut d, &mut p, opts.sdp_bytes, opts.candidates).await?;
                anyhow::Ok((d, p))
            }
            .await;
            drop(permit);
            bar.inc(1);
            ready.fetch_add(1, Ordering::Relaxed);
            let (mut doctor, mut patient) = match set_up {
                Ok(pair) => pair,
                Err(e) => {
                    stats.error(format!("setup: {e}"));
                    return stats;
                }
            };
            hold(&mut doctor, &mut patient, &go).await;
            let signals = Signals {
                wire: target.wire(),
                pad,
                think: opts.think,
                stats_every: opts.stats_every,
            };
            let (d, p) = tokio::join!(
                relay(doctor, opts.window, signals.clone(), phase.clone()),
                relay(patient, 0, signals, phase)
            );
            each_visit(&mut stats, [&d.0, &p.0]);
            stats.merge(d.0);
            stats.merge(p.0);
            for peer in [d.1, p.1].into_iter().flatten() {
                leave(&target, peer).await;
            }
            stats
        }));
    }
    // Wait for every visit to be set up (or failed), then start the measured phase.
    while ready.load(Ordering::Relaxed) < opts.visits {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let queue = match (&target, opts.queue_patients) {
        (Target::Bedside { .. }, n) if n > 0 => {
            bar.set_message("queueing");
            let load = super::queue::set_up(&target, n, &opts.sources, measuring.clone()).await?;
            let phase = Phase {
                measuring: measuring.clone(),
                stop: stop_rx.clone(),
            };
            Some(tokio::spawn(load.churn(opts.queue_every, phase)))
        }
        _ => None,
    };
    bar.set_position(0);
    bar.set_length(opts.duration.as_secs().max(1));
    bar.set_message("relaying");
    let _ = go_tx.send(true);
    tokio::time::sleep(opts.warmup).await;
    let cpu_before = opts
        .server_pid
        .and_then(|pid| procstat::cpu_seconds(pid).ok());
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    while started.elapsed() < opts.duration {
        tokio::time::sleep(Duration::from_millis(250)).await;
        bar.set_position(started.elapsed().as_secs());
    }
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let mut server = BTreeMap::new();
    if let (Some(pid), Some(before)) = (opts.server_pid, cpu_before) {
        if let Ok(after) = procstat::cpu_seconds(pid) {
            server.insert("cpu_s", after - before);
        }
        if let Ok(rss) = procstat::rss_bytes(pid) {
            server.insert("rss_mib", rss as f64 / (1024.0 * 1024.0));
        }
    }
    let _ = stop_tx.send(true);
    bar.finish_and_clear();

    let mut stats = Stats::default();
    if let Some(queue) = queue {
        match queue.await {
            Ok(s) => stats.merge(s),
            Err(e) => stats.error(format!("queue task: {e}")),
        }
    }
    for task in tasks {
        match task.await {
            Ok(s) => stats.merge(s),
            Err(e) => stats.error(format!("task: {e}")),
        }
    }
    if let Some(cpu) = server.get("cpu_s").copied() {
        let messages = stats.counts.get("messages relayed").copied().unwrap_or(0) as f64;
        if messages > 0.0 {
            server.insert("cpu_s_per_million_msgs", cpu / (messages / 1e6));
        }
    }
    Ok(Report {
        scenario: "visits".into(),
        target: target.name().into(),
        params: json!({"visits": opts.visits, "signal_bytes": opts.signal_bytes, "window": opts.window,
                       "think_ms": opts.think.as_millis() as u64,
                       "sdp_bytes": opts.sdp_bytes, "candidates": opts.candidates, "webrtc": opts.webrtc,
                       "stats_every_s": opts.stats_every.map(|d| d.as_secs()),
                       "queue_patients": opts.queue_patients,
                       "queue_every_ms": opts.queue_every.as_millis() as u64}),
        elapsed,
        stats,
        server,
    })
}
