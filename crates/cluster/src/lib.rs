//! Several `bedside` nodes as one service, on Redis and PostgreSQL, behind the same
//! [`bedside_rooms::Router`] interface a single node uses.
//!
//! - [`router`]: [`ClusterRouter`], the cluster's side of the routing seam: a visit runs on
//!   the node that holds its lease; joins and API actions for it go there. Waiting for a
//!   dead owner's lease to lapse, and confirming an end in storage, happen here once.
//! - [`lease`]: each live visit is owned by one node at a time through a Redis lease, which
//!   counts while its node's one liveness key does (a renewal costs the same for any number
//!   of visits); taking a visit over raises its epoch in the database, and writes carrying
//!   an older epoch are refused there. The registry asks the leases before it loads a visit.
//! - [`bus`]: nodes talk over Redis pub/sub, one channel per node.
//! - [`board`]: providers' queues shared between nodes (the desk's `QueueBoard`): each
//!   node's visits' parts in per-provider Redis hashes, changes over pub/sub.
//! - [`forward`]: a participant connected here, in a visit another node owns, is seated
//!   with the owner; its frames are published there and the owner's notices come back.
//! - [`owner`]: the other half: remote participants of visits this node owns.
//! - [`node`]: names of nodes and cross-node sessions.
//!
//! Nothing here is needed for a visit's own rules: the visit state machine runs on its
//! owner, unaware of where its participants are connected.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod board;
pub mod bus;
pub mod forward;
pub mod lease;
pub mod node;
pub mod owner;
pub mod router;

pub use bus::{ApiDone, ApiOp};
pub use node::{NodeId, SessionId};
pub use router::{ClusterConfig, ClusterError, ClusterRouter, Connections};
