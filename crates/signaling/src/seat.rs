//! Where a joined connection's frames go: the visit itself when it runs on this node, or
//! the node of the cluster that owns it. The connection task is the same either way.

use async_trait::async_trait;
use bedside_auth::TenantId;
use bedside_rooms::{JoinRequest, Outbox, ParticipantId, RoomError, VisitHandle, VisitId};
use chrono::{DateTime, Utc};
use std::sync::Arc;

pub enum Seat {
    Local(VisitHandle),
    Remote(Box<dyn RemoteSeat>),
}

impl Seat {
    pub fn expires_at(&self) -> DateTime<Utc> {
        match self {
            Seat::Local(visit) => visit.expires_at(),
            Seat::Remote(seat) => seat.expires_at(),
        }
    }
}

/// A participant connected here to a visit another node runs.
pub trait RemoteSeat: Send + Sync + 'static {
    /// Passes on a client frame that decoded to an input for the visit.
    fn forward(&self, frame: &str);
    /// The connection is gone.
    fn leave(&self);
    fn expires_at(&self) -> DateTime<Utc>;
}

/// Reaches visits owned by other nodes.
#[async_trait]
pub trait Forwarder: Send + Sync + 'static {
    /// Joins `visit` on the node that owns it. The owner's notices for this participant
    /// arrive in `outbox`, as they would from a local visit. [`RoomError::Elsewhere`]
    /// means nobody owns it right now: claim it here.
    async fn join(
        &self,
        visit: VisitId,
        tenant: &TenantId,
        req: &JoinRequest,
        outbox: Arc<dyn Outbox>,
    ) -> Result<(Box<dyn RemoteSeat>, ParticipantId), RoomError>;
}
