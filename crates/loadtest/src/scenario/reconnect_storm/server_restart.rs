//! The server goes away (`kill -9`, or any restart) and comes back on the same database,
//! started by the caller between [`prepare`] and [`Prepared::comeback`]. Half the pairs have
//! the patient admitted, half have them waiting; after the restart every participant must
//! be back in its own place (admitted stays admitted, waiting stays waiting), every visit
//! must read back with its status, and its audit trail must still begin with every event it
//! had before.

use super::super::{Peer, join, pair};
use super::{rejoin, relay_both_ways};
use crate::client::{Incoming, Ws};
use crate::report::{Report, Stats};
use crate::target::{Sources, Target};
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use indicatif::ProgressBar;
use rand::Rng;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

#[derive(Debug, Clone)]
pub struct RestartOptions {
    /// Doctor/patient pairs, one visit each: even ones admitted, odd ones waiting.
    pub visits: usize,
    /// Clients come back at uniform random times within this window after the restarted
    /// server answers `/readyz`.
    pub window: Duration,
    pub sources: Sources,
    /// Longest wait for the server to go down, and then for it to come back.
    pub restart_timeout: Duration,
    /// Open the window as soon as every connection has dropped, instead of when the
    /// restarted server answers `/readyz`: clients that find it not yet up retry with
    /// backoff, as a browser does.
    pub early: bool,
}

/// What a visit looked like through the API just before the restart.
struct Before {
    id: String,
    visit: Value,
    events: Vec<Value>,
    /// The doctor's and the patient's participant ids.
    participants: [String; 2],
}

/// Where the pairs get the restarted server's address and the moment the window opens.
#[derive(Clone)]
struct Release {
    target: Target,
    at: Instant,
}

/// What one pair's task saw.
#[derive(Default)]
struct PairResult {
    stats: Stats,
    /// When the later of the two got back in its place.
    back_at: Option<Instant>,
}

/// Pairs set up and connected, watching for the server to go away.
pub struct Prepared {
    opts: RestartOptions,
    before: Vec<Before>,
    /// One task per pair; joined in the order they finish, so each one's figures are
    /// merged (and freed) as soon as it is done.
    tasks: JoinSet<PairResult>,
    release: watch::Sender<Option<Release>>,
    /// Clients whose connection has dropped so far, and a nudge each time one does.
    dropped: Arc<AtomicUsize>,
    drop_seen: Arc<Notify>,
    setup: Stats,
}

/// The outcome of a restart storm.
pub struct RestartOutcome {
    pub report: Report,
    /// Clients (two per visit) that were connected when the server went away.
    pub clients: usize,
    /// Clients back in the visit as the same participant.
    pub back: usize,
    /// Clients back in the same place they had (admitted or waiting).
    pub states_kept: usize,
    pub retries: u64,
    pub errors: u64,
    /// From the opening of the window until the last client was back in its place.
    pub all_back: Option<Duration>,
    /// From the restarted server answering `/readyz` until the last client was back.
    pub since_ready: Option<Duration>,
    /// Visits that read back with the same status, times and reference.
    pub visits_intact: usize,
    /// Visits whose audit trail begins with every event it had before the restart, has
    /// both participants' return, and whose hash chain the server verifies.
    pub trails_intact: usize,
    pub visits: usize,
}

impl RestartOutcome {
    /// Why this run does not meet its bar; empty when it does.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.clients != 2 * self.visits {
            out.push(format!(
                "{} of {} clients were set up",
                self.clients,
                2 * self.visits
            ));
        }
        if self.back != self.clients || self.states_kept != self.clients {
            out.push(format!(
                "{} of {} clients came back, {} in their place",
                self.back, self.clients, self.states_kept
            ));
        }
        if self.visits_intact != self.visits || self.trails_intact != self.visits {
            out.push(format!(
                "{} of {} visits intact, {} audit trails intact",
                self.visits_intact, self.visits, self.trails_intact
            ));
        }
        if self.errors > 0 {
            out.push(format!("{} errors", self.errors));
        }
        out
    }
}

/// Sets up the pairs (even visits: patient admitted; odd: patient waiting), reads every
/// visit and its audit trail through the API (which also makes sure it is all on disk),
/// and leaves every client connected, watching for the server to go away.
pub async fn prepare(target: &Target, opts: RestartOptions) -> anyhow::Result<Prepared> {
    if !matches!(target, Target::Bedside { .. }) {
        bail!("a restart storm needs a Bedside target");
    }
    let bar = ProgressBar::new(opts.visits as u64).with_message("setting up");
    let limit = Arc::new(Semaphore::new(64));
    let mut setting_up = JoinSet::new();
    for n in 0..opts.visits {
        let (target, sources, limit, bar) = (
            target.clone(),
            opts.sources.clone(),
            limit.clone(),
            bar.clone(),
        );
        setting_up.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let mut stats = Stats::default();
            let visit = target.create_visit(2).await?;
            let (doctor, patient) = if n.is_multiple_of(2) {
                pair(&target, &visit, n, &sources, &mut stats).await?
            } else {
                waiting_pair(&target, &visit, n, &sources).await?
            };
            bar.inc(1);
            anyhow::Ok((n, visit, doctor, patient, stats))
        });
    }
    let mut setup = Stats::default();
    let mut pairs = Vec::with_capacity(opts.visits);
    while let Some(task) = setting_up.join_next().await {
        match task? {
            Ok((n, visit, doctor, patient, stats)) => {
                setup.merge(stats);
                pairs.push((n, visit, doctor, patient));
            }
            Err(e) => setup.error(format!("setup: {e}")),
        }
    }
    bar.finish_and_clear();

    // What the API reads is on disk (reads wait for pending writes): this snapshot is what
    // must survive.
    let limit = Arc::new(Semaphore::new(16));
    let mut reading = Vec::with_capacity(pairs.len());
    for (_, visit, doctor, patient) in &pairs {
        let (target, limit, visit) = (target.clone(), limit.clone(), visit.clone());
        let participants = [doctor.id.clone(), patient.id.clone()];
        reading.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await;
            let events = api_get(&target, &format!("/v1/visits/{visit}/events")).await?;
            let v = api_get(&target, &format!("/v1/visits/{visit}")).await?;
            anyhow::Ok(Before {
                id: visit,
                visit: v,
                events: events["events"].as_array().context("events")?.to_owned(),
                participants,
            })
        }));
    }
    let mut before = Vec::with_capacity(pairs.len());
    for task in reading {
        before.push(task.await??);
    }

    let (release, release_rx) = watch::channel(None);
    let dropped = Arc::new(AtomicUsize::new(0));
    let drop_seen = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    for (n, _, doctor, patient) in pairs {
        tasks.spawn(restart_pair(
            n,
            doctor,
            patient,
            release_rx.clone(),
            dropped.clone(),
            drop_seen.clone(),
            opts.clone(),
        ));
    }
    Ok(Prepared {
        opts,
        before,
        tasks,
        release,
        dropped,
        drop_seen,
        setup,
    })
}

/// A doctor and a patient left in the waiting room.
async fn waiting_pair(
    target: &Target,
    visit: &str,
    n: usize,
    sources: &Sources,
) -> anyhow::Result<(Peer, Peer)> {
    let (doctor, d_joined, placed) = join(
        target,
        &target.token(visit, "doctor", &format!("dr-{n}"))?,
        sources.pick(2 * n),
    )
    .await?;
    if placed != "admitted" {
        bail!("doctor placed in {placed}");
    }
    let (patient, p_joined, placed) = join(
        target,
        &target.token(visit, "patient", &format!("pt-{n}"))?,
        sources.pick(2 * n + 1),
    )
    .await?;
    if placed != "waiting" {
        bail!("patient placed in {placed}");
    }
    let id = |v: &Value| -> anyhow::Result<String> {
        Ok(v["participant_id"]
            .as_str()
            .context("participant_id")?
            .to_owned())
    };
    let resume = |v: &Value| v["resume_token"].as_str().unwrap_or("").to_owned();
    let (did, pid) = (id(&d_joined)?, id(&p_joined)?);
    Ok((
        Peer {
            ws: doctor,
            id: did.clone(),
            to: pid.clone(),
            resume_token: resume(&d_joined),
        },
        Peer {
            ws: patient,
            id: pid,
            to: did,
            resume_token: resume(&p_joined),
        },
    ))
}

impl Prepared {
    /// Clients connected and waiting for the restart.
    pub fn clients(&self) -> usize {
        2 * self.tasks.len()
    }

    /// Waits for every client to see its connection drop, then for the server at `target`
    /// (the restarted one; its address may differ) to answer `/readyz`, then lets every
    /// client come back within the window, and checks visits and audit trails.
    pub async fn comeback(self, target: &Target) -> anyhow::Result<RestartOutcome> {
        let Prepared {
            opts,
            before,
            mut tasks,
            release,
            dropped,
            drop_seen,
            setup,
        } = self;
        let clients = 2 * tasks.len();
        let waited = Instant::now();
        while dropped.load(Ordering::SeqCst) < clients {
            let left = opts.restart_timeout.saturating_sub(waited.elapsed());
            if left.is_zero() {
                bail!(
                    "only {} of {clients} connections dropped within {:?}: was the server stopped?",
                    dropped.load(Ordering::SeqCst),
                    opts.restart_timeout
                );
            }
            let _ =
                tokio::time::timeout(left.min(Duration::from_millis(200)), drop_seen.notified())
                    .await;
        }
        let down_at = Instant::now();
        // Watched either way, to time the restart and the storm from the moment it is up.
        let mut ready = tokio::spawn(wait_ready(target.clone(), opts.restart_timeout));
        let ready_at = if opts.early {
            None
        } else {
            Some((&mut ready).await??)
        };
        let opened = Instant::now();
        let _ = release.send(Some(Release {
            target: target.clone(),
            at: opened,
        }));
        let mut stats = setup;
        let mut last_back: Option<Instant> = None;
        while let Some(result) = tasks.join_next().await {
            let result = result?;
            stats.merge(result.stats);
            last_back = last_back.max(result.back_at);
        }
        let elapsed = opened.elapsed();
        let ready_at = match ready_at {
            Some(at) => at,
            None => ready.await??,
        };

        // Every visit reads back as it was, and its trail begins with what it had.
        let (mut visits_intact, mut trails_intact) = (0, 0);
        for b in &before {
            let visit = api_get(target, &format!("/v1/visits/{}", b.id)).await?;
            let changed = [
                "status",
                "created_at",
                "expires_at",
                "external_ref",
                "started_at",
            ]
            .into_iter()
            // A waiting visit starts when its patient is admitted, which the check after
            // the restart does: only a start that had happened must read back the same.
            .find(|&k| visit[k] != b.visit[k] && !(k == "started_at" && b.visit[k].is_null()));
            match changed {
                None => visits_intact += 1,
                Some(field) => stats.error(format!("visit {field} changed across the restart")),
            }
            let events = api_get(target, &format!("/v1/visits/{}/events", b.id)).await?;
            let events = events["events"].as_array().context("events")?;
            let kept = events.len() >= b.events.len() && events[..b.events.len()] == b.events[..];
            let rejoined = b.participants.iter().all(|id| {
                events[b.events.len().min(events.len())..]
                    .iter()
                    .any(|e| e["kind"] == "rejoined" && e["participant_id"] == id.as_str())
            });
            // The server's own check of the trail's hash chain: no row edited, lost,
            // reordered or inserted, the rows written after the restart included.
            let chain = api_get(target, &format!("/v1/visits/{}/events/verify", b.id)).await?;
            let chained = chain["intact"] == true;
            if kept && rejoined && chained {
                trails_intact += 1;
            } else if !kept {
                stats.error("audit trail lost events across the restart");
            } else if !rejoined {
                stats.error("audit trail has no rejoined event");
            } else {
                stats.error(format!("audit chain broken: {}", chain["broken"]));
            }
        }

        let back = stats.counts.get("clients back").copied().unwrap_or(0) as usize;
        let states_kept = stats
            .counts
            .get("back admitted (kept)")
            .copied()
            .unwrap_or(0) as usize
            + stats
                .counts
                .get("back waiting (kept)")
                .copied()
                .unwrap_or(0) as usize;
        let retries = stats
            .counts
            .iter()
            .filter(|(k, _)| k.starts_with("retry: "))
            .map(|(_, n)| n)
            .sum();
        let errors = stats.errors.values().sum();
        let all_back = last_back.map(|t| t.duration_since(opened));
        let since_ready = last_back.map(|t| t.saturating_duration_since(ready_at));
        if let (Some(all_back), Some(since_ready)) = (all_back, since_ready) {
            stats.record("window open → all back", all_back);
            stats.record("server ready → all back", since_ready);
        }
        stats.record("down → ready (restart)", ready_at.duration_since(down_at));
        // Shown even when none: "no retries" is a result too.
        stats.count("retries (documented retry hints)", retries);
        Ok(RestartOutcome {
            report: Report {
                scenario: "restart-storm".into(),
                target: target.name().into(),
                params: json!({"visits": opts.visits, "clients": 2 * opts.visits,
                               "window_ms": opts.window.as_millis() as u64, "early": opts.early}),
                elapsed,
                stats,
                server: BTreeMap::new(),
            },
            clients,
            back,
            states_kept,
            retries,
            errors,
            all_back,
            since_ready,
            visits_intact,
            trails_intact,
            visits: opts.visits,
        })
    }
}

/// One pair across the restart: both hold on until their connection drops, come back
/// within the window, must find their own places, and then show the visit works: an
/// admitted pair relays both ways; in a waiting pair the doctor sees the patient in the
/// lobby and admits them first.
async fn restart_pair(
    n: usize,
    mut doctor: Peer,
    mut patient: Peer,
    mut release: watch::Receiver<Option<Release>>,
    dropped: Arc<AtomicUsize>,
    drop_seen: Arc<Notify>,
    opts: RestartOptions,
) -> PairResult {
    let mut result = PairResult::default();
    let admitted = n.is_multiple_of(2);
    let (d, p) = tokio::join!(
        until_dropped(&mut doctor.ws, release.clone(), &dropped, &drop_seen),
        until_dropped(&mut patient.ws, release.clone(), &dropped, &drop_seen),
    );
    if !(d && p) {
        result.stats.error("the server did not go away");
        return result;
    }
    let Ok(release) = release.wait_for(|r| r.is_some()).await.map(|r| r.clone()) else {
        result.stats.error("no restart");
        return result;
    };
    let Some(Release { target, at }) = release else {
        return result;
    };
    let (mut d_stats, mut p_stats) = (Stats::default(), Stats::default());
    let window = opts.window;
    let (d, p) = tokio::join!(
        back_in_place(
            &target,
            &doctor,
            "admitted",
            at,
            window,
            opts.sources.pick(2 * n),
            &mut d_stats
        ),
        back_in_place(
            &target,
            &patient,
            if admitted { "admitted" } else { "waiting" },
            at,
            window,
            opts.sources.pick(2 * n + 1),
            &mut p_stats,
        ),
    );
    result.stats.merge(d_stats);
    result.stats.merge(p_stats);
    let (Some((mut d_ws, d_at)), Some((mut p_ws, p_at))) = (d, p) else {
        return result;
    };
    result.back_at = Some(d_at.max(p_at));
    let check = async {
        if !admitted {
            // The doctor sees the patient back in the lobby and lets them in.
            crate::scenario::admit(&mut d_ws, &mut p_ws, &patient.id).await?;
        }
        relay_both_ways(&mut d_ws, &doctor.to, &mut p_ws, &patient.to).await
    };
    match check.await {
        Ok(()) if admitted => result.stats.count("admitted pairs relaying again", 1),
        Ok(()) => result.stats.count("waiting pairs admitted and relaying", 1),
        Err(e) => result.stats.error(format!("after the restart: {e}")),
    }
    for ws in [&mut d_ws, &mut p_ws] {
        let _ = ws.send(json!({"type": "leave"}).to_string()).await;
    }
    d_ws.close().await;
    p_ws.close().await;
    result
}

/// Reads (and ignores) frames until the connection drops. False if the storm was called
/// off first.
async fn until_dropped(
    ws: &mut Ws,
    mut release: watch::Receiver<Option<Release>>,
    dropped: &AtomicUsize,
    drop_seen: &Notify,
) -> bool {
    loop {
        tokio::select! {
            changed = release.changed() => if changed.is_err() { return false },
            incoming = ws.next() => match incoming {
                Ok(Incoming::Text(_)) => continue,
                Ok(Incoming::Closed(_)) | Err(_) => break,
            },
        }
    }
    dropped.fetch_add(1, Ordering::SeqCst);
    drop_seen.notify_one();
    true
}

/// Comes back at a random moment of the window; counts whether the participant found the
/// place it had. Returns the socket and when it was back.
async fn back_in_place(
    target: &Target,
    peer: &Peer,
    expected: &str,
    opened: Instant,
    window: Duration,
    source: IpAddr,
    stats: &mut Stats,
) -> Option<(Ws, Instant)> {
    let offset = rand::rng().random_range(0..=window.as_micros().max(1) as u64);
    tokio::time::sleep_until((opened + Duration::from_micros(offset)).into()).await;
    let t = Instant::now();
    match rejoin(target, &peer.resume_token, &peer.id, source, stats).await {
        Ok((ws, placed)) => {
            let at = Instant::now();
            stats.count("clients back", 1);
            match (expected, placed.as_str()) {
                ("admitted", "admitted") => {
                    stats.count("back admitted (kept)", 1);
                    stats.record("rejoin (admitted)", t.elapsed());
                }
                ("waiting", "waiting") => {
                    stats.count("back waiting (kept)", 1);
                    stats.record("rejoin (waiting)", t.elapsed());
                }
                _ => stats.error(format!("was {expected}, came back {placed}")),
            }
            Some((ws, at))
        }
        Err(e) => {
            stats.error(format!("rejoin: {e}"));
            None
        }
    }
}

/// Polls `/readyz` until the server answers ready, within `limit`; returns when it did.
async fn wait_ready(target: Target, limit: Duration) -> anyhow::Result<Instant> {
    let Target::Bedside { http, .. } = &target else {
        bail!("needs a Bedside target");
    };
    // A client of its own: pooled connections to the process that died are of no use.
    let client = crate::http::client_builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()?;
    let started = Instant::now();
    loop {
        if let Ok(resp) = client.get(format!("{http}/readyz")).send().await
            && resp.status().is_success()
        {
            return Ok(Instant::now());
        }
        if started.elapsed() > limit {
            bail!("the server did not come back within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GET on the REST API as the target's tenant, parsed. Transport errors (a pooled
/// connection to a process that is gone) are retried a few times.
pub(crate) async fn api_get(target: &Target, path: &str) -> anyhow::Result<Value> {
    let Target::Bedside {
        http,
        key_id,
        key_secret,
        client,
        ..
    } = target
    else {
        bail!("needs a Bedside target");
    };
    let auth = format!(
        "Basic {}",
        STANDARD.encode(format!("{key_id}:{key_secret}"))
    );
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client
            .get(format!("{http}{path}"))
            .header("authorization", &auth)
            .send()
            .await
        {
            Ok(resp) if resp.status().is_success() => return Ok(resp.json().await?),
            Ok(resp) => bail!("GET {path}: {}", resp.status()),
            Err(e) if attempt >= 5 => {
                return Err(anyhow::Error::new(e).context(format!("GET {path}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100 * attempt)).await,
        }
    }
}
