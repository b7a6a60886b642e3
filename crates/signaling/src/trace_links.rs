//! How one trace follows a participant from the REST call that minted their link, through
//! their join and admission, to the webhook deliveries about them, though these happen in
//! different requests, connections and tasks: each step remembers its span's OpenTelemetry
//! context under a pseudonymous key (the token's `jti`, then the participant id), and the
//! next step continues from it.
//!
//! Only when traces are exported (`BEDSIDE_OTLP_ENDPOINT`, see the server's telemetry):
//! otherwise [`enable`] was never called and every function returns at once. What is kept
//! is a span context (trace and span ids), never a token or a name; entries expire after a
//! day and the map is bounded. One node's memory: in a cluster, a join that lands on another
//! node than the mint starts a trace of its own.

use dashmap::DashMap;
use opentelemetry::trace::TraceContextExt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// How long a step's context waits for the next step (a link is valid up to 31 days; a day
/// covers the visits that happen).
const KEEP: Duration = Duration::from_secs(24 * 3600);
/// Most contexts kept: beyond it the expired are dropped, then the rest.
const MAX: usize = 100_000;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Where a step left its trace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A join token, by its `jti`.
    Token(String),
    /// A participant of a visit, by their pseudonymous id.
    Participant(String),
}

fn store() -> &'static DashMap<Key, (opentelemetry::Context, Instant)> {
    static STORE: OnceLock<DashMap<Key, (opentelemetry::Context, Instant)>> = OnceLock::new();
    STORE.get_or_init(DashMap::new)
}

/// Traces are exported: keep the links.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Remembers `span`'s context under `key`, for the next step.
pub fn remember(key: Key, span: &tracing::Span) {
    if !enabled() {
        return;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    let store = store();
    if store.len() >= MAX {
        store.retain(|_, (_, at)| at.elapsed() < KEEP);
        if store.len() >= MAX {
            store.clear();
        }
    }
    store.insert(key, (cx, Instant::now()));
}

/// Makes `span` a child of the step remembered under `key`, if there is one. Returns
/// whether it did.
pub fn continue_from(key: &Key, span: &tracing::Span) -> bool {
    if !enabled() {
        return false;
    }
    let Some(cx) = store()
        .get(key)
        .filter(|e| e.1.elapsed() < KEEP)
        .map(|e| e.0.clone())
    else {
        return false;
    };
    span.set_parent(cx).is_ok()
}
