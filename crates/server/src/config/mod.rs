//! Configuration, parsed once. Layers: built-in defaults, then the optional config file
//! (TOML), then `BEDSIDE_*` environment variables; nested settings use a double underscore
//! in the environment (`BEDSIDE_WS__RATE_PER_SECOND=100`).
//!
//! [`raw::Settings`] is the configuration as written; `Config::try_from` checks it and turns
//! it into a [`Config`] of typed values (keys, networks, durations, secrets that never
//! print) in one step. Nothing downstream parses, re-checks or defaults a setting again.

pub mod raw;
mod secret;

pub use raw::Settings;
pub use secret::{Secret, SecretUrl};

use crate::client_ip::parse_net;
use crate::turn_server::EmbeddedTurnConfig;
use anyhow::{Context, bail};
use bedside_auth::{ApiKey, TenantId, TurnSecret};
use bedside_cluster::{ClusterConfig, NodeId};
use bedside_protocol::IceServer;
use bedside_rooms::DeskSettings;
use bedside_rooms::storage::Backend;
use bedside_signaling::{SignalingConfig, TurnServers};
use bedside_visit::{ConsentText, WaitModel};
use chrono::TimeDelta;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the PEM certificate chain and private key are: Bedside serves HTTPS and WSS.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Flood limits of the HTTP surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Open WebSockets one client address may hold.
    pub max_per_ip: usize,
    /// WebSocket upgrades per second from one address, and the burst above that.
    pub joins_per_ip_per_second: u32,
    pub join_burst_per_ip: u32,
    /// Visits one API key may create per minute, and at once.
    pub visits_per_minute: u32,
    pub visit_burst: u32,
}

/// A tenant's webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    pub tenant: TenantId,
    /// `http://` or `https://`.
    pub url: String,
    /// Signs each delivery.
    pub secret: Secret,
    /// During a rotation, the secret being replaced: it signs too.
    pub previous_secret: Option<Secret>,
}

/// How webhooks are delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryConfig {
    /// First retry delay; it doubles on each failure...
    pub retry_base: Duration,
    /// ...up to this.
    pub retry_max: Duration,
    /// An event still undelivered this long after it happened is given up on.
    pub give_up: TimeDelta,
    /// Longest a receiver may take to answer one delivery.
    pub timeout: Duration,
    /// How often the outbox is checked for new events.
    pub poll: Duration,
}

/// How a node stops on SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainConfig {
    /// How long readiness reports false before clients are told to go.
    pub delay: Duration,
    /// The window clients' 1001s are spread over.
    pub jitter: Duration,
}

/// TURN servers with credentials minted per participant, and the embedded server.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// `turn:`/`turns:` URLs; empty with the embedded server: its own address.
    pub urls: Vec<String>,
    pub secret: TurnSecret,
    pub embedded: Option<EmbeddedTurnConfig>,
}

/// The clinic's day: the expected wait's model, presence, tenants' default consents.
#[derive(Debug, Clone)]
pub struct ClinicConfig {
    pub desk: DeskSettings,
    pub consents: HashMap<TenantId, ConsentText>,
}

fn clinic(s: &raw::ClinicSettings) -> anyhow::Result<ClinicConfig> {
    if s.history == 0 || s.history > 1000 {
        bail!("clinic.history must be 1-1000");
    }
    if s.away_after_secs == 0 || s.away_after_secs > 86_400 {
        bail!("clinic.away_after_secs must be 1-86400");
    }
    let default = match s.default_consultation_secs {
        Some(0) => bail!("clinic.default_consultation_secs must be positive"),
        Some(secs) => Some(TimeDelta::seconds(i64::try_from(secs.min(86_400))?)),
        None => None,
    };
    let mut consents = HashMap::new();
    for c in &s.consents {
        let tenant = TenantId::new(c.tenant.clone())
            .map_err(|e| anyhow::anyhow!("clinic.consents tenant: {e}"))?;
        let text = ConsentText::new(c.version.clone(), c.text.clone())
            .map_err(|e| anyhow::anyhow!("clinic.consents for {tenant}: {e}"))?;
        consents.insert(tenant, text);
    }
    Ok(ClinicConfig {
        desk: DeskSettings {
            model: WaitModel {
                default,
                prior_weight: s.prior_weight,
                history: s.history,
            },
            away_after: TimeDelta::seconds(i64::try_from(s.away_after_secs)?),
        },
        consents,
    })
}

/// Everything `bedside` runs with, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database: SecretUrl,
    /// Empty: a development key is generated (and kept in the database).
    pub api_keys: Vec<ApiKey>,
    /// Base of join links, without a trailing slash; `None`: the listen address.
    pub public_url: Option<String>,
    /// Exact origins allowed on `/ws`; empty: the public URL's origin.
    pub allowed_origins: Vec<String>,
    /// Origins allowed to frame the web client (CSP `frame-ancestors`), each exactly
    /// `http(s)://HOST[:PORT]`, lowercase; empty: nobody.
    pub embed_origins: Vec<String>,
    /// How long a dropped participant keeps their place.
    pub grace: TimeDelta,
    /// How long before a visit's end its participants are warned.
    pub expiry_warning: TimeDelta,
    pub max_connections: usize,
    /// `None`: one per core.
    pub worker_threads: Option<NonZeroUsize>,
    /// STUN/TURN servers every `joined` carries as configured...
    pub ice_servers: Vec<IceServer>,
    /// ...and `stun:` URLs, handed out as one more entry.
    pub stun_urls: Vec<String>,
    pub turn: Option<TurnConfig>,
    pub log_format: LogFormat,
    pub tls: Option<TlsFiles>,
    pub handshake_timeout: Duration,
    pub signaling: SignalingConfig,
    pub limits: LimitsConfig,
    pub webhooks: Vec<WebhookConfig>,
    pub delivery: DeliveryConfig,
    /// Set when this node is one of several (`redis_url`).
    pub cluster: Option<ClusterConfig>,
    pub trusted_proxies: Vec<IpNet>,
    pub drain: DrainConfig,
    pub clinic: ClinicConfig,
    /// OTLP/HTTP collector for traces (`BEDSIDE_OTLP_ENDPOINT`); none: no traces sent.
    pub otlp_endpoint: Option<String>,
}

impl Config {
    /// Defaults, then `file` if given, then the environment; checked.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        Config::try_from(Settings::load(file)?)
    }

    /// The base of join links, without a trailing slash, for a server bound at `bound`.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(url) => url.clone(),
            None if self.tls.is_some() => format!("https://{bound}"),
            None => format!("http://{bound}"),
        }
    }

    /// Exact origins allowed on `/ws`, given the public URL.
    pub fn allowed_origins(&self, public_url: &str) -> Vec<String> {
        if self.allowed_origins.is_empty() {
            vec![origin_of(public_url)]
        } else {
            self.allowed_origins.clone()
        }
    }

    /// What every `joined` carries as is, plus the embedded server as a STUN server
    /// (`embedded`: where it listens).
    pub fn static_ice_servers(&self, embedded: Option<SocketAddr>) -> Vec<IceServer> {
        let mut servers = self.ice_servers.clone();
        let mut stun = self.stun_urls.clone();
        if let (Some(addr), Some(turn)) = (embedded, &self.turn) {
            stun.push(format!("stun:{}", turn.advertised(addr)));
        }
        if !stun.is_empty() {
            servers.push(IceServer {
                urls: stun,
                username: None,
                credential: None,
            });
        }
        servers
    }

    /// TURN servers whose credentials are minted per participant: `turn.urls`, or else
    /// the embedded server (`embedded`: where it listens).
    pub fn turn_servers(&self, embedded: Option<SocketAddr>) -> Option<TurnServers> {
        let turn = self.turn.as_ref()?;
        let mut urls = turn.urls.clone();
        if let (true, Some(addr)) = (urls.is_empty(), embedded) {
            urls.push(format!("turn:{}?transport=udp", turn.advertised(addr)));
        }
        (!urls.is_empty()).then(|| TurnServers {
            urls,
            secret: turn.secret.clone(),
        })
    }
}

impl TurnConfig {
    /// The embedded server's address as clients reach it: the relay address, on the port
    /// it listens on.
    fn advertised(&self, bound: SocketAddr) -> SocketAddr {
        let ip = self
            .embedded
            .as_ref()
            .map_or(bound.ip(), |e| e.relay_address);
        SocketAddr::new(ip, bound.port())
    }
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    format!("{scheme}://{host}")
}

/// Shortest webhook signing secret accepted.
pub const MIN_WEBHOOK_SECRET_LEN: usize = 16;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

impl TryFrom<Settings> for Config {
    type Error = anyhow::Error;

    fn try_from(s: Settings) -> anyhow::Result<Self> {
        let database = SecretUrl::new(s.database_url.clone());
        let backend = Backend::of(database.expose()).with_context(|| {
            format!(
                "database_url must be sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE, not {database:?}"
            )
        })?;
        let api_keys = api_keys(&s)?;
        // A generated development key is printed at start: fine on a developer's machine,
        // a published credential anywhere else.
        if api_keys.is_empty() && !s.listen.ip().is_loopback() {
            bail!(
                "no API keys configured and listening on {}, which is not a loopback address: \
                 set BEDSIDE_API_KEYS (or [[api_keys]] in the config file); a generated \
                 development key is only used on 127.0.0.1 or ::1",
                s.listen
            );
        }
        let cluster = cluster(&s, backend)?;
        let trusted_proxies = s
            .trusted_proxies
            .items(|s| Ok(s.to_owned()))?
            .iter()
            .map(|s| parse_net(s).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()
            .context("trusted_proxies (BEDSIDE_TRUSTED_PROXIES)")?;
        if s.drain.delay_ms > 60_000 || s.drain.jitter_ms > 60_000 {
            bail!("drain.delay_ms and drain.jitter_ms must be at most 60000");
        }
        if s.grace_seconds == 0 || s.grace_seconds > 3600 {
            bail!("grace_seconds must be 1-3600");
        }
        if s.expiry_warning_secs > 86_400 {
            bail!("expiry_warning_secs must be at most 86400");
        }
        if s.max_connections == 0 {
            bail!("max_connections must be at least 1");
        }
        if s.ws.max_message_bytes < 1024 || s.ws.queue_capacity == 0 || s.ws.rate_per_second == 0 {
            bail!("ws limits must be positive (ws.max_message_bytes at least 1024)");
        }
        if s.ws.idle_timeout_secs <= s.ws.ping_interval_secs {
            bail!("ws.idle_timeout_secs must exceed ws.ping_interval_secs");
        }
        if s.ws.ping_interval_secs == 0 || s.ws.join_timeout_secs == 0 {
            bail!("ws.ping_interval_secs and ws.join_timeout_secs must be positive");
        }
        let tls = match (&s.tls_cert, &s.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            _ => bail!("tls_cert and tls_key go together: set both or neither"),
        };
        if s.handshake_timeout_secs == 0
            || s.ws.max_per_ip == 0
            || s.ws.joins_per_ip_per_second == 0
        {
            bail!(
                "handshake_timeout_secs, ws.max_per_ip and ws.joins_per_ip_per_second must be positive"
            );
        }
        if s.api.visits_per_minute == 0 {
            bail!("api.visits_per_minute must be positive");
        }
        let log_format = match s.log_format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => bail!("log_format must be text or json"),
        };
        let webhooks = webhooks(&s, &api_keys)?;
        let d = &s.webhook_delivery;
        if d.give_up_hours < 24 || d.retry_base_ms == 0 || d.timeout_secs == 0 || d.poll_ms == 0 {
            bail!(
                "webhook_delivery retries for at least 24 hours (give_up_hours), from a positive retry_base_ms, with positive timeout_secs and poll_ms"
            );
        }
        let delivery = DeliveryConfig {
            retry_base: Duration::from_millis(d.retry_base_ms),
            retry_max: secs(d.retry_max_secs),
            give_up: TimeDelta::hours(i64::from(d.give_up_hours)),
            timeout: secs(d.timeout_secs),
            poll: Duration::from_millis(d.poll_ms),
        };
        let stun_urls = s.stun_urls.items(|s| Ok(s.to_owned()))?;
        for url in &stun_urls {
            if !(url.starts_with("stun:") || url.starts_with("stuns:")) {
                bail!("stun_urls entries start with stun: or stuns: ({url:?})");
            }
        }
        let allowed_origins = s
            .allowed_origins
            .items(|s| Ok(s.to_owned()))?
            .into_iter()
            .map(|o| o.trim_end_matches('/').to_owned())
            .collect();
        let embed_origins = embed_origins(&s).context("embed_origins (BEDSIDE_EMBED_ORIGINS)")?;
        Ok(Config {
            listen: s.listen,
            database,
            api_keys,
            public_url: s
                .public_url
                .as_deref()
                .map(|u| u.trim_end_matches('/').to_owned()),
            allowed_origins,
            embed_origins,
            grace: TimeDelta::seconds(i64::try_from(s.grace_seconds)?),
            clinic: clinic(&s.clinic)?,
            expiry_warning: TimeDelta::seconds(i64::try_from(s.expiry_warning_secs)?),
            max_connections: s.max_connections,
            worker_threads: NonZeroUsize::new(s.worker_threads),
            ice_servers: s.ice_servers.clone(),
            stun_urls,
            turn: turn(&s.turn)?,
            log_format,
            tls,
            handshake_timeout: secs(s.handshake_timeout_secs),
            signaling: SignalingConfig {
                max_message_bytes: s.ws.max_message_bytes,
                join_timeout: secs(s.ws.join_timeout_secs),
                ping_interval: secs(s.ws.ping_interval_secs),
                idle_timeout: secs(s.ws.idle_timeout_secs),
                queue_capacity: s.ws.queue_capacity,
                rate_per_second: s.ws.rate_per_second,
                rate_burst: s.ws.rate_burst,
                ..SignalingConfig::default()
            },
            limits: LimitsConfig {
                max_per_ip: s.ws.max_per_ip,
                joins_per_ip_per_second: s.ws.joins_per_ip_per_second,
                join_burst_per_ip: s.ws.join_burst_per_ip,
                visits_per_minute: s.api.visits_per_minute,
                visit_burst: s.api.visit_burst,
            },
            webhooks,
            delivery,
            cluster,
            trusted_proxies,
            drain: DrainConfig {
                delay: Duration::from_millis(s.drain.delay_ms),
                jitter: Duration::from_millis(s.drain.jitter_ms),
            },
            otlp_endpoint: otlp_endpoint(&s)?,
        })
    }
}

/// The OTLP collector, if set: an `http(s)://` base URL.
fn otlp_endpoint(s: &Settings) -> anyhow::Result<Option<String>> {
    match &s.otlp_endpoint {
        Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
            bail!("otlp_endpoint must be http(s)://HOST:PORT (OTLP over HTTP, e.g. port 4318)")
        }
        other => Ok(other.clone()),
    }
}

fn api_keys(s: &Settings) -> anyhow::Result<Vec<ApiKey>> {
    let settings = s.api_keys.items(|pair| {
        let (id, secret) = pair
            .split_once(':')
            .context("BEDSIDE_API_KEYS entries are id:secret")?;
        Ok(raw::KeySetting {
            id: id.into(),
            secret: Secret::new(secret),
            tenant: None,
            sign_links: true,
        })
    })?;
    settings
        .iter()
        .map(|k| {
            ApiKey::for_tenant(
                &k.id,
                k.secret.expose(),
                k.tenant.as_deref().unwrap_or(&k.id),
            )
            .map(|key| key.with_sign_links(k.sign_links))
            .map_err(anyhow::Error::from)
        })
        .collect()
}

/// Origins allowed to frame the web client: each exactly `http(s)://HOST[:PORT]`, as it goes
/// into a CSP header (no path, wildcard, quote or separator).
fn embed_origins(s: &Settings) -> anyhow::Result<Vec<String>> {
    s.embed_origins
        .items(|s| Ok(s.to_owned()))?
        .into_iter()
        .map(|origin| {
            let origin = origin.trim().trim_end_matches('/');
            let host = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            match host {
                Some(host)
                    if !host.is_empty()
                        && host
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)) =>
                {
                    Ok(origin.to_ascii_lowercase())
                }
                _ => bail!("{origin:?} is not an origin like https://portal.example.org"),
            }
        })
        .collect()
}

/// Each webhook is well formed, names a tenant some API key serves, and is that tenant's
/// only one.
fn webhooks(s: &Settings, keys: &[ApiKey]) -> anyhow::Result<Vec<WebhookConfig>> {
    let entries = s.webhooks.items(|entry| {
        let mut parts = entry.split_whitespace();
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some(tenant), Some(url), Some(secret), previous, None) => Ok(raw::WebhookSetting {
                tenant: tenant.into(),
                url: url.into(),
                secret: Secret::new(secret),
                previous_secret: previous.map(Secret::new),
            }),
            _ => bail!("BEDSIDE_WEBHOOKS entries are \"TENANT URL SECRET [PREVIOUS_SECRET]\""),
        }
    })?;
    let mut hooks: Vec<WebhookConfig> = Vec::new();
    for hook in entries {
        let tenant = TenantId::new(hook.tenant.clone())?;
        if !(hook.url.starts_with("https://") || hook.url.starts_with("http://")) {
            bail!("webhook URL for {tenant} must be http(s)://");
        }
        if hook.secret.expose().len() < MIN_WEBHOOK_SECRET_LEN
            || hook
                .previous_secret
                .as_ref()
                .is_some_and(|p| p.expose().len() < MIN_WEBHOOK_SECRET_LEN)
        {
            bail!(
                "webhook secret for {tenant} must have at least {MIN_WEBHOOK_SECRET_LEN} characters"
            );
        }
        if !keys.is_empty() && !keys.iter().any(|k| k.tenant == tenant) {
            bail!("webhook for {tenant}: no API key serves that tenant");
        }
        if hooks.iter().any(|h| h.tenant == tenant) {
            bail!("{tenant} has more than one webhook");
        }
        hooks.push(WebhookConfig {
            tenant,
            url: hook.url,
            secret: hook.secret,
            previous_secret: hook.previous_secret,
        });
    }
    Ok(hooks)
}

/// The cluster's settings when `redis_url` is set: it needs a database the nodes share.
fn cluster(s: &Settings, backend: Backend) -> anyhow::Result<Option<ClusterConfig>> {
    let Some(url) = &s.redis_url else {
        return Ok(None);
    };
    let url = SecretUrl::new(url.clone());
    let tls = url.expose().starts_with("rediss://");
    if !tls && !url.expose().starts_with("redis://") {
        bail!("redis_url must be redis://HOST:PORT (or rediss:// for TLS)");
    }
    if s.redis_ca_cert.is_some() && !tls {
        bail!("redis_ca_cert is for TLS: use a rediss:// redis_url");
    }
    if backend != Backend::Postgres {
        bail!(
            "redis_url (several nodes) needs a database they share: set database_url to postgres://..."
        );
    }
    if let Some(name) = &s.cluster.node_id
        && (name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
    {
        bail!("cluster.node_id must be 1-64 letters, digits, '-', '_' or '.'");
    }
    if !(300..=60_000).contains(&s.cluster.lease_ttl_ms) {
        bail!("cluster.lease_ttl_ms must be 300-60000");
    }
    let redis_ca = s
        .redis_ca_cert
        .as_ref()
        .map(|path| {
            std::fs::read(path).with_context(|| format!("reading redis_ca_cert {}", path.display()))
        })
        .transpose()?;
    Ok(Some(ClusterConfig {
        redis_url: url.expose().to_owned().into(),
        redis_ca,
        node: node_id(s.cluster.node_id.as_deref()),
        lease_ttl: Duration::from_millis(s.cluster.lease_ttl_ms),
    }))
}

/// This process's name in a cluster: the configured name (or `node`) and a random suffix
/// drawn once, here. A restarted node is a new member, so what other nodes held for its
/// previous life (participants seated with it) ends when that life's liveness lapses.
fn node_id(name: Option<&str>) -> NodeId {
    let suffix: u32 = rand::random();
    NodeId::new(format!("{}.{suffix:08x}", name.unwrap_or("node")))
}

fn turn(t: &raw::TurnSettings) -> anyhow::Result<Option<TurnConfig>> {
    let urls = t.urls.items(|s| Ok(s.to_owned()))?;
    for url in &urls {
        if !(url.starts_with("turn:") || url.starts_with("turns:")) {
            bail!("turn.urls entries start with turn: or turns: ({url:?})");
        }
    }
    let Some(secret) = &t.secret else {
        if !urls.is_empty() || t.embedded {
            bail!("turn.urls and turn.embedded need turn.secret");
        }
        return Ok(None);
    };
    let secret = TurnSecret::new(secret.expose()).context("turn.secret (BEDSIDE_TURN__SECRET)")?;
    if !t.embedded {
        if urls.is_empty() {
            bail!("turn.secret is set but there is no TURN server: set turn.urls or turn.embedded");
        }
        return Ok(Some(TurnConfig {
            urls,
            secret,
            embedded: None,
        }));
    }
    if t.realm.is_empty() || t.realm.len() > 128 {
        bail!("turn.realm must be 1-128 characters");
    }
    if t.max_allocations_per_user == 0 {
        bail!("turn.max_allocations_per_user must be at least 1");
    }
    if t.relay_address.is_none() && t.listen.ip().is_unspecified() {
        bail!(
            "turn.relay_address is needed when turn.listen is {}: the address peers reach this host at",
            t.listen
        );
    }
    let relay_ports = match (t.relay_port_min, t.relay_port_max) {
        (None, None) => None,
        (Some(low), Some(high)) if low > 0 && low <= high => Some((low, high)),
        _ => bail!("turn.relay_port_min and turn.relay_port_max go together, 1-65535, low to high"),
    };
    let listen_ip = t.listen.ip();
    Ok(Some(TurnConfig {
        urls,
        secret: secret.clone(),
        embedded: Some(EmbeddedTurnConfig {
            listen: t.listen,
            realm: t.realm.clone(),
            secret,
            relay_address: t.relay_address.unwrap_or(listen_ip),
            relay_bind: t.relay_bind.unwrap_or(listen_ip),
            relay_ports,
            max_allocations_per_user: t.max_allocations_per_user,
            allow_private_peers: t.allow_private_peers,
        }),
    }))
}

#[cfg(test)]
mod tests;
