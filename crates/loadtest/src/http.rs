//! The HTTP client every load scenario (and the black-box test suite) uses.
//!
//! The workspace builds reqwest without a bundled TLS provider (the server picks `ring`
//! for everything it does), so any process that builds a client installs that same
//! provider first; otherwise reqwest panics on construction.

use std::sync::Once;

/// A reqwest builder, with the process-wide TLS provider installed.
pub fn client_builder() -> reqwest::ClientBuilder {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Err only means another part of the process installed one first: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
}

/// A default client (see [`client_builder`]).
pub fn client() -> reqwest::Client {
    client_builder()
        .build()
        .unwrap_or_else(|e| panic!("the HTTP client cannot be built: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_client_builds_without_a_bundled_provider() {
        let _ = super::client();
    }
}
