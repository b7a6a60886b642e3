//! Who may act for a visit when several nodes share storage.
//!
//! A single node owns every visit it loads. In a cluster, a visit is acted on by one node
//! at a time: [`Ownership::claim`] makes this node the owner (or says another node is),
//! and hands out the epoch that fences the owner's writes. The registry asks before it
//! loads a visit, checks [`Ownership::fresh`] before each input, and says when a visit
//! leaves memory so the claim can be given up once its last change is written.

use crate::storage::StoredVisit;
use crate::{RoomError, VisitId};
use async_trait::async_trait;

/// The outcome of a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This node owns the visit; its writes are fenced with `epoch`.
    Mine { epoch: i64 },
    /// Another node owns it.
    Elsewhere,
}

#[async_trait]
pub trait Ownership: Send + Sync + 'static {
    /// Claims `visit` for this node unless another node holds it.
    async fn claim(&self, visit: VisitId) -> Result<Claim, RoomError>;
    /// [`Ownership::claim`], and when the claim takes the visit over, the visit as stored
    /// once it is this node's (read with the epoch's raise, see
    /// [`crate::storage::Fencing::claim_loading`]). `None` for the visit: the caller loads it.
    async fn claim_loading(
        &self,
        visit: VisitId,
    ) -> Result<(Claim, Option<StoredVisit>), RoomError> {
        Ok((self.claim(visit).await?, None))
    }
    /// Whether this node's claims can be trusted right now. False when the node has not
    /// been able to renew them for longer than they last (it was paused, say): it must
    /// not act until it knows whether it still owns its visits.
    fn fresh(&self) -> bool;
    /// Whether the claims can be trusted for `margin` more: an input checked with this
    /// before it is handled does not reach the visit just as they lapse (a thread preempted
    /// in between on a starved machine).
    fn fresh_for(&self, margin: std::time::Duration) -> bool {
        let _ = margin;
        self.fresh()
    }
    /// Waits (a bounded time) until [`Ownership::fresh_for`] a short margin; whether it
    /// does. Inputs that arrive while a renewal is late (a busy or starved machine) wait
    /// for it instead of being refused: slower, never acted on without a fresh claim.
    async fn vouched(&self) -> bool {
        self.fresh()
    }
    /// `visit` left memory; once the writer has passed `position`, its state is all in
    /// storage and the claim can go.
    fn release(&self, visit: VisitId, position: u64);
}
