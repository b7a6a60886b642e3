//! `idle`: holds N authenticated connections open and reports what they cost the server in
//! resident memory, per connection.

use super::join;
use crate::client::Ws;
use crate::procstat;
use crate::report::{Report, Stats};
use crate::target::{Sources, Target};
use indicatif::ProgressBar;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(Debug, Clone)]
pub struct Options {
    pub connections: usize,
    /// Participants per visit: one doctor, the rest patients (waiting). One holds a visit
    /// live on the node (and its lease, in a cluster) at the least cost in descriptors.
    pub per_visit: usize,
    pub sources: Sources,
    pub server_pid: Option<u32>,
    /// How long to hold everyone after measuring.
    pub hold: Duration,
}

pub async fn run(target: Target, opts: Options) -> anyhow::Result<Report> {
    let per_visit = opts.per_visit.clamp(1, 8);
    let visits = opts.connections.div_ceil(per_visit);
    let limit = Arc::new(Semaphore::new(128));
    let mut ids = Vec::with_capacity(visits);
    if matches!(target, Target::Bedside { .. }) {
        let bar = ProgressBar::new(visits as u64).with_message("creating visits");
        let mut tasks = Vec::new();
        for _ in 0..visits {
            let (target, limit, bar) = (target.clone(), limit.clone(), bar.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = limit.acquire_owned().await;
                let id = target.create_visit(per_visit.max(2)).await;
                bar.inc(1);
                id
            }));
        }
        for task in tasks {
            ids.push(task.await??);
        }
        bar.finish_and_clear();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = opts
        .server_pid
        .and_then(|pid| procstat::rss_bytes(pid).ok());

    let bar = ProgressBar::new(opts.connections as u64).with_message("connecting");
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(opts.connections);
    for k in 0..opts.connections {
        let (target, limit, bar, sources) = (
            target.clone(),
            limit.clone(),
            bar.clone(),
            opts.sources.clone(),
        );
        let visit = ids.get(k / per_visit).cloned().unwrap_or_default();
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            let result = connect(&target, &visit, k, k % per_visit == 0, sources.pick(k)).await;
            bar.inc(1);
            result
        }));
    }
    let mut stats = Stats::default();
    let mut held = Vec::with_capacity(opts.connections);
    for task in tasks {
        match task.await? {
            Ok((ws, took)) => {
                stats.record("connect + join", took);
                held.push(ws);
            }
            Err(e) => stats.error(e.to_string()),
        }
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    stats.count("connections held", held.len() as u64);
    // Let allocations settle before reading memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut server = BTreeMap::new();
    if let Some(pid) = opts.server_pid {
        if let (Some(before), Ok(after)) = (rss_before, procstat::rss_bytes(pid)) {
            server.insert("rss_before_mib", before as f64 / 1048576.0);
            server.insert("rss_after_mib", after as f64 / 1048576.0);
            if !held.is_empty() {
                server.insert(
                    "bytes_per_connection",
                    after.saturating_sub(before) as f64 / held.len() as f64,
                );
            }
        }
        if let Ok(fds) = procstat::open_fds(pid) {
            server.insert("open_fds", fds as f64);
        }
    }
    // Scripts that hold idle visits beside other load wait for this line.
    eprintln!("holding {} connections", held.len());
    // Held as a browser holds them: answering the server's pings (an unread connection is
    // rightly dropped as dead after the server's idle timeout).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let holders: Vec<_> = held
        .into_iter()
        .map(|mut ws| {
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                ws.hold_until(&mut stop).await;
                ws.abort();
            })
        })
        .collect();
    tokio::time::sleep(opts.hold).await;
    let _ = stop_tx.send(true);
    for holder in holders {
        let _ = holder.await;
    }
    Ok(Report {
        scenario: "idle".into(),
        target: target.name().into(),
        params: json!({"connections": opts.connections, "per_visit": per_visit}),
        elapsed,
        stats,
        server,
    })
}

async fn connect(
    target: &Target,
    visit: &str,
    k: usize,
    doctor: bool,
    source: std::net::IpAddr,
) -> anyhow::Result<(Ws, Duration)> {
    let t = Instant::now();
    match target {
        Target::Baseline { .. } => Ok((
            Ws::connect(&target.ws_url(&format!("idle{k}")), source).await?,
            t.elapsed(),
        )),
        Target::Bedside { .. } => {
            let role = if doctor { "doctor" } else { "patient" };
            let token = target.token(visit, role, &format!("idle-{k}"))?;
            let (ws, _, _) = join(target, &token, source).await?;
            Ok((ws, t.elapsed()))
        }
    }
}
