//! The live side of visits: which visits this node runs, where a visit runs in a cluster,
//! and what survives a restart. The rules themselves live in `bedside-visit`, which this
//! crate feeds inputs and whose outputs it routes.
//!
//! - [`registry`] holds the live visits of this node (`dashmap`), feeds them inputs with the
//!   current time, and routes their outputs: notices to participants' outboxes, changes to
//!   storage.
//! - [`router`] is the one interface for where a visit runs: [`LocalRouter`] on a single
//!   node, the cluster's router on several.
//! - [`ownership`] is what a cluster plugs into the registry so one node at a time acts for
//!   a visit.
//! - [`desk`] lines up each provider's queue from their visits' parts and feeds back where
//!   each waiting participant stands; it serves the providers' dashboards.
//! - [`board`] is the one interface for sharing providers' queues between nodes:
//!   [`LocalBoard`] on a single node, the cluster's board (Redis) on several.
//! - [`storage`] is the durable side: a trait per concern, one SQL implementation over
//!   SQLite and PostgreSQL, and the writer task that batches changes in order.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod board;
pub mod desk;
pub mod error;
pub mod ids;
pub mod links;
pub mod ownership;
pub mod registry;
pub mod router;
pub mod storage;

// Storage names the core's modules as if they were its own.
pub(crate) use bedside_visit::{VisitId, audit, audit_chain, event, record, visit};

pub use board::{DeskState, LocalBoard, NodePart, QueueBoard};
pub use desk::{Board, Desk, DeskFeed, DeskSettings, ProviderKey};
pub use error::RoomError;
pub use ids::{NextConnId, RandomId};
pub use links::{Link, LinkRequest, Links};
pub use ownership::{Claim, Ownership};
pub use registry::{FRESH_MARGIN, Outbox, Outgoing, Registry, VisitHandle};
pub use router::{LocalRouter, LocalSeat, RemoteSeat, Router, Seat};
