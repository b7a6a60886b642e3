//! Where a visit runs, behind one interface: the rest of the server joins, ends, removes
//! and lists participants through a [`Router`] and never asks whether the visit runs on
//! this node or on another one.
//!
//! [`LocalRouter`] is a single node: every visit runs here, in the [`Registry`]. The
//! cluster's router (`bedside_cluster::ClusterRouter`) runs a visit on whichever node holds
//! its lease and reaches the others over Redis; waiting for a dead owner's lease to lapse
//! and confirming an end in storage happen there, once.

use crate::error::RoomError;
use crate::registry::{Outbox, Registry, VisitHandle};
use async_trait::async_trait;
use bedside_auth::{KeyId, TenantId};
use bedside_visit::{
    Actor, ConnId, Input, JoinRequest, ParticipantId, ParticipantView, ProviderId, VisitId,
    VisitRecord,
};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A joined connection's place in its visit: where its inputs go.
pub enum Seat {
    /// The visit runs on this node.
    Local(LocalSeat),
    /// The visit runs on another node of the cluster.
    Remote(Box<dyn RemoteSeat>),
}

/// A seat in a visit this node runs: no map lookup per frame.
pub struct LocalSeat {
    registry: Arc<Registry>,
    visit: VisitHandle,
    conn: ConnId,
}

impl LocalSeat {
    pub fn new(registry: Arc<Registry>, visit: VisitHandle, conn: ConnId) -> Self {
        Self {
            registry,
            visit,
            conn,
        }
    }
}

/// A participant connected here to a visit another node runs.
pub trait RemoteSeat: Send + Sync + 'static {
    /// Passes on a client frame that decoded to an input for the visit; the owner answers
    /// a refusal through the participant's outbox.
    fn forward(&self, frame: &str);
    /// The connection is gone.
    fn leave(&self);
    fn expires_at(&self) -> DateTime<Utc>;
}

impl Seat {
    /// Feeds `input`, which the client sent as `frame`. A remote seat passes the frame on
    /// as it came; its refusals arrive later through the outbox, so here it always succeeds.
    pub fn send(&self, input: Input, frame: &str, now: DateTime<Utc>) -> Result<(), RoomError> {
        match self {
            Seat::Local(seat) => seat.registry.handle(&seat.visit, input, now),
            Seat::Remote(seat) => {
                seat.forward(frame);
                Ok(())
            }
        }
    }

    /// Whether an input sent now is acted on at once: false while this node cannot vouch
    /// for its claim on the visit (a lease renewal is late). A remote seat's owner sees to
    /// that itself.
    pub fn fresh(&self) -> bool {
        match self {
            Seat::Local(seat) => seat.registry.fresh(),
            Seat::Remote(_) => true,
        }
    }

    /// Waits, a bounded time, until [`Seat::fresh`]: a frame read while a renewal is late
    /// is handled once the claim is confirmed rather than refused.
    pub async fn vouched(&self) {
        if let Seat::Local(seat) = self {
            seat.registry.vouched().await;
        }
    }

    /// The connection is gone: its place enters the grace period.
    pub fn leave(&self, now: DateTime<Utc>) {
        match self {
            Seat::Local(seat) => seat.registry.disconnect(&seat.visit, seat.conn, now),
            Seat::Remote(seat) => seat.leave(),
        }
    }

    /// When the visit ends by itself: credentials handed to its participants need not
    /// outlive it.
    pub fn expires_at(&self) -> DateTime<Utc> {
        match self {
            Seat::Local(seat) => seat.visit.expires_at(),
            Seat::Remote(seat) => seat.expires_at(),
        }
    }
}

/// Where visits run, for one node or many.
#[async_trait]
pub trait Router: Send + Sync + 'static {
    /// Joins a verified participant's connection to a visit wherever it runs. On success
    /// the visit's notices for it arrive in `outbox` until it leaves or is closed.
    async fn join(
        &self,
        visit: VisitId,
        tenant: &TenantId,
        req: JoinRequest,
        outbox: Arc<dyn Outbox>,
    ) -> Result<(Seat, ParticipantId), RoomError>;

    /// Ends a visit for its tenant's backend, calling with API key `key`; answers with the
    /// visit as stored once the end is. Ending an ended visit is not an error.
    async fn end(
        &self,
        tenant: &TenantId,
        key: &KeyId,
        visit: VisitId,
    ) -> Result<VisitRecord, RoomError>;

    /// Removes a participant, by identity, for the tenant's backend.
    async fn remove(
        &self,
        tenant: &TenantId,
        key: &KeyId,
        visit: VisitId,
        identity: &str,
    ) -> Result<(), RoomError>;

    /// Moves a visit to another provider's queue, for the tenant's backend; nobody in it
    /// moves. Answers once the transfer is stored.
    async fn transfer(
        &self,
        tenant: &TenantId,
        key: &KeyId,
        visit: VisitId,
        provider: ProviderId,
    ) -> Result<(), RoomError>;

    /// Who is in a visit now, wherever it runs; nobody if it runs nowhere.
    async fn participants(&self, visit: VisitId) -> Vec<ParticipantView>;

    /// Every outbox this node serves (its connections, and in a cluster the participants
    /// of other nodes in visits it runs): heartbeats and the drain's 1001s go to these.
    fn outboxes(&self) -> Vec<Arc<dyn Outbox>>;

    /// Whether this node can route now (in a cluster: Redis answers).
    fn ready(&self) -> bool {
        true
    }

    /// Background work until `shutdown` (in a cluster: leases, messages from other nodes).
    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        shutdown.cancelled().await;
    }

    /// Shutdown has begun: take on nothing new from other nodes.
    fn drain(&self) {}

    /// Shutdown, once storage is flushed: hand this node's visits to the others at once.
    async fn leave(&self) {}

    /// Publishes the router's own gauges to the metrics registry.
    fn record_metrics(&self) {}
}

/// One node: every visit runs here.
pub struct LocalRouter {
    registry: Arc<Registry>,
}

impl LocalRouter {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }
}

#[async_trait]
impl Router for LocalRouter {
    async fn join(
        &self,
        visit: VisitId,
        tenant: &TenantId,
        req: JoinRequest,
        outbox: Arc<dyn Outbox>,
    ) -> Result<(Seat, ParticipantId), RoomError> {
        let conn = req.conn;
        let (handle, participant) = self
            .registry
            .join(visit, tenant, req, outbox, Utc::now())
            .await?;
        let seat = LocalSeat::new(self.registry.clone(), handle, conn);
        Ok((Seat::Local(seat), participant))
    }

    async fn end(
        &self,
        tenant: &TenantId,
        key: &KeyId,
        visit: VisitId,
    ) -> Result<VisitRecord, RoomError> {
        let by = Actor::Api(key.clone());
        self.registry.end(tenant, visit, by, Utc::now()).await
    }

    async fn remove(
        &self,
        tenant: &TenantId,
        key: &KeyId,
        visit: VisitId,
        identity: &str,
    ) -> Result<(), RoomError> {
        let by = Actor::Api(key.clone());
        self.registry
            .remove(tenant, visit, identity, by, Utc::now())
            .await
    }

    async fn transfer(
        &self,
        tenant: &TenantId,
        key: &KeyId,
        visit: VisitId,
        provider: ProviderId,
    ) -> Result<(), RoomError> {
        let by = Actor::Api(key.clone());
        self.registry
            .transfer(tenant, visit, provider, by, Utc::now())
            .await
            .map(drop)
    }

    async fn participants(&self, visit: VisitId) -> Vec<ParticipantView> {
        self.registry.participants(visit).unwrap_or_default()
    }

    fn outboxes(&self) -> Vec<Arc<dyn Outbox>> {
        self.registry.outboxes()
    }
}
