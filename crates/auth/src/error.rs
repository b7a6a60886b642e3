//! Errors at the edges of this crate.

use thiserror::Error;

/// Why a join or resume token was refused. `InvalidSignature` deliberately covers an
/// unknown `kid`, a wrong key and a wrong algorithm alike, so a caller cannot probe which
/// key ids exist.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token is not valid")]
    InvalidSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token claims are invalid: {0}")]
    InvalidClaims(String),
    #[error("token is not valid for this visit")]
    WrongTenant,
    #[error("token could not be signed")]
    Signing,
}

impl TokenError {
    /// Stable machine-readable code for protocol `error` frames.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            _ => "invalid_token",
        }
    }
}

/// Why an API key id and secret pair was refused. One variant: the caller learns nothing
/// about whether the id exists.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApiKeyError {
    #[error("invalid API key")]
    Invalid,
}

/// A key configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyConfigError {
    #[error("API key id {0:?} must be 1-64 characters of A-Z a-z 0-9 . _ -")]
    BadId(String),
    #[error("API key {0:?} has a secret shorter than 16 characters")]
    WeakSecret(String),
    #[error("API key id {0:?} is configured twice")]
    Duplicate(String),
    #[error("tenant id {0:?} must be 1-64 characters of A-Z a-z 0-9 . _ -")]
    BadTenant(String),
    #[error("expected id:secret, got an entry without ':'")]
    MissingSeparator,
}
