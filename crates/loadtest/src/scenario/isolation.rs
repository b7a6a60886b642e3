//! `isolation`: N admitted doctor/patient pairs, all at once, each side sending R signals
//! that carry a random nonce, its visit's index and a sequence number. Every connection
//! keeps every signal it receives; afterwards each one must have come from its own peer,
//! and each nonce sent must have reached that peer exactly once, in order.
//!
//! The counts (sent, delivered, lost, duplicated, misdelivered) are exact, not sampled:
//! a single signal crossing visits, vanishing or arriving twice fails the run.

use super::{Peer, RELAY, hold, leave, pair, signal};
use crate::client::Incoming;
use crate::payload;
use crate::procstat;
use crate::report::{Report, Stats};
use crate::target::{Sources, Target};
use anyhow::bail;
use indicatif::ProgressBar;
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};
use tokio::time::MissedTickBehavior;

#[derive(Debug, Clone)]
pub struct Options {
    pub visits: usize,
    /// Signals each side sends.
    pub rounds: usize,
    /// Signals per second each side sends (the server's per-connection limit is 50/s).
    pub per_second: u32,
    pub sources: Sources,
    pub server_pid: Option<u32>,
}

/// How long to keep listening once everything expected has arrived: a duplicate or a stray
/// delivery arriving late is still caught.
const SETTLE: Duration = Duration::from_secs(1);

/// What the run found, over every connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Signals written to the server.
    pub sent: u64,
    /// Signals that reached their sender's peer (first copies only).
    pub delivered: u64,
    /// Signals sent that never reached their peer.
    pub lost: u64,
    /// Extra copies of a signal its peer had already received.
    pub duplicated: u64,
    /// Signals received that were not sent to this connection by its peer: another visit's,
    /// the connection's own, or altered.
    pub misdelivered: u64,
    /// Of those, signals that carried another visit's index.
    pub cross_visit: u64,
    /// Signals that arrived after a later one from the same peer.
    pub out_of_order: u64,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.sent += o.sent;
        self.delivered += o.delivered;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.misdelivered += o.misdelivered;
        self.cross_visit += o.cross_visit;
        self.out_of_order += o.out_of_order;
    }
}

pub struct Outcome {
    pub report: Report,
    pub tally: Tally,
    /// Pairs that were set up and took part.
    pub pairs: usize,
}

impl Outcome {
    /// Why this run does not meet its bar; empty when it does.
    pub fn failures(&self) -> Vec<String> {
        let t = &self.tally;
        let mut out = Vec::new();
        if t.lost + t.duplicated + t.misdelivered + t.out_of_order > 0 {
            out.push(format!(
                "lost {}, duplicated {}, misdelivered {} ({} across visits), out of order {}",
                t.lost, t.duplicated, t.misdelivered, t.cross_visit, t.out_of_order
            ));
        }
        let errors: u64 = self.report.stats.errors.values().sum();
        if errors > 0 {
            out.push(format!("{errors} errors"));
        }
        if t.sent == 0 {
            out.push("nothing was sent".into());
        }
        out
    }
}

/// The `data` of an isolation signal: visit index, sequence number, nonce (hex), and a
/// send timestamp for the latency figure.
#[derive(Deserialize)]
struct Nonce {
    v: u64,
    s: u64,
    n: String,
    #[serde(default)]
    t: u64,
}

#[derive(Deserialize)]
struct Received {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    data: Option<Nonce>,
    #[serde(default)]
    code: Option<String>,
}

/// One received signal, reduced to what the checks need.
struct Got {
    from_peer: bool,
    visit: Option<u64>,
    seq: u64,
    nonce: Option<u128>,
}

/// What one side did: how many signals it sent, and every signal it received.
struct Side {
    sent: u64,
    got: Vec<Got>,
    /// One-way times of the signals received, in nanoseconds.
    relay_ns: Vec<u64>,
    /// Errors only: a latency histogram is large, and thousands of sides hold one each
    /// until the end, so latencies are kept as plain numbers instead.
    stats: Stats,
}

pub async fn run(target: Target, opts: Options) -> anyhow::Result<Outcome> {
    if !matches!(target, Target::Bedside { .. }) {
        bail!("isolation needs a Bedside target");
    }
    let setup = Arc::new(Semaphore::new(64));
    let (go_tx, go_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let ready = Arc::new(AtomicUsize::new(0));
    let paired = Arc::new(AtomicUsize::new(0));
    let complete = Arc::new(AtomicUsize::new(0));
    let bar = ProgressBar::new(opts.visits as u64).with_message("setting up");
    // Setup figures are merged as soon as a pair is up, not held by every visit's task.
    let setup_stats = Arc::new(Mutex::new(Stats::default()));

    let mut tasks = Vec::with_capacity(opts.visits);
    for n in 0..opts.visits {
        let (target, opts, setup, bar) = (target.clone(), opts.clone(), setup.clone(), bar.clone());
        let (ready, paired, complete) = (ready.clone(), paired.clone(), complete.clone());
        let (go, stop) = (go_rx.clone(), stop_rx.clone());
        let setup_stats = setup_stats.clone();
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::default();
            let permit = setup.acquire_owned().await;
            let set_up = async {
                let visit = target.create_visit(2).await?;
                pair(&target, &visit, n, &opts.sources, &mut stats).await
            }
            .await;
            drop(permit);
            bar.inc(1);
            if let Ok(mut all) = setup_stats.lock() {
                all.merge(std::mem::take(&mut stats));
            }
            let (mut doctor, mut patient) = match set_up {
                Ok(p) => {
                    paired.fetch_add(1, Ordering::SeqCst);
                    ready.fetch_add(1, Ordering::SeqCst);
                    p
                }
                Err(e) => {
                    stats.error(format!("setup: {e}"));
                    ready.fetch_add(1, Ordering::SeqCst);
                    return (stats, Tally::default(), Vec::new());
                }
            };
            // Each side's nonces, drawn before anything is sent.
            let nonces = |count: usize| -> Arc<[u128]> {
                let mut rng = rand::rng();
                (0..count).map(|_| rng.random::<u128>()).collect()
            };
            let (d_nonces, p_nonces) = (nonces(opts.rounds), nonces(opts.rounds));
            hold(&mut doctor, &mut patient, &go).await;
            let shared = Shared {
                visit: n as u64,
                per_second: opts.per_second,
                complete,
                stop,
            };
            let (d, p) = tokio::join!(
                exchange(doctor, d_nonces.clone(), p_nonces.clone(), shared.clone()),
                exchange(patient, p_nonces.clone(), d_nonces.clone(), shared),
            );
            let ((d_side, d_peer), (p_side, p_peer)) = (d, p);
            // The patient got what the doctor sent, and the other way round.
            let mut tally = check(&p_side, &d_nonces, d_side.sent, n as u64);
            tally.add(check(&d_side, &p_nonces, p_side.sent, n as u64));
            tally.sent = d_side.sent + p_side.sent;
            stats.merge(d_side.stats);
            stats.merge(p_side.stats);
            let mut relay_ns = d_side.relay_ns;
            relay_ns.extend(p_side.relay_ns);
            for peer in [d_peer, p_peer].into_iter().flatten() {
                leave(&target, peer).await;
            }
            (stats, tally, relay_ns)
        }));
    }
    while ready.load(Ordering::SeqCst) < opts.visits {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bar.finish_and_clear();

    let connections = 2 * paired.load(Ordering::SeqCst);
    let cpu_before = opts
        .server_pid
        .and_then(|pid| procstat::cpu_seconds(pid).ok());
    let started = Instant::now();
    let _ = go_tx.send(true);
    // Sending takes rounds / per_second; what is expected must have arrived well after.
    let sending = Duration::from_secs_f64(opts.rounds as f64 / f64::from(opts.per_second.max(1)));
    let deadline = started + sending + Duration::from_secs(60);
    while complete.load(Ordering::SeqCst) < connections && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exchanged = started.elapsed();
    tokio::time::sleep(SETTLE).await;
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

    let mut stats = match Arc::try_unwrap(setup_stats) {
        Ok(m) => m.into_inner().unwrap_or_default(),
        Err(shared) => shared.lock().map(|s| s.clone()).unwrap_or_default(),
    };
    let mut tally = Tally::default();
    for task in tasks {
        match task.await {
            Ok((s, t, relay_ns)) => {
                stats.merge(s);
                tally.add(t);
                for ns in relay_ns {
                    stats.record_ns(RELAY, ns);
                }
            }
            Err(e) => stats.error(format!("task: {e}")),
        }
    }
    if complete.load(Ordering::SeqCst) < connections {
        stats.error(format!(
            "{} of {connections} connections did not get everything within the deadline",
            connections - complete.load(Ordering::SeqCst)
        ));
    }
    for (name, n) in [
        ("signals sent", tally.sent),
        ("signals delivered", tally.delivered),
        ("lost", tally.lost),
        ("duplicated", tally.duplicated),
        ("misdelivered", tally.misdelivered),
        ("misdelivered across visits", tally.cross_visit),
        ("out of order", tally.out_of_order),
    ] {
        stats.count(name, n);
    }
    Ok(Outcome {
        report: Report {
            scenario: "isolation".into(),
            target: target.name().into(),
            params: json!({"visits": opts.visits, "rounds": opts.rounds, "per_second": opts.per_second}),
            elapsed: exchanged,
            stats,
            server,
        },
        tally,
        pairs: connections / 2,
    })
}

/// What every side of every visit shares.
#[derive(Clone)]
struct Shared {
    visit: u64,
    per_second: u32,
    /// Sides that have sent everything and received everything their peer sends.
    complete: Arc<AtomicUsize>,
    stop: watch::Receiver<bool>,
}

/// One side: sends its nonces at the paced rate while recording everything it receives,
/// until told to stop. Returns what it did and the peer, if still connected (to leave).
async fn exchange(
    mut me: Peer,
    mine: Arc<[u128]>,
    theirs: Arc<[u128]>,
    mut shared: Shared,
) -> (Side, Option<Peer>) {
    let mut side = Side {
        sent: 0,
        got: Vec::with_capacity(theirs.len()),
        relay_ns: Vec::with_capacity(theirs.len()),
        stats: Stats::default(),
    };
    let period = Duration::from_secs_f64(1.0 / f64::from(shared.per_second.max(1)));
    // A random phase, so that thousands of connections do not all send at the same instant.
    let phase = Duration::from_secs_f64(rand::rng().random_range(0.0..period.as_secs_f64()));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut seen = vec![false; theirs.len()];
    let mut arrived = 0usize;
    let mut done = false;
    let total = mine.len() as u64;
    loop {
        tokio::select! {
            _ = shared.stop.changed() => return (side, Some(me)),
            _ = ticker.tick(), if side.sent < total => {
                let s = side.sent;
                let data = format!(
                    r#"{{"v":{},"s":{s},"n":"{:032x}","t":{}}}"#,
                    shared.visit,
                    mine[s as usize],
                    payload::now_ns()
                );
                if let Err(e) = me.ws.send(signal(&me.to, &data)).await {
                    side.stats.error(format!("send: {e}"));
                    return (side, None);
                }
                side.sent += 1;
            }
            incoming = me.ws.next() => {
                let text = match incoming {
                    Ok(Incoming::Text(t)) => t,
                    Ok(Incoming::Closed(code)) => {
                        side.stats.error(format!("closed {code}"));
                        return (side, None);
                    }
                    Err(e) => {
                        side.stats.error(e.to_string());
                        return (side, None);
                    }
                };
                let Ok(frame) = serde_json::from_str::<Received>(&text) else {
                    side.stats.error("unparsable frame");
                    continue;
                };
                match frame.kind.as_str() {
                    "signal" => {}
                    "error" => {
                        side.stats.error(format!("error {}", frame.code.unwrap_or_default()));
                        continue;
                    }
                    _ => continue,
                }
                let got = Got {
                    from_peer: frame.from.as_deref() == Some(me.to.as_str()),
                    visit: frame.data.as_ref().map(|d| d.v),
                    seq: frame.data.as_ref().map_or(u64::MAX, |d| d.s),
                    nonce: frame.data.as_ref().and_then(|d| u128::from_str_radix(&d.n, 16).ok()),
                };
                if let Some(d) = &frame.data && d.t > 0 {
                    side.relay_ns.push(payload::now_ns().saturating_sub(d.t));
                }
                // Only to know when this side is complete; the verdict is `check`'s.
                if got.from_peer
                    && got.visit == Some(shared.visit)
                    && let Some(i) = usize::try_from(got.seq).ok().filter(|&i| i < theirs.len())
                    && got.nonce == Some(theirs[i])
                    && !seen[i]
                {
                    seen[i] = true;
                    arrived += 1;
                }
                side.got.push(got);
            }
        }
        if !done && side.sent == total && arrived == theirs.len() {
            done = true;
            shared.complete.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Checks what one side received against the nonces its peer drew (`theirs`), of which
/// the peer sent the first `peer_sent`.
fn check(side: &Side, theirs: &[u128], peer_sent: u64, visit: u64) -> Tally {
    let mut t = Tally::default();
    let mut seen = vec![false; theirs.len()];
    let mut last: Option<u64> = None;
    for g in &side.got {
        let expected = usize::try_from(g.seq)
            .ok()
            .filter(|&i| i < theirs.len())
            .map(|i| theirs[i]);
        if !(g.from_peer && g.visit == Some(visit) && expected.is_some() && g.nonce == expected) {
            t.misdelivered += 1;
            if g.visit.is_some_and(|v| v != visit) {
                t.cross_visit += 1;
            }
            continue;
        }
        let i = g.seq as usize;
        if seen[i] {
            t.duplicated += 1;
            continue;
        }
        seen[i] = true;
        t.delivered += 1;
        if last.is_some_and(|l| g.seq < l) {
            t.out_of_order += 1;
        }
        last = Some(last.map_or(g.seq, |l| l.max(g.seq)));
    }
    // Everything the peer got out must be here.
    t.lost = seen
        .iter()
        .take(peer_sent as usize)
        .filter(|s| !**s)
        .count() as u64;
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn got(from_peer: bool, visit: u64, seq: u64, nonce: u128) -> Got {
        Got {
            from_peer,
            visit: Some(visit),
            seq,
            nonce: Some(nonce),
        }
    }

    fn side(got: Vec<Got>) -> Side {
        Side {
            sent: 0,
            got,
            relay_ns: Vec::new(),
            stats: Stats::default(),
        }
    }

    const THEIRS: [u128; 3] = [11, 22, 33];

    #[test]
    fn everything_once_in_order_is_clean() {
        let s = side(vec![
            got(true, 7, 0, 11),
            got(true, 7, 1, 22),
            got(true, 7, 2, 33),
        ]);
        let t = check(&s, &THEIRS, 3, 7);
        assert_eq!(
            t,
            Tally {
                delivered: 3,
                ..Tally::default()
            }
        );
    }

    #[test]
    fn each_kind_of_fault_is_counted() {
        let s = side(vec![
            got(true, 7, 1, 22),
            got(true, 7, 0, 11),  // after a later one
            got(true, 7, 1, 22),  // again
            got(true, 8, 0, 11),  // another visit's index
            got(false, 7, 2, 33), // not from the peer
            got(true, 7, 2, 99),  // altered nonce
        ]);
        let t = check(&s, &THEIRS, 3, 7);
        assert_eq!(t.delivered, 2);
        assert_eq!(t.out_of_order, 1);
        assert_eq!(t.duplicated, 1);
        assert_eq!(t.misdelivered, 3);
        assert_eq!(t.cross_visit, 1);
        // Seq 2 never arrived intact.
        assert_eq!(t.lost, 1);
    }

    #[test]
    fn what_the_peer_never_sent_is_not_lost() {
        let s = side(vec![got(true, 7, 0, 11)]);
        assert_eq!(check(&s, &THEIRS, 1, 7).lost, 0);
        assert_eq!(check(&s, &THEIRS, 3, 7).lost, 2);
    }
}
