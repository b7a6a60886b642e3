//! Configuration, in layers: built-in defaults, then the optional config file (TOML), then
//! `BEDSIDE_*` environment variables. Nested settings use a double underscore in the
//! environment: `BEDSIDE_WS__RATE_PER_SECOND=100`.

use anyhow::{Context, bail};
use bedside_auth::ApiKey;
use bedside_signaling::{IceServer, SignalingConfig, TurnServers};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A list that may also be written as one comma-separated string, as environment
/// variables carry it: `BEDSIDE_API_KEYS=id:secret,id2:secret2`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ListOrString<T> {
    #[default]
    None,
    Text(String),
    List(Vec<T>),
}

impl<T: Clone> ListOrString<T> {
    fn items(&self, parse: impl Fn(&str) -> anyhow::Result<T>) -> anyhow::Result<Vec<T>> {
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeySetting {
    pub id: String,
    pub secret: String,
    #[serde(default)]
    pub tenant: Option<String>,
}

/// WebSocket limits and timings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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

/// A tenant's webhook, as the config file writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookSetting {
    pub tenant: String,
    pub url: String,
    /// Signs each delivery (HMAC-SHA256); at least 16 characters, or `whsec_` and base64
    /// of at least 16 bytes (the Standard Webhooks form).
    pub secret: String,
    /// During a rotation, the secret being replaced: deliveries carry a signature under
    /// each, so receivers move to the new one when they like.
    #[serde(default)]
    pub previous_secret: Option<String>,
}

/// How webhooks are delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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

/// A secret from configuration: read like a string, never printed, never serialized.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct ConfigSecret(SecretString);

impl ConfigSecret {
    pub fn new(secret: &str) -> Self {
        Self(SecretString::from(secret.to_owned()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for ConfigSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl PartialEq for ConfigSecret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

/// TURN servers with credentials minted per participant (coturn's `use-auth-secret`), and
/// the embedded STUN/TURN server. In the environment: `BEDSIDE_TURN__SECRET=...`,
/// `BEDSIDE_TURN__URLS=turn:turn.example.org:3478?transport=udp,...`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TurnSettings {
    /// `turn:`/`turns:` URLs handed out with minted credentials. With `embedded` and none
    /// given: the embedded server's own address.
    pub urls: ListOrString<String>,
    /// The secret shared with the TURN server(s) (coturn's `static-auth-secret`).
    #[serde(skip_serializing)]
    pub secret: Option<ConfigSecret>,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Address to serve on.
    pub listen: SocketAddr,
    /// `sqlite://PATH` (created if missing) or `postgres://USER:PASSWORD@HOST:PORT/DATABASE`
    /// (also `postgresql://`; the database must exist).
    pub database_url: String,
    /// `id:secret` pairs, or a list of keys with optional tenants.
    pub api_keys: ListOrString<KeySetting>,
    /// Base of join links; defaults to `http://` + the listen address.
    pub public_url: Option<String>,
    /// Origins allowed to open `/ws` from a browser; defaults to the public URL's origin.
    pub allowed_origins: ListOrString<String>,
    /// How long a dropped participant keeps their place.
    pub grace_seconds: u64,
    /// How long before a visit's `expires_at` its participants are warned.
    pub expiry_warning_secs: u64,
    /// Most WebSocket connections served at once.
    pub max_connections: usize,
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
    /// Per-tenant webhooks. In the environment: `BEDSIDE_WEBHOOKS="TENANT URL SECRET,..."`.
    pub webhooks: ListOrString<WebhookSetting>,
    pub webhook_delivery: DeliverySettings,
    /// `redis://HOST:PORT`: run as one node of a cluster sharing visits through Redis
    /// (needs a PostgreSQL `database_url`).
    pub redis_url: Option<String>,
    /// PEM CA certificates that sign Redis's certificate (`rediss://`), when it is not signed
    /// by a root the system trusts.
    pub redis_ca_cert: Option<PathBuf>,
    /// Load balancers in front of Bedside (addresses or CIDR blocks): for connections from
    /// them, per-address limits apply to the client `X-Forwarded-For` names instead.
    pub trusted_proxies: ListOrString<String>,
    pub cluster: ClusterSettings,
    pub drain: DrainSettings,
    /// OpenTelemetry collector to send traces to over OTLP/HTTP, e.g. `http://collector:4318`;
    /// none: no traces leave the process.
    pub otlp_endpoint: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://bedside.db".into(),
            api_keys: ListOrString::None,
            public_url: None,
            allowed_origins: ListOrString::None,
            grace_seconds: 30,
            expiry_warning_secs: 300,
            max_connections: 10_000,
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
            otlp_endpoint: None,
        }
    }
}

impl Settings {
    /// Defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            if !file.exists() {
                bail!("config file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file(file));
        }
        // BEDSIDE_CONFIG names the file; it is not a setting.
        let env = Env::prefixed("BEDSIDE_").split("__").ignore(&["config"]);
        let settings: Settings = figment
            .merge(env)
            .extract()
            .context("invalid configuration")?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if bedside_rooms::storage::Backend::of(&self.database_url).is_none() {
            bail!(
                "database_url must be sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE, not {:?}",
                bedside_rooms::storage::redacted_url(&self.database_url)
            );
        }
        if let Some(url) = &self.redis_url {
            if !url.starts_with("redis://") && !url.starts_with("rediss://") {
                bail!("redis_url must be redis://HOST:PORT (or rediss:// for TLS)");
            }
            if self.redis_ca_cert.is_some() && !url.starts_with("rediss://") {
                bail!("redis_ca_cert is for TLS: use a rediss:// redis_url");
            }
            if bedside_rooms::storage::Backend::of(&self.database_url)
                != Some(bedside_rooms::storage::Backend::Postgres)
            {
                bail!(
                    "redis_url (several nodes) needs a database they share: set database_url to postgres://..."
                );
            }
            if let Some(name) = &self.cluster.node_id
                && (name.is_empty()
                    || name.len() > 64
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
            {
                bail!("cluster.node_id must be 1-64 letters, digits, '-', '_' or '.'");
            }
            if !(300..=60_000).contains(&self.cluster.lease_ttl_ms) {
                bail!("cluster.lease_ttl_ms must be 300-60000");
            }
        }
        self.trusted_proxies()
            .context("trusted_proxies (BEDSIDE_TRUSTED_PROXIES)")?;
        if self.drain.delay_ms > 60_000 || self.drain.jitter_ms > 60_000 {
            bail!("drain.delay_ms and drain.jitter_ms must be at most 60000");
        }
        if self.grace_seconds == 0 || self.grace_seconds > 3600 {
            bail!("grace_seconds must be 1-3600");
        }
        if self.max_connections == 0 {
            bail!("max_connections must be at least 1");
        }
        if self.ws.max_message_bytes < 1024
            || self.ws.queue_capacity == 0
            || self.ws.rate_per_second == 0
        {
            bail!("ws limits must be positive (max_message_bytes at least 1024)");
        }
        if self.ws.idle_timeout_secs <= self.ws.ping_interval_secs {
            bail!("ws.idle_timeout_secs must exceed ws.ping_interval_secs");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bail!("tls_cert and tls_key go together: set both or neither");
        }
        if self.handshake_timeout_secs == 0
            || self.ws.max_per_ip == 0
            || self.ws.joins_per_ip_per_second == 0
        {
            bail!(
                "handshake_timeout_secs, ws.max_per_ip and ws.joins_per_ip_per_second must be positive"
            );
        }
        if self.api.visits_per_minute == 0 {
            bail!("api.visits_per_minute must be positive");
        }
        self.validate_turn()?;
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bail!("log_format must be text or json");
        }
        self.check_webhooks()?;
        if let Some(url) = &self.otlp_endpoint
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bail!("otlp_endpoint must be http(s)://HOST:PORT (OTLP over HTTP, e.g. port 4318)");
        }
        if self.webhook_delivery.give_up_hours < 24 || self.webhook_delivery.retry_base_ms == 0 {
            bail!("webhook_delivery retries for at least 24 hours, from a positive base delay");
        }
        Ok(())
    }

    pub fn keys(&self) -> anyhow::Result<Vec<ApiKey>> {
        let settings = self.api_keys.items(|pair| {
            let (id, secret) = pair
                .split_once(':')
                .context("BEDSIDE_API_KEYS entries are id:secret")?;
            Ok(KeySetting {
                id: id.into(),
                secret: secret.into(),
                tenant: None,
            })
        })?;
        settings
            .iter()
            .map(|k| {
                ApiKey::for_tenant(&k.id, &k.secret, k.tenant.as_deref().unwrap_or(&k.id))
                    .map_err(anyhow::Error::from)
            })
            .collect()
    }

    /// The configured webhooks.
    pub fn webhooks(&self) -> anyhow::Result<Vec<WebhookSetting>> {
        self.webhooks.items(|entry| {
            let mut parts = entry.split_whitespace();
            match (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) {
                (Some(tenant), Some(url), Some(secret), previous, None) => Ok(WebhookSetting {
                    tenant: tenant.into(),
                    url: url.into(),
                    secret: secret.into(),
                    previous_secret: previous.map(Into::into),
                }),
                _ => bail!("BEDSIDE_WEBHOOKS entries are \"TENANT URL SECRET [PREVIOUS_SECRET]\""),
            }
        })
    }

    /// Each webhook is well formed, names a tenant some API key serves, and is that tenant's
    /// only one.
    fn check_webhooks(&self) -> anyhow::Result<()> {
        let keys = self.keys()?;
        let mut seen = std::collections::HashSet::new();
        for hook in self.webhooks()? {
            let endpoint = crate::webhooks::Endpoint::new(&hook)?;
            if !keys.is_empty() && !keys.iter().any(|k| k.tenant == endpoint.tenant) {
                bail!(
                    "webhook for {}: no API key serves that tenant",
                    endpoint.tenant
                );
            }
            if !seen.insert(endpoint.tenant.clone()) {
                bail!("{} has more than one webhook", endpoint.tenant);
            }
        }
        Ok(())
    }

    /// The base of join links, without a trailing slash.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None if self.tls_cert.is_some() => format!("https://{bound}"),
            None => format!("http://{bound}"),
        }
    }

    /// Exact origins allowed on `/ws`.
    pub fn allowed_origins(&self, public_url: &str) -> anyhow::Result<Vec<String>> {
        let configured = self.allowed_origins.items(|s| Ok(s.to_owned()))?;
        if !configured.is_empty() {
            return Ok(configured
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect());
        }
        Ok(vec![origin_of(public_url)])
    }

    /// The CA certificates for a `rediss://` Redis, if configured.
    pub fn redis_ca(&self) -> anyhow::Result<Option<Vec<u8>>> {
        self.redis_ca_cert
            .as_ref()
            .map(|path| {
                std::fs::read(path)
                    .with_context(|| format!("reading redis_ca_cert {}", path.display()))
            })
            .transpose()
    }

    /// The trusted proxies, parsed.
    pub fn trusted_proxies(&self) -> anyhow::Result<Vec<ipnet::IpNet>> {
        self.trusted_proxies
            .items(|s| Ok(s.to_owned()))?
            .iter()
            .map(|s| crate::client_ip::parse_net(s).map_err(anyhow::Error::msg))
            .collect()
    }

    /// This node's name in a cluster: the configured name (or `node`) and a random suffix
    /// for this process. A restarted node is a new member, so what other nodes held for its
    /// previous life (participants seated with it) ends when that life's liveness lapses.
    pub fn node_id(&self) -> String {
        let name = self.cluster.node_id.as_deref().unwrap_or("node");
        let suffix: u32 = rand::random();
        format!("{name}.{suffix:08x}")
    }

    pub fn signaling(&self) -> SignalingConfig {
        SignalingConfig {
            max_message_bytes: self.ws.max_message_bytes,
            join_timeout: Duration::from_secs(self.ws.join_timeout_secs),
            ping_interval: Duration::from_secs(self.ws.ping_interval_secs),
            idle_timeout: Duration::from_secs(self.ws.idle_timeout_secs),
            queue_capacity: self.ws.queue_capacity,
            rate_per_second: self.ws.rate_per_second,
            rate_burst: self.ws.rate_burst,
            ..SignalingConfig::default()
        }
    }

    fn validate_turn(&self) -> anyhow::Result<()> {
        for url in self.stun_urls.items(|s| Ok(s.to_owned()))? {
            if !(url.starts_with("stun:") || url.starts_with("stuns:")) {
                bail!("stun_urls entries start with stun: or stuns: ({url:?})");
            }
        }
        let turn = &self.turn;
        let urls = turn.urls.items(|s| Ok(s.to_owned()))?;
        for url in &urls {
            if !(url.starts_with("turn:") || url.starts_with("turns:")) {
                bail!("turn.urls entries start with turn: or turns: ({url:?})");
            }
        }
        let Some(secret) = &turn.secret else {
            if !urls.is_empty() || turn.embedded {
                bail!("turn.urls and turn.embedded need turn.secret");
            }
            return Ok(());
        };
        bedside_auth::TurnSecret::new(secret.expose())
            .context("turn.secret (BEDSIDE_TURN__SECRET)")?;
        if !turn.embedded {
            if urls.is_empty() {
                bail!(
                    "turn.secret is set but there is no TURN server: set turn.urls or turn.embedded"
                );
            }
            return Ok(());
        }
        if turn.realm.is_empty() || turn.realm.len() > 128 {
            bail!("turn.realm must be 1-128 characters");
        }
        if turn.max_allocations_per_user == 0 {
            bail!("turn.max_allocations_per_user must be at least 1");
        }
        if turn.relay_address.is_none() && turn.listen.ip().is_unspecified() {
            bail!(
                "turn.relay_address is needed when turn.listen is {}: the address peers reach this host at",
                turn.listen
            );
        }
        match (turn.relay_port_min, turn.relay_port_max) {
            (None, None) => {}
            (Some(low), Some(high)) if low > 0 && low <= high => {}
            _ => bail!(
                "turn.relay_port_min and turn.relay_port_max go together, 1-65535, low to high"
            ),
        }
        Ok(())
    }

    /// The embedded TURN server's settings, if it is switched on.
    pub fn embedded_turn(&self) -> anyhow::Result<Option<crate::turn_server::EmbeddedTurnConfig>> {
        let turn = &self.turn;
        let (true, Some(secret)) = (turn.embedded, &turn.secret) else {
            return Ok(None);
        };
        let listen_ip = turn.listen.ip();
        Ok(Some(crate::turn_server::EmbeddedTurnConfig {
            listen: turn.listen,
            realm: turn.realm.clone(),
            secret: bedside_auth::TurnSecret::new(secret.expose())?,
            relay_address: turn.relay_address.unwrap_or(listen_ip),
            relay_bind: turn.relay_bind.unwrap_or(listen_ip),
            relay_ports: turn.relay_port_min.zip(turn.relay_port_max),
            max_allocations_per_user: turn.max_allocations_per_user,
            allow_private_peers: turn.allow_private_peers,
        }))
    }

    /// What every `joined` carries as is: `ice_servers`, then the `stun_urls`, then the
    /// embedded server as a STUN server (`embedded`: where it listens).
    pub fn static_ice_servers(
        &self,
        embedded: Option<SocketAddr>,
    ) -> anyhow::Result<Vec<IceServer>> {
        let mut servers = self.ice_servers.clone();
        let mut stun = self.stun_urls.items(|s| Ok(s.to_owned()))?;
        if let Some(addr) = embedded {
            stun.push(format!("stun:{}", self.advertised(addr)));
        }
        if !stun.is_empty() {
            servers.push(IceServer {
                urls: stun,
                username: None,
                credential: None,
            });
        }
        Ok(servers)
    }

    /// TURN servers whose credentials are minted per participant: `turn.urls`, or else
    /// the embedded server (`embedded`: where it listens).
    pub fn turn_servers(
        &self,
        embedded: Option<SocketAddr>,
    ) -> anyhow::Result<Option<TurnServers>> {
        let Some(secret) = &self.turn.secret else {
            return Ok(None);
        };
        let mut urls = self.turn.urls.items(|s| Ok(s.to_owned()))?;
        if let (true, Some(addr)) = (urls.is_empty(), embedded) {
            urls.push(format!("turn:{}?transport=udp", self.advertised(addr)));
        }
        if urls.is_empty() {
            return Ok(None);
        }
        Ok(Some(TurnServers {
            urls,
            secret: bedside_auth::TurnSecret::new(secret.expose())?,
        }))
    }

    /// The embedded server's address as clients reach it: the relay address, on the port
    /// it listens on.
    fn advertised(&self, bound: SocketAddr) -> SocketAddr {
        SocketAddr::new(self.turn.relay_address.unwrap_or(bound.ip()), bound.port())
    }
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_nothing_configured_the_defaults_are_designs() {
        let s = Settings::load(None).expect("defaults load");
        assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(s.database_url, "sqlite://bedside.db");
        assert_eq!(s.grace_seconds, 30);
        assert_eq!(s.public_url(s.listen), "http://127.0.0.1:8080");
        assert!(s.keys().unwrap().is_empty(), "no keys: a dev key is made");
    }

    #[test]
    fn keys_come_from_a_comma_separated_string() {
        let s = Settings {
            api_keys: ListOrString::Text(
                "clinic-a:0123456789abcdef, clinic-b:fedcba9876543210".into(),
            ),
            ..Settings::default()
        };
        let keys = s.keys().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].tenant.as_str(), "clinic-b");
        let bad = Settings {
            api_keys: ListOrString::Text("nosecret".into()),
            ..Settings::default()
        };
        assert!(bad.keys().is_err());
    }

    #[test]
    fn webhooks_come_from_the_file_or_a_string_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bedside.toml");
        std::fs::write(
            &file,
            r#"
            api_keys = "clinic-a:0123456789abcdef"
            [[webhooks]]
            tenant = "clinic-a"
            url = "https://ehr.example/hook"
            secret = "whsec_0123456789abcdef"
            previous_secret = "whsec_fedcba9876543210"
            [webhook_delivery]
            give_up_hours = 48
            "#,
        )
        .unwrap();
        let s = Settings::load(Some(&file)).unwrap();
        let hooks = s.webhooks().unwrap();
        assert_eq!(hooks.len(), 1);
        assert_eq!(hooks[0].url, "https://ehr.example/hook");
        assert_eq!(
            hooks[0].previous_secret.as_deref(),
            Some("whsec_fedcba9876543210")
        );
        assert_eq!(s.webhook_delivery.give_up_hours, 48);
        assert_eq!(s.webhook_delivery.retry_base_ms, 1000);

        let with = |webhooks: &str| Settings {
            api_keys: ListOrString::Text("clinic-a:0123456789abcdef".into()),
            webhooks: ListOrString::Text(webhooks.into()),
            ..Settings::default()
        };
        assert!(
            with("clinic-a http://127.0.0.1:9/h whsec_0123456789abcdef")
                .validate()
                .is_ok()
        );
        for bad in [
            "clinic-a http://127.0.0.1:9/h",                        // no secret
            "clinic-a http://127.0.0.1:9/h short",                  // weak secret
            "clinic-a ftp://127.0.0.1:9/h whsec_0123456789abcdef",  // not HTTP
            "clinic-z http://127.0.0.1:9/h whsec_0123456789abcdef", // no such tenant
            "clinic-a http://a/h whsec_0123456789abcdef, clinic-a http://b/h whsec_0123456789abcdef",
        ] {
            assert!(with(bad).validate().is_err(), "{bad}");
        }
        // A rotation: the new secret and the one it replaces, both signing.
        let rotating =
            with("clinic-a http://127.0.0.1:9/h whsec_0123456789abcdef old_secret_0123456789");
        assert!(rotating.validate().is_ok());
        assert_eq!(
            rotating.webhooks().unwrap()[0].previous_secret.as_deref(),
            Some("old_secret_0123456789")
        );
        for bad in [
            "clinic-a http://127.0.0.1:9/h whsec_0123456789abcdef short",
            "clinic-a http://127.0.0.1:9/h whsec_0123456789abcdef old_secret_0123456789 third",
        ] {
            assert!(with(bad).validate().is_err(), "{bad}");
        }
        let mut short = with("");
        short.webhook_delivery.give_up_hours = 23;
        assert!(short.validate().is_err(), "retries last at least 24 hours");
    }

    #[test]
    fn cluster_settings_are_checked() {
        let pg = "postgres://bedside:pw@db:5432/bedside";
        let with = |f: &dyn Fn(&mut Settings)| {
            let mut s = Settings {
                database_url: pg.into(),
                redis_url: Some("redis://redis:6379".into()),
                ..Settings::default()
            };
            f(&mut s);
            s.validate()
        };
        assert!(with(&|_| {}).is_ok());
        assert!(
            with(&|s| s.database_url = "sqlite://x.db".into()).is_err(),
            "nodes must share a database"
        );
        assert!(with(&|s| s.redis_url = Some("http://redis".into())).is_err());
        assert!(
            with(&|s| s.redis_ca_cert = Some("ca.pem".into())).is_err(),
            "a CA is for rediss://"
        );
        assert!(
            with(&|s| {
                s.redis_url = Some("rediss://redis:6380".into());
                s.redis_ca_cert = Some("ca.pem".into());
            })
            .is_ok()
        );
        assert!(with(&|s| s.cluster.lease_ttl_ms = 100).is_err());
        for bad in ["", "node 1", "n\nF 1 x", &"n".repeat(65)] {
            assert!(
                with(&|s| s.cluster.node_id = Some(bad.to_owned())).is_err(),
                "{bad:?}"
            );
        }
        assert!(with(&|s| s.cluster.node_id = Some("pod-7.zone_b".into())).is_ok());
        assert!(
            with(&|s| s.trusted_proxies = ListOrString::Text("10.0.0.0/8, ::1".into())).is_ok()
        );
        assert!(with(&|s| s.trusted_proxies = ListOrString::Text("10.0.0.0/33".into())).is_err());
        assert!(with(&|s| s.drain.jitter_ms = 120_000).is_err());
        let id = Settings::default().node_id();
        assert!(
            id.starts_with("node.") && id.len() == "node.".len() + 8,
            "{id}"
        );
    }

    #[test]
    fn origins_default_to_the_public_url() {
        let s = Settings::default();
        assert_eq!(
            s.allowed_origins("https://visits.example.org/base/")
                .unwrap(),
            ["https://visits.example.org"]
        );
        let s = Settings {
            allowed_origins: ListOrString::Text("http://a:1, http://b/".into()),
            ..Settings::default()
        };
        assert_eq!(
            s.allowed_origins("http://x").unwrap(),
            ["http://a:1", "http://b"]
        );
    }

    #[test]
    fn turn_settings_are_checked_and_the_embedded_server_advertised() {
        let secret = || Some(ConfigSecret::new("0123456789abcdef-turn"));
        let with = |turn: TurnSettings| Settings {
            turn,
            ..Settings::default()
        };
        let url = || ListOrString::Text("turn:turn.example.org:3478?transport=udp".into());
        // Nothing configured is fine; each half alone is not.
        assert!(with(TurnSettings::default()).validate_turn().is_ok());
        for bad in [
            TurnSettings {
                urls: url(),
                ..TurnSettings::default()
            },
            TurnSettings {
                secret: secret(),
                ..TurnSettings::default()
            },
            TurnSettings {
                embedded: true,
                ..TurnSettings::default()
            },
            TurnSettings {
                secret: Some(ConfigSecret::new("short")),
                urls: url(),
                ..TurnSettings::default()
            },
            TurnSettings {
                secret: secret(),
                urls: ListOrString::Text("stun:x:3478".into()),
                ..TurnSettings::default()
            },
            // 0.0.0.0 needs the address peers reach.
            TurnSettings {
                secret: secret(),
                embedded: true,
                ..TurnSettings::default()
            },
            TurnSettings {
                secret: secret(),
                embedded: true,
                relay_address: Some([203, 0, 113, 7].into()),
                relay_port_min: Some(50_000),
                ..TurnSettings::default()
            },
        ] {
            assert!(with(bad.clone()).validate_turn().is_err(), "{bad:?}");
        }
        let coturn = with(TurnSettings {
            secret: secret(),
            urls: url(),
            ..TurnSettings::default()
        });
        coturn.validate_turn().unwrap();
        assert!(coturn.embedded_turn().unwrap().is_none());
        let servers = coturn.turn_servers(None).unwrap().unwrap();
        assert_eq!(servers.urls, ["turn:turn.example.org:3478?transport=udp"]);

        let embedded = Settings {
            stun_urls: ListOrString::Text("stun:stun.example.org:3478".into()),
            ..with(TurnSettings {
                secret: secret(),
                embedded: true,
                relay_address: Some([203, 0, 113, 7].into()),
                relay_port_min: Some(50_000),
                relay_port_max: Some(50_100),
                ..TurnSettings::default()
            })
        };
        embedded.validate_turn().unwrap();
        let config = embedded.embedded_turn().unwrap().unwrap();
        assert_eq!(config.relay_ports, Some((50_000, 50_100)));
        assert!(!config.allow_private_peers);
        assert_eq!(config.max_allocations_per_user, 10);
        let bound = SocketAddr::from(([0, 0, 0, 0], 3478));
        let stun = embedded.static_ice_servers(Some(bound)).unwrap();
        assert_eq!(
            stun[0].urls,
            ["stun:stun.example.org:3478", "stun:203.0.113.7:3478"]
        );
        let turn = embedded.turn_servers(Some(bound)).unwrap().unwrap();
        assert_eq!(turn.urls, ["turn:203.0.113.7:3478?transport=udp"]);
        // The secret never prints.
        assert!(!format!("{embedded:?}").contains("0123456789abcdef-turn"));
    }
}
