//! Call quality, as the participants' browsers see it: Bedside never touches media, so what
//! it knows of a call's quality is what each browser reports over signaling.
//!
//! - [`report`]: a `stats` frame's values and a `precheck`, checked (types, ranges, size,
//!   number of peers); candidates by type only, never by address.
//! - [`classify`]: good, fair or poor, with documented thresholds and hysteresis.
//! - [`summary`]: one participant's reports folded into a [`Tracker`] of fixed size, and the
//!   [`Summary`] the REST API, webhooks and storage carry.
//!
//! Pure like the rest of this crate: the visit feeds a tracker its participant's reports with
//! the time they arrived. docs/quality.md is the clinic's view of it.

pub mod classify;
pub mod report;
pub mod summary;

pub use classify::{Quality, Reason};
pub use report::{MAX_STATS_BYTES, Network, Precheck, ReportError, StatsReport, TurnReach};
pub use summary::{MIN_INTERVAL, Observation, PrecheckRecord, Summary, TooSoon, Tracker};

use crate::ParticipantId;
use bedside_auth::Role;
use serde::{Deserialize, Serialize};

/// One participant's summary, as clinics get it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParticipantQuality {
    pub participant_id: ParticipantId,
    /// The clinic's own identity for the participant.
    pub identity: String,
    pub role: Role,
    #[serde(flatten)]
    pub summary: Summary,
}

/// One participant's tracker as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredQuality {
    pub participant_id: ParticipantId,
    pub identity: String,
    pub role: Role,
    pub tracker: Tracker,
}

impl StoredQuality {
    pub fn summary(&self) -> ParticipantQuality {
        ParticipantQuality {
            participant_id: self.participant_id,
            identity: self.identity.clone(),
            role: self.role,
            summary: self.tracker.summary(),
        }
    }
}
