//! `idle`: holds N admitted connections open and reports what they cost the server in
//! resident memory, per connection. Each Bedside visit is a doctor and its patients, every
//! patient admitted (issue 18: "memory per idle admitted connection"), so the figure counts
//! what a connection in a call holds, not one parked in the waiting room.

use super::{admit, join_at, named};
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
    /// Participants per visit: one doctor, the rest patients (admitted). One holds a visit
    /// live on the node (and its lease, in a cluster) at the least cost in descriptors.
    pub per_visit: usize,
    pub sources: Sources,
    pub server_pid: Option<u32>,
    /// How long to hold everyone after measuring.
    pub hold: Duration,
    /// With `server_pid`: how long after the first reading (3 s after the last join) to
    /// read resident memory again, everyone held and answering pings. An allocator gives
    /// back what a join burst freed only after a while (jemalloc's decay), so this second
    /// reading is what an idle node settles to; zero skips it.
    pub settle: Duration,
}

/// When the first reading is taken after the last join: the only reading before the settled
/// one was added, kept so figures compare with older results.
const FIRST_READING: Duration = Duration::from_secs(3);

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
    // One task per visit: the doctor joins, then each patient joins and is admitted.
    let mut tasks = Vec::with_capacity(visits);
    for v in 0..visits {
        let (target, limit, bar, sources) = (
            target.clone(),
            limit.clone(),
            bar.clone(),
            opts.sources.clone(),
        );
        let first = v * per_visit;
        let size = per_visit.min(opts.connections - first);
        let visit = ids.get(v).cloned().unwrap_or_default();
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            let result = connect_visit(&target, &visit, first, size, &sources).await;
            bar.inc(size as u64);
            result
        }));
    }
    let mut stats = Stats::default();
    let mut held = Vec::with_capacity(opts.connections);
    for task in tasks {
        match task.await? {
            Ok(visit) => {
                for (ws, took) in visit {
                    stats.record("connect + join", took);
                    held.push(ws);
                }
            }
            Err(e) => stats.error(e.to_string()),
        }
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    stats.count("connections held", held.len() as u64);
    tokio::time::sleep(FIRST_READING).await;
    let mut server = BTreeMap::new();
    // Held as a browser holds them: answering the server's pings (an unread connection is
    // rightly dropped as dead after the server's idle timeout).
    let connections = held.len();
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
    if let Some(pid) = opts.server_pid {
        let first = procstat::rss_bytes(pid).ok();
        let settled = if opts.settle.is_zero() {
            None
        } else {
            tokio::time::sleep(opts.settle).await;
            procstat::rss_bytes(pid).ok()
        };
        if let (Some(before), Some(first)) = (rss_before, first) {
            let mib = |bytes: u64| bytes as f64 / 1048576.0;
            // The figure of record: what the idle node holds once settled, or the first
            // reading when not waited for.
            let after = settled.unwrap_or(first);
            server.insert("rss_before_mib", mib(before));
            server.insert("rss_first_mib", mib(first));
            server.insert("rss_after_mib", mib(after));
            if connections > 0 {
                let per_connection =
                    |rss: u64| rss.saturating_sub(before) as f64 / connections as f64;
                server.insert("bytes_per_connection_first", per_connection(first));
                server.insert("bytes_per_connection", per_connection(after));
            }
        }
        if let Ok(fds) = procstat::open_fds(pid) {
            server.insert("open_fds", fds as f64);
        }
    }
    // Scripts that hold idle visits beside other load wait for this line.
    eprintln!("holding {connections} connections");
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

/// Connections `first..first + size`: for Bedside, a doctor (the first) and admitted
/// patients in `visit`, each with the time from its TCP connect until it was placed
/// (joined for the doctor, admitted for a patient).
async fn connect_visit(
    target: &Target,
    visit: &str,
    first: usize,
    size: usize,
    sources: &Sources,
) -> anyhow::Result<Vec<(Ws, Duration)>> {
    let mut held = Vec::with_capacity(size);
    if let Target::Baseline { .. } | Target::PeerJs { .. } = target {
        for k in first..first + size {
            let t = Instant::now();
            let ws = named(target, &format!("idle{k}"), sources.pick(k)).await?;
            held.push((ws, t.elapsed()));
        }
        return Ok(held);
    }
    let t = Instant::now();
    let token = target.token(visit, "doctor", &format!("idle-{first}"))?;
    let (mut doctor, _, placed) =
        join_at(&target.visit_ws_url(visit), &token, sources.pick(first)).await?;
    if placed != "admitted" {
        anyhow::bail!("doctor placed in {placed}");
    }
    let doctor_took = t.elapsed();
    let mut patients = Vec::with_capacity(size.saturating_sub(1));
    for k in first + 1..first + size {
        let t = Instant::now();
        let token = target.token(visit, "patient", &format!("idle-{k}"))?;
        let (mut patient, joined, placed) =
            join_at(&target.patient_ws_url(visit), &token, sources.pick(k)).await?;
        if placed != "waiting" {
            anyhow::bail!("patient placed in {placed}");
        }
        let pid = joined["participant_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        admit(&mut doctor, &mut patient, &pid).await?;
        patients.push((patient, t.elapsed()));
    }
    held.push((doctor, doctor_took));
    held.extend(patients);
    Ok(held)
}
