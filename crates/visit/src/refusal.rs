//! Why a visit refused an input: the answers the rules give. The layers above add their
//! own failures (storage unavailable, the visit running on another node) in their error
//! types; these are only the visit's.

use crate::notice::CloseCode;
use serde::{Deserialize, Serialize};

/// Why an input was refused. Outputs appended before the refusal still apply; the refusal
/// is for the sender alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Refusal {
    /// Also the answer to a token of another tenant: whether a visit exists is nobody
    /// else's business.
    #[error("visit not found")]
    VisitNotFound,
    #[error("the visit has ended")]
    VisitEnded,
    #[error("the visit has not started yet")]
    NotStarted,
    #[error("the visit is full")]
    VisitFull,
    #[error("join first")]
    NotJoined,
    #[error("you are in the waiting room")]
    NotAdmitted,
    #[error("only a doctor may do that")]
    Forbidden,
    #[error("no such participant in this visit")]
    UnknownParticipant,
    #[error("that participant is reconnecting")]
    ParticipantUnavailable,
    #[error("that participant is not waiting")]
    NotWaiting,
    #[error("you cannot do that to yourself")]
    InvalidTarget,
    #[error("chat text must be 1 to {} characters", crate::visit::MAX_CHAT_CHARS)]
    InvalidChat,
    #[error("send stats and precheck at most once every {} seconds", crate::quality::MIN_INTERVAL.num_seconds())]
    TooFrequent,
    #[error("precheck is for the waiting room; you are admitted")]
    PrecheckNotWaiting,
    #[error("this visit is in another provider's queue")]
    NotYourVisit,
    #[error("no consent is asked of you")]
    ConsentNotRequired,
    #[error("that is not the version of the consent you were shown")]
    WrongConsentVersion,
    #[error(
        "the message must be 1 to {} characters",
        crate::visit::MAX_MESSAGE_CHARS
    )]
    InvalidText,
    #[error("only guests can be invited from a call")]
    InvalidRole,
    #[error(
        "the guest's name must be 1 to {} characters, no control characters",
        bedside_auth::MAX_NAME_CHARS
    )]
    InvalidName,
    /// The identity was removed or denied after this credential was issued.
    #[error("access to this visit was revoked; ask the clinic for a new link")]
    AccessRevoked,
    /// A resume token whose place is no longer held (left, or timed out).
    #[error("this resume token's place in the visit is gone; join with a link")]
    PlaceGone,
    /// A single-use link that already let someone in.
    #[error("this link has already been used; ask the clinic for a new one")]
    TokenUsed,
}

impl Refusal {
    /// The protocol/API error code.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::VisitNotFound => "visit_not_found",
            Refusal::VisitEnded => "visit_ended",
            Refusal::NotStarted => "visit_not_started",
            Refusal::VisitFull => "visit_full",
            Refusal::NotJoined => "not_joined",
            Refusal::NotAdmitted => "not_admitted",
            Refusal::Forbidden => "forbidden",
            Refusal::UnknownParticipant => "unknown_participant",
            Refusal::ParticipantUnavailable => "participant_unavailable",
            Refusal::NotWaiting => "not_waiting",
            Refusal::InvalidTarget => "invalid_target",
            Refusal::InvalidChat => "invalid_chat",
            Refusal::TooFrequent => "too_frequent",
            Refusal::PrecheckNotWaiting => "not_waiting",
            Refusal::NotYourVisit => "not_your_visit",
            Refusal::ConsentNotRequired => "consent_not_required",
            Refusal::WrongConsentVersion => "wrong_consent_version",
            Refusal::InvalidText => "invalid_text",
            Refusal::InvalidRole => "invalid_role",
            Refusal::InvalidName => "invalid_name",
            Refusal::AccessRevoked => "access_revoked",
            Refusal::PlaceGone => "invalid_token",
            Refusal::TokenUsed => "token_used",
        }
    }

    /// For a refused join, how the connection is closed; other refusals keep it open.
    pub fn join_close_code(self) -> CloseCode {
        match self {
            Refusal::PlaceGone | Refusal::TokenUsed => CloseCode::BadToken,
            Refusal::VisitNotFound | Refusal::VisitEnded => CloseCode::VisitGone,
            _ => CloseCode::NotAllowed,
        }
    }
}
