//! Who may do what, decided from credentials alone.
//!
//! A clinic (tenant) holds API keys. A key authenticates the clinic's backend on the REST
//! API and signs the join tokens it hands to doctors and patients; Bedside verifies those
//! tokens on `/ws` and hands back a resume token so a dropped participant can return.
//! Everything here is pure: no IO, and the current time is always passed in.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod claims;
mod error;
mod keyring;
mod provider;
mod resume;
mod role;
mod turn;

pub use claims::{
    JoinClaims, MAX_NAME_CHARS, MAX_TOKEN_LIFETIME_SECS, check_identity, is_display_name,
    sanitize_display_name,
};
pub use error::{ApiKeyError, KeyConfigError, TokenError};
pub use keyring::{ApiKey, KeyId, KeyRing, TenantId, VerifiedJoin};
pub use provider::{ProviderClaims, ProviderRole, VerifiedProvider};
pub use resume::{ResumeClaims, ResumeKey};
pub use role::Role;
pub use turn::{
    MAX_TURN_CREDENTIAL_SECS, MIN_TURN_SECRET_LEN, PROBE_TURN_CREDENTIAL_SECS, TurnCredential,
    TurnCredentialError, TurnSecret, subject_of,
};

/// Clock skew tolerated on `nbf` and `exp`, in seconds. Small on purpose: a token that is
/// expired by more than this is refused even if the clinic's clock runs a little behind.
pub const CLOCK_LEEWAY_SECS: i64 = 10;

/// Longest compact JWT accepted; anything longer is refused before it is parsed.
pub const MAX_TOKEN_LEN: usize = 4096;
