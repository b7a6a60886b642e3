//! The `Application`: builds everything from the [`Config`], binds the listener, serves
//! until told to stop, then shuts down in order.

use crate::client_ip::ClientIp;
use crate::config::{Config, DeliveryConfig, DrainConfig, WebhookConfig};
use crate::limits::Limits;
use crate::routes;
use crate::runtime::Spread;
use crate::serve::{Server, tls_acceptor};
use crate::state::AppState;
use crate::turn_server::EmbeddedTurn;
use crate::webhooks;
use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bedside_auth::{ApiKey, KeyRing, ResumeKey};
use bedside_cluster::ClusterRouter;
use bedside_rooms::storage::{self, Storage, StorageWriter};
use bedside_rooms::{Desk, Links, LocalRouter, Outgoing, Registry, Router};
use bedside_signaling::Signaling;
use bedside_visit::CloseCode;
use chrono::Utc;
use rand::seq::SliceRandom;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for WebSocket clients to take their 1001.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for storage to take what is still queued.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(15);
/// How often deadlines of live visits are checked.
const TICK: Duration = Duration::from_secs(1);
/// How often visits nobody is in are checked for expiry.
const EXPIRY_SWEEP: Duration = Duration::from_secs(15);

pub struct Application {
    listener: TcpListener,
    /// Set when a certificate and key are configured: HTTPS and WSS.
    tls: Option<tokio_rustls::TlsAcceptor>,
    handshake_timeout: Duration,
    state: AppState,
    shutdown: CancellationToken,
    writer_task: JoinHandle<()>,
    /// Set when no API key was configured: the generated development key.
    dev_key: Option<(String, String)>,
    /// The embedded STUN/TURN server, when switched on.
    turn: Option<EmbeddedTurn>,
    webhooks: Vec<WebhookConfig>,
    delivery: DeliveryConfig,
    drain: DrainConfig,
}

fn random_secret(bytes: usize) -> Vec<u8> {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    buf
}

/// The development key used when none is configured, kept in the database so it stays
/// the same across restarts.
pub(crate) async fn dev_key(storage: &dyn Storage) -> anyhow::Result<(String, String)> {
    let fresh = URL_SAFE_NO_PAD.encode(random_secret(24));
    let stored = storage.secret("dev_api_key", fresh.as_bytes()).await?;
    Ok((
        "dev".to_owned(),
        String::from_utf8(stored).context("stored dev key is not text")?,
    ))
}

impl Application {
    /// Sets up everything `config` asks for; connections will be spread over `threads`.
    pub async fn build(config: Config, threads: Spread) -> anyhow::Result<Self> {
        // One TLS implementation for the whole process (HTTPS serving, webhook delivery).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let prometheus = crate::prometheus::install();
        let storage = storage::connect(config.database.expose())
            .await
            .with_context(|| format!("opening the database {}", config.database))?;
        let mut keys = config.api_keys.clone();
        let dev_key = if keys.is_empty() {
            Some(dev_key(&*storage).await?)
        } else {
            None
        };
        if let Some((id, secret)) = &dev_key {
            keys.push(ApiKey::new(id, secret)?);
        }
        let keys = Arc::new(KeyRing::new(keys)?);
        let resume = ResumeKey::new(&storage.secret("resume_key", &random_secret(32)).await?);

        // Bound first: links carry the public URL, which defaults to the bound address.
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let bound = listener.local_addr()?;
        let public_url = config.public_url(bound);
        let links = Arc::new(Links::new(keys.clone(), public_url.as_str().into()));

        let (writer, writer_task) = StorageWriter::spawn(storage.clone());
        let desk = Desk::new(config.clinic.desk);
        let registry = Registry::new(storage.clone(), writer.clone(), config.grace, Utc::now())
            .with_expiry_warning(config.expiry_warning)
            .with_desk(desk.feed())
            .with_links(links.clone());
        // One node, or one of several: the rest of the server only sees the router.
        let (registry, router): (Arc<Registry>, Arc<dyn Router>) = match &config.cluster {
            Some(cluster) => {
                let connections = bedside_cluster::Connections::new(cluster, storage, writer)
                    .context("setting up redis")?;
                let registry = Arc::new(registry.with_ownership(connections.leases.clone()));
                let router = ClusterRouter::new(connections, registry.clone(), desk.feed());
                // Providers' queues span the nodes: the desk shares them where the router
                // routes visits.
                desk.with_board(router.board());
                (registry, router)
            }
            None => {
                let registry = Arc::new(registry);
                (registry.clone(), Arc::new(LocalRouter::new(registry)))
            }
        };

        let allowed_origins = config.allowed_origins(&public_url);
        let embedded = config.turn.as_ref().and_then(|t| t.embedded.clone());
        let turn = match embedded {
            Some(embedded) => {
                let blocks = registry.storage().clone();
                Some(EmbeddedTurn::start(embedded, blocks).await?)
            }
            None => None,
        };
        let turn_addr = turn.as_ref().map(EmbeddedTurn::local_addr);

        let shutdown = CancellationToken::new();
        let signaling = Signaling::new(
            router.clone(),
            keys.clone(),
            resume,
            config.static_ice_servers(turn_addr),
            config.signaling.clone(),
            shutdown.clone(),
        )
        .with_turn(config.turn_servers(turn_addr))
        .with_clinic(bedside_signaling::Clinic {
            desk: desk.clone(),
            registry: registry.clone(),
        });
        let signaling = Arc::new(signaling);
        let hsts = public_url.starts_with("https://");
        let state = AppState {
            keys,
            router,
            registry,
            desk,
            links,
            consents: Arc::new(config.clinic.consents.clone()),
            signaling,
            public_url: public_url.into(),
            allowed_origins: allowed_origins.into(),
            embed_origins: config.embed_origins.clone().into(),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            limits: Arc::new(Limits::new(&config.limits)),
            client_ip: Arc::new(ClientIp::new(config.trusted_proxies.clone())),
            hsts,
            prometheus,
            tracker: TaskTracker::new(),
            threads,
            ready: Arc::new(AtomicBool::new(true)),
        };
        let tls = match &config.tls {
            Some(files) => Some(tls_acceptor(&files.cert, &files.key)?),
            None => None,
        };
        Ok(Self {
            webhooks: config.webhooks,
            delivery: config.delivery,
            drain: config.drain,
            listener,
            tls,
            handshake_timeout: config.handshake_timeout,
            state,
            shutdown,
            writer_task,
            dev_key,
            turn,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The banner printed at start: where to connect and, in development, how.
    pub fn banner(&self) -> String {
        let url = &self.state.public_url;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut text = format!("bedside listening on {scheme}://{}\n", self.local_addr());
        if let Some((id, secret)) = &self.dev_key {
            text.push_str(&format!(
                "\nNo BEDSIDE_API_KEYS configured: using a development API key (stored in the database).\n  \
                 API key:  {id}:{secret}\n  Try:      curl -u {id}:{secret} -H 'content-type: application/json' \
                 -d '{{}}' {url}/v1/visits\n"
            ));
        }
        text
    }

    /// Serves until `stop` resolves, then: readiness goes false, the listener closes, every
    /// WebSocket client is told to reconnect (1001), storage is flushed and closed.
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            listener,
            tls,
            handshake_timeout,
            state,
            shutdown,
            writer_task,
            webhooks,
            delivery,
            drain,
            turn,
            ..
        } = self;
        let heartbeat = state.signaling.config().ping_interval;
        let deliveries = webhooks::spawn(
            state.registry.storage().clone(),
            webhooks,
            delivery,
            shutdown.clone(),
        )?;
        let background = tokio::spawn(background(state.clone(), shutdown.clone(), heartbeat));
        let desk = tokio::spawn(
            state
                .desk
                .clone()
                .run(state.registry.clone(), shutdown.clone()),
        );
        // The router's own work (in a cluster: lease renewal, messages from other nodes) runs
        // on through the drain, until storage is flushed: a draining node still owns its
        // visits, and frames for them from other nodes must still arrive.
        let router_stop = CancellationToken::new();
        let router_task = tokio::spawn(state.router.clone().run(router_stop.clone()));
        let router = routes::router(state.clone());
        let server = Server {
            listener,
            tls,
            handshake_timeout,
            router,
            tracker: state.tracker.clone(),
            threads: state.threads.clone(),
        };
        let serving = tokio::spawn(server.run(shutdown.clone()));
        stop.await;
        tracing::info!("shutting down");
        state.ready.store(false, Ordering::Relaxed);
        state.router.drain();
        // The load balancer's health check notices before clients are sent away, so they
        // reconnect to another node rather than to this one.
        tokio::time::sleep(drain.delay).await;
        // The listener closes; connections still joining see the token; joined ones get a
        // 1001 in their inbox, spread over the jitter window.
        shutdown.cancel();
        serving.await.context("the accept loop failed")?;
        drain_connections(&state, drain.jitter).await;

        state.tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, state.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close in time");
        }
        joined("background", background).await;
        joined("desk", desk).await;
        if let Some(turn) = turn {
            turn.stop().await;
        }
        for delivery in deliveries {
            joined("webhook delivery", delivery).await;
        }
        // The writer keeps changes while the database is unreachable; at shutdown it gets
        // a bounded time to write them, so an outage cannot hold the process forever.
        if tokio::time::timeout(FLUSH_TIMEOUT, state.registry.writer().flush())
            .await
            .is_err()
        {
            tracing::error!("the database is unreachable: changes not yet written are lost");
        }
        state.router.leave().await;
        router_stop.cancel();
        joined("router", router_task).await;
        state.registry.storage().close().await;
        writer_task.abort();
        tracing::info!("stopped");
        Ok(())
    }
}

/// Tells every connected client to reconnect (1001), spread evenly over `window`. What
/// was queued for a client before its turn is written first.
async fn drain_connections(state: &AppState, window: Duration) {
    let mut outboxes = state.router.outboxes();
    if outboxes.is_empty() {
        return;
    }
    outboxes.shuffle(&mut rand::rng());
    let start = tokio::time::Instant::now();
    let n = outboxes.len() as u32;
    for (i, outbox) in outboxes.into_iter().enumerate() {
        tokio::time::sleep_until(start + window * i as u32 / n).await;
        outbox.push(Outgoing::Close(CloseCode::GoingAway));
    }
}

/// Deadlines of live visits every second; a heartbeat to every connection each ping
/// interval; expiry of idle visits every few seconds; metrics upkeep (histogram samples
/// into buckets) every few seconds.
async fn background(state: AppState, shutdown: CancellationToken, heartbeat: Duration) {
    let mut tick = tokio::time::interval(TICK);
    let mut beat = tokio::time::interval(heartbeat);
    let mut sweep = tokio::time::interval(EXPIRY_SWEEP);
    let mut upkeep = tokio::time::interval(crate::prometheus::UPKEEP);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => state.registry.tick(Utc::now()),
            _ = upkeep.tick() => state.prometheus.run_upkeep(),
            _ = beat.tick() => {
                for outbox in state.router.outboxes() {
                    outbox.push(Outgoing::Heartbeat);
                }
            }
            _ = sweep.tick() => {
                if let Err(e) = state.registry.expire_due(Utc::now()).await {
                    tracing::warn!(error = %e, "expiry sweep failed");
                }
                state.limits.forget_idle();
            }
        }
    }
}

/// Waits for a task that shutdown stopped; a task that panicked or was cancelled is logged,
/// not ignored.
async fn joined(what: &str, task: JoinHandle<()>) {
    if let Err(e) = task.await {
        tracing::error!(task = what, error = %e, "a background task failed");
    }
}
