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
//! Signature (as the payment providers do it): `Bedside-Signature: t=UNIX,v1=HEX`, where
//! `HEX` is HMAC-SHA256 of `UNIX.BODY` under the tenant's webhook secret. See
//! docs/webhooks.md for verifying it.

use crate::config::{DeliveryConfig, WebhookConfig};
use bedside_rooms::storage::{Attempt, Storage, StoredEvent};
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Events read per query.
const BATCH: u32 = 100;

/// The `Bedside-Signature` header value for `body` sent at `t`.
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let hex = hex::encode(mac.finalize().into_bytes());
    format!("t={t},v1={hex}")
}

/// The JSON a receiver gets for one event.
pub fn payload(event: &StoredEvent) -> serde_json::Value {
    serde_json::json!({
        "id": event.id,
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
    storage: Arc<dyn Storage>,
    endpoints: Vec<WebhookConfig>,
    settings: DeliveryConfig,
    stop: CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let client = reqwest::Client::builder()
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("bedside/", env!("CARGO_PKG_VERSION")))
        .build()?;
    Ok(endpoints
        .into_iter()
        .map(|endpoint| {
            let task = Delivery {
                storage: storage.clone(),
                client: client.clone(),
                endpoint,
                settings: settings.clone(),
            };
            tokio::spawn(task.run(stop.clone()))
        })
        .collect())
}

struct Delivery {
    storage: Arc<dyn Storage>,
    client: reqwest::Client,
    endpoint: WebhookConfig,
    settings: DeliveryConfig,
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
            if pending.is_empty() {
                return Ok(None);
            }
            for (event, due) in &pending {
                let now = Utc::now();
                if *due > now {
                    // Order holds: nothing behind a waiting event goes first.
                    return Ok(Some(*due));
                }
                let outcome = match self.send(event).await {
                    Ok(()) => Attempt::Delivered(Utc::now()),
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
                self.storage.record_attempt(event.seq, outcome).await?;
                metrics::counter!("bedside_webhook_attempts_total", "outcome" => match outcome {
                    Attempt::Delivered(_) => "delivered",
                    Attempt::Retry(_) => "retry",
                    Attempt::GaveUp(_) => "gave_up",
                })
                .increment(1);
                if let Attempt::Retry(next) = outcome {
                    return Ok(Some(next));
                }
            }
        }
    }

    async fn send(&self, event: &StoredEvent) -> anyhow::Result<()> {
        let body = payload(event).to_string();
        let sig = signature(self.endpoint.secret.expose(), Utc::now().timestamp(), &body);
        let resp = self
            .client
            .post(&self.endpoint.url)
            .header("content-type", "application/json")
            .header("bedside-event-id", &event.id)
            .header("bedside-event-type", &event.kind)
            .header("bedside-signature", sig)
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

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: python3 -c "import hmac,hashlib;
        //   print(hmac.new(b'whsec_test_0123456789', b'1700000000.{\"a\":1}', hashlib.sha256).hexdigest())"
        assert_eq!(
            signature("whsec_test_0123456789", 1_700_000_000, r#"{"a":1}"#),
            "t=1700000000,v1=d45143ed412aa9d672e3e06cc6753ced7e0e5a1757b1109ff599ba71790e646d"
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
