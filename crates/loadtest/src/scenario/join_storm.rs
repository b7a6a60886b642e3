//! `join-storm`: participants arrive at a target rate (open loop: arrivals do not wait for
//! earlier ones) for a duration. Visits are created first; arrivals alternate doctor and
//! patient of each visit, and doctors admit whoever waits. Everyone stays connected until
//! the end, so the server holds `rate * duration` connections by then. With
//! `queue_patients`, a provider's queue of that many waiting patients changes every
//! `queue_every` while the arrivals come (see [`super::queue`]): how fast a dashboard hears
//! of a change while joins pour in.

use super::{Phase, join};
use crate::client::{Incoming, Ws};
use crate::procstat;
use crate::report::{Report, Stats};
use crate::target::{Sources, Target};
use anyhow::bail;
use indicatif::ProgressBar;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};

#[derive(Debug, Clone)]
pub struct Options {
    pub rate: u32,
    pub duration: Duration,
    pub sources: Sources,
    pub server_pid: Option<u32>,
    /// Patients waiting in one provider's queue during the storm (0: none).
    pub queue_patients: usize,
    pub queue_every: Duration,
}

pub async fn run(target: Target, opts: Options) -> anyhow::Result<Report> {
    if !matches!(target, Target::Bedside { .. }) {
        bail!("join-storm needs a Bedside target");
    }
    let arrivals = (u64::from(opts.rate) * opts.duration.as_secs().max(1)) as usize;
    let visits = arrivals.div_ceil(2);
    let bar = ProgressBar::new(visits as u64).with_message("creating visits");
    let setup = Arc::new(Semaphore::new(32));
    let mut creating = Vec::new();
    for _ in 0..visits {
        let (target, setup, bar) = (target.clone(), setup.clone(), bar.clone());
        creating.push(tokio::spawn(async move {
            let _permit = setup.acquire_owned().await;
            let v = target.create_visit(2).await;
            bar.inc(1);
            v
        }));
    }
    let mut ids = Vec::with_capacity(visits);
    for task in creating {
        ids.push(task.await??);
    }
    bar.finish_and_clear();

    // The queue is set up before the storm and changes only while the arrivals come.
    let (queue_stop_tx, queue_stop_rx) = watch::channel(false);
    let queue_measuring = Arc::new(AtomicBool::new(false));
    let queue = if opts.queue_patients > 0 {
        let load = super::queue::set_up(
            &target,
            opts.queue_patients,
            &opts.sources,
            queue_measuring.clone(),
        )
        .await?;
        let phase = Phase {
            measuring: queue_measuring.clone(),
            stop: queue_stop_rx,
        };
        Some((load, phase))
    } else {
        None
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let cpu_before = opts
        .server_pid
        .and_then(|pid| procstat::cpu_seconds(pid).ok());
    let started = Instant::now();
    let mut ticker =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(opts.rate.max(1))));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let queue = queue.map(|(load, phase)| {
        queue_measuring.store(true, Ordering::Relaxed);
        tokio::spawn(load.churn(opts.queue_every, phase))
    });
    let mut tasks = Vec::with_capacity(arrivals);
    for k in 0..arrivals {
        ticker.tick().await;
        let visit = ids[k / 2].clone();
        let (target, sources, stop) = (target.clone(), opts.sources.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::default();
            let role = if k % 2 == 0 { "doctor" } else { "patient" };
            if let Err(e) = arrive(&target, &visit, k, role, &sources, stop, &mut stats).await {
                stats.error(format!("{role}: {e}"));
            }
            stats
        }));
    }
    let arrived_in = started.elapsed();
    queue_measuring.store(false, Ordering::Relaxed);
    let _ = queue_stop_tx.send(true);
    // Let the last arrivals finish, then measure the server holding everyone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut server = BTreeMap::new();
    if let Some(pid) = opts.server_pid {
        if let (Some(before), Ok(after)) = (cpu_before, procstat::cpu_seconds(pid)) {
            server.insert("cpu_s", after - before);
        }
        if let Ok(rss) = procstat::rss_bytes(pid) {
            server.insert("rss_mib", rss as f64 / (1024.0 * 1024.0));
        }
    }
    let _ = stop_tx.send(true);
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
    stats.count("arrivals", arrivals as u64);
    Ok(Report {
        scenario: "join-storm".into(),
        target: target.name().into(),
        params: json!({"rate_per_s": opts.rate, "duration_s": opts.duration.as_secs(), "visits": visits,
                       "queue_patients": opts.queue_patients,
                       "queue_every_ms": opts.queue_every.as_millis() as u64}),
        elapsed: arrived_in,
        stats,
        server,
    })
}

async fn arrive(
    target: &Target,
    visit: &str,
    k: usize,
    role: &str,
    sources: &Sources,
    mut stop: watch::Receiver<bool>,
    stats: &mut Stats,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let token = target.token(visit, role, &format!("{role}-{k}"))?;
    let (mut ws, _, placed) = join(target, &token, sources.pick(k)).await?;
    match (role, placed.as_str()) {
        ("doctor", "admitted") => stats.record("join doctor", t.elapsed()),
        ("patient", "waiting") => {
            stats.record("join patient (waiting)", t.elapsed());
            ws.until("admitted").await?;
            stats.record("join patient (admitted)", t.elapsed());
        }
        (_, other) => bail!("placed in {other}"),
    }
    hold(&mut ws, role == "doctor", &mut stop).await?;
    ws.close().await;
    Ok(())
}

/// Stays connected until told to stop; a doctor admits whoever waits.
async fn hold(ws: &mut Ws, admits: bool, stop: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
    loop {
        let incoming = tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(()),
            incoming = ws.next() => incoming?,
        };
        match incoming {
            Incoming::Closed(code) => bail!("closed {code}"),
            Incoming::Text(text) if admits => {
                let v: serde_json::Value = serde_json::from_str(&text)?;
                if v["type"] == "lobby"
                    && let Some(waiting) = v["waiting"].as_array()
                {
                    for w in waiting {
                        ws.send(
                            json!({"type": "admit", "participant_id": w["participant_id"]})
                                .to_string(),
                        )
                        .await?;
                    }
                }
            }
            Incoming::Text(_) => {}
        }
    }
}
