//! Visits: who is in them, who waits, who may talk to whom, and what survives a restart.
//!
//! - [`visit`] is the visit as a state machine: plain data plus
//!   `handle(input, now, &mut outputs)`. No sockets, tasks or clock reads, so every rule
//!   of the waiting room is tested with simulated time.
//! - [`registry`] holds the live visits of this node (`dashmap`), feeds them inputs, and
//!   routes their outputs: notices to participants' outboxes, changes to storage.
//! - [`ownership`] is what a cluster plugs in so one node at a time acts for a visit.
//! - [`storage`] is the durable side: a trait, its SQLite implementation, and the writer
//!   task that batches changes in order.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod audit;
pub mod audit_chain;
pub mod event;
pub mod ids;
pub mod notice;
pub mod ownership;
pub mod participant;
pub mod record;
pub mod registry;
pub mod storage;
pub mod visit;

pub use audit::{AuditEvent, AuditKind};
pub use audit_chain::{Break, BreakKind, BrokenChain, ChainReport};
pub use ids::{ConnId, ParticipantId, VisitId};
pub use notice::{CloseCode, LeaveReason, Notice, VisitSummary};
pub use ownership::{Claim, Ownership};
pub use participant::{LobbyEntry, MediaState, ParticipantState, ParticipantView};
pub use record::{EndReason, VisitRecord, VisitStatus};
pub use registry::{Outbox, Outgoing, Registry, VisitHandle};
pub use visit::{
    Actor, Change, Input, JoinRequest, Output, RoomError, StoredParticipant, Target, Visit,
};
