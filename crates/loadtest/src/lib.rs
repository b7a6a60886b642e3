//! Load for Bedside: scripted visits, join storms, reconnect storms and idle connections
//! against a running server over its real protocol, and the same traffic against a
//! minimal baseline relay (and PeerJS's signaling server), so a run reports them side by
//! side.
//!
//! - [`target`]: what is under load (Bedside, the baseline relay, PeerJS) and how to reach
//!   it.
//! - [`client`]: a WebSocket client bound to a chosen loopback source address.
//! - [`scenario`]: the scenarios; each returns a [`report::Report`].
//! - [`baseline`]: the baseline relay itself (a bare tokio-tungstenite forwarder).
//! - [`peer`]: a real WebRTC peer (the `webrtc` crate) negotiating through Bedside.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod baseline;
pub mod client;
pub mod http;
pub mod payload;
pub mod peer;
pub mod procstat;
pub mod report;
pub mod scenario;
pub mod target;
