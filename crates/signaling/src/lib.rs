//! The WebSocket side of Bedside: the protocol's frames and the task that serves one
//! connection from its `join` to its close.
//!
//! [`Signaling`] is what the HTTP layer hands each upgraded socket to: it holds the router
//! that reaches visits wherever they run, the keys that verify tokens, the limits, and the
//! shutdown signal. The frames themselves are `bedside-protocol`'s.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod connection;
mod metrics;
mod outbox;
pub mod trace_links;

pub use outbox::{Inbox, LocalOutbox};

use axum::extract::ws::WebSocketUpgrade;
use bedside_auth::{KeyRing, ResumeKey, TurnSecret};
use bedside_protocol::IceServer;
use bedside_rooms::{Desk, Registry, Router};
use chrono::{DateTime, Utc};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Limits and timings of the protocol. Defaults as docs/protocol.md ("Limits") gives them.
#[derive(Debug, Clone)]
pub struct SignalingConfig {
    /// Largest frame a client may send.
    pub max_message_bytes: usize,
    /// Time allowed between the upgrade and the `join` frame.
    pub join_timeout: Duration,
    /// How often the server checks on each connection (and pings it); the server drives
    /// this by pushing a heartbeat to every outbox of [`Router::outboxes`].
    pub ping_interval: Duration,
    /// A connection silent for this long (no frame, no pong) is dead.
    pub idle_timeout: Duration,
    /// Frames that may wait for a slow reader before it is disconnected.
    pub queue_capacity: usize,
    /// Sustained frames per second a client may send...
    pub rate_per_second: u32,
    /// ...and the burst above that it may send at once.
    pub rate_burst: u32,
    /// Longest a write to the socket may take before the peer counts as gone.
    pub write_timeout: Duration,
    /// How long a resume token stays valid.
    pub resume_ttl: Duration,
}

impl Default for SignalingConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            join_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(18),
            queue_capacity: 256,
            rate_per_second: 50,
            rate_burst: 200,
            write_timeout: Duration::from_secs(10),
            resume_ttl: Duration::from_secs(12 * 3600),
        }
    }
}

/// TURN servers that take credentials minted from a shared secret (coturn's
/// `use-auth-secret`, or Bedside's embedded server): each participant's `joined` carries
/// its own username and password for them, valid until the visit ends.
#[derive(Debug, Clone)]
pub struct TurnServers {
    /// `turn:` / `turns:` URLs, all sharing `secret`.
    pub urls: Vec<String>,
    pub secret: TurnSecret,
}

/// Which `ice_servers` a participant gets (see [`Signaling::ice_servers_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceGrant {
    /// Admitted: the call's servers.
    Call,
    /// Waiting: STUN, and a short-lived probe credential.
    Probe,
}

/// Everything a connection task needs.
pub struct Signaling {
    /// Reaches visits wherever they run.
    router: Arc<dyn Router>,
    keys: Arc<KeyRing>,
    resume: ResumeKey,
    ice_servers: Vec<IceServer>,
    /// The STUN entries of `ice_servers`: what a waiting participant gets of them.
    stun_servers: Vec<IceServer>,
    /// Set when TURN credentials are minted per participant.
    turn: Option<TurnServers>,
    config: SignalingConfig,
    shutdown: CancellationToken,
    metrics: metrics::Metrics,
    /// Providers' dashboards: set where they are served.
    clinic: Option<Clinic>,
}

/// What a provider's dashboard reaches: the node's desk (queues, presence) and the visits
/// this node runs (messages to waiting rooms, storage for `take`).
#[derive(Clone)]
pub struct Clinic {
    pub desk: Arc<Desk>,
    pub registry: Arc<Registry>,
}

impl Signaling {
    pub fn new(
        router: Arc<dyn Router>,
        keys: Arc<KeyRing>,
        resume: ResumeKey,
        ice_servers: Vec<IceServer>,
        config: SignalingConfig,
        shutdown: CancellationToken,
    ) -> Self {
        let stun_servers = ice_servers
            .iter()
            .filter(|s| {
                s.urls
                    .iter()
                    .all(|u| u.starts_with("stun:") || u.starts_with("stuns:"))
            })
            .cloned()
            .collect();
        Self {
            router,
            keys,
            resume,
            ice_servers,
            stun_servers,
            turn: None,
            config,
            shutdown,
            metrics: metrics::Metrics::new(),
            clinic: None,
        }
    }

    /// Serves providers' dashboards.
    pub fn with_clinic(mut self, clinic: Clinic) -> Self {
        self.clinic = Some(clinic);
        self
    }

    /// Adds TURN servers whose credentials are minted for each participant.
    pub fn with_turn(mut self, turn: Option<TurnServers>) -> Self {
        self.turn = turn;
        self
    }

    /// The `ice_servers` a participant gets. For the call ([`IceGrant::Call`]: `admitted`,
    /// and a doctor's `joined`): the static list, then the TURN servers with a credential
    /// minted for `subject`, valid until the visit ends (capped at a day). While waiting
    /// ([`IceGrant::Probe`]: a patient's or guest's `joined`, each `waiting`): the static
    /// list's STUN entries and a probe credential that lives five minutes at most, for the
    /// pre-call network check. Minted afresh each time, issued no earlier than `issued`.
    pub fn ice_servers_for(
        &self,
        subject: &str,
        grant: IceGrant,
        visit_expires_at: DateTime<Utc>,
        issued: DateTime<Utc>,
    ) -> Cow<'_, [IceServer]> {
        let base = match grant {
            IceGrant::Call => &self.ice_servers,
            IceGrant::Probe => &self.stun_servers,
        };
        let Some(turn) = &self.turn else {
            return Cow::Borrowed(base);
        };
        let minted = match grant {
            IceGrant::Call => turn.secret.mint(subject, visit_expires_at, issued),
            IceGrant::Probe => turn.secret.mint_probe(subject, visit_expires_at, issued),
        };
        let mut servers = base.clone();
        servers.push(IceServer {
            urls: turn.urls.clone(),
            username: Some(minted.username),
            credential: Some(minted.credential),
        });
        Cow::Owned(servers)
    }

    /// The pseudonym TURN credentials carry for `identity` in `visit` (see
    /// `bedside_auth::TurnSecret::subject`); empty without TURN servers.
    pub fn turn_subject(&self, visit: &str, identity: &str) -> String {
        self.turn
            .as_ref()
            .map(|t| t.secret.subject(visit, identity))
            .unwrap_or_default()
    }

    pub fn config(&self) -> &SignalingConfig {
        &self.config
    }

    /// Applies the protocol's size limits to an upgrade. tungstenite's defaults (64 MiB
    /// messages, unbounded write buffer, 128 KiB read buffer per socket) are never what runs.
    pub fn configure(&self, upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
        upgrade
            .max_message_size(self.config.max_message_bytes)
            .max_frame_size(self.config.max_message_bytes)
            .read_buffer_size(2 * 1024)
            .write_buffer_size(0)
            .max_write_buffer_size(self.config.max_message_bytes * 4)
    }
}

pub use connection::serve;
