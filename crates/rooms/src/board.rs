//! Where a provider's queue is shared between nodes: the seam between the node's
//! [`crate::desk`] and the others, in the spirit of the [`crate::Router`] (one interface,
//! chosen where the router is chosen; the desk never asks which kind it has).
//!
//! - [`LocalBoard`]: one node. Nothing to share: the desk sees every visit there is.
//! - The cluster's board (`bedside_cluster::board::RedisBoard`): each node publishes its
//!   visits' parts of their providers' queues and its providers' dashboards to Redis, and
//!   hears of the other nodes' through pub/sub, so every node lines up the same queue.
//!
//! What a board learns from other nodes comes back into the desk through its
//! [`DeskFeed`](crate::DeskFeed): a provider's parts and dashboard when the desk starts
//! following them (a snapshot), then every change, and which nodes died.

use crate::desk::ProviderKey;
use crate::error::RoomError;
use async_trait::async_trait;
use bedside_visit::presence;
use bedside_visit::{VisitId, VisitQueue};
use serde::{Deserialize, Serialize};

/// A provider's dashboard as every node knows it: which node and connection holds it, and
/// what it says (name, chosen presence, connected since when).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeskState {
    /// The node the dashboard is connected to.
    pub node: String,
    /// Its connection (drawn at random: unique across nodes).
    pub session: u64,
    pub desk: presence::Desk,
}

/// One visit's part of a provider's queue, and the node that runs the visit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePart {
    pub node: String,
    pub part: VisitQueue,
}

/// How the desk shares its providers' queues with other nodes. Every method that sends
/// returns at once (the cluster's board queues the work for its own task).
#[async_trait]
pub trait QueueBoard: Send + Sync + 'static {
    /// This node's name among the others; `None` on one node (nothing is shared).
    fn node(&self) -> Option<&str>;

    /// The desk starts following `key` (or must start again, after messages may have been
    /// lost): the board sends what it holds of the provider back as a snapshot.
    fn follow(&self, _key: &ProviderKey) {}

    /// A visit this node runs: its part of `key`'s queue, or `None` once it adds nothing
    /// there (nobody waiting and the provider not in it, ended, moved to another provider
    /// or to another node).
    fn publish_part(&self, _key: &ProviderKey, _visit: VisitId, _part: Option<&VisitQueue>) {}

    /// The provider's dashboard on this node: connected (`fresh`: it replaces any other,
    /// wherever it is) or changed (kept only while it still holds the desk).
    fn publish_desk(&self, _key: &ProviderKey, _state: &DeskState, _fresh: bool) {}

    /// The provider's words to the waiting rooms of `visits`, for the nodes that run them.
    fn notify(&self, _key: &ProviderKey, _visits: &[VisitId], _text: &str) {}

    /// Which of `nodes` (named in parts or dashboards from elsewhere) died: the board
    /// reports those back, and the desk drops what they published.
    fn check(&self, _nodes: Vec<String>) {}

    /// Every part of `key`'s queue the board holds, from every live node (for the REST
    /// API on any node); `None` on one node, where the desk has them all.
    async fn parts(&self, _key: &ProviderKey) -> Result<Option<Vec<NodePart>>, RoomError> {
        Ok(None)
    }
}

/// One node: every visit runs here, nothing to share.
pub struct LocalBoard;

#[async_trait]
impl QueueBoard for LocalBoard {
    fn node(&self) -> Option<&str> {
        None
    }
}
