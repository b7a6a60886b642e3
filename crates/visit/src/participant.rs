//! What others may see of a participant.

use crate::ParticipantId;
use crate::consent::ConsentGiven;
use crate::quality::{PrecheckRecord, Quality, Reason};
use crate::record::text_enum;
use bedside_auth::Role;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Waiting room or in the visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ParticipantState {
    Waiting,
    Admitted,
}

text_enum!(ParticipantState { Waiting => "waiting", Admitted => "admitted" });

/// A participant's own microphone, camera and screen-share state, as their client reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MediaState {
    pub audio: bool,
    pub video: bool,
    pub screen: bool,
}

/// The participant object of the protocol. `connected` is false while a participant who
/// dropped is inside the grace period and may come back. `identity` is there only for
/// doctors and the clinic's backend: the field is absent for everyone else. `quality` is their
/// connection's class once their browser reported one (docs/quality.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParticipantView {
    pub participant_id: ParticipantId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    pub role: Role,
    pub name: String,
    pub state: ParticipantState,
    pub media: MediaState,
    pub connected: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
    /// Why `quality` is not good, or `relay` for a good connection through TURN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_reason: Option<Reason>,
}

/// One entry of the waiting list doctors see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LobbyEntry {
    pub participant_id: ParticipantId,
    pub name: String,
    pub role: Role,
    pub since: DateTime<Utc>,
    pub connected: bool,
    /// What their pre-call check found, once they sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precheck: Option<PrecheckRecord>,
    /// Their consent, where the visit asks for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent: Option<ConsentGiven>,
}
