//! Realistic signaling payloads: SDP offers and answers of a chosen size, ICE candidates,
//! and timestamped relay probes padded to a chosen size.

use serde::Deserialize;
use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds on this process's monotonic clock; senders and receivers share it.
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// An SDP of about `bytes` bytes, shaped like a browser's audio+video offer.
pub fn sdp(kind: &str, bytes: usize) -> String {
    let mut s = String::from(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
         a=extmap-allow-mixed\r\na=msid-semantic: WMS stream\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\n\
         a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:Jm5q\r\na=ice-pwd:dRn3zBw1nXVn6lN4W8lK1h8e\r\n\
         a=ice-options:trickle\r\na=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
         a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
         a=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 106 107\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n",
    );
    let mut pt = 96;
    while s.len() + 60 < bytes {
        s.push_str(&format!(
            "a=rtpmap:{pt} VP8/90000\r\na=rtcp-fb:{pt} nack pli\r\n"
        ));
        pt = if pt >= 127 { 96 } else { pt + 1 };
    }
    serde_json::json!({"type": kind, "sdp": s}).to_string()
}

/// A trickled host candidate.
pub fn candidate(i: usize) -> String {
    serde_json::json!({
        "candidate": format!("candidate:{} 1 udp 2122260223 127.0.0.1 {} typ host generation 0 ufrag Jm5q network-id 1", 842163049 + i, 50000 + i),
        "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "Jm5q"
    })
    .to_string()
}

/// Padding that brings a relay probe's whole frame to about `frame_bytes`.
pub fn padding(frame_bytes: usize) -> String {
    "x".repeat(frame_bytes.saturating_sub(120))
}

/// A relay probe, `{"seq":..,"ts":..,"pad":"..."}`, stamped now.
pub fn probe(seq: u64, pad: &str) -> String {
    format!(r#"{{"seq":{seq},"ts":{},"pad":"{pad}"}}"#, now_ns())
}

/// A `stats` frame as the web client sends it every 5 s during a call: one peer connection
/// with every measurement (docs/protocol.md, "Call quality"), about 450 bytes.
pub fn stats_report() -> String {
    concat!(
        r#"{"type":"stats","peers":[{"rtt_ms":42.5,"jitter_ms":3.1,"#,
        r#""inbound":{"loss":0.002,"audio_kbps":31.8,"video_kbps":846.2,"fps":30,"width":640,"height":480},"#,
        r#""outbound":{"loss":0,"audio_kbps":32.1,"video_kbps":901.7,"fps":30,"width":1280,"height":720,"limitation":"none"},"#,
        r#""pair":{"local":"srflx","remote":"host","protocol":"udp"}}]}"#
    )
    .to_owned()
}

/// The fields of a received frame the load cares about.
#[derive(Deserialize)]
pub struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: &'a str,
    /// A signal's data: Bedside's `data`, PeerJS's `payload`.
    #[serde(default, alias = "payload")]
    pub data: Option<ProbeData>,
}

#[derive(Deserialize)]
pub struct ProbeData {
    #[serde(default)]
    pub ts: Option<u64>,
}
