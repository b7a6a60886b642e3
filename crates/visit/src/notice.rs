//! What a visit tells a participant, and how it closes their connection. The signaling
//! layer turns these into protocol frames.

use crate::quality::{Quality, Reason};
use crate::queue::Standing;
use crate::{EndReason, LobbyEntry, ParticipantId, ParticipantView, Payload, VisitId, VisitStatus};
use bedside_auth::Role;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Why a participant is no longer in the visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// They sent `leave`.
    Left,
    /// A doctor or the clinic's backend removed them.
    Removed,
    /// They dropped and did not come back within the grace period.
    TimedOut,
}

impl LeaveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Left => "left",
            LeaveReason::Removed => "removed",
            LeaveReason::TimedOut => "timed_out",
        }
    }
}

/// The visit as the `joined` frame shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VisitSummary {
    pub id: VisitId,
    pub status: VisitStatus,
}

/// A message from the visit to one participant.
#[derive(Debug, Clone)]
pub enum Notice {
    Joined {
        participant_id: ParticipantId,
        role: Role,
        visit: VisitSummary,
    },
    /// You are in the waiting room, and this is where you stand.
    Waiting(Standing),
    /// Agree to this before you knock.
    ConsentRequired {
        version: Arc<str>,
        text: Arc<str>,
    },
    /// The provider's words to the waiting room.
    ProviderMessage {
        text: Arc<str>,
        at: DateTime<Utc>,
    },
    Lobby {
        waiting: Arc<[LobbyEntry]>,
    },
    Admitted {
        participants: Vec<ParticipantView>,
    },
    ParticipantJoined {
        participant: ParticipantView,
    },
    ParticipantLeft {
        participant_id: ParticipantId,
        reason: LeaveReason,
    },
    ParticipantUpdated {
        participant: ParticipantView,
    },
    /// Opaque signaling payload, relayed byte for byte.
    Signal {
        from: ParticipantId,
        data: Payload,
    },
    Chat {
        from: ParticipantId,
        text: Arc<str>,
        at: DateTime<Utc>,
    },
    Denied {
        reason: Arc<str>,
    },
    /// The visit ends by itself at `expires_at`, soon (sent once, some minutes before).
    VisitExpiring {
        expires_at: DateTime<Utc>,
    },
    VisitEnded {
        reason: EndReason,
    },
    /// The class of your own connection changed (the others get `participant_updated`).
    Quality {
        quality: Quality,
        reason: Option<Reason>,
    },
    /// The guest link a doctor asked for (`invite`), to that doctor only.
    InviteLink(Box<InviteLink>),
}

/// A minted guest link. Its token never prints (`Debug` leaves it out).
#[derive(Clone)]
pub struct InviteLink {
    pub token: String,
    pub join_url: String,
    pub expires_at: DateTime<Utc>,
    /// The guest's display name, as the doctor gave it.
    pub name: String,
}

impl std::fmt::Debug for InviteLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InviteLink")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// WebSocket close codes of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u16)]
pub enum CloseCode {
    Normal = 1000,
    /// This server is going away (restart, shutdown, drain).
    GoingAway = 1001,
    /// Sent as 1001 too, with a reason that says what happened: the visit is run by
    /// another node of the cluster than the one this connection reached it through (its
    /// owner died or lost it, or the link to the owner was reset); this server stays.
    /// Its own value only because every variant needs one; it never goes on the wire.
    Moved = 1,
    /// A frame broke RFC 6455 (unmasked, reserved bits set, unknown opcode, ...).
    ProtocolError = 1002,
    /// A text frame (or close reason) that is not UTF-8.
    InvalidPayload = 1007,
    TooBig = 1009,
    /// Try again later (RFC 6455 registry): a temporary condition, such as a visit whose
    /// owner died and that no node could take over yet.
    TryAgainLater = 1013,
    BadToken = 4001,
    NotAllowed = 4003,
    VisitGone = 4004,
    Policy = 4008,
    Replaced = 4009,
}

impl CloseCode {
    pub fn as_u16(self) -> u16 {
        match self {
            CloseCode::Moved => CloseCode::GoingAway as u16,
            code => code as u16,
        }
    }

    /// The close frame's reason text for closes the visit asks for.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "left",
            CloseCode::GoingAway => "server restarting",
            CloseCode::Moved => "the visit runs on another node; reconnect",
            CloseCode::ProtocolError => "protocol violation",
            CloseCode::InvalidPayload => "invalid UTF-8",
            CloseCode::TooBig => "message too large",
            CloseCode::TryAgainLater => "temporarily unavailable, try again",
            CloseCode::BadToken => "invalid token",
            CloseCode::NotAllowed => "not allowed",
            CloseCode::VisitGone => "visit ended",
            CloseCode::Policy => "policy violation",
            CloseCode::Replaced => "replaced by a newer connection",
        }
    }
}
