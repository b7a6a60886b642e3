//! The claims of a join token and the checks every token's content must pass.

use crate::{Role, TokenError};
use serde::{Deserialize, Serialize};

/// Longest lifetime (`exp - nbf`) a join token may claim: 31 days. A clinic that mints its
/// own tokens cannot hand out links that never die.
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 31 * 24 * 3600;

const MAX_IDENTITY_LEN: usize = 128;
const MAX_VISIT_LEN: usize = 64;
const MAX_JTI_LEN: usize = 128;
/// Longest display name, in characters: in a token, in `POST .../tokens`, in an invite.
pub const MAX_NAME_CHARS: usize = 100;

/// Claims of a join token, as docs/protocol.md ("Join tokens") fixes them. `sub` is the participant's opaque
/// identity (never a name); `name` is only for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinClaims {
    /// The key id that signed the token; must equal the header's `kid`.
    pub iss: String,
    pub sub: String,
    pub visit: String,
    pub role: Role,
    #[serde(default)]
    pub name: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
}

impl JoinClaims {
    /// Content checks beyond the signature and time: sizes, characters, a bounded lifetime.
    pub(crate) fn check(&mut self) -> Result<(), TokenError> {
        check_identity(&self.sub).map_err(|m| TokenError::InvalidClaims(format!("sub {m}")))?;
        if self.visit.is_empty() || self.visit.len() > MAX_VISIT_LEN {
            return Err(TokenError::InvalidClaims("visit has a bad length".into()));
        }
        if self.jti.is_empty() || self.jti.len() > MAX_JTI_LEN {
            return Err(TokenError::InvalidClaims("jti has a bad length".into()));
        }
        // Saturating, like the time check: `exp - nbf` of signed i64 claims can overflow.
        if self.exp <= self.nbf || self.exp.saturating_sub(self.nbf) > MAX_TOKEN_LIFETIME_SECS {
            return Err(TokenError::InvalidClaims(
                "exp must follow nbf within 31 days".into(),
            ));
        }
        self.name = sanitize_display_name(&self.name);
        Ok(())
    }
}

/// Checks an opaque participant identity: 1-128 characters, no control characters (as the
/// OpenAPI document states it: JSON Schema counts characters, not bytes).
pub fn check_identity(identity: &str) -> Result<(), &'static str> {
    if identity.is_empty() || identity.chars().count() > MAX_IDENTITY_LEN {
        return Err("must be 1-128 characters");
    }
    if identity.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(())
}

/// Whether `name` may be shown to others as it is: at most [`MAX_NAME_CHARS`] characters,
/// no control characters. What Bedside itself is asked to put in a link (the API's
/// `name`, an invite's) must pass; a name in a token minted elsewhere is
/// [sanitized](sanitize_display_name) instead.
pub fn is_display_name(name: &str) -> bool {
    name.chars().count() <= MAX_NAME_CHARS && !name.chars().any(char::is_control)
}

/// A display name as shown to others: control characters (newlines included) become
/// spaces, surrounding space is trimmed, and it is cut to [`MAX_NAME_CHARS`] characters.
pub fn sanitize_display_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cleaned.trim().chars().take(MAX_NAME_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_lose_control_characters() {
        assert_eq!(
            sanitize_display_name(" Ada\nINFO forged\r\t"),
            "Ada INFO forged"
        );
        assert_eq!(sanitize_display_name(&"é".repeat(300)).chars().count(), 100);
    }

    #[test]
    fn identities_are_bounded_and_printable() {
        assert!(check_identity("patient-42").is_ok());
        assert!(check_identity("").is_err());
        assert!(check_identity(&"x".repeat(129)).is_err());
        assert!(check_identity("a\nb").is_err());
    }
}
