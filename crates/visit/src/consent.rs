//! Consent before the knock: the text a visit asks patients and guests to agree to, and what
//! their agreement records. The audit trail keeps the version and the SHA-256 of the exact
//! text agreed to, so the clinic can show later which words a person accepted without the
//! trail holding the words themselves.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest consent text, in characters: a page of terms, well within one frame.
pub const MAX_CONSENT_TEXT_CHARS: usize = 8000;
/// Longest consent version.
pub const MAX_CONSENT_VERSION_LEN: usize = 64;

/// Why a consent text or version cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConsentError {
    #[error("version must be 1-64 characters of A-Z a-z 0-9 . _ -")]
    Version,
    #[error(
        "text must be 1-8000 characters, without control characters other than line breaks and tabs"
    )]
    Text,
}

/// What a visit asks for before the knock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawConsent")]
pub struct ConsentText {
    version: String,
    text: String,
}

#[derive(Deserialize)]
struct RawConsent {
    version: String,
    text: String,
}

impl TryFrom<RawConsent> for ConsentText {
    type Error = ConsentError;
    fn try_from(raw: RawConsent) -> Result<Self, Self::Error> {
        Self::new(raw.version, raw.text)
    }
}

/// Whether `version` is a consent version: 1-64 of `A-Z a-z 0-9 . _ -`.
pub fn valid_version(version: &str) -> bool {
    !version.is_empty()
        && version.len() <= MAX_CONSENT_VERSION_LEN
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl ConsentText {
    pub fn new(version: impl Into<String>, text: impl Into<String>) -> Result<Self, ConsentError> {
        let (version, text) = (version.into(), text.into());
        if !valid_version(&version) {
            return Err(ConsentError::Version);
        }
        let chars = text.chars().count();
        if text.trim().is_empty()
            || chars > MAX_CONSENT_TEXT_CHARS
            || text
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(ConsentError::Text);
        }
        Ok(Self { version, text })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The SHA-256 of the text's UTF-8 bytes, as 64 lowercase hex digits.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.text.as_bytes()))
    }

    /// The `detail` of a `consented` audit row: `version=V sha256=HEX`.
    pub fn audit_detail(&self) -> String {
        format!("version={} sha256={}", self.version, self.sha256())
    }
}

/// A participant's agreement: to which version, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsentGiven {
    pub version: String,
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_texts_are_bounded() {
        assert!(ConsentText::new("2026-01", "I agree to a video visit.\nSecond line.").is_ok());
        assert_eq!(ConsentText::new("", "x"), Err(ConsentError::Version));
        assert_eq!(ConsentText::new("v 1", "x"), Err(ConsentError::Version));
        assert_eq!(
            ConsentText::new("v".repeat(65), "x"),
            Err(ConsentError::Version)
        );
        assert_eq!(ConsentText::new("v1", "  \n"), Err(ConsentError::Text));
        assert_eq!(ConsentText::new("v1", "a\u{0}b"), Err(ConsentError::Text));
        assert_eq!(
            ConsentText::new("v1", "é".repeat(8001)),
            Err(ConsentError::Text)
        );
        assert!(ConsentText::new("v1", "é".repeat(8000)).is_ok());
        assert!(serde_json::from_str::<ConsentText>(r#"{"version":"v 1","text":"x"}"#).is_err());
    }

    #[test]
    fn the_audit_names_the_version_and_the_hash_of_the_exact_text() {
        let c = ConsentText::new("v2", "abc").unwrap();
        // echo -n abc | sha256sum
        assert_eq!(
            c.sha256(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            c.audit_detail(),
            "version=v2 sha256=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let other = ConsentText::new("v2", "abc ").unwrap();
        assert_ne!(c.sha256(), other.sha256(), "one space changes the hash");
    }
}
