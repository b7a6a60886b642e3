//! `reconnect-storm`: N admitted doctor/patient pairs; every connection drops at once (no
//! close frame, like a network outage or a server restart) and comes back with jittered
//! backoff using its resume token. Everyone must be readmitted without a new admission, and
//! relay must work again.

use super::{Peer, pair, signal};
use crate::client::Ws;
use crate::report::{Report, Stats};
use crate::target::{Sources, Target};
use anyhow::{Context, bail};
use indicatif::ProgressBar;
use rand::Rng;
use serde_json::json;
use std::collections::BTreeMap;
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

const ATTEMPTS: u32 = 6;

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
                    // Relay works again, both ways.
                    let check = async {
                        doctor.send(signal(&d_to, r#"{"check":1}"#)).await?;
                        patient.until("signal").await?;
                        patient.send(signal(&p_to, r#"{"check":2}"#)).await?;
                        doctor.until("signal").await?;
                        anyhow::Ok(())
                    };
                    match check.await {
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

/// Reconnects with the resume token after a random wait, retrying with backoff; the
/// participant must be readmitted, not sent to the waiting room.
async fn comeback(
    target: &Target,
    resume: &str,
    id: &str,
    jitter: Duration,
    source: std::net::IpAddr,
    stats: &mut Stats,
) -> anyhow::Result<Ws> {
    let wait = rand::rng().random_range(0..=jitter.as_millis().max(1) as u64);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let t = Instant::now();
    let mut backoff = Duration::from_millis(100);
    for attempt in 1..=ATTEMPTS {
        let result = async {
            let mut ws = Ws::connect(&target.ws_url(""), source).await?;
            ws.send(json!({"type": "join", "resume_token": resume}).to_string())
                .await?;
            let joined = ws.until("joined").await?;
            if joined["participant_id"].as_str() != Some(id) {
                bail!("came back as someone else");
            }
            let placed: serde_json::Value = serde_json::from_str(&ws.text().await?)?;
            let placed = placed["type"].as_str().context("type")?.to_owned();
            anyhow::Ok((ws, placed))
        }
        .await;
        match result {
            Ok((ws, placed)) if placed == "admitted" => {
                stats.record("rejoin (admitted)", t.elapsed());
                stats.count("participants back", 1);
                return Ok(ws);
            }
            Ok((_, placed)) => bail!("came back to {placed}: admission lost"),
            Err(e) if attempt < ATTEMPTS => {
                stats.error(format!("retried: {e}"));
                let jitter = Duration::from_millis(rand::rng().random_range(0..100));
                tokio::time::sleep(backoff + jitter).await;
                backoff *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    bail!("gave up")
}
