//! The role a participant holds in a visit.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A participant's role. Doctors are admitted on join and run the waiting room; patients and
/// guests wait until a doctor admits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    Doctor,
    Patient,
    Guest,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Doctor => "doctor",
            Role::Patient => "patient",
            Role::Guest => "guest",
        }
    }

    /// Whether this role may admit, deny and remove participants and end the visit.
    pub fn is_host(self) -> bool {
        self == Role::Doctor
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
