//! `reconnect-storm`: N doctor/patient pairs lose their connections at once and come back
//! with their resume tokens, each after a random wait within a window. Two scenarios:
//! - [`client_drop`]: the clients drop their own connections (no close frame, like a network
//!   outage); everyone must be readmitted without a new admission, and relay must work.
//! - [`server_restart`]: the *server* goes away (`kill -9`, or any restart) and comes back on
//!   the same database, started by the caller in between; everyone must be back in their
//!   own place, and every visit and audit trail must read back as before.
//!
//! This module holds what both share: coming back with a resume token. A failed attempt
//! that the protocol documents as "try again" (connect refused or reset while the server
//! starts, `503`/`429` at the upgrade, an `unavailable` error, a 1001 or 1013 close during `join`)
//! is retried with backoff and counted as a retry, not an error.

pub mod client_drop;
pub mod server_restart;

pub use client_drop::{Options, run};
pub use server_restart::{Prepared, RestartOptions, RestartOutcome, prepare};

use super::signal;
use crate::client::{Incoming, STEP, Ws};
use crate::report::Stats;
use crate::target::Target;
use anyhow::bail;
use rand::Rng;
use serde_json::{Value, json};
use std::net::IpAddr;
use std::time::Duration;

/// Attempts per client before it gives up.
const ATTEMPTS: u32 = 8;
/// First wait after a failed attempt; doubled each time, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A signal each way between two admitted participants.
async fn relay_both_ways(
    doctor: &mut Ws,
    doctor_to: &str,
    patient: &mut Ws,
    patient_to: &str,
) -> anyhow::Result<()> {
    doctor.send(signal(doctor_to, r#"{"check":1}"#)).await?;
    patient.until("signal").await?;
    patient.send(signal(patient_to, r#"{"check":2}"#)).await?;
    doctor.until("signal").await?;
    Ok(())
}

/// What one attempt to come back ended in.
enum Attempt {
    /// Joined as the same participant; the placement frame's type (`admitted`/`waiting`).
    Back(Box<Ws>, String),
    /// A documented "try again": counted under this name, then retried.
    Retry(&'static str),
    /// Anything else: the client gives up.
    Fatal(String),
}

/// Comes back with the resume token, retrying documented retry hints with backoff (and
/// counting them as retries). Returns the socket and where the participant was placed.
async fn rejoin(
    target: &Target,
    resume: &str,
    id: &str,
    source: IpAddr,
    stats: &mut Stats,
) -> anyhow::Result<(Ws, String)> {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        match try_rejoin(target, resume, id, source).await {
            Attempt::Back(ws, placed) => return Ok((*ws, placed)),
            Attempt::Fatal(e) => bail!(e),
            Attempt::Retry(kind) => {
                stats.count(kind, 1);
                if attempt == ATTEMPTS {
                    bail!("gave up after {ATTEMPTS} attempts ({kind})");
                }
                let jitter = Duration::from_millis(rand::rng().random_range(0..100));
                tokio::time::sleep(backoff + jitter).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    bail!("gave up")
}

async fn try_rejoin(target: &Target, resume: &str, id: &str, source: IpAddr) -> Attempt {
    let mut ws = match Ws::connect(&target.ws_url(""), source).await {
        Ok(ws) => ws,
        Err(e) => return refused_upgrade(&e),
    };
    if ws
        .send(json!({"type": "join", "resume_token": resume}).to_string())
        .await
        .is_err()
    {
        return Attempt::Retry("retry: connection lost while joining");
    }
    let joined = match frame(&mut ws).await {
        Ok(v) => v,
        Err(attempt) => return attempt,
    };
    if joined["type"] != "joined" {
        return Attempt::Fatal(format!("expected joined, got {}", joined["type"]));
    }
    if joined["participant_id"].as_str() != Some(id) {
        return Attempt::Fatal("came back as someone else".into());
    }
    match frame(&mut ws).await {
        Ok(placed) => {
            let placed = placed["type"].as_str().unwrap_or("?").to_owned();
            Attempt::Back(Box::new(ws), placed)
        }
        Err(attempt) => attempt,
    }
}

/// Sorts out why the connection or the upgrade failed. The client's error is text by the
/// time it gets here, so the HTTP status is read from it.
fn refused_upgrade(e: &anyhow::Error) -> Attempt {
    let text = format!("{e:#}");
    if text.contains("HTTP error: 503") {
        Attempt::Retry("retry: 503 at upgrade (busy, Retry-After)")
    } else if text.contains("HTTP error: 429") {
        Attempt::Retry("retry: 429 at upgrade (rate limit)")
    } else if text.contains("HTTP error") {
        Attempt::Fatal(text)
    } else {
        // Refused or reset: nothing is listening yet, or the listener is not serving yet.
        Attempt::Retry("retry: connect failed (server not up)")
    }
}

/// The next frame during `join`, or what its absence means.
async fn frame(ws: &mut Ws) -> Result<Value, Attempt> {
    let incoming = match tokio::time::timeout(STEP, ws.next()).await {
        Err(_) => return Err(Attempt::Fatal("no answer to join within 30 s".into())),
        Ok(Err(_)) | Ok(Ok(Incoming::Closed(1006))) => {
            return Err(Attempt::Retry("retry: connection lost while joining"));
        }
        Ok(Ok(Incoming::Closed(1001))) => {
            return Err(Attempt::Retry("retry: closed 1001 (server going away)"));
        }
        Ok(Ok(Incoming::Closed(1013))) => {
            return Err(Attempt::Retry("retry: closed 1013 (try again later)"));
        }
        Ok(Ok(Incoming::Closed(code))) => return Err(Attempt::Fatal(format!("closed {code}"))),
        Ok(Ok(Incoming::Text(text))) => text,
    };
    let v: Value = serde_json::from_str(&incoming)
        .map_err(|e| Attempt::Fatal(format!("unparsable frame: {e}")))?;
    if v["type"] == "error" {
        // `unavailable` is followed by a 1013: storage is having trouble, or the visit's
        // owner is being replaced; come back later.
        return Err(if v["code"] == "unavailable" {
            Attempt::Retry("retry: error unavailable (then 1013)")
        } else {
            Attempt::Fatal(format!("error {}", v["code"]))
        });
    }
    Ok(v)
}
