//! The scenarios, and what they share: joining, setting up an admitted doctor/patient pair,
//! and the closed-loop relay of timestamped probes.

pub mod churn;
pub mod idle;
pub mod isolation;
pub mod join_storm;
pub mod queue;
pub mod reconnect_storm;
pub mod visits;

use crate::client::{Incoming, Ws};
use crate::payload::{self, Frame};
use crate::report::Stats;
use crate::target::{Sources, Target, Wire};
use anyhow::{Context, bail};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// One side of a conversation: its socket, its own id, and the id it signals to.
pub struct Peer {
    pub ws: Ws,
    pub id: String,
    pub to: String,
    pub resume_token: String,
}

/// Connects and sends `join`; returns the socket, the `joined` frame, and the placement
/// frame that follows it (`admitted` or `waiting`).
pub async fn join(
    target: &Target,
    token: &str,
    source: std::net::IpAddr,
) -> anyhow::Result<(Ws, serde_json::Value, String)> {
    join_at(&target.ws_url(""), token, source).await
}

/// [`join`] at a given `/ws` URL.
pub async fn join_at(
    url: &str,
    token: &str,
    source: std::net::IpAddr,
) -> anyhow::Result<(Ws, serde_json::Value, String)> {
    let mut ws = Ws::connect(url, source).await?;
    ws.send(json!({"type": "join", "token": token}).to_string())
        .await?;
    let joined = ws.until("joined").await?;
    let placed: serde_json::Value = serde_json::from_str(&ws.text().await?)?;
    let placed = placed["type"].as_str().unwrap_or("?").to_owned();
    Ok((ws, joined, placed))
}

/// The doctor waits until participant `pid` shows in the lobby, connected, then admits
/// them; returns the patient's `admitted` frame.
pub async fn admit(
    doctor: &mut Ws,
    patient: &mut Ws,
    pid: &str,
) -> anyhow::Result<serde_json::Value> {
    loop {
        let lobby = doctor.until("lobby").await?;
        let here = lobby["waiting"].as_array().is_some_and(|w| {
            w.iter()
                .any(|e| e["participant_id"] == pid && e["connected"] != false)
        });
        if here {
            break;
        }
    }
    doctor
        .send(json!({"type": "admit", "participant_id": pid}).to_string())
        .await?;
    patient.until("admitted").await
}

/// From TCP connect until the connection is ready: upgraded (baseline), opened (PeerJS's
/// `OPEN`), or joined and placed, admitted or waiting (Bedside). Both of a pair's
/// connections count.
pub const CONNECT: &str = "connect to ready";

/// From a signal's timestamp, taken as it is sent, until the other side has it.
pub const RELAY: &str = "relay one-way";

/// A doctor and an admitted patient in visit `visit` (Bedside), or two named connections
/// (baseline, PeerJS). Join latencies go to `stats`.
pub async fn pair(
    target: &Target,
    visit: &str,
    n: usize,
    sources: &Sources,
    stats: &mut Stats,
) -> anyhow::Result<(Peer, Peer)> {
    match target {
        Target::Baseline { .. } | Target::PeerJs { .. } => {
            let (d, p) = (format!("d{n}"), format!("p{n}"));
            // Ready is connected for the baseline and opened for PeerJS: their figures to
            // compare with Bedside's connect-to-placed (issue 18's "connect p99").
            let t = Instant::now();
            let doctor = named(target, &d, sources.pick(2 * n)).await?;
            stats.record(CONNECT, t.elapsed());
            let t = Instant::now();
            let patient = named(target, &p, sources.pick(2 * n + 1)).await?;
            stats.record(CONNECT, t.elapsed());
            Ok((
                Peer {
                    ws: doctor,
                    id: d.clone(),
                    to: p.clone(),
                    resume_token: String::new(),
                },
                Peer {
                    ws: patient,
                    id: p,
                    to: d,
                    resume_token: String::new(),
                },
            ))
        }
        Target::Bedside { .. } => {
            let t = Instant::now();
            let (mut doctor, d_joined, placed) = join_at(
                &target.visit_ws_url(visit),
                &target.token(visit, "doctor", &format!("dr-{n}"))?,
                sources.pick(2 * n),
            )
            .await?;
            if placed != "admitted" {
                bail!("doctor placed in {placed}");
            }
            stats.record("join doctor", t.elapsed());
            stats.record(CONNECT, t.elapsed());
            let t = Instant::now();
            let (mut patient, p_joined, placed) = join_at(
                &target.patient_ws_url(visit),
                &target.token(visit, "patient", &format!("pt-{n}"))?,
                sources.pick(2 * n + 1),
            )
            .await?;
            if placed != "waiting" {
                bail!("patient placed in {placed}");
            }
            stats.record("join patient (waiting)", t.elapsed());
            stats.record(CONNECT, t.elapsed());
            let pid = p_joined["participant_id"]
                .as_str()
                .context("participant_id")?
                .to_owned();
            admit(&mut doctor, &mut patient, &pid).await?;
            stats.record("join patient (admitted)", t.elapsed());
            doctor.until("participant_joined").await?;
            doctor.until("lobby").await?;
            let did = d_joined["participant_id"]
                .as_str()
                .context("participant_id")?
                .to_owned();
            Ok((
                Peer {
                    ws: doctor,
                    id: did.clone(),
                    to: pid.clone(),
                    resume_token: d_joined["resume_token"].as_str().unwrap_or("").into(),
                },
                Peer {
                    ws: patient,
                    id: pid,
                    to: did,
                    resume_token: p_joined["resume_token"].as_str().unwrap_or("").into(),
                },
            ))
        }
    }
}

/// A connection to a target that names its connections (the baseline, PeerJS), once it is
/// ready to relay.
pub async fn named(target: &Target, id: &str, source: std::net::IpAddr) -> anyhow::Result<Ws> {
    let mut ws = Ws::connect(&target.ws_url(id), source).await?;
    if let Target::PeerJs { .. } = target {
        ws.until("OPEN").await?;
    }
    Ok(ws)
}

/// Holds a set-up pair until `go`, both sides answering the server's pings meanwhile.
pub async fn hold(doctor: &mut Peer, patient: &mut Peer, go: &watch::Receiver<bool>) {
    let (mut a, mut b) = (go.clone(), go.clone());
    tokio::join!(doctor.ws.hold_until(&mut a), patient.ws.hold_until(&mut b));
}

/// The frame that relays `data` to `to` through Bedside.
pub fn signal(to: &str, data: &str) -> String {
    Wire::Signal.signal(to, data)
}

/// Offer, answer, `candidates` trickled candidates each way, and (Bedside) a chat message.
pub async fn negotiate(
    target: &Target,
    doctor: &mut Peer,
    patient: &mut Peer,
    sdp_bytes: usize,
    candidates: usize,
) -> anyhow::Result<()> {
    let wire = target.wire();
    doctor
        .ws
        .send(wire.signal(&doctor.to, &payload::sdp("offer", sdp_bytes)))
        .await?;
    patient.ws.until(wire.kind()).await?;
    patient
        .ws
        .send(wire.signal(&patient.to, &payload::sdp("answer", sdp_bytes)))
        .await?;
    doctor.ws.until(wire.kind()).await?;
    for i in 0..candidates {
        doctor
            .ws
            .send(wire.signal(&doctor.to, &payload::candidate(i)))
            .await?;
        patient
            .ws
            .send(wire.signal(&patient.to, &payload::candidate(i)))
            .await?;
    }
    for _ in 0..candidates {
        doctor.ws.until(wire.kind()).await?;
        patient.ws.until(wire.kind()).await?;
    }
    if matches!(target, Target::Bedside { .. }) {
        patient
            .ws
            .send(json!({"type": "chat", "text": "Hello, can you hear me?"}).to_string())
            .await?;
        patient.ws.until("chat").await?;
        doctor.ws.until("chat").await?;
    }
    Ok(())
}

/// Shared switches of the relay phase.
#[derive(Clone)]
pub struct Phase {
    /// Record latencies and counts only while true (after warm-up).
    pub measuring: Arc<AtomicBool>,
    /// Becomes true when peers must stop sending.
    pub stop: watch::Receiver<bool>,
}

/// How a relaying side frames and paces its probes.
#[derive(Clone)]
pub struct Signals {
    pub wire: Wire,
    /// Padding that brings a probe to its size.
    pub pad: Arc<String>,
    /// The pause before answering a probe (zero: at once).
    pub think: Duration,
    /// A call-quality report this often, besides the probes (Bedside).
    pub stats_every: Option<Duration>,
}

/// Closed loop: every probe received is answered with a new one (after `think`), so each
/// pair keeps `window` probes in flight. Returns what it measured and the peer (to leave
/// cleanly).
pub async fn relay(
    mut me: Peer,
    starts: usize,
    signals: Signals,
    mut phase: Phase,
) -> (Stats, Option<Peer>) {
    let Signals {
        wire,
        pad,
        think,
        stats_every,
    } = signals;
    let mut stats = Stats::default();
    let mut seq = 0u64;
    // A browser's call-quality report every `stats_every` (docs/quality.md), off the relay
    // path; the first one at a point of the interval picked by the participant id, so the
    // reports of a thousand visits do not come in waves.
    let mut report = stats_every.map(|every| {
        let spread = me
            .id
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        let offset = every.mul_f64(f64::from(spread % 1000) / 1000.0);
        tokio::time::interval_at(tokio::time::Instant::now() + offset, every)
    });
    for _ in 0..starts {
        seq += 1;
        if let Err(e) = me
            .ws
            .send(wire.signal(&me.to, &payload::probe(seq, &pad)))
            .await
        {
            stats.error(format!("send: {e}"));
            return (stats, None);
        }
    }
    loop {
        let incoming = tokio::select! {
            _ = phase.stop.changed() => return (stats, Some(me)),
            _ = async { report.as_mut()?.tick().await; Some(()) }, if report.is_some() => {
                if let Err(e) = me.ws.send(payload::stats_report()).await {
                    stats.error(format!("send: {e}"));
                    return (stats, None);
                }
                if phase.measuring.load(Ordering::Relaxed) {
                    stats.count("stats reports sent", 1);
                }
                continue;
            }
            incoming = me.ws.next() => incoming,
        };
        let text = match incoming {
            Ok(Incoming::Text(t)) => t,
            Ok(Incoming::Closed(code)) => {
                stats.error(format!("closed {code}"));
                return (stats, None);
            }
            Err(e) => {
                stats.error(e.to_string());
                return (stats, None);
            }
        };
        let Ok(frame) = serde_json::from_str::<Frame<'_>>(&text) else {
            stats.error("unparsable frame");
            continue;
        };
        if frame.kind != wire.kind() {
            if frame.kind.eq_ignore_ascii_case("error") {
                stats.error(format!(
                    "error frame: {}",
                    text.chars().take(80).collect::<String>()
                ));
            }
            continue;
        }
        if phase.measuring.load(Ordering::Relaxed) {
            if let Some(ts) = frame.data.and_then(|d| d.ts) {
                stats.record_ns(RELAY, payload::now_ns().saturating_sub(ts));
            }
            stats.count("messages relayed", 1);
            stats.count("bytes relayed", text.len() as u64);
        }
        if *phase.stop.borrow() {
            continue;
        }
        if !think.is_zero() {
            tokio::select! {
                _ = phase.stop.changed() => return (stats, Some(me)),
                () = tokio::time::sleep(think) => {}
            }
        }
        seq += 1;
        if let Err(e) = me
            .ws
            .send(wire.signal(&me.to, &payload::probe(seq, &pad)))
            .await
        {
            stats.error(format!("send: {e}"));
            return (stats, None);
        }
    }
}

/// Leaves (Bedside) and closes.
pub async fn leave(target: &Target, mut peer: Peer) {
    if matches!(target, Target::Bedside { .. }) {
        let _ = peer.ws.send(json!({"type": "leave"}).to_string()).await;
    }
    peer.ws.close().await;
}
