//! [`ClusterRouter`]: the routing seam for a node of several. A visit runs on the node
//! holding its lease; this node runs the visits it holds in its own registry, seats its
//! participants of other visits with their owners, and asks owners to do what the API asks.
//!
//! [`ClusterRouter::run`] keeps it going: renews leases (stopping at once for visits
//! another node took), drops sessions with nodes that died, and resets cross-node sessions
//! when messages may have been lost.

use crate::board::RedisBoard;
use crate::bus::{self, ApiDone, ApiOp, Bus, Wire};
use crate::forward::Forwarding;
use crate::lease::Leases;
use crate::node::NodeId;
use crate::owner::Owned;
use async_trait::async_trait;
use bedside_auth::{KeyId, TenantId};
use bedside_rooms::storage::{Fencing, StorageWriter};
use bedside_rooms::{DeskFeed, LocalSeat, NextConnId, Outbox, Registry, RoomError, Router, Seat};
use bedside_visit::{
    Actor, ConnId, JoinRequest, ParticipantId, ParticipantView, ProviderId, Refusal, VisitId,
    VisitRecord, VisitStatus,
};
use chrono::Utc;
use dashmap::DashMap;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Longest an owner waits for what it did to reach storage before it answers.
const WRITTEN_WITHIN: Duration = Duration::from_secs(5);
/// How often a join or API action looks for a visit's owner again while there is none.
const RETRY: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid redis URL: {0}")]
    Url(#[from] redis::RedisError),
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://` or, over TLS, `rediss://`; may carry a password, so it never prints.
    pub redis_url: SecretString,
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
        storage: Arc<dyn Fencing>,
        writer: StorageWriter,
    ) -> Result<Self, ClusterError> {
        // Frames between nodes carry names, SDP and chat: TLS where Redis is not on a
        // private link (rediss://).
        let url = config.redis_url.expose_secret();
        let client = match &config.redis_ca {
            Some(ca) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            )?,
            None => redis::Client::open(url)?,
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

pub struct ClusterRouter {
    node: NodeId,
    bus: Bus,
    /// API requests sent to other nodes, awaiting their answer.
    asked: DashMap<u64, oneshot::Sender<Result<ApiDone, RoomError>>>,
    next_request: AtomicU64,
    registry: Arc<Registry>,
    leases: Arc<Leases>,
    forwarding: Arc<Forwarding>,
    owned: Arc<Owned>,
    client: redis::Client,
    /// Set once the node is shutting down: it takes no new participants from other nodes,
    /// which wait for its leases to be released instead.
    draining: AtomicBool,
    failed: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<()>>>,
    /// Providers' queues shared with the other nodes (the desk's board).
    board: Arc<RedisBoard>,
}

impl ClusterRouter {
    /// The router; `desk` is where the board it shares providers' queues through (see
    /// [`ClusterRouter::board`]) reports what other nodes publish.
    pub fn new(connections: Connections, registry: Arc<Registry>, desk: DeskFeed) -> Arc<Self> {
        let (failed_tx, failed_rx) = mpsc::unbounded_channel();
        let (bus, publisher) = Bus::new(connections.manager.clone(), failed_tx);
        tokio::spawn(publisher);
        let (board, worker) = RedisBoard::new(
            connections.node.clone(),
            connections.manager.clone(),
            desk,
            registry.clone(),
        );
        tokio::spawn(worker);
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
            board,
        })
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// Where the node's desk shares providers' queues with the other nodes.
    pub fn board(&self) -> Arc<RedisBoard> {
        self.board.clone()
    }

    /// How long a join or API action may wait for a visit's owner: a dead owner's
    /// liveness lapses at most one lease after the join arrives (it renewed last at most
    /// then); the node that takes the visit over may first wait for its own renewal (a
    /// third of a lease) and then loads the visit; a second lease covers that, and a second
    /// more a slow database. 7 s with the default 3 s lease (docs/operations.md).
    pub fn owner_wait(&self) -> Duration {
        owner_wait(self.leases.ttl())
    }

    /// When an action starting now must have found its owner.
    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.owner_wait()
    }

    /// Does `here` unless another node owns the visit, in which case `there` asks the
    /// owner. A visit whose owner just died (its lease not yet lapsed) or that nobody owns
    /// for a moment is looked for again until `deadline` ([`Self::owner_wait`] from the
    /// start); `there` is given it too, so no single attempt outlasts it.
    async fn on_owner<T, H, HF, O, OF>(
        &self,
        deadline: tokio::time::Instant,
        here: H,
        there: O,
    ) -> Result<T, RoomError>
    where
        H: Fn() -> HF,
        HF: Future<Output = Result<T, RoomError>>,
        O: Fn() -> OF,
        OF: Future<Output = Result<T, RoomError>>,
    {
        loop {
            match here().await {
                Err(RoomError::Elsewhere) => {}
                other => return other,
            }
            match there().await {
                Err(RoomError::Elsewhere | RoomError::Unavailable)
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(RETRY).await;
                }
                // Nobody to act for the visit in time: a retry later may find its owner.
                Err(RoomError::Elsewhere) => return Err(RoomError::Unavailable),
                other => return other,
            }
        }
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
                credential,
            } => {
                if self.draining.load(Ordering::Relaxed) {
                    self.bus.send(
                        &from,
                        &Wire::JoinResult {
                            session,
                            result: Err(RoomError::Unavailable),
                        },
                    );
                    return;
                }
                self.owned.joining((from.clone(), session));
                let owned = self.owned.clone();
                let req = JoinRequest {
                    conn: ConnId::next(),
                    identity,
                    role,
                    name,
                    new_id,
                    credential,
                };
                tokio::spawn(async move {
                    owned.join(from, session, visit, tenant, req).await;
                });
            }
            Wire::Frame {
                from,
                session,
                frame,
            } => self.owned.frame(&(from, session), &frame),
            Wire::Leave { from, session } => self.owned.leave(&(from, session)),
            Wire::JoinResult { session, result } => self.forwarding.join_result(session, result),
            Wire::Deliver { session, item } => self.forwarding.deliver(session, item),
            Wire::Api { from, request, op } => {
                let registry = self.registry.clone();
                let bus = self.bus.clone();
                tokio::spawn(async move {
                    let result = act_here(&registry, op).await;
                    bus.send(&from, &Wire::ApiResult { request, result });
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
    async fn ask_owner(&self, op: ApiOp) -> Result<ApiDone, RoomError> {
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
                from: self.node.clone(),
                request,
                op,
            },
        );
        // Longer than the owner's own wait for storage, so a slow answer is not taken for
        // none and the request repeated.
        let answer = tokio::time::timeout(WRITTEN_WITHIN + Duration::from_secs(1), rx).await;
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
        self.board.resync();
    }

    /// Renews this node's liveness every sixth of a lease, until `shutdown`. Claims are
    /// trusted for two thirds of a lease from a renewal's start, so a renewal may come up
    /// to half a lease late (a starved runtime, a slow Redis) before inputs have to wait.
    async fn renew(self: Arc<Self>, shutdown: CancellationToken) {
        let mut renew = tokio::time::interval(self.leases.ttl() / 6);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = renew.tick() => {}
            }
            self.bus.send(&self.node, &Wire::Heartbeat);
            let renewal = self.leases.renew().await;
            for visit in &renewal.gone {
                self.registry.evict(*visit);
            }
            self.leases.vouch(&renewal);
            self.leases.sweep().await;
        }
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
}

/// See [`ClusterRouter::owner_wait`].
fn owner_wait(lease_ttl: Duration) -> Duration {
    lease_ttl * 2 + Duration::from_secs(1)
}

/// Does an API request for a visit this node owns; answers once it is written.
async fn act_here(registry: &Registry, op: ApiOp) -> Result<ApiDone, RoomError> {
    let now = Utc::now();
    match op {
        ApiOp::End { tenant, visit, key } => {
            registry.end(&tenant, visit, Actor::Api(key), now).await?;
            confirm_ended(registry, &tenant, visit).await?;
        }
        ApiOp::Remove {
            tenant,
            visit,
            identity,
            key,
        } => {
            registry
                .remove(&tenant, visit, &identity, Actor::Api(key), now)
                .await?;
            written(registry).await?;
        }
        ApiOp::Transfer {
            tenant,
            visit,
            provider,
            key,
        } => {
            registry
                .transfer(&tenant, visit, provider, Actor::Api(key), now)
                .await?;
            written(registry).await?;
        }
        ApiOp::Participants { visit } => {
            return match registry.participants(visit) {
                Some(participants) => Ok(ApiDone::Participants { participants }),
                None => Err(RoomError::Elsewhere),
            };
        }
    }
    Ok(ApiDone::Done)
}

/// Waits until storage holds everything this node's visits did so far.
async fn written(registry: &Registry) -> Result<(), RoomError> {
    let writer = registry.writer();
    if writer.wait_within(writer.position(), WRITTEN_WITHIN).await {
        Ok(())
    } else {
        Err(RoomError::Unavailable)
    }
}

/// An end counts once storage says the visit ended: a node that lost the visit a moment
/// ago has its end refused there (the epoch moved), and the caller should retry.
async fn confirm_ended(
    registry: &Registry,
    tenant: &TenantId,
    visit: VisitId,
) -> Result<VisitRecord, RoomError> {
    written(registry).await?;
    match registry.storage().visit(visit).await {
        Ok(Some(record)) if &record.tenant == tenant => {
            if record.status == VisitStatus::Ended {
                Ok(record)
            } else {
                Err(RoomError::Unavailable)
            }
        }
        Ok(_) => Err(Refusal::VisitNotFound.into()),
        Err(e) => {
            tracing::warn!(error = %e, "storage unavailable");
            Err(RoomError::Unavailable)
        }
    }
}

#[async_trait]
impl Router for ClusterRouter {
    async fn join(
        &self,
        visit: VisitId,
        tenant: &TenantId,
        req: JoinRequest,
        outbox: Arc<dyn Outbox>,
    ) -> Result<(Seat, ParticipantId), RoomError> {
        let conn = req.conn;
        let here = || async {
            let (handle, participant) = self
                .registry
                .join(visit, tenant, req.clone(), outbox.clone(), Utc::now())
                .await?;
            let seat = LocalSeat::new(self.registry.clone(), handle, conn);
            Ok((Seat::Local(seat), participant))
        };
        let deadline = self.deadline();
        let there = || {
            self.forwarding
                .join(visit, tenant, &req, outbox.clone(), deadline)
        };
        self.on_owner(deadline, here, there).await
    }

    async fn end(
        &self,
        tenant: &TenantId,
        key: &KeyId,
        visit: VisitId,
    ) -> Result<VisitRecord, RoomError> {
        let here = || {
            let by = Actor::Api(key.clone());
            async move {
                self.registry
                    .end(tenant, visit, by, Utc::now())
                    .await
                    .map(drop)
            }
        };
        let there = || async {
            self.ask_owner(ApiOp::End {
                tenant: tenant.clone(),
                visit,
                key: key.clone(),
            })
            .await
            .map(drop)
        };
        self.on_owner(self.deadline(), here, there).await?;
        confirm_ended(&self.registry, tenant, visit).await
    }

    async fn remove(
        &self,
        tenant: &TenantId,
        key: &KeyId,
        visit: VisitId,
        identity: &str,
    ) -> Result<(), RoomError> {
        let here = || {
            let by = Actor::Api(key.clone());
            async move {
                self.registry
                    .remove(tenant, visit, identity, by, Utc::now())
                    .await
            }
        };
        let there = || async {
            self.ask_owner(ApiOp::Remove {
                tenant: tenant.clone(),
                visit,
                identity: identity.to_owned(),
                key: key.clone(),
            })
            .await
            .map(drop)
        };
        self.on_owner(self.deadline(), here, there).await
    }

    async fn transfer(
        &self,
        tenant: &TenantId,
        key: &KeyId,
        visit: VisitId,
        provider: ProviderId,
    ) -> Result<(), RoomError> {
        let here = || {
            let by = Actor::Api(key.clone());
            let provider = provider.clone();
            async move {
                self.registry
                    .transfer(tenant, visit, provider, by, Utc::now())
                    .await
                    .map(drop)
            }
        };
        let there = || async {
            self.ask_owner(ApiOp::Transfer {
                tenant: tenant.clone(),
                visit,
                provider: provider.clone(),
                key: key.clone(),
            })
            .await
            .map(drop)
        };
        self.on_owner(self.deadline(), here, there).await
    }

    async fn participants(&self, visit: VisitId) -> Vec<ParticipantView> {
        if let Some(here) = self.registry.participants(visit) {
            return here;
        }
        match self.ask_owner(ApiOp::Participants { visit }).await {
            Ok(ApiDone::Participants { participants }) => participants,
            _ => Vec::new(),
        }
    }

    fn outboxes(&self) -> Vec<Arc<dyn Outbox>> {
        let mut outboxes = self.registry.outboxes();
        outboxes.extend(self.forwarding.outboxes());
        outboxes
    }

    /// Whether Redis answered the last renewal.
    fn ready(&self) -> bool {
        self.leases.reachable()
    }

    /// Listens for other nodes, renews leases, and watches for dead nodes and refused
    /// writes, until `shutdown`.
    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        tracing::info!(node = %self.node, "running as a cluster node");
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
            let (a, b, board) = (self.clone(), self.clone(), self.board.clone());
            tokio::spawn(bus::listen(
                self.client.clone(),
                self.node.clone(),
                move |wire| a.deliver(wire),
                move |msg| board.heard(msg),
                move || b.reset(),
                self.leases.ttl(),
                shutdown.clone(),
            ))
        };
        // Renewals run in a task of their own: nothing else this loop awaits (a slow
        // look at other nodes, an eviction) may hold one up on a busy machine.
        let renewals = tokio::spawn(self.clone().renew(shutdown.clone()));
        // Peers are looked at more often than leases are renewed: a dead node's
        // participants here are sent on to its visits' next owner soon after its liveness
        // lapses (one MGET per look).
        let mut peers = tokio::time::interval(self.leases.ttl() / 12);
        peers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
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
        if let Err(e) = listener.await {
            tracing::error!(error = %e, "the cluster listener failed");
        }
        if let Err(e) = renewals.await {
            tracing::error!(error = %e, "lease renewals failed");
        }
    }

    /// Shutdown has begun: participants from other nodes are no longer taken on.
    fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Shutdown, once storage is flushed: gives up every lease so other nodes take the
    /// visits at once.
    async fn leave(&self) {
        self.leases.release_all().await;
        // The last messages (closes for remote participants) go out through the publisher.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Leases held, remote participants served, participants seated elsewhere.
    fn record_metrics(&self) {
        metrics::gauge!("bedside_cluster_leases").set(self.leases.held() as f64);
        metrics::gauge!("bedside_cluster_remote_participants").set(self.owned.sessions() as f64);
        metrics::gauge!("bedside_cluster_seated_elsewhere").set(self.forwarding.seats() as f64);
    }
}
