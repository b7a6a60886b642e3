//! The clients drop their own connections at once (no close frame, like a network outage)
//! and come back with their resume tokens: everyone must be readmitted without a new
//! admission, and relay must work again.

use super::super::{Peer, pair};
use super::{rejoin, relay_both_ways};
use crate::client::Ws;
use crate::report::{Report, Stats};
use crate::target::{Sources, Target};
use anyhow::bail;
use indicatif::ProgressBar;
use rand::Rng;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(Debug, Clone)]
pub struct Options {
    pub visits: usize,
    /// Each client waits a uniform random time up to this before reconnecting.
    pub jitter: Duration,
    pub sources: Sources,
}

pub async fn run(target: Target, opts: Options) -> anyhow::Result<Report> {
    if !matches!(target, Target::Bedside { .. }) {
        bail!("reconnect-storm needs a Bedside target");
    }
    let bar = ProgressBar::new(opts.visits as u64).with_message("setting up");
    let setup = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::new();
    for n in 0..opts.visits {
        let (target, sources, setup, bar) = (
            target.clone(),
            opts.sources.clone(),
            setup.clone(),
            bar.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = setup.acquire_owned().await;
            let mut stats = Stats::default();
            let visit = target.create_visit(2).await?;
            let pair = pair(&target, &visit, n, &sources, &mut stats).await?;
            bar.inc(1);
            anyhow::Ok((pair, stats))
        }));
    }
    let mut stats = Stats::default();
    let mut pairs = Vec::new();
    for task in tasks {
        match task.await? {
            Ok((pair, s)) => {
                pairs.push(pair);
                stats.merge(s);
            }
            Err(e) => stats.error(format!("setup: {e}")),
        }
    }
    bar.finish_and_clear();

    // Everyone drops at once.
    let mut returning = Vec::new();
    for (n, (doctor, patient)) in pairs.into_iter().enumerate() {
        let (d, p) = (strip(doctor), strip(patient));
        returning.push((n, d, p));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (n, (d_id, d_resume, d_to), (p_id, p_resume, p_to)) in returning {
        let (target, sources, jitter) = (target.clone(), opts.sources.clone(), opts.jitter);
        tasks.push(tokio::spawn(async move {
            let (mut stats, mut doctor_stats) = (Stats::default(), Stats::default());
            let (d, p) = tokio::join!(
                comeback(
                    &target,
                    &d_resume,
                    &d_id,
                    jitter,
                    sources.pick(2 * n),
                    &mut doctor_stats
                ),
                comeback(
                    &target,
                    &p_resume,
                    &p_id,
                    jitter,
                    sources.pick(2 * n + 1),
                    &mut stats
                ),
            );
            stats.merge(doctor_stats);
            match (d, p) {
                (Ok(mut doctor), Ok(mut patient)) => {
                    match relay_both_ways(&mut doctor, &d_to, &mut patient, &p_to).await {
                        Ok(()) => stats.count("pairs relaying again", 1),
                        Err(e) => stats.error(format!("relay after reconnect: {e}")),
                    }
                    doctor.close().await;
                    patient.close().await;
                }
                (d, p) => {
                    for e in [d.err(), p.err()].into_iter().flatten() {
                        stats.error(e.to_string());
                    }
                }
            }
            stats
        }));
    }
    for task in tasks {
        stats.merge(task.await?);
    }
    Ok(Report {
        scenario: "reconnect-storm".into(),
        target: target.name().into(),
        params: json!({"visits": opts.visits, "jitter_ms": opts.jitter.as_millis() as u64}),
        elapsed: started.elapsed(),
        stats,
        server: BTreeMap::new(),
    })
}

/// Drops the connection abruptly and keeps what is needed to come back.
fn strip(peer: Peer) -> (String, String, String) {
    peer.ws.abort();
    (peer.id, peer.resume_token, peer.to)
}

/// Reconnects with the resume token after a random wait; the participant must be
/// readmitted, not sent to the waiting room.
async fn comeback(
    target: &Target,
    resume: &str,
    id: &str,
    jitter: Duration,
    source: IpAddr,
    stats: &mut Stats,
) -> anyhow::Result<Ws> {
    let wait = rand::rng().random_range(0..=jitter.as_millis().max(1) as u64);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let t = Instant::now();
    let (ws, placed) = rejoin(target, resume, id, source, stats).await?;
    if placed != "admitted" {
        bail!("came back to {placed}: admission lost");
    }
    stats.record("rejoin (admitted)", t.elapsed());
    stats.count("participants back", 1);
    Ok(ws)
}
