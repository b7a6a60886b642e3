//! Why the live side of a visit could not do something: the visit refused it, or this node
//! could not act for the visit right now.

use bedside_visit::{CloseCode, Refusal};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RoomError {
    /// The visit's rules said no.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Storage (or, in a cluster, the visit's owner) could not be reached: retry later.
    #[error("the service is temporarily unavailable, retry")]
    Unavailable,
    /// Another node of the cluster runs this visit. Never leaves the routing layer: a
    /// [`crate::Router`] goes to that node instead.
    #[error("the visit is running on another node")]
    Elsewhere,
}

impl RoomError {
    /// The protocol/API error code.
    pub fn code(self) -> &'static str {
        match self {
            RoomError::Refused(refusal) => refusal.code(),
            RoomError::Unavailable | RoomError::Elsewhere => "unavailable",
        }
    }

    /// For a refused join, how the connection is closed. Not 1001 for `unavailable`: the
    /// server is not going away, the visit (or storage) is only out of reach for now.
    pub fn join_close_code(self) -> CloseCode {
        match self {
            RoomError::Refused(refusal) => refusal.join_close_code(),
            RoomError::Unavailable | RoomError::Elsewhere => CloseCode::TryAgainLater,
        }
    }
}
