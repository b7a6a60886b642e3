//! `churn`: M join/leave cycles against a running server, then a check that its resident
//! memory, open file descriptors and live tokio tasks are back where they started.
//!
//! The server is given a pool of visits. Three in four have a doctor connected for the
//! whole run, who admits whoever waits; the fourth has nobody, so its patients wait and
//! the visit leaves memory between cycles and is loaded again from storage. A cycle is
//! one new patient: join, wait, (be admitted and signal the doctor), then go, alternately
//! with `leave` and with an abrupt drop (no close frame) that keeps their place for the
//! grace period and must then expire. Each visit holds at most six such dropped
//! participants at a time (eight is the largest visit), which is what paces the cycles.
//!
//! The figures are read from `/proc/PID` (memory, descriptors) and from the server's
//! `bedside_tasks_alive` gauge on `/metrics`: once after a warm-up (so one-time growth —
//! allocator arenas, the storage pool, caches — is not counted as a leak), at every second
//! of the run (the peak), and once after the run, when the grace period has passed and the
//! server is quiet again.

use super::{join, signal};
use crate::client::{Incoming, STEP, Ws};
use crate::procstat;
use crate::report::{Report, Stats};
use crate::target::{Sources, Target};
use anyhow::{Context, bail};
use indicatif::ProgressBar;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};

#[derive(Debug, Clone)]
pub struct Options {
    /// Measured join/leave cycles.
    pub cycles: usize,
    /// Cycles under way at once.
    pub concurrency: usize,
    /// Visits the cycles go round (at least `concurrency`).
    pub pool: usize,
    /// Cycles run before the first measurement.
    pub warmup: usize,
    /// The server's grace period (`BEDSIDE_GRACE_SECONDS`): how long a dropped participant
    /// keeps its place.
    pub grace: Duration,
    pub server_pid: u32,
    pub sources: Sources,
    /// Largest change, in percent, allowed between the first and the last measurement.
    pub tolerance_pct: f64,
}

/// Dropped participants a visit may hold: eight places, less the doctor and the
/// participant of the cycle under way.
const MAX_LINGERING: usize = 6;
/// How long after a drop its place is surely free again, beyond the grace period: the
/// server checks deadlines once a second.
const LINGER_MARGIN: Duration = Duration::from_secs(2);
/// Longest wait for the server to be quiet after a phase.
const QUIET_TIMEOUT: Duration = Duration::from_secs(60);

/// One reading of the server's costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    pub rss_bytes: u64,
    pub fds: u64,
    pub tasks: u64,
    pub live_visits: u64,
}

impl Sample {
    fn max(self, o: Sample) -> Sample {
        Sample {
            rss_bytes: self.rss_bytes.max(o.rss_bytes),
            fds: self.fds.max(o.fds),
            tasks: self.tasks.max(o.tasks),
            live_visits: self.live_visits.max(o.live_visits),
        }
    }
}

/// One figure before, at its peak during, and after the run.
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    pub name: &'static str,
    pub before: f64,
    pub peak: f64,
    pub after: f64,
}

impl Figure {
    /// Change from before to after, in percent of before.
    pub fn change_pct(&self) -> f64 {
        if self.before > 0.0 {
            (self.after - self.before) / self.before * 100.0
        } else {
            0.0
        }
    }
}

pub struct Outcome {
    pub report: Report,
    pub before: Sample,
    pub peak: Sample,
    pub after: Sample,
    /// Measured cycles that completed.
    pub cycles: usize,
    pub requested: usize,
    pub tolerance_pct: f64,
}

impl Outcome {
    pub fn figures(&self) -> [Figure; 3] {
        let f = |name, get: fn(&Sample) -> f64| Figure {
            name,
            before: get(&self.before),
            peak: get(&self.peak),
            after: get(&self.after),
        };
        [
            f("rss_mib", |s| s.rss_bytes as f64 / 1048576.0),
            f("open_fds", |s| s.fds as f64),
            f("tasks_alive", |s| s.tasks as f64),
        ]
    }

    /// Why this run does not meet its bar; empty when it does.
    pub fn failures(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .figures()
            .iter()
            .filter(|f| f.change_pct().abs() > self.tolerance_pct)
            .map(|f| {
                format!(
                    "{} went from {:.1} to {:.1} ({:+.1}%, allowed ±{}%)",
                    f.name,
                    f.before,
                    f.after,
                    f.change_pct(),
                    self.tolerance_pct
                )
            })
            .collect();
        if self.cycles < self.requested {
            out.push(format!(
                "{} of {} cycles completed",
                self.cycles, self.requested
            ));
        }
        let errors: u64 = self.report.stats.errors.values().sum();
        if errors > 0 {
            out.push(format!("{errors} errors"));
        }
        let counts = &self.report.stats.counts;
        let (sent, got) = (
            counts.get("signals to doctors").copied().unwrap_or(0),
            counts
                .get("signals received by doctors")
                .copied()
                .unwrap_or(0),
        );
        if sent != got {
            out.push(format!("{sent} signals sent to doctors, {got} received"));
        }
        out
    }
}

/// Where the run is, for the sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    WarmUp,
    Run,
    Done,
}

/// A visit of the pool.
struct PoolVisit {
    id: String,
    /// Whether a doctor stays connected in it.
    doctor: bool,
}

/// What the workers share.
struct Ctx {
    target: Target,
    pool: Vec<PoolVisit>,
    opts: Options,
    /// Fresh connection per request, so reading the figures leaves nothing open behind it.
    metrics: reqwest::Client,
    metrics_url: String,
}

pub async fn run(target: Target, mut opts: Options) -> anyhow::Result<Outcome> {
    let Target::Bedside {
        http,
        key_id,
        key_secret,
        ..
    } = &target
    else {
        bail!("churn needs a Bedside target");
    };
    opts.concurrency = opts.concurrency.max(1);
    opts.pool = opts.pool.max(opts.concurrency);
    let ctx = Arc::new(Ctx {
        metrics: crate::http::client_builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()?,
        metrics_url: format!("{http}/metrics"),
        pool: create_pool(
            // A client of its own, dropped after: its idle keep-alive connections would
            // otherwise be counted in the server's descriptors and tasks.
            &Target::bedside(http, &format!("{key_id}:{key_secret}"))?,
            opts.pool,
        )
        .await?,
        target: target.clone(),
        opts: opts.clone(),
    });
    sample(&ctx)
        .await
        .context("reading the server's figures (is --server-pid right, and does /metrics export bedside_tasks_alive?)")?;

    // Doctors, connected for the whole run.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut doctors = Vec::new();
    for (k, visit) in ctx.pool.iter().enumerate() {
        if visit.doctor {
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            doctors.push((
                tokio::spawn(doctor(ctx.clone(), k, stop_rx.clone(), ready_tx)),
                ready_rx,
            ));
        }
    }
    let mut handles = Vec::with_capacity(doctors.len());
    for (handle, ready) in doctors {
        ready.await.context("a doctor could not join")?;
        handles.push(handle);
    }
    let doctors = handles;
    let doctor_visits = doctors.len() as u64;

    // Reads the figures every second through the warm-up and the run alike, so the
    // reading itself (a request, a storage query) is part of both; the peak counts only
    // during the run.
    let (sampling_tx, mut sampling_rx) = watch::channel(Phase::WarmUp);
    let sampler = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut peak = Sample::default();
            loop {
                if let Ok(s) = sample(&ctx).await
                    && *sampling_rx.borrow() == Phase::Run
                {
                    peak = peak.max(s);
                }
                tokio::select! {
                    _ = sampling_rx.wait_for(|p| *p == Phase::Done) => return peak,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        })
    };
    let mut stats = Stats::default();
    if opts.warmup > 0 {
        // Only its errors count; its figures are not part of the measured run.
        let warmup = cycles(&ctx, 0, opts.warmup, "warming up").await;
        let count = |name| warmup.counts.get(name).copied().unwrap_or(0);
        stats.count("warm-up cycles", count("cycles"));
        // The doctors count every signal they get, the warm-up's too.
        stats.count("signals to doctors", count("signals to doctors"));
        for (kind, n) in warmup.errors {
            *stats.errors.entry(format!("warm-up: {kind}")).or_default() += n;
        }
    }
    let before = settle(&ctx, doctor_visits).await?;

    let _ = sampling_tx.send(Phase::Run);
    let started = Instant::now();
    let measured = cycles(&ctx, opts.warmup, opts.cycles, "cycling").await;
    let elapsed = started.elapsed();
    let _ = sampling_tx.send(Phase::Done);
    let peak = sampler.await?;
    let done = measured.counts.get("cycles").copied().unwrap_or(0) as usize;
    stats.merge(measured);
    let after = settle(&ctx, doctor_visits).await?;
    let peak = peak.max(before).max(after);

    let _ = stop_tx.send(true);
    for d in doctors {
        match d.await {
            Ok(s) => stats.merge(s),
            Err(e) => stats.error(format!("doctor task: {e}")),
        }
    }
    let mut outcome = Outcome {
        report: Report {
            scenario: "churn".into(),
            target: target.name().into(),
            params: json!({"cycles": opts.cycles, "concurrency": opts.concurrency, "pool": opts.pool,
                           "doctor_visits": doctor_visits, "warmup": opts.warmup,
                           "grace_s": opts.grace.as_secs(), "tolerance_pct": opts.tolerance_pct}),
            elapsed,
            stats,
            server: BTreeMap::new(),
        },
        before,
        peak,
        after,
        cycles: done,
        requested: opts.cycles,
        tolerance_pct: opts.tolerance_pct,
    };
    let figures = outcome.figures();
    let server = &mut outcome.report.server;
    for (f, keys) in figures.iter().zip([
        [
            "rss_mib_before",
            "rss_mib_peak",
            "rss_mib_after",
            "rss_change_pct",
        ],
        ["fds_before", "fds_peak", "fds_after", "fds_change_pct"],
        [
            "tasks_before",
            "tasks_peak",
            "tasks_after",
            "tasks_change_pct",
        ],
    ]) {
        server.insert(keys[0], f.before);
        server.insert(keys[1], f.peak);
        server.insert(keys[2], f.after);
        server.insert(keys[3], f.change_pct());
    }
    server.insert("live_visits_before", before.live_visits as f64);
    server.insert("live_visits_peak", peak.live_visits as f64);
    server.insert("live_visits_after", after.live_visits as f64);
    Ok(outcome)
}

/// Creates the pool's visits (eight places each); one in four gets no doctor.
async fn create_pool(target: &Target, size: usize) -> anyhow::Result<Vec<PoolVisit>> {
    let bar = ProgressBar::new(size as u64).with_message("creating visits");
    let limit = Arc::new(Semaphore::new(32));
    let mut tasks = Vec::with_capacity(size);
    for _ in 0..size {
        let (target, limit, bar) = (target.clone(), limit.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            let id = target.create_visit(8).await;
            bar.inc(1);
            id
        }));
    }
    let mut pool = Vec::with_capacity(size);
    for (k, task) in tasks.into_iter().enumerate() {
        pool.push(PoolVisit {
            id: task.await??,
            doctor: k % 4 != 3,
        });
    }
    bar.finish_and_clear();
    Ok(pool)
}

/// Reads the server's memory and descriptors from /proc, then its live tasks from
/// `/metrics` (in that order, so the request's own connection is never among the
/// descriptors, and always among the tasks).
async fn sample(ctx: &Ctx) -> anyhow::Result<Sample> {
    let pid = ctx.opts.server_pid;
    let rss_bytes = procstat::rss_bytes(pid)?;
    let fds = procstat::open_fds(pid)? as u64;
    let text = ctx
        .metrics
        .get(&ctx.metrics_url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(Sample {
        rss_bytes,
        fds,
        tasks: gauge(&text, "bedside_tasks_alive").context("no bedside_tasks_alive in /metrics")?,
        live_visits: gauge(&text, "bedside_live_visits").unwrap_or(0),
    })
}

/// An unlabelled gauge's value from Prometheus text.
fn gauge(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

/// Waits out the grace period of the last drops, then until the server is quiet: only the
/// doctors' visits in memory, descriptors and tasks steady over two readings a second
/// apart. Returns the last reading.
async fn settle(ctx: &Ctx, doctor_visits: u64) -> anyhow::Result<Sample> {
    tokio::time::sleep(ctx.opts.grace + LINGER_MARGIN).await;
    let started = Instant::now();
    let mut last = sample(ctx).await?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = sample(ctx).await?;
        let steady = s.fds == last.fds && s.tasks == last.tasks;
        if (steady && s.live_visits <= doctor_visits) || started.elapsed() > QUIET_TIMEOUT {
            return Ok(s);
        }
        last = s;
    }
}

/// Runs cycles `first..first + count` with the configured concurrency.
async fn cycles(ctx: &Arc<Ctx>, first: usize, count: usize, message: &'static str) -> Stats {
    let bar = ProgressBar::new(count as u64).with_message(message);
    let next = Arc::new(AtomicUsize::new(first));
    let end = first + count;
    let workers: Vec<_> = (0..ctx.opts.concurrency)
        .map(|w| {
            let (ctx, next, bar) = (ctx.clone(), next.clone(), bar.clone());
            tokio::spawn(async move { worker(&ctx, w, &next, end, &bar).await })
        })
        .collect();
    let mut stats = Stats::default();
    for w in workers {
        match w.await {
            Ok(s) => stats.merge(s),
            Err(e) => stats.error(format!("worker: {e}")),
        }
    }
    bar.finish_and_clear();
    stats
}

/// One worker: takes cycle numbers until `end`, each in the next visit of its own share
/// of the pool that has a free place.
async fn worker(ctx: &Ctx, w: usize, next: &AtomicUsize, end: usize, bar: &ProgressBar) -> Stats {
    let mut stats = Stats::default();
    let ring: Vec<usize> = (w..ctx.pool.len()).step_by(ctx.opts.concurrency).collect();
    // For each visit of the ring: until when each of its dropped participants holds a place.
    let mut lingering: Vec<VecDeque<Instant>> = vec![VecDeque::new(); ring.len()];
    let mut cursor = 0;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= end {
            return stats;
        }
        let slot = loop {
            let now = Instant::now();
            for l in lingering.iter_mut() {
                while l.front().is_some_and(|&until| until <= now) {
                    l.pop_front();
                }
            }
            if let Some(r) = (0..ring.len())
                .map(|j| (cursor + j) % ring.len())
                .find(|&r| lingering[r].len() < MAX_LINGERING)
            {
                break r;
            }
            // Every visit of the ring is full of dropped participants: wait for the first
            // of them to expire.
            let first = lingering.iter().filter_map(|l| l.front()).min().copied();
            tokio::time::sleep_until(first.unwrap_or(now).into()).await;
        };
        cursor = (slot + 1) % ring.len();
        let visit = &ctx.pool[ring[slot]];
        let t = Instant::now();
        match cycle(ctx, i, visit, &mut stats).await {
            Ok(dropped) => {
                stats.record("cycle", t.elapsed());
                stats.count("cycles", 1);
                if dropped {
                    lingering[slot].push_back(Instant::now() + ctx.opts.grace + LINGER_MARGIN);
                }
            }
            Err(e) => {
                stats.error(format!("cycle: {e}"));
                // It may still hold a place: count it as dropped.
                lingering[slot].push_back(Instant::now() + ctx.opts.grace + LINGER_MARGIN);
            }
        }
        bar.inc(1);
    }
}

/// One patient: joins, waits (is admitted and signals the doctor, where there is one),
/// then leaves (even cycles) or drops (odd ones). Returns whether it dropped.
async fn cycle(ctx: &Ctx, i: usize, visit: &PoolVisit, stats: &mut Stats) -> anyhow::Result<bool> {
    let target = &ctx.target;
    let token = target.token(&visit.id, "patient", &format!("churn-{i}"))?;
    let t = Instant::now();
    let (mut ws, _, placed) = join(target, &token, ctx.opts.sources.pick(i)).await?;
    if placed != "waiting" {
        bail!("placed in {placed}");
    }
    stats.record("join (waiting)", t.elapsed());
    if visit.doctor {
        let admitted = ws.until("admitted").await?;
        stats.record("join → admitted", t.elapsed());
        let doctor = admitted["participants"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["role"] == "doctor"))
            .and_then(|p| p["participant_id"].as_str())
            .context("no doctor among the admitted")?
            .to_owned();
        ws.send(signal(&doctor, &format!(r#"{{"churn":{i}}}"#)))
            .await?;
        stats.count("signals to doctors", 1);
    }
    if i.is_multiple_of(2) {
        ws.send(json!({"type": "leave"}).to_string()).await?;
        expect_close(&mut ws, 1000).await?;
        stats.count("cycles ended with leave", 1);
        Ok(false)
    } else {
        // Once the pong is here, everything sent before it has been handled.
        ws.send(json!({"type": "ping"}).to_string()).await?;
        ws.until("pong").await?;
        ws.abort();
        stats.count("cycles ended with a drop", 1);
        Ok(true)
    }
}

/// Reads until the server closes; the close code must be `code`.
async fn expect_close(ws: &mut Ws, code: u16) -> anyhow::Result<()> {
    loop {
        match tokio::time::timeout(STEP, ws.next()).await {
            Ok(Ok(Incoming::Text(_))) => continue,
            Ok(Ok(Incoming::Closed(c))) if c == code => return Ok(()),
            Ok(Ok(Incoming::Closed(c))) => bail!("closed {c}, expected {code}"),
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!("not closed within {STEP:?}"),
        }
    }
}

/// A doctor who stays for the whole run and admits whoever waits; counts the signals
/// patients send. Leaves when told to stop.
async fn doctor(
    ctx: Arc<Ctx>,
    k: usize,
    mut stop: watch::Receiver<bool>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Stats {
    let mut stats = Stats::default();
    if let Err(e) = doctor_inner(&ctx, k, &mut stop, ready, &mut stats).await {
        stats.error(format!("doctor: {e}"));
    }
    stats
}

async fn doctor_inner(
    ctx: &Ctx,
    k: usize,
    stop: &mut watch::Receiver<bool>,
    ready: tokio::sync::oneshot::Sender<()>,
    stats: &mut Stats,
) -> anyhow::Result<()> {
    let target = &ctx.target;
    let token = target.token(&ctx.pool[k].id, "doctor", &format!("churn-dr-{k}"))?;
    // Sources are picked from the top, away from the patients' first addresses.
    let source = ctx.opts.sources.pick(usize::MAX - k);
    let (mut ws, _, placed) = join(target, &token, source).await?;
    if placed != "admitted" {
        bail!("doctor placed in {placed}");
    }
    let _ = ready.send(());
    // Admissions sent and not yet confirmed, so a second lobby frame does not repeat them.
    let mut pending: HashSet<String> = HashSet::new();
    loop {
        let incoming = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            incoming = ws.next() => incoming?,
        };
        let text = match incoming {
            Incoming::Text(t) => t,
            Incoming::Closed(code) => bail!("closed {code}"),
        };
        let v: Value = serde_json::from_str(&text)?;
        match v["type"].as_str() {
            Some("lobby") => {
                for w in v["waiting"].as_array().into_iter().flatten() {
                    let Some(id) = w["participant_id"].as_str() else {
                        continue;
                    };
                    if w["connected"] != false && pending.insert(id.to_owned()) {
                        ws.send(json!({"type": "admit", "participant_id": id}).to_string())
                            .await?;
                    }
                }
            }
            Some("participant_joined") => {
                if let Some(id) = v["participant"]["participant_id"].as_str() {
                    pending.remove(id);
                }
            }
            Some("participant_left") => {
                if let Some(id) = v["participant_id"].as_str() {
                    pending.remove(id);
                }
            }
            Some("signal") => stats.count("signals received by doctors", 1),
            Some("error") => stats.error(format!("doctor got error {}", v["code"])),
            _ => {}
        }
    }
    let _ = ws.send(json!({"type": "leave"}).to_string()).await;
    ws.close().await;
    Ok(())
}
