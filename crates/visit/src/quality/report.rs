//! What a participant's browser reports about its connections, checked: the values of a
//! `stats` frame (one entry per peer connection, from `RTCPeerConnection.getStats()`) and
//! the result of the pre-call check (`precheck`). Candidate pairs are kept as types only
//! (`host`, `srflx`, `relay`, ...): an address or port has no field to land in, and fields
//! this module does not know are never read.
//!
//! docs/protocol.md ("Call quality") has the frames; every limit below is named there.

use crate::record::{MAX_PARTICIPANTS, text_enum};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

/// Largest `stats` frame, in bytes: seven peers' entries with every field fit in half of it.
pub const MAX_STATS_BYTES: usize = 4096;
/// Most peer entries in one `stats` frame: one per other participant of the largest visit.
pub const MAX_PEERS: usize = MAX_PARTICIPANTS as usize - 1;
/// Longest round-trip time or jitter taken, in milliseconds.
pub const MAX_MILLIS: f64 = 60_000.0;
/// Highest bitrate taken, in kbit/s (100 Mbit/s: no browser call comes near it).
pub const MAX_KBPS: f64 = 100_000.0;
/// Highest frame rate taken.
pub const MAX_FPS: f64 = 240.0;
/// Largest frame width or height taken, in pixels.
pub const MAX_PIXELS: u16 = 8192;

/// A checked `stats` frame.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatsReport {
    pub peers: Vec<PeerStats>,
}

/// One peer connection, as the reporting browser sees it over the last interval. Every
/// measurement is optional: browsers differ in what they expose, and a connection that is
/// still being set up has none yet.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PeerStats {
    /// Round-trip time of the selected candidate pair.
    pub rtt_ms: Option<f64>,
    /// Jitter of what arrives (the worst of audio and video).
    pub jitter_ms: Option<f64>,
    pub inbound: Flow,
    pub outbound: Flow,
    /// Why the outgoing video is below what the camera gives.
    pub limitation: Option<Limitation>,
    pub pair: Option<CandidatePair>,
}

/// One direction of a peer connection.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Flow {
    /// Packets lost over the interval, as a fraction of those sent (0 to 1).
    pub loss: Option<f64>,
    pub audio_kbps: Option<f64>,
    pub video_kbps: Option<f64>,
    pub fps: Option<f64>,
    pub width: Option<u16>,
    pub height: Option<u16>,
}

/// `qualityLimitationReason` of the outgoing video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limitation {
    None,
    Bandwidth,
    Cpu,
    Other,
}

text_enum!(Limitation { None => "none", Bandwidth => "bandwidth", Cpu => "cpu", Other => "other" });

/// The selected candidate pair, by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CandidatePair {
    pub local: CandidateType,
    pub remote: CandidateType,
    /// How the local candidate sends: `udp` or `tcp`.
    pub protocol: Transport,
    /// For a local relay candidate: how it reaches its TURN server.
    pub relay_protocol: Option<RelayProtocol>,
}

impl CandidatePair {
    /// Media goes through a TURN server on one side or the other.
    pub fn relayed(&self) -> bool {
        self.local == CandidateType::Relay || self.remote == CandidateType::Relay
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateType {
    Host,
    Srflx,
    Prflx,
    Relay,
}

text_enum!(CandidateType { Host => "host", Srflx => "srflx", Prflx => "prflx", Relay => "relay" });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Udp,
    Tcp,
}

text_enum!(Transport { Udp => "udp", Tcp => "tcp" });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RelayProtocol {
    Udp,
    Tcp,
    Tls,
}

text_enum!(RelayProtocol { Udp => "udp", Tcp => "tcp", Tls => "tls" });

/// The result of the pre-call check, as the waiting participant's browser found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Precheck {
    /// A camera could be opened.
    pub camera: bool,
    /// A microphone could be opened.
    pub microphone: bool,
    pub network: Network,
    /// Which TURN transports allocated a relay; a transport not configured (or not tried)
    /// is absent.
    #[serde(default, skip_serializing_if = "TurnReach::is_empty")]
    pub turn: TurnReach,
}

/// What the network check concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Network {
    /// A server-reflexive candidate was gathered: media can flow peer to peer.
    Direct,
    /// Only a TURN relay could be allocated: media flows through it.
    Relay,
    /// Neither: a call from this network will most likely not connect.
    Blocked,
}

text_enum!(Network { Direct => "direct", Relay => "relay", Blocked => "blocked" });

/// TURN allocations the check tried, by transport: `true` allocated, `false` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TurnReach {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
}

impl TurnReach {
    pub fn is_empty(&self) -> bool {
        self.udp.is_none() && self.tcp.is_none() && self.tls.is_none()
    }
}

/// Which frame a [`ReportError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    Stats,
    Precheck,
}

/// A `stats` or `precheck` frame that is malformed or out of range. The message names the
/// field and its rule, never the value sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ReportError {
    pub kind: ReportKind,
    pub message: String,
}

impl ReportError {
    /// The protocol error code.
    pub fn code(&self) -> &'static str {
        match self.kind {
            ReportKind::Stats => "invalid_stats",
            ReportKind::Precheck => "invalid_precheck",
        }
    }
}

/// Reads fields of one JSON object, naming them `PATH.FIELD` in errors.
#[derive(Clone, Copy)]
struct Fields<'a> {
    kind: ReportKind,
    path: &'a str,
    object: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn of(kind: ReportKind, path: &'a str, value: &'a Value) -> Result<Self, ReportError> {
        match value {
            Value::Object(object) => Ok(Self { kind, path, object }),
            _ => Err(error(kind, path, "must be an object")),
        }
    }

    fn error(&self, field: &str, rule: &str) -> ReportError {
        let path = if self.path.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.path)
        };
        error(self.kind, &path, rule)
    }

    /// A field that is absent or `null` is `None`.
    fn get(&self, field: &str) -> Option<&'a Value> {
        self.object.get(field).filter(|v| !v.is_null())
    }

    fn number(&self, field: &str, max: f64, rule: &str) -> Result<Option<f64>, ReportError> {
        let Some(value) = self.get(field) else {
            return Ok(None);
        };
        value
            .as_f64()
            .filter(|n| n.is_finite() && (0.0..=max).contains(n))
            .map(Some)
            .ok_or_else(|| self.error(field, rule))
    }

    fn whole(&self, field: &str, max: u16, rule: &str) -> Result<Option<u16>, ReportError> {
        let Some(value) = self.get(field) else {
            return Ok(None);
        };
        value
            .as_f64()
            .filter(|n| n.fract() == 0.0 && (0.0..=f64::from(max)).contains(n))
            .map(|n| Some(n as u16))
            .ok_or_else(|| self.error(field, rule))
    }

    fn boolean(&self, field: &str) -> Result<Option<bool>, ReportError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.error(field, "must be true or false")),
        }
    }

    fn required_bool(&self, field: &str) -> Result<bool, ReportError> {
        self.boolean(field)?
            .ok_or_else(|| self.error(field, "is required: true or false"))
    }

    fn choice<T: FromStr>(&self, field: &str, rule: &str) -> Result<Option<T>, ReportError> {
        let Some(value) = self.get(field) else {
            return Ok(None);
        };
        value
            .as_str()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| self.error(field, rule))
    }

    fn object(&self, field: &str) -> Result<Option<Fields<'a>>, ReportError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Object(object)) => Ok(Some(Fields {
                kind: self.kind,
                path: self.path,
                object,
            })),
            Some(_) => Err(self.error(field, "must be an object")),
        }
    }
}

fn error(kind: ReportKind, path: &str, rule: &str) -> ReportError {
    ReportError {
        kind,
        message: format!("{path}: {rule}"),
    }
}

const MILLIS_RULE: &str = "must be a number of milliseconds from 0 to 60000, or null";
const LOSS_RULE: &str = "must be a fraction from 0 to 1, or null";
const KBPS_RULE: &str = "must be kbit/s from 0 to 100000, or null";
const FPS_RULE: &str = "must be frames per second from 0 to 240, or null";
const PIXELS_RULE: &str = "must be a whole number of pixels from 0 to 8192, or null";
const TYPE_RULE: &str = "must be host, srflx, prflx or relay";

impl StatsReport {
    /// Reads a `stats` frame's text (its `type` already known).
    pub fn parse(text: &str) -> Result<Self, ReportError> {
        let kind = ReportKind::Stats;
        if text.len() > MAX_STATS_BYTES {
            return Err(ReportError {
                kind,
                message: format!("a stats frame is at most {MAX_STATS_BYTES} bytes"),
            });
        }
        let frame: Value =
            serde_json::from_str(text).map_err(|_| error(kind, "frame", "is not JSON"))?;
        let frame = Fields::of(kind, "", &frame)?;
        let peers = match frame.get("peers") {
            Some(Value::Array(peers)) => peers,
            Some(_) => return Err(frame.error("peers", "must be an array")),
            None => return Err(frame.error("peers", "is required (an array, empty when alone)")),
        };
        if peers.len() > MAX_PEERS {
            return Err(frame.error(
                "peers",
                &format!("at most {MAX_PEERS} entries, one per peer connection"),
            ));
        }
        let peers = peers
            .iter()
            .enumerate()
            .map(|(i, peer)| PeerStats::read(&format!("peers[{i}]"), peer))
            .collect::<Result<_, _>>()?;
        Ok(Self { peers })
    }
}

impl PeerStats {
    fn read(path: &str, value: &Value) -> Result<Self, ReportError> {
        let f = Fields::of(ReportKind::Stats, path, value)?;
        let inbound = f.object("inbound")?;
        let outbound = f.object("outbound")?;
        let inbound_path = format!("{path}.inbound");
        let outbound_path = format!("{path}.outbound");
        let pair_path = format!("{path}.pair");
        Ok(Self {
            rtt_ms: f.number("rtt_ms", MAX_MILLIS, MILLIS_RULE)?,
            jitter_ms: f.number("jitter_ms", MAX_MILLIS, MILLIS_RULE)?,
            inbound: Flow::read(inbound.map(|o| Fields {
                path: &inbound_path,
                ..o
            }))?,
            outbound: Flow::read(outbound.map(|o| Fields {
                path: &outbound_path,
                ..o
            }))?,
            limitation: match &outbound {
                Some(o) => Fields {
                    path: &outbound_path,
                    ..*o
                }
                .choice("limitation", "must be none, bandwidth, cpu or other")?,
                None => None,
            },
            pair: f
                .object("pair")?
                .map(|o| {
                    CandidatePair::read(Fields {
                        path: &pair_path,
                        ..o
                    })
                })
                .transpose()?,
        })
    }
}

impl Flow {
    fn read(f: Option<Fields<'_>>) -> Result<Self, ReportError> {
        let Some(f) = f else {
            return Ok(Self::default());
        };
        Ok(Self {
            loss: f.number("loss", 1.0, LOSS_RULE)?,
            audio_kbps: f.number("audio_kbps", MAX_KBPS, KBPS_RULE)?,
            video_kbps: f.number("video_kbps", MAX_KBPS, KBPS_RULE)?,
            fps: f.number("fps", MAX_FPS, FPS_RULE)?,
            width: f.whole("width", MAX_PIXELS, PIXELS_RULE)?,
            height: f.whole("height", MAX_PIXELS, PIXELS_RULE)?,
        })
    }
}

impl CandidatePair {
    fn read(f: Fields<'_>) -> Result<Self, ReportError> {
        let required = |field: &str| f.error(field, "is required");
        Ok(Self {
            local: f
                .choice("local", TYPE_RULE)?
                .ok_or_else(|| required("local"))?,
            remote: f
                .choice("remote", TYPE_RULE)?
                .ok_or_else(|| required("remote"))?,
            protocol: f
                .choice("protocol", "must be udp or tcp")?
                .ok_or_else(|| required("protocol"))?,
            relay_protocol: f.choice("relay_protocol", "must be udp, tcp or tls")?,
        })
    }
}

impl Precheck {
    /// Reads a `precheck` frame's text (its `type` already known).
    pub fn parse(text: &str) -> Result<Self, ReportError> {
        let kind = ReportKind::Precheck;
        let frame: Value =
            serde_json::from_str(text).map_err(|_| error(kind, "frame", "is not JSON"))?;
        let f = Fields::of(kind, "", &frame)?;
        let turn = match f.object("turn")? {
            Some(t) => {
                let t = Fields { path: "turn", ..t };
                TurnReach {
                    udp: t.boolean("udp")?,
                    tcp: t.boolean("tcp")?,
                    tls: t.boolean("tls")?,
                }
            }
            None => TurnReach::default(),
        };
        Ok(Self {
            camera: f.required_bool("camera")?,
            microphone: f.required_bool("microphone")?,
            network: f
                .choice("network", "must be direct, relay or blocked")?
                .ok_or_else(|| f.error("network", "is required: direct, relay or blocked"))?,
            turn,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(peers: &str) -> Result<StatsReport, ReportError> {
        StatsReport::parse(&format!(r#"{{"type":"stats","peers":{peers}}}"#))
    }

    #[test]
    fn a_full_entry_reads_back() {
        let report = stats(
            r#"[{"rtt_ms": 42.5, "jitter_ms": 3,
                 "inbound": {"loss": 0.01, "audio_kbps": 31, "video_kbps": 850, "fps": 30, "width": 640, "height": 480},
                 "outbound": {"loss": 0, "audio_kbps": 32, "video_kbps": 900.5, "fps": 29.97, "width": 1280, "height": 720, "limitation": "bandwidth"},
                 "pair": {"local": "relay", "remote": "srflx", "protocol": "udp", "relay_protocol": "tls"},
                 "address": "203.0.113.7"}]"#,
        )
        .unwrap();
        let p = report.peers[0];
        assert_eq!(p.rtt_ms, Some(42.5));
        assert_eq!(p.inbound.width, Some(640));
        assert_eq!(p.outbound.video_kbps, Some(900.5));
        assert_eq!(p.limitation, Some(Limitation::Bandwidth));
        let pair = p.pair.unwrap();
        assert!(pair.relayed());
        assert_eq!(pair.relay_protocol, Some(RelayProtocol::Tls));
    }

    #[test]
    fn absent_and_null_measurements_are_unknown() {
        let report = stats(r#"[{}, {"rtt_ms": null, "inbound": null}]"#).unwrap();
        assert_eq!(report.peers, vec![PeerStats::default(); 2]);
        assert!(stats("[]").unwrap().peers.is_empty());
    }

    #[test]
    fn out_of_range_and_wrongly_typed_values_name_their_field() {
        for (peers, field) in [
            (r#"[{"rtt_ms": -1}]"#, "peers[0].rtt_ms"),
            (r#"[{"rtt_ms": 60001}]"#, "peers[0].rtt_ms"),
            (r#"[{"rtt_ms": "40"}]"#, "peers[0].rtt_ms"),
            (r#"[{}, {"jitter_ms": true}]"#, "peers[1].jitter_ms"),
            (r#"[{"inbound": {"loss": 1.5}}]"#, "peers[0].inbound.loss"),
            (
                r#"[{"outbound": {"video_kbps": 1e9}}]"#,
                "peers[0].outbound.video_kbps",
            ),
            (
                r#"[{"inbound": {"width": 640.5}}]"#,
                "peers[0].inbound.width",
            ),
            (
                r#"[{"inbound": {"height": 10000}}]"#,
                "peers[0].inbound.height",
            ),
            (r#"[{"outbound": {"fps": 1000}}]"#, "peers[0].outbound.fps"),
            (
                r#"[{"outbound": {"limitation": "cosmic"}}]"#,
                "peers[0].outbound.limitation",
            ),
            (r#"[{"inbound": 5}]"#, "peers[0].inbound"),
            (
                r#"[{"pair": {"local": "host", "remote": "srflx"}}]"#,
                "peers[0].pair.protocol",
            ),
            (
                r#"[{"pair": {"local": "10.0.0.1", "remote": "host", "protocol": "udp"}}]"#,
                "peers[0].pair.local",
            ),
            (r#"[7]"#, "peers[0]"),
            (r#"{"a": 1}"#, "peers"),
        ] {
            let e = stats(peers).unwrap_err();
            assert_eq!(e.code(), "invalid_stats");
            assert!(e.message.starts_with(&format!("{field}:")), "{peers}: {e}");
        }
        let e = StatsReport::parse(r#"{"type":"stats"}"#).unwrap_err();
        assert!(e.message.starts_with("peers:"), "{e}");
    }

    #[test]
    fn too_many_peers_and_too_many_bytes_are_refused() {
        let eight = format!("[{}]", ["{}"; MAX_PEERS + 1].join(","));
        assert!(stats(&eight).unwrap_err().message.contains("at most 7"));
        let seven = format!("[{}]", ["{}"; MAX_PEERS].join(","));
        assert_eq!(stats(&seven).unwrap().peers.len(), MAX_PEERS);
        let padded = format!(
            r#"{{"type":"stats","peers":[],"pad":"{}"}}"#,
            "x".repeat(MAX_STATS_BYTES)
        );
        assert!(
            StatsReport::parse(&padded)
                .unwrap_err()
                .message
                .contains("4096 bytes")
        );
    }

    #[test]
    fn an_error_never_repeats_the_value_sent() {
        let e = stats(
            r#"[{"pair": {"local": "203.0.113.7:3478", "remote": "host", "protocol": "udp"}}]"#,
        )
        .unwrap_err();
        assert!(!e.message.contains("203.0.113.7"), "{e}");
    }

    #[test]
    fn prechecks_read_and_check() {
        let p = Precheck::parse(
            r#"{"type":"precheck","camera":true,"microphone":false,"network":"relay","turn":{"udp":false,"tls":true}}"#,
        )
        .unwrap();
        assert_eq!(p.network, Network::Relay);
        assert_eq!(
            p.turn,
            TurnReach {
                udp: Some(false),
                tcp: None,
                tls: Some(true)
            }
        );
        assert!(!p.microphone);
        for (frame, field) in [
            (r#"{"microphone":true,"network":"direct"}"#, "camera"),
            (
                r#"{"camera":1,"microphone":true,"network":"direct"}"#,
                "camera",
            ),
            (
                r#"{"camera":true,"microphone":true,"network":"fast"}"#,
                "network",
            ),
            (r#"{"camera":true,"microphone":true}"#, "network"),
            (
                r#"{"camera":true,"microphone":true,"network":"direct","turn":{"udp":"yes"}}"#,
                "turn.udp",
            ),
        ] {
            let e = Precheck::parse(frame).unwrap_err();
            assert_eq!(e.code(), "invalid_precheck");
            assert!(e.message.starts_with(&format!("{field}:")), "{frame}: {e}");
        }
    }
}
