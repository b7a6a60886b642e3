//! A visit as stored: what the clinic asked for and where it stands.

use crate::consent::ConsentText;
use crate::{ProviderId, VisitId};
use bedside_auth::TenantId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// `open` until someone joins, `active` from then on, `ended` for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum VisitStatus {
    Open,
    Active,
    Ended,
}

/// Why a visit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EndReason {
    EndedByDoctor,
    EndedByApi,
    Expired,
}

/// A stored enum value that this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {0:?}")]
pub struct UnknownValue(pub String);

macro_rules! text_enum {
    ($ty:ty { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }
        impl FromStr for $ty {
            type Err = $crate::record::UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s { $($text => Ok(Self::$variant),)+ other => Err($crate::record::UnknownValue(other.to_owned())) }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use text_enum;

text_enum!(VisitStatus { Open => "open", Active => "active", Ended => "ended" });
text_enum!(EndReason { EndedByDoctor => "ended_by_doctor", EndedByApi => "ended_by_api", Expired => "expired" });

/// Upper bound on participants (the web client is a mesh).
pub const MAX_PARTICIPANTS: u8 = 8;

/// A visit's durable record.
#[derive(Debug, Clone, PartialEq)]
pub struct VisitRecord {
    pub id: VisitId,
    pub tenant: TenantId,
    pub external_ref: Option<String>,
    pub status: VisitStatus,
    pub ended_reason: Option<EndReason>,
    pub created_at: DateTime<Utc>,
    pub not_before: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub max_participants: u8,
    pub metadata: Option<serde_json::Value>,
    /// Whose queue the visit is in.
    pub provider: Option<ProviderId>,
    /// What patients and guests agree to before they knock.
    pub consent: Option<ConsentText>,
}

impl VisitRecord {
    /// Status and end reason as of `now`. A visit past `expires_at` reads as expired even
    /// before the expiry sweep has written that down.
    pub fn effective_status(&self, now: DateTime<Utc>) -> (VisitStatus, Option<EndReason>) {
        if self.status != VisitStatus::Ended && self.expires_at <= now {
            (VisitStatus::Ended, Some(EndReason::Expired))
        } else {
            (self.status, self.ended_reason)
        }
    }
}
