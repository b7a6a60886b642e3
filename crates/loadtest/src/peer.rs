//! Real WebRTC peers (the `webrtc` crate) that negotiate through Bedside: a doctor and a
//! patient join a visit, the patient is admitted, the doctor offers, both trickle ICE
//! candidates over `/ws`, ICE and DTLS complete over loopback, and a message crosses the
//! data channel each way. Signaling `data` is `{"description": ...}` or `{"candidate": ...}`.

use crate::client::Incoming;
use crate::report::Stats;
use crate::scenario::{Peer, leave, pair, signal};
use crate::target::{Sources, Target};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceCandidateInit,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription,
};

/// Longest a WebRTC visit may take to connect and exchange data.
const DEADLINE: Duration = Duration::from_secs(30);

/// What a peer connection reports back to its signaling loop.
enum Event {
    Candidate(RTCIceCandidateInit),
    Connected,
    Failed,
    /// The answerer got the offerer's message and echoed it.
    Echoed,
}

struct Handler {
    events: mpsc::UnboundedSender<Event>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.events.send(Event::Candidate(init));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        match state {
            RTCPeerConnectionState::Connected => {
                let _ = self.events.send(Event::Connected);
            }
            RTCPeerConnectionState::Failed => {
                let _ = self.events.send(Event::Failed);
            }
            _ => {}
        }
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        // The answerer echoes whatever arrives on the channel the offerer opened.
        let events = self.events.clone();
        tokio::spawn(async move {
            while let Some(event) = dc.poll().await {
                match event {
                    DataChannelEvent::OnMessage(msg) => {
                        let text = String::from_utf8_lossy(&msg.data).into_owned();
                        if dc.send_text(&format!("echo: {text}")).await.is_ok() {
                            let _ = events.send(Event::Echoed);
                        }
                    }
                    DataChannelEvent::OnClose => break,
                    _ => {}
                }
            }
        });
    }
}

async fn peer_connection() -> anyhow::Result<(impl PeerConnection, mpsc::UnboundedReceiver<Event>)>
{
    let (tx, rx) = mpsc::unbounded_channel();
    let pc = PeerConnectionBuilder::new()
        .with_handler(Arc::new(Handler { events: tx }))
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await
        .context("building the peer connection")?;
    Ok((pc, rx))
}

/// Timings of one WebRTC visit, from the doctor's join.
pub struct Timings {
    /// Until both peer connections report `connected` (ICE and DTLS done).
    pub connected: Duration,
    /// Until a message went over the data channel and its echo came back.
    pub data: Duration,
}

/// One visit of real peers; the outcome goes to `stats`.
pub async fn visit(target: &Target, visit: &str, n: usize, sources: &Sources, stats: &mut Stats) {
    match tokio::time::timeout(DEADLINE, connect(target, visit, n, sources, stats)).await {
        Ok(Ok(t)) => {
            stats.record("webrtc join → connected", t.connected);
            stats.record("webrtc join → data echoed", t.data);
            stats.count("webrtc visits connected", 1);
        }
        Ok(Err(e)) => stats.error(format!("webrtc: {e}")),
        Err(_) => stats.error("webrtc: timed out"),
    }
}

/// Joins a doctor and a patient, negotiates real peer connections through the visit's
/// signaling, and exchanges data. Errors name the step that failed.
pub async fn connect(
    target: &Target,
    visit: &str,
    n: usize,
    sources: &Sources,
    stats: &mut Stats,
) -> anyhow::Result<Timings> {
    if !matches!(target, Target::Bedside { .. }) {
        bail!("real peers negotiate through Bedside");
    }
    let started = Instant::now();
    let (mut doctor, mut patient) = pair(target, visit, n, sources, stats).await?;
    let (offerer, offerer_events) = peer_connection().await?;
    let (answerer, answerer_events) = peer_connection().await?;

    let dc = offerer
        .create_data_channel("bedside", None)
        .await
        .context("data channel")?;
    let (echo_tx, echo_rx) = oneshot::channel::<Instant>();
    tokio::spawn(async move {
        let mut echo_tx = Some(echo_tx);
        while let Some(event) = dc.poll().await {
            match event {
                DataChannelEvent::OnOpen => {
                    let _ = dc.send_text("hello from the doctor").await;
                }
                DataChannelEvent::OnMessage(msg) if msg.data.starts_with(b"echo: ") => {
                    if let Some(tx) = echo_tx.take() {
                        let _ = tx.send(Instant::now());
                    }
                }
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
    });

    let offer = offerer.create_offer(None).await.context("create offer")?;
    offerer
        .set_local_description(offer.clone())
        .await
        .context("set offer")?;
    doctor
        .ws
        .send(signal(
            &doctor.to,
            &json!({"description": offer}).to_string(),
        ))
        .await?;

    let (d, p) = tokio::join!(
        side(&offerer, &mut doctor, offerer_events, false),
        side(&answerer, &mut patient, answerer_events, true),
    );
    let connected = d?.max(p?).duration_since(started);
    let echoed = tokio::time::timeout(Duration::from_secs(10), echo_rx)
        .await
        .context("no echo on the data channel")??;
    let timings = Timings {
        connected,
        data: echoed.duration_since(started),
    };
    let _ = offerer.close().await;
    let _ = answerer.close().await;
    leave(target, doctor).await;
    leave(target, patient).await;
    Ok(timings)
}

/// One peer's signaling loop: local candidates go out over `/ws`; descriptions and
/// candidates coming in are applied (candidates that arrive before the remote description
/// wait for it). Ends when this peer is connected (and, for the answerer, has echoed).
async fn side<P: PeerConnection>(
    pc: &P,
    me: &mut Peer,
    mut events: mpsc::UnboundedReceiver<Event>,
    answerer: bool,
) -> anyhow::Result<Instant> {
    let mut pending: Vec<RTCIceCandidateInit> = Vec::new();
    let mut has_remote = false;
    let mut connected_at = None;
    let mut echoed = !answerer;
    loop {
        if let (Some(at), true) = (connected_at, echoed) {
            return Ok(at);
        }
        tokio::select! {
            event = events.recv() => match event.context("peer connection gone")? {
                Event::Candidate(c) => me.ws.send(signal(&me.to, &json!({"candidate": c}).to_string())).await?,
                Event::Connected => connected_at = Some(Instant::now()),
                Event::Failed => bail!("ICE/DTLS failed"),
                Event::Echoed => echoed = true,
            },
            frame = me.ws.next() => {
                let text = match frame? {
                    Incoming::Text(t) => t,
                    Incoming::Closed(code) => bail!("signaling closed {code}"),
                };
                let v: Value = serde_json::from_str(&text)?;
                if v["type"] != "signal" {
                    continue;
                }
                let data = &v["data"];
                if let Some(desc) = data.get("description") {
                    let desc: RTCSessionDescription = serde_json::from_value(desc.clone())?;
                    pc.set_remote_description(desc).await.context("set remote description")?;
                    has_remote = true;
                    for c in pending.drain(..) {
                        pc.add_ice_candidate(c).await.context("add candidate")?;
                    }
                    if answerer {
                        let answer = pc.create_answer(None).await.context("create answer")?;
                        pc.set_local_description(answer.clone()).await.context("set answer")?;
                        me.ws.send(signal(&me.to, &json!({"description": answer}).to_string())).await?;
                    }
                } else if let Some(c) = data.get("candidate") {
                    let c: RTCIceCandidateInit = serde_json::from_value(c.clone())?;
                    if has_remote {
                        pc.add_ice_candidate(c).await.context("add candidate")?;
                    } else {
                        pending.push(c);
                    }
                }
            }
        }
    }
}

/// Runs one WebRTC visit and returns its timings, for tests.
pub async fn one_visit(target: &Target) -> anyhow::Result<Timings> {
    let visit = target.create_visit(2).await?;
    let mut stats = Stats::default();
    tokio::time::timeout(
        DEADLINE,
        connect(target, &visit, 0, &Sources::new(1), &mut stats),
    )
    .await
    .context("timed out")?
}
