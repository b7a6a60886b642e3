//! Secrets from configuration: read like strings, never printed. `Debug` and `Display`
//! show `[redacted]`, and they cannot be serialized, so no log line, error message or
//! `check-config` output can carry one by accident.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::fmt;

#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(secret: &str) -> Self {
        Self(SecretString::from(secret.to_owned()))
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

/// A URL that may carry a password (`postgres://user:PASSWORD@...`, `redis://:PASSWORD@...`):
/// it prints with the password replaced.
#[derive(Clone, PartialEq)]
pub struct SecretUrl(Secret);

impl SecretUrl {
    pub fn new(url: Secret) -> Self {
        Self(url)
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bedside_rooms::storage::redacted_url(self.expose()))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2-0123456789");
        assert_eq!(format!("{s:?}"), "[redacted]");
        let url = SecretUrl::new(Secret::new("postgres://bedside:hunter2@db:5432/bedside"));
        assert!(!format!("{url} {url:?}").contains("hunter2"), "{url}");
        assert_eq!(url.expose(), "postgres://bedside:hunter2@db:5432/bedside");
    }
}
