//! Webhook delivery: each tenant's visit events POSTed to its URL, signed, at least once,
//! in order, from the durable outbox in the database.
//!
//! One task per tenant reads that tenant's undelivered events in sequence order and sends
//! them one at a time, so a receiver sees each visit's events in order. A failed delivery
//! is retried with exponential backoff and jitter, and the events behind it wait; after the
//! give-up horizon (at least 24 hours) an event is marked failed and the rest go on. A
//! slow or dead receiver holds up only its own tenant's task: signaling and other tenants
//! never wait on it. What was not yet confirmed when the process stopped (even by
//! `kill -9`) is sent again after a restart, with the same event id.
//!
//! Signatures, both on every delivery (see docs/webhooks.md):
//! - [Standard Webhooks](https://www.standardwebhooks.com/): `webhook-id` (the event id),
//!   `webhook-timestamp` and `webhook-signature: v1,BASE64`, HMAC-SHA256 of
//!   `ID.TIMESTAMP.BODY` under the key a `whsec_<base64>` secret decodes to (any other
//!   secret's own bytes);
//! - the older `Bedside-Signature: t=UNIX,v1=HEX`, HMAC-SHA256 of `UNIX.BODY` under the
//!   secret's text, unchanged so existing receivers keep working.
//!
//! During a rotation both the secret and the previous one sign: each header then carries
//! two signatures, and a receiver holding either secret verifies.

use crate::config::{DeliveryConfig, WebhookConfig};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use bedside_auth::TenantId;
use bedside_rooms::storage::{Attempt, EventOutbox, StoredEvent};
use bedside_signaling::trace_links::{self, Key};
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use rand::Rng;
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Events read per query.
const BATCH: u32 = 100;
/// The Standard Webhooks secret prefix.
const WHSEC: &str = "whsec_";
/// Shortest secret accepted: characters of a raw secret, bytes of a decoded `whsec_` one.
const MIN_SECRET: usize = 16;

/// One webhook secret, ready to sign with.
pub struct SigningSecret {
    /// The secret as configured: the key of `Bedside-Signature`.
    text: SecretSlice<u8>,
    /// The Standard Webhooks key: the bytes a `whsec_<base64>` secret decodes to, or
    /// else the same bytes as `text`.
    key: SecretSlice<u8>,
}

impl SigningSecret {
    /// A `whsec_` secret whose rest is base64 (padded or not) of at least 16 bytes is the
    /// standard form; any other secret, of at least 16 characters, is used as it is
    /// written (as secrets were before, so no configuration that worked stops working).
    pub fn new(secret: &str) -> Result<Self, String> {
        if secret.len() < MIN_SECRET {
            return Err(format!("must have at least {MIN_SECRET} characters"));
        }
        let decoded = secret
            .strip_prefix(WHSEC)
            .and_then(|b64| {
                STANDARD
                    .decode(b64)
                    .or_else(|_| STANDARD_NO_PAD.decode(b64))
                    .ok()
            })
            .filter(|key| key.len() >= MIN_SECRET);
        let key = decoded.unwrap_or_else(|| secret.as_bytes().to_vec());
        Ok(Self {
            text: secret.as_bytes().to_vec().into(),
            key: key.into(),
        })
    }

    /// Whether the Standard Webhooks key is the secret's text (not the `whsec_` form).
    pub fn is_raw(&self) -> bool {
        self.key.expose_secret() == self.text.expose_secret()
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A tenant's webhook: where to send and the secrets to sign with.
pub struct Endpoint {
    pub tenant: TenantId,
    pub url: String,
    /// The secret, then the previous one during a rotation.
    secrets: Vec<SigningSecret>,
}

impl Endpoint {
    pub fn new(setting: &WebhookConfig) -> anyhow::Result<Self> {
        let tenant = setting.tenant.clone();
        let mut secrets = Vec::with_capacity(2);
        for (name, secret) in std::iter::once(("secret", Some(&setting.secret))).chain(
            std::iter::once(("previous_secret", setting.previous_secret.as_ref())),
        ) {
            if let Some(secret) = secret {
                let secret = secret.expose();
                let signing = SigningSecret::new(secret)
                    .map_err(|e| anyhow::anyhow!("webhook {name} for {tenant}: {e}"))?;
                if secret.starts_with(WHSEC) && signing.is_raw() {
                    tracing::warn!(%tenant, "webhook {name} starts with whsec_ but is not base64 of at least {MIN_SECRET} bytes: it signs as written, which Standard Webhooks libraries verify only as a raw secret");
                }
                secrets.push(signing);
            }
        }
        Ok(Self {
            tenant,
            url: setting.url.clone(),
            secrets,
        })
    }

    /// The signature headers of `body`, event `id`, sent at `t`: `webhook-signature`
    /// and `Bedside-Signature`.
    pub fn signatures(&self, id: &str, t: i64, body: &str) -> (String, String) {
        (
            standard_signature(&self.secrets, id, t, body),
            signature(&self.secrets, t, body),
        )
    }
}

/// The `webhook-signature` header value (Standard Webhooks): `v1,BASE64` per secret,
/// space-separated.
pub fn standard_signature(secrets: &[SigningSecret], id: &str, t: i64, body: &str) -> String {
    let t = t.to_string();
    secrets
        .iter()
        .map(|s| {
            let mac = hmac_sha256(
                s.key.expose_secret(),
                &[id.as_bytes(), b".", t.as_bytes(), b".", body.as_bytes()],
            );
            format!("v1,{}", STANDARD.encode(mac))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `Bedside-Signature` header value: `t=UNIX,v1=HEX`, one `v1` per secret.
pub fn signature(secrets: &[SigningSecret], t: i64, body: &str) -> String {
    let ts = t.to_string();
    let mut header = format!("t={t}");
    for s in secrets {
        let mac = hmac_sha256(
            s.text.expose_secret(),
            &[ts.as_bytes(), b".", body.as_bytes()],
        );
        header.push_str(",v1=");
        header.push_str(&hex::encode(mac));
    }
    header
}

/// The JSON a receiver gets for one event.
pub fn payload(event: &StoredEvent) -> serde_json::Value {
    serde_json::json!({
        "id": event.id,
        "seq": event.seq,
        "type": event.kind,
        "created_at": event.at,
        "visit_id": event.visit_id,
        "sequence": event.visit_seq,
        "data": event.data,
    })
}

/// How long to wait before attempt `attempt` (1-based, the first retry is 2): doubling
/// from `base`, capped, with up to half of it added at random so retries of many events
/// do not fall on the same instant.
pub fn backoff(settings: &DeliveryConfig, attempt: i64) -> Duration {
    let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let base = settings.retry_base.saturating_mul(2u32.saturating_pow(exp));
    let capped = base.min(settings.retry_max);
    let jitter = rand::rng().random_range(0.0..0.5);
    capped.mul_f64(1.0 + jitter)
}

/// Starts one delivery task per configured tenant.
pub fn spawn(
    storage: Arc<dyn EventOutbox>,
    endpoints: Vec<WebhookConfig>,
    settings: DeliveryConfig,
    stop: CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let client = reqwest::Client::builder()
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("bedside/", env!("CARGO_PKG_VERSION")))
        .build()?;
    endpoints
        .iter()
        .map(|config| {
            let endpoint = Endpoint::new(config)?;
            let task = Delivery {
                storage: storage.clone(),
                client: client.clone(),
                metrics: DeliveryMetrics::new(&endpoint.tenant),
                endpoint,
                settings: settings.clone(),
            };
            Ok(tokio::spawn(task.run(stop.clone())))
        })
        .collect()
}

/// One tenant's delivery metrics, resolved once.
struct DeliveryMetrics {
    delivered: metrics::Counter,
    retry: metrics::Counter,
    gave_up: metrics::Counter,
    /// From an event happening to its receiver confirming it.
    lag: metrics::Histogram,
    /// Age of the oldest event not yet delivered: rises while a backlog grows.
    oldest_pending: metrics::Gauge,
}

impl DeliveryMetrics {
    fn new(tenant: &TenantId) -> Self {
        let attempts = |outcome: &'static str| metrics::counter!("bedside_webhook_attempts_total", "outcome" => outcome);
        Self {
            delivered: attempts("delivered"),
            retry: attempts("retry"),
            gave_up: attempts("gave_up"),
            lag: metrics::histogram!("bedside_webhook_delivery_lag_seconds"),
            oldest_pending: metrics::gauge!(
                "bedside_webhook_oldest_pending_seconds",
                "tenant" => tenant.as_str().to_owned()
            ),
        }
    }
}

struct Delivery {
    storage: Arc<dyn EventOutbox>,
    client: reqwest::Client,
    endpoint: Endpoint,
    settings: DeliveryConfig,
    metrics: DeliveryMetrics,
}

impl Delivery {
    async fn run(self, stop: CancellationToken) {
        let poll = self.settings.poll;
        loop {
            let wait = match self.pass().await {
                Ok(Some(next)) => (next - Utc::now())
                    .to_std()
                    .unwrap_or_default()
                    .min(poll.max(Duration::from_secs(1))),
                Ok(None) => poll,
                Err(e) => {
                    tracing::warn!(tenant = %self.endpoint.tenant, error = %e, "webhook outbox unreadable");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {}
            }
        }
    }

    /// Sends what is due, in order. Returns when the first event still waiting may be tried,
    /// if one is waiting for a retry.
    async fn pass(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
        loop {
            let pending = self
                .storage
                .undelivered(&self.endpoint.tenant, BATCH)
                .await?;
            let oldest = pending
                .first()
                .map_or(TimeDelta::zero(), |(event, _)| Utc::now() - event.at);
            self.metrics
                .oldest_pending
                .set(oldest.as_seconds_f64().max(0.0));
            if pending.is_empty() {
                return Ok(None);
            }
            for (event, due) in &pending {
                if *due > Utc::now() {
                    // Order holds: nothing behind a waiting event goes first.
                    return Ok(Some(*due));
                }
                let sent = self.send(event).await;
                // The backoff counts from the end of this attempt: one that took the whole
                // timeout must not be followed by the next at once.
                let now = Utc::now();
                let outcome = match sent {
                    Ok(()) => Attempt::Delivered(now),
                    Err(e) if now - event.at > self.settings.give_up => {
                        tracing::warn!(tenant = %self.endpoint.tenant, event = %event.id, error = %e, "webhook given up");
                        Attempt::GaveUp(now)
                    }
                    Err(e) => {
                        let wait = backoff(&self.settings, event.attempts + 1);
                        tracing::info!(tenant = %self.endpoint.tenant, event = %event.id, attempts = event.attempts + 1, error = %e, "webhook failed, will retry");
                        Attempt::Retry(
                            now + TimeDelta::from_std(wait).unwrap_or(TimeDelta::seconds(1)),
                        )
                    }
                };
                self.storage.record_attempt(event.row, outcome).await?;
                match outcome {
                    Attempt::Delivered(_) => {
                        self.metrics.delivered.increment(1);
                        self.metrics
                            .lag
                            .record((now - event.at).as_seconds_f64().max(0.0));
                    }
                    Attempt::Retry(next) => {
                        self.metrics.retry.increment(1);
                        return Ok(Some(next));
                    }
                    Attempt::GaveUp(_) => self.metrics.gave_up.increment(1),
                }
            }
        }
    }

    async fn send(&self, event: &StoredEvent) -> anyhow::Result<()> {
        use tracing::Instrument;
        // A delivery about a participant continues their trace (mint, join, admission).
        let span = tracing::info_span!(
            "webhook delivery",
            event = %event.id,
            event_type = %event.kind,
            visit = %event.visit_id,
            attempt = event.attempts + 1,
        );
        if let Some(participant) = event.data["participant_id"].as_str() {
            trace_links::continue_from(&Key::Participant(participant.to_owned()), &span);
        }
        self.post(event).instrument(span).await
    }

    async fn post(&self, event: &StoredEvent) -> anyhow::Result<()> {
        let body = payload(event).to_string();
        let t = Utc::now().timestamp();
        let (standard, bedside) = self.endpoint.signatures(&event.id, t, &body);
        let resp = self
            .client
            .post(&self.endpoint.url)
            .header("content-type", "application/json")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", t.to_string())
            .header("webhook-signature", standard)
            .header("bedside-event-id", &event.id)
            .header("bedside-event-type", &event.kind)
            .header("bedside-signature", bedside)
            .body(body)
            .send()
            .await
            // The URL may carry the receiver's own credentials: keep it out of the logs.
            .map_err(reqwest::Error::without_url)?;
        anyhow::ensure!(
            resp.status().is_success(),
            "receiver answered {}",
            resp.status()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(list: &[&str]) -> Vec<SigningSecret> {
        list.iter()
            .map(|s| SigningSecret::new(s).unwrap())
            .collect()
    }

    #[test]
    fn bedside_signatures_are_hmac_sha256_of_timestamp_dot_body_under_the_text() {
        // Computed independently: python3 -c "import hmac,hashlib;
        //   print(hmac.new(b'whsec_test_0123456789', b'1700000000.{\"a\":1}', hashlib.sha256).hexdigest())"
        let one =
            "t=1700000000,v1=d45143ed412aa9d672e3e06cc6753ced7e0e5a1757b1109ff599ba71790e646d";
        assert_eq!(
            signature(
                &secrets(&["whsec_test_0123456789"]),
                1_700_000_000,
                r#"{"a":1}"#
            ),
            one
        );
        // A whsec_ base64 secret still signs this header with its text, as before.
        //   hmac.new(b'whsec_MDEyMzQ1Njc4OWFiY2RlZg==', ...)
        let rotating = signature(
            &secrets(&["whsec_test_0123456789", "whsec_MDEyMzQ1Njc4OWFiY2RlZg=="]),
            1_700_000_000,
            r#"{"a":1}"#,
        );
        assert_eq!(
            rotating,
            format!("{one},v1=c23fa8f78001c1b8beb98ab60386155448be66d8915134dc8bed152e21976bf5")
        );
    }

    #[test]
    fn standard_signatures_follow_the_specification() {
        // Computed with the official Python package (standardwebhooks 1.3.0):
        //   Webhook("whsec_MDEyMzQ1Njc4OWFiY2RlZg==").sign("msg_1", datetime.fromtimestamp(1700000000, UTC), '{"a":1}')
        //   Webhook(b"plain-secret-0123456789").sign(...)
        let b64 = "v1,41C4mdfM4X7k7EqLRBhc2OjUAQFwQVsqMUoL0CbTfxc=";
        let raw = "v1,geoU0usOm8NtNTCRW8e6cYAu0/Z1bbAn19S4rRFSBmM=";
        let id = "msg_1";
        let body = r#"{"a":1}"#;
        assert_eq!(
            standard_signature(
                &secrets(&["whsec_MDEyMzQ1Njc4OWFiY2RlZg=="]),
                id,
                1_700_000_000,
                body
            ),
            b64
        );
        // Unpadded base64 is the same key.
        assert_eq!(
            standard_signature(
                &secrets(&["whsec_MDEyMzQ1Njc4OWFiY2RlZg"]),
                id,
                1_700_000_000,
                body
            ),
            b64
        );
        // Not base64 after the prefix, or no prefix: the secret's own bytes.
        assert_eq!(
            standard_signature(
                &secrets(&["plain-secret-0123456789"]),
                id,
                1_700_000_000,
                body
            ),
            raw
        );
        assert_eq!(
            standard_signature(
                &secrets(&["whsec_MDEyMzQ1Njc4OWFiY2RlZg==", "plain-secret-0123456789"]),
                id,
                1_700_000_000,
                body
            ),
            format!("{b64} {raw}")
        );
    }

    #[test]
    fn short_secrets_are_refused_and_short_keys_are_not_taken_as_standard() {
        assert!(SigningSecret::new("short").is_err());
        assert!(SigningSecret::new("whsec_YWJj").is_err());
        // Not base64: used as written.
        assert!(
            SigningSecret::new("whsec_not_base64_here")
                .unwrap()
                .is_raw()
        );
        // Base64 of 12 bytes: too short a key for the standard form, so as written (and
        // as it was before the standard form existed).
        assert!(
            SigningSecret::new("whsec_0123456789abcdef")
                .unwrap()
                .is_raw()
        );
        assert!(
            !SigningSecret::new("whsec_MDEyMzQ1Njc4OWFiY2RlZg==")
                .unwrap()
                .is_raw()
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let s = DeliveryConfig {
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            give_up: TimeDelta::hours(25),
            timeout: Duration::from_secs(10),
            poll: Duration::from_millis(250),
        };
        for (attempt, base) in [
            (1, 1.0),
            (2, 2.0),
            (3, 4.0),
            (10, 512.0),
            (11, 600.0),
            (40, 600.0),
        ] {
            let d = backoff(&s, attempt).as_secs_f64();
            assert!(d >= base && d <= base * 1.5, "attempt {attempt}: {d} s");
        }
    }
}
