//! The sans-IO core of Bedside: what a visit is and how it answers what happens to it.
//!
//! - [`visit`] is the visit as a state machine: plain data plus
//!   `handle(input, now, &mut outputs)`. No sockets, tasks, clock reads or randomness: the
//!   caller passes the time and fresh ids in, and acts on the outputs (notices to send,
//!   connections to close, changes to store, audit entries and events to record). Every rule
//!   of the waiting room is tested with simulated time (`tests/scenarios.rs`).
//! - [`ids`], [`record`], [`participant`], [`notice`], [`payload`]: the data the state
//!   machine speaks.
//! - [`quality`]: call quality from the browsers' own statistics (checking reports,
//!   classifying, summarizing), which the visit feeds.
//! - [`access`]: which credentials a removal or denial takes back.
//! - [`audit`] and [`event`]: the facts it records for the audit trail and the clinic's
//!   systems; [`audit_chain`]: the pure half of the tamper-evident trail (encoding, hashing,
//!   finding the first broken link), which storage calls.
//! - The clinic's day: [`queue`] (a provider's queue across visits, positions),
//!   [`estimate`] (the expected wait), [`presence`] (available, busy, away), [`consent`]
//!   (what is agreed to before the knock). The visit's own part of them (the consent gate,
//!   transfer, invites, single-use links) is in [`visit`]; what an invite from the call may
//!   ask is in [`invite`].
//!
//! This crate depends on no IO crate (`cargo tree -p bedside-visit` shows only plain data
//! crates), and its clippy.toml forbids clock reads. `docs/architecture.md` shows where it
//! sits.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod access;
pub mod audit;
pub mod audit_chain;
pub mod consent;
pub mod estimate;
pub mod event;
pub mod ids;
pub mod invite;
pub mod notice;
pub mod participant;
pub mod payload;
pub mod presence;
pub mod quality;
pub mod queue;
pub mod record;
pub mod refusal;
pub mod visit;

pub use access::{Block, Credential};
pub use audit::{AuditActor, AuditEvent, AuditKind};
pub use audit_chain::{Break, BreakKind, BrokenChain, ChainReport};
pub use consent::{ConsentGiven, ConsentText};
pub use estimate::WaitModel;
pub use event::{EventKind, EventParticipant, LeftReason, VisitEvent};
pub use ids::{ConnId, ParticipantId, ProviderId, VisitId};
pub use invite::Invite;
pub use notice::{CloseCode, InviteLink, LeaveReason, Notice, VisitSummary};
pub use participant::{LobbyEntry, MediaState, ParticipantState, ParticipantView};
pub use payload::Payload;
pub use presence::Presence;
pub use queue::{QueueEntry, Standing, VisitQueue};
pub use record::{EndReason, MAX_PARTICIPANTS, VisitRecord, VisitStatus};
pub use refusal::Refusal;
pub use visit::{Actor, Change, Input, JoinRequest, Output, StoredParticipant, Target, Visit};
