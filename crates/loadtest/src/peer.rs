//! Real WebRTC peers (the `webrtc` crate) that negotiate through Bedside: a doctor and a
//! patient join a visit, the patient is admitted, the doctor offers, both trickle ICE
//! candidates over `/ws`, ICE and DTLS complete over loopback, and a message crosses the
//! data channel each way. Signaling `data` is `{"description": ...}` or `{"candidate": ...}`.
//!
//! By default the peers gather host candidates only. [`one_visit_with`] hands each peer
//! the `ice_servers` of its own `joined` frame instead, and with [`IcePolicy::RelayOnly`]
//! forces every path through TURN (`RTCIceTransportPolicy::Relay`), then reports which
//! candidate pair each side selected.

use crate::client::Incoming;
use crate::report::Stats;
use crate::scenario::{Peer, admit, join, leave, pair, signal};
use crate::target::{Sources, Target};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceCandidateType, RTCIceServer, RTCIceTransportPolicy,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, RTCStatsReport,
    RTCStatsReportEntry, StatsSelector,
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

/// Which candidates a peer gathers and may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IcePolicy {
    /// Host candidates on loopback, no ICE servers.
    #[default]
    HostOnly,
    /// The ICE servers of the peer's own `joined` frame, every candidate type.
    JoinedServers,
    /// The ICE servers of the peer's own `joined` frame, relayed candidates only: the
    /// data must go through the TURN server.
    RelayOnly,
}

/// `ice_servers` of a `joined` frame as the peer connection takes them.
fn ice_servers(joined: &Value) -> anyhow::Result<Vec<RTCIceServer>> {
    let servers = joined["ice_servers"]
        .as_array()
        .context("joined without ice_servers")?;
    servers
        .iter()
        .map(|s| {
            Ok(RTCIceServer {
                urls: serde_json::from_value(s["urls"].clone()).context("ice server urls")?,
                username: s["username"].as_str().unwrap_or_default().to_owned(),
                credential: s["credential"].as_str().unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

async fn peer_connection(
    ice: Option<(Vec<RTCIceServer>, RTCIceTransportPolicy)>,
) -> anyhow::Result<(impl PeerConnection, mpsc::UnboundedReceiver<Event>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut builder = PeerConnectionBuilder::new();
    if let Some((servers, policy)) = ice {
        builder = builder.with_configuration(
            RTCConfigurationBuilder::new()
                .with_ice_servers(servers)
                .with_ice_transport_policy(policy)
                .build(),
        );
    }
    let pc = builder
        .with_handler(Arc::new(Handler { events: tx }))
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await
        .context("building the peer connection")?;
    Ok((pc, rx))
}

/// Timings of one WebRTC visit, from the doctor's join.
#[derive(Debug, Clone, Copy)]
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
    let (offerer, offerer_events) = peer_connection(None).await?;
    let (answerer, answerer_events) = peer_connection(None).await?;
    let timings = exchange(
        started,
        (&offerer, offerer_events, &mut doctor),
        (&answerer, answerer_events, &mut patient),
    )
    .await?;
    let _ = offerer.close().await;
    let _ = answerer.close().await;
    leave(target, doctor).await;
    leave(target, patient).await;
    Ok(timings)
}

/// A data channel from the offerer (doctor) to the answerer (patient): offer, answer and
/// trickled candidates over `/ws` until both are connected, then a message and its echo.
async fn exchange<P: PeerConnection>(
    started: Instant,
    (offerer, offerer_events, doctor): (&P, mpsc::UnboundedReceiver<Event>, &mut Peer),
    (answerer, answerer_events, patient): (&P, mpsc::UnboundedReceiver<Event>, &mut Peer),
) -> anyhow::Result<Timings> {
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
        side(offerer, doctor, offerer_events, false),
        side(answerer, patient, answerer_events, true),
    );
    let connected = d?.max(p?).duration_since(started);
    let echoed = tokio::time::timeout(Duration::from_secs(10), echo_rx)
        .await
        .context("no echo on the data channel")??;
    Ok(Timings {
        connected,
        data: echoed.duration_since(started),
    })
}

/// The candidate pair a peer connection selected, by candidate type and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedPair {
    pub local: RTCIceCandidateType,
    pub remote: RTCIceCandidateType,
    pub local_address: String,
    pub remote_address: String,
}

/// What [`one_visit_with`] saw.
#[derive(Debug)]
pub struct VisitReport {
    pub timings: Timings,
    /// The doctor's and the patient's `joined` frames.
    pub joined: [Value; 2],
    /// The pair each side (doctor, patient) selected once connected.
    pub selected: [SelectedPair; 2],
}

/// The transport's selected candidate pair, from the connection's stats.
fn selected_pair(report: &RTCStatsReport) -> anyhow::Result<SelectedPair> {
    let pair_id = &report
        .transport()
        .context("no transport in the stats")?
        .selected_candidate_pair_id;
    let pair = report
        .candidate_pairs()
        .find(|p| &p.stats.id == pair_id)
        .context("no selected candidate pair")?;
    // The pair names its candidates by their own ids; the candidates' stats entries are
    // keyed with a prefix (webrtc 0.21), so both spellings are tried.
    let candidate = |id: &str, prefix: &str| {
        let entry = report
            .get(id)
            .or_else(|| report.get(&format!("{prefix}{id}")));
        match entry {
            Some(
                RTCStatsReportEntry::LocalCandidate(c) | RTCStatsReportEntry::RemoteCandidate(c),
            ) => Ok((
                c.candidate_type,
                format!("{}:{}", c.address.as_deref().unwrap_or("?"), c.port),
            )),
            _ => Err(anyhow::anyhow!(
                "candidate {id} not in the stats ({:?})",
                report.ids().collect::<Vec<_>>()
            )),
        }
    };
    let (local, local_address) = candidate(&pair.local_candidate_id, "RTCLocalIceCandidate_")?;
    let (remote, remote_address) = candidate(&pair.remote_candidate_id, "RTCRemoteIceCandidate_")?;
    Ok(SelectedPair {
        local,
        remote,
        local_address,
        remote_address,
    })
}

/// A doctor and an admitted patient, each with its `joined` frame.
async fn admitted_pair(target: &Target, visit: &str) -> anyhow::Result<[(Peer, Value); 2]> {
    let source = Sources::new(1).pick(0);
    let (mut doctor, d_joined, placed) =
        join(target, &target.token(visit, "doctor", "dr-ice")?, source).await?;
    if placed != "admitted" {
        bail!("doctor placed in {placed}");
    }
    let (mut patient, mut p_joined, placed) =
        join(target, &target.token(visit, "patient", "pt-ice")?, source).await?;
    if placed != "waiting" {
        bail!("patient placed in {placed}");
    }
    let id = |joined: &Value| -> anyhow::Result<String> {
        Ok(joined["participant_id"]
            .as_str()
            .context("participant_id")?
            .to_owned())
    };
    let (did, pid) = (id(&d_joined)?, id(&p_joined)?);
    let admitted = admit(&mut doctor, &mut patient, &pid).await?;
    // The call's ICE servers come with `admitted` and replace the waiting ones of `joined`
    // (STUN and a probe credential).
    p_joined["ice_servers"] = admitted["ice_servers"].clone();
    doctor.until("participant_joined").await?;
    let peer = |ws, id: &str, to: &str, joined: &Value| Peer {
        ws,
        id: id.to_owned(),
        to: to.to_owned(),
        resume_token: joined["resume_token"].as_str().unwrap_or("").into(),
    };
    Ok([
        (peer(doctor, &did, &pid, &d_joined), d_joined),
        (peer(patient, &pid, &did, &p_joined), p_joined),
    ])
}

/// One WebRTC visit (doctor and patient) in which each peer uses the `ice_servers` of its
/// own `joined` frame under `policy`; reports timings and the selected candidate pairs.
pub async fn one_visit_with(target: &Target, policy: IcePolicy) -> anyhow::Result<VisitReport> {
    if !matches!(target, Target::Bedside { .. }) {
        bail!("real peers negotiate through Bedside");
    }
    let visit = target.create_visit(2).await?;
    tokio::time::timeout(DEADLINE, visit_with(target, &visit, policy))
        .await
        .context("timed out")?
}

async fn visit_with(
    target: &Target,
    visit: &str,
    policy: IcePolicy,
) -> anyhow::Result<VisitReport> {
    let started = Instant::now();
    let [(mut doctor, d_joined), (mut patient, p_joined)] = admitted_pair(target, visit).await?;
    let ice = |joined: &Value| -> anyhow::Result<_> {
        Ok(match policy {
            IcePolicy::HostOnly => None,
            IcePolicy::JoinedServers => Some((ice_servers(joined)?, RTCIceTransportPolicy::All)),
            IcePolicy::RelayOnly => Some((ice_servers(joined)?, RTCIceTransportPolicy::Relay)),
        })
    };
    let (offerer, offerer_events) = peer_connection(ice(&d_joined)?).await?;
    let (answerer, answerer_events) = peer_connection(ice(&p_joined)?).await?;
    let timings = exchange(
        started,
        (&offerer, offerer_events, &mut doctor),
        (&answerer, answerer_events, &mut patient),
    )
    .await?;
    let now = Instant::now();
    let selected = [
        selected_pair(&offerer.get_stats(now, StatsSelector::None).await)?,
        selected_pair(&answerer.get_stats(now, StatsSelector::None).await)?,
    ];
    let _ = offerer.close().await;
    let _ = answerer.close().await;
    leave(target, doctor).await;
    leave(target, patient).await;
    Ok(VisitReport {
        timings,
        joined: [d_joined, p_joined],
        selected,
    })
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
