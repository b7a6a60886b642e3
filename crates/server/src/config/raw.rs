//! The configuration as written: the shape of the TOML file and of the `BEDSIDE_*`
//! environment, with the built-in defaults. Nothing here is checked or used directly: it is
//! turned into a [`super::Config`] of typed values once, at start.

use super::secret::Secret;
use anyhow::bail;
use bedside_protocol::IceServer;
use bedside_signaling::SignalingConfig;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// A list that may also be written as one comma-separated string, as environment
/// variables carry it: `BEDSIDE_API_KEYS=id:secret,id2:secret2`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ListOrString<T> {
    #[default]
    None,
    Text(String),
    List(Vec<T>),
}

impl<T: Clone> ListOrString<T> {
    pub(super) fn items(
        &self,
        parse: impl Fn(&str) -> anyhow::Result<T>,
    ) -> anyhow::Result<Vec<T>> {
        match self {
            ListOrString::None => Ok(Vec::new()),
            ListOrString::Text(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(parse)
                .collect(),
            ListOrString::List(items) => Ok(items.clone()),
        }
    }
}

/// An API key as the config file writes it; `tenant` defaults to the key id.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySetting {
    pub id: String,
    pub secret: Secret,
    #[serde(default)]
    pub tenant: Option<String>,
    /// Whether Bedside may sign its own links (guest links from the call) with this key;
    /// `false` while a new key rolls out (see docs/operations.md).
    #[serde(default = "yes")]
    pub sign_links: bool,
}

fn yes() -> bool {
    true
}

/// WebSocket limits and timings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsSettings {
    pub max_message_bytes: usize,
    pub join_timeout_secs: u64,
    pub ping_interval_secs: u64,
    pub idle_timeout_secs: u64,
    pub queue_capacity: usize,
    pub rate_per_second: u32,
    pub rate_burst: u32,
    /// Open WebSockets one client address may hold.
    pub max_per_ip: usize,
    /// WebSocket upgrades (join attempts) per second from one address, and the burst.
    pub joins_per_ip_per_second: u32,
    pub join_burst_per_ip: u32,
}

impl Default for WsSettings {
    fn default() -> Self {
        let d = SignalingConfig::default();
        Self {
            max_message_bytes: d.max_message_bytes,
            join_timeout_secs: d.join_timeout.as_secs(),
            ping_interval_secs: d.ping_interval.as_secs(),
            idle_timeout_secs: d.idle_timeout.as_secs(),
            queue_capacity: d.queue_capacity,
            rate_per_second: d.rate_per_second,
            rate_burst: d.rate_burst,
            max_per_ip: 200,
            joins_per_ip_per_second: 20,
            join_burst_per_ip: 60,
        }
    }
}

/// A tenant's default consent text, as the config file writes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentSetting {
    pub tenant: String,
    pub version: String,
    pub text: String,
}

/// The clinic's day: providers' queues, the expected wait, presence, consent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ClinicSettings {
    /// A typical consultation, in seconds, while a provider has no history; none: no
    /// expected wait until they have one.
    pub default_consultation_secs: Option<u64>,
    /// How many consultations the default counts as while a provider's history is short.
    pub prior_weight: u32,
    /// How many of a provider's most recent consultations the estimate looks at.
    pub history: usize,
    /// How long a provider's dashboard may be gone before they show as `away`.
    pub away_after_secs: u64,
    /// Per-tenant consent a visit asks for when it names none (config file only).
    pub consents: Vec<ConsentSetting>,
}

impl Default for ClinicSettings {
    fn default() -> Self {
        Self {
            default_consultation_secs: None,
            prior_weight: 3,
            history: 20,
            away_after_secs: 120,
            consents: Vec::new(),
        }
    }
}

/// A tenant's webhook, as the config file writes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSetting {
    pub tenant: String,
    pub url: String,
    /// Signs each delivery (HMAC-SHA256); at least 16 characters, or `whsec_` and base64
    /// of at least 16 bytes (the Standard Webhooks form).
    pub secret: Secret,
    /// During a rotation, the secret being replaced: deliveries carry a signature under
    /// each, so receivers move to the new one when they like.
    #[serde(default)]
    pub previous_secret: Option<Secret>,
}

/// How webhooks are delivered.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// First retry delay; it doubles on each failure...
    pub retry_base_ms: u64,
    /// ...up to this.
    pub retry_max_secs: u64,
    /// An event still undelivered this long after it happened is given up on.
    pub give_up_hours: u32,
    /// Longest a receiver may take to answer one delivery.
    pub timeout_secs: u64,
    /// How often the outbox is checked for new events.
    pub poll_ms: u64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            retry_base_ms: 1000,
            retry_max_secs: 600,
            give_up_hours: 25,
            timeout_secs: 10,
            poll_ms: 250,
        }
    }
}

/// Limits on the REST API.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Visits one API key may create per minute, sustained...
    pub visits_per_minute: u32,
    /// ...and at once.
    pub visit_burst: u32,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            visits_per_minute: 600,
            visit_burst: 100,
        }
    }
}

/// Running as one node of several (`redis_url` set).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// This node's name in the cluster, for logs (a pod name, say); each process adds a
    /// random suffix of its own.
    pub node_id: Option<String>,
    /// How long a visit's lease lasts without renewal: how long a dead node's visits wait
    /// before another node takes them (renewed every third of it).
    pub lease_ttl_ms: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            node_id: None,
            lease_ttl_ms: 3000,
        }
    }
}

/// How a node stops on SIGTERM.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrainSettings {
    /// How long readiness reports false before clients are told to go: long enough for
    /// the load balancer's health check to notice, so they reconnect elsewhere.
    pub delay_ms: u64,
    /// Clients are told to reconnect (1001) spread over this window, so they do not all
    /// arrive at the other nodes at once.
    pub jitter_ms: u64,
}

impl Default for DrainSettings {
    fn default() -> Self {
        Self {
            delay_ms: 0,
            jitter_ms: 1000,
        }
    }
}

/// TURN servers with credentials minted per participant (coturn's `use-auth-secret`), and
/// the embedded STUN/TURN server. In the environment: `BEDSIDE_TURN__SECRET=...`,
/// `BEDSIDE_TURN__URLS=turn:turn.example.org:3478?transport=udp,...`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnSettings {
    /// `turn:`/`turns:` URLs handed out with minted credentials. With `embedded` and none
    /// given: the embedded server's own address.
    pub urls: ListOrString<String>,
    /// The secret shared with the TURN server(s) (coturn's `static-auth-secret`).
    pub secret: Option<Secret>,
    /// Run the embedded STUN/TURN server.
    pub embedded: bool,
    /// UDP address the embedded server listens on.
    pub listen: SocketAddr,
    /// Realm of the embedded server.
    pub realm: String,
    /// Address relayed candidates carry (the public address of this host); defaults to
    /// the listen address's IP unless that is unspecified (`0.0.0.0`).
    pub relay_address: Option<IpAddr>,
    /// Local address relay sockets bind to; defaults to the listen address's IP.
    pub relay_bind: Option<IpAddr>,
    /// Port range of relay sockets (both set, or neither for any free port).
    pub relay_port_min: Option<u16>,
    pub relay_port_max: Option<u16>,
    /// Live allocations one participant (one username) may hold.
    pub max_allocations_per_user: usize,
    /// Relay to private, loopback and link-local peer addresses too. Off: the relay cannot
    /// be used to reach the clinic's own network.
    pub allow_private_peers: bool,
}

impl Default for TurnSettings {
    fn default() -> Self {
        Self {
            urls: ListOrString::None,
            secret: None,
            embedded: false,
            listen: SocketAddr::from(([0, 0, 0, 0], 3478)),
            realm: "bedside".into(),
            relay_address: None,
            relay_bind: None,
            relay_port_min: None,
            relay_port_max: None,
            max_allocations_per_user: 10,
            allow_private_peers: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to serve on.
    pub listen: SocketAddr,
    /// `sqlite://PATH` (created if missing) or `postgres://USER:PASSWORD@HOST:PORT/DATABASE`
    /// (also `postgresql://`; the database must exist).
    pub database_url: Secret,
    /// `id:secret` pairs, or a list of keys with optional tenants.
    pub api_keys: ListOrString<KeySetting>,
    /// Base of join links; defaults to `http://` + the listen address.
    pub public_url: Option<String>,
    /// Origins allowed to open `/ws` from a browser; defaults to the public URL's origin.
    pub allowed_origins: ListOrString<String>,
    /// Origins of the pages (a clinic's portal) that may show the web client in an
    /// `<iframe>`: its CSP `frame-ancestors`, and where it posts the visit's progress.
    /// None by default: the web client refuses to be framed.
    pub embed_origins: ListOrString<String>,
    /// How long a dropped participant keeps their place.
    pub grace_seconds: u64,
    /// How long before a visit's `expires_at` its participants are warned.
    pub expiry_warning_secs: u64,
    /// Most WebSocket connections served at once.
    pub max_connections: usize,
    /// Threads that run connections and the API, each a current-thread scheduler with
    /// connections spread over them (`crate::runtime`); 0: one per core. BENCHMARKS.md,
    /// "The runtime", has the measurements.
    pub worker_threads: usize,
    /// STUN/TURN servers handed to clients in `joined`.
    pub ice_servers: Vec<IceServer>,
    /// `stun:` URLs handed to clients in `joined`, comma-separated in the environment.
    pub stun_urls: ListOrString<String>,
    /// TURN with per-participant credentials, and the embedded server.
    pub turn: TurnSettings,
    /// `text` or `json`.
    pub log_format: String,
    /// PEM certificate chain and private key: both set, Bedside serves HTTPS and WSS itself.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Time a new connection gets to finish its TLS handshake and send a request head.
    pub handshake_timeout_secs: u64,
    pub ws: WsSettings,
    pub api: ApiSettings,
    /// Per-tenant webhooks. In the environment:
    /// `BEDSIDE_WEBHOOKS="TENANT URL SECRET [PREVIOUS_SECRET],..."`.
    pub webhooks: ListOrString<WebhookSetting>,
    pub webhook_delivery: DeliverySettings,
    /// `redis://HOST:PORT`: run as one node of a cluster sharing visits through Redis
    /// (needs a PostgreSQL `database_url`).
    pub redis_url: Option<Secret>,
    /// PEM CA certificates that sign Redis's certificate (`rediss://`), when it is not signed
    /// by a root the system trusts.
    pub redis_ca_cert: Option<PathBuf>,
    /// Load balancers in front of Bedside (addresses or CIDR blocks): for connections from
    /// them, per-address limits apply to the client `X-Forwarded-For` names instead.
    pub trusted_proxies: ListOrString<String>,
    pub cluster: ClusterSettings,
    pub drain: DrainSettings,
    pub clinic: ClinicSettings,
    /// OpenTelemetry collector to send traces to over OTLP/HTTP, e.g. `http://collector:4318`;
    /// none: no traces leave the process.
    pub otlp_endpoint: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: Secret::new("sqlite://bedside.db"),
            api_keys: ListOrString::None,
            public_url: None,
            allowed_origins: ListOrString::None,
            embed_origins: ListOrString::None,
            grace_seconds: 30,
            expiry_warning_secs: 300,
            max_connections: 10_000,
            worker_threads: 0,
            ice_servers: Vec::new(),
            stun_urls: ListOrString::None,
            turn: TurnSettings::default(),
            log_format: "text".into(),
            tls_cert: None,
            tls_key: None,
            handshake_timeout_secs: 10,
            ws: WsSettings::default(),
            api: ApiSettings::default(),
            webhooks: ListOrString::None,
            webhook_delivery: DeliverySettings::default(),
            redis_url: None,
            redis_ca_cert: None,
            trusted_proxies: ListOrString::None,
            cluster: ClusterSettings::default(),
            drain: DrainSettings::default(),
            clinic: ClinicSettings::default(),
            otlp_endpoint: None,
        }
    }
}

impl Settings {
    /// Defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        // Missing keys take the defaults above (`#[serde(default)]`).
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.exists() {
                bail!("config file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file(file));
        }
        // BEDSIDE_CONFIG names the file; it is not a setting. Neither are the service links
        // Kubernetes injects for a Service named `bedside` (BEDSIDE_SERVICE_HOST,
        // BEDSIDE_PORT_8080_TCP...). Any other BEDSIDE_ variable must be a setting.
        let env = Env::prefixed("BEDSIDE_")
            .split("__")
            .filter(|key| !is_not_a_setting(key.as_str()));
        figment.merge(env).extract().map_err(explain)
    }
}

/// `BEDSIDE_*` variables (lowercased, prefix removed) that are not settings: the config
/// file's path, Kubernetes service links, and the commit the build stamps in (cargo also
/// sets it when it runs the binary: `cargo run`, tests).
fn is_not_a_setting(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    matches!(key.as_str(), "config" | "port" | "build_commit")
        || key.starts_with("service_")
        || key.starts_with("port_")
}

/// The configuration error, with an unknown key named as written (its file section or
/// environment variable) and the nearest valid one: a misspelled `[[api_key]]` must stop
/// the start, not leave the server on defaults.
fn explain(e: figment::Error) -> anyhow::Error {
    for err in e.clone() {
        if let figment::error::Kind::UnknownField(field, expected) = &err.kind {
            let mut path = err.path.clone();
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            let from_env = err
                .metadata
                .as_ref()
                .is_some_and(|m| m.name.contains("environment"));
            let name = if from_env {
                format!("BEDSIDE_{}", path.join("__").to_ascii_uppercase())
            } else {
                format!("`{}`", path.join("."))
            };
            let nearest = expected
                .iter()
                .min_by_key(|valid| strsim::levenshtein(field, valid))
                .map(|valid| {
                    let mut near = path.clone();
                    if let Some(last) = near.last_mut() {
                        *last = (*valid).to_owned();
                    }
                    if from_env {
                        format!("BEDSIDE_{}", near.join("__").to_ascii_uppercase())
                    } else {
                        format!("`{}`", near.join("."))
                    }
                });
            let source = err
                .metadata
                .as_ref()
                .map(|m| m.name.to_string())
                .unwrap_or_default();
            return match nearest {
                Some(nearest) => anyhow::anyhow!(
                    "invalid configuration: unknown setting {name} ({source}); did you mean {nearest}?"
                ),
                None => anyhow::anyhow!("invalid configuration: unknown setting {name} ({source})"),
            };
        }
    }
    anyhow::Error::new(e).context("invalid configuration")
}
