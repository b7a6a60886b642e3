//! Several `bedside` nodes as one service, on Redis and PostgreSQL.
//!
//! - [`lease`]: each live visit is owned by one node at a time through a Redis lease; taking
//!   a visit over raises its epoch in the database, and writes carrying an older epoch are
//!   refused there. The registry asks the leases before it loads a visit.
//! - [`bus`]: nodes talk over Redis pub/sub, one channel per node.
//! - [`forward`]: a participant connected here, in a visit another node owns, is seated
//!   with the owner; its frames are published there and the owner's notices come back.
//! - [`owner`]: the other half: remote participants of visits this node owns.
//!
//! [`Cluster::run`] keeps it going: renews leases (stopping at once for visits another
//! node took), drops sessions with nodes that died, and resets cross-node sessions when
//! messages may have been lost. Nothing here is needed for a visit's own rules: the visit
//! state machine runs on its owner, unaware of where its participants are connected.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod bus;
pub mod forward;
pub mod lease;
pub mod owner;

use bedside_auth::TenantId;
use bedside_rooms::storage::{Storage, StorageWriter};
use bedside_rooms::{Actor, RoomError};
use bedside_rooms::{JoinRequest, Outgoing, Registry};
pub use bus::{ApiDone, ApiOp};
use bus::{Bus, Wire};
use dashmap::DashMap;
use forward::Forwarding;
use lease::Leases;
use owner::Owned;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Does an API request for a visit this node owns; answers once it is written.
async fn act_here(registry: &Registry, op: ApiOp) -> Result<ApiDone, RoomError> {
    let now = chrono::Utc::now();
    let tenant = |t: String| TenantId::new(t).map_err(|_| RoomError::VisitNotFound);
    let mut ended = None;
    let done = match op {
        ApiOp::End {
            tenant: t,
            visit,
            key,
        } => {
            registry
                .end(&tenant(t)?, visit, Actor::api(&key), now)
                .await?;
            ended = Some(visit);
            ApiDone::Done
        }
        ApiOp::Remove {
            tenant: t,
            visit,
            identity,
            key,
        } => {
            registry
                .remove(&tenant(t)?, visit, &identity, Actor::api(&key), now)
                .await?;
            ApiDone::Done
        }
        ApiOp::Participants { visit } => {
            return match registry.participants(visit) {
                Some(participants) => Ok(ApiDone::Participants { participants }),
                None => Err(RoomError::Elsewhere),
            };
        }
    };
    let writer = registry.writer();
    if !writer
        .wait_within(writer.position(), Duration::from_secs(5))
        .await
    {
        return Err(RoomError::Unavailable);
    }
    // Written, or refused because another node took the visit over a moment ago.
    if let Some(visit) = ended {
        let stored = registry.storage().visit(visit).await;
        if !matches!(stored, Ok(Some(ref r)) if r.status == bedside_rooms::VisitStatus::Ended) {
            return Err(RoomError::Unavailable);
        }
    }
    Ok(done)
}

/// A node's name in the cluster.
pub type NodeId = Arc<str>;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid redis URL: {0}")]
    Url(#[from] redis::RedisError),
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://` or, over TLS, `rediss://`.
    pub redis_url: String,
    /// PEM certificates to verify a `rediss://` server with, instead of the system's roots.
    pub redis_ca: Option<Vec<u8>>,
    pub node: NodeId,
    /// How long a lease lasts without renewal: how long a dead owner's visits wait.
    pub lease_ttl: Duration,
}

/// Redis connections for a node: built before the registry, which needs the leases.
pub struct Connections {
    client: redis::Client,
    manager: redis::aio::ConnectionManager,
    pub leases: Arc<Leases>,
    node: NodeId,
}

impl Connections {
    /// Sets up (lazily: Redis need not be up yet) the connections and the leases.
    pub fn new(
        config: &ClusterConfig,
        storage: Arc<dyn Storage>,
        writer: StorageWriter,
    ) -> Result<Self, ClusterError> {
        // Frames between nodes carry names, SDP and chat: TLS where Redis is not on a
        // private link (rediss://).
        let client = match &config.redis_ca {
            Some(ca) => redis::Client::build_with_tls(
                config.redis_url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            )?,
            None => redis::Client::open(config.redis_url.as_str())?,
        };
        let timeout = (config.lease_ttl / 3).max(Duration::from_millis(200));
        let manager = redis::aio::ConnectionManager::new_lazy_with_config(
            client.clone(),
            redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500)),
        )?;
        let leases = Leases::new(
            manager.clone(),
            config.node.clone(),
            storage,
            writer,
            config.lease_ttl,
        );
        Ok(Self {
            client,
            manager,
            leases,
            node: config.node.clone(),
        })
    }
}

pub struct Cluster {
    node: NodeId,
    bus: Bus,
    /// API requests sent to other nodes, awaiting their answer.
    asked: DashMap<u64, oneshot::Sender<Result<ApiDone, RoomError>>>,
    next_request: AtomicU64,
    registry: Arc<Registry>,
    leases: Arc<Leases>,
    pub forwarding: Arc<Forwarding>,
    owned: Arc<Owned>,
    client: redis::Client,
    /// Set once the node is shutting down: it takes no new participants from other nodes,
    /// which wait for its leases to be released instead.
    draining: AtomicBool,
    failed: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<()>>>,
}

impl Cluster {
    pub fn new(connections: Connections, registry: Arc<Registry>) -> Arc<Self> {
        let (failed_tx, failed_rx) = mpsc::unbounded_channel();
        let (bus, publisher) = Bus::new(connections.manager.clone(), failed_tx);
        tokio::spawn(publisher);
        let leases = connections.leases;
        let forwarding = Arc::new(Forwarding::new(
            connections.node.clone(),
            bus.clone(),
            leases.clone(),
        ));
        Arc::new(Self {
            asked: DashMap::new(),
            next_request: AtomicU64::new(0),
            bus: bus.clone(),
            owned: Arc::new(Owned::new(registry.clone(), bus)),
            node: connections.node,
            registry,
            leases,
            forwarding,
            client: connections.client,
            draining: AtomicBool::new(false),
            failed: parking_lot::Mutex::new(Some(failed_rx)),
        })
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// Whether Redis answered the last renewal.
    pub fn reachable(&self) -> bool {
        self.leases.reachable()
    }

    /// How long a join may wait for a dead owner's lease to lapse.
    pub fn owner_wait(&self) -> Duration {
        self.leases.ttl() * 2 + Duration::from_secs(1)
    }

    fn deliver(&self, wire: Wire) {
        match wire {
            Wire::Join {
                from,
                session,
                visit,
                tenant,
                identity,
                role,
                name,
                new_id,
            } => {
                if self.draining.load(Ordering::Relaxed) {
                    self.bus.send(
                        &from.into(),
                        &Wire::JoinResult {
                            session,
                            result: Err(RoomError::Unavailable),
                        },
                    );
                    return;
                }
                let from: NodeId = from.into();
                self.owned.joining((from.clone(), session));
                let owned = self.owned.clone();
                let req = JoinRequest {
                    conn: bedside_rooms::ConnId::next(),
                    identity,
                    role,
                    name,
                    new_id,
                };
                tokio::spawn(async move {
                    owned.join(from, session, visit, tenant, req).await;
                });
            }
            Wire::Frame {
                from,
                session,
                frame,
            } => self.owned.frame(&(from.into(), session), &frame),
            Wire::Leave { from, session } => self.owned.leave(&(from.into(), session)),
            Wire::JoinResult { session, result } => self.forwarding.join_result(session, result),
            Wire::Deliver { session, item } => self.forwarding.deliver(session, item),
            Wire::Api { from, request, op } => {
                let registry = self.registry.clone();
                let bus = self.bus.clone();
                tokio::spawn(async move {
                    let result = act_here(&registry, op).await;
                    bus.send(&from.into(), &Wire::ApiResult { request, result });
                });
            }
            Wire::ApiResult { request, result } => {
                if let Some((_, tx)) = self.asked.remove(&request) {
                    let _ = tx.send(result);
                }
            }
            Wire::Heartbeat => {}
        }
    }

    /// Has the visit's owner do what the API asks. [`RoomError::Elsewhere`] means nobody
    /// owns it now: do it here.
    pub async fn ask_owner(&self, op: ApiOp) -> Result<ApiDone, RoomError> {
        let owner = match self.leases.owner(op.visit()).await? {
            Some(owner) if owner != self.node => owner,
            _ => return Err(RoomError::Elsewhere),
        };
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.asked.insert(request, tx);
        self.bus.send(
            &owner,
            &Wire::Api {
                from: self.node.to_string(),
                request,
                op,
            },
        );
        // Longer than the owner's own wait for storage (5 s), so a slow answer is not taken
        // for none and the request repeated.
        let answer = tokio::time::timeout(Duration::from_secs(6), rx).await;
        self.asked.remove(&request);
        match answer {
            Ok(Ok(result)) => result,
            _ => Err(RoomError::Unavailable),
        }
    }

    /// Messages may have been lost: every cross-node session starts over (the closes this
    /// sends are the first messages published again).
    fn reset(&self) {
        self.bus.mend();
        self.forwarding.unseat(None);
        self.owned.drop_sessions(None);
    }

    /// Runs the node's part of the cluster until `shutdown`: listens for other nodes,
    /// renews leases, and watches for dead nodes and refused writes.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut fenced = self
            .registry
            .writer()
            .take_fenced()
            .unwrap_or_else(|| mpsc::unbounded_channel().1);
        let mut failed = self
            .failed
            .lock()
            .take()
            .unwrap_or_else(|| mpsc::unbounded_channel().1);
        let listener = {
            let (a, b) = (self.clone(), self.clone());
            tokio::spawn(bus::listen(
                self.client.clone(),
                self.node.clone(),
                move |wire| a.deliver(wire),
                move || b.reset(),
                self.leases.ttl(),
                shutdown.clone(),
            ))
        };
        let mut renew = tokio::time::interval(self.leases.ttl() / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Peers are looked at more often than leases are renewed: a dead node's
        // participants here are sent on to its visits' next owner soon after its liveness
        // lapses (one MGET per look).
        let mut peers = tokio::time::interval(self.leases.ttl() / 12);
        peers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = renew.tick() => {
                    self.bus.send(&self.node, &Wire::Heartbeat);
                    let renewal = self.leases.renew().await;
                    for visit in &renewal.gone {
                        self.registry.evict(*visit);
                    }
                    self.leases.vouch(&renewal);
                }
                _ = peers.tick() => self.check_peers().await,
                Some(visit) = fenced.recv() => {
                    self.registry.evict(visit);
                    self.leases.forget(visit).await;
                }
                Some(()) = failed.recv() => {
                    // Drain the burst: one reset covers it.
                    while failed.try_recv().is_ok() {}
                    self.reset();
                }
            }
        }
        let _ = listener.await;
    }

    /// Ends sessions with nodes that stopped renewing their liveness (killed, lost).
    /// One look (one MGET) covers both sides: owners this node's participants are seated
    /// with, and nodes whose participants sit in visits this node owns.
    async fn check_peers(&self) {
        let mut peers = self.forwarding.owners();
        peers.extend(self.owned.nodes());
        peers.sort_unstable();
        peers.dedup();
        let Ok(alive) = self.leases.alive(&peers).await else {
            return;
        };
        for (peer, alive) in peers.iter().zip(alive) {
            if !alive {
                tracing::warn!(node = %peer, "node is gone; cross-node sessions with it end");
                self.forwarding.unseat(Some(peer));
                self.owned.drop_sessions(Some(peer));
            }
        }
    }

    /// Sends `item` to every participant connected here whose visit runs elsewhere.
    pub fn to_every_seat(&self, item: impl Fn() -> Outgoing) {
        self.forwarding.to_every_seat(item);
    }

    /// Shutdown has begun: participants from other nodes are no longer taken on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Shutdown, once storage is flushed: gives up every lease so other nodes take the
    /// visits at once.
    pub async fn leave(&self) {
        self.leases.release_all().await;
        // The last messages (closes for remote participants) go out through the publisher.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// For metrics: leases held, remote participants served, participants seated elsewhere.
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.leases.held(),
            self.owned.sessions(),
            self.forwarding.seats(),
        )
    }
}
