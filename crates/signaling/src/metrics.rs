//! The signaling metrics, registered once so the relay path only bumps atomics.

use metrics::{Counter, Gauge, counter, gauge};

pub(crate) struct Metrics {
    pub connections: Gauge,
    pub relayed_signals: Counter,
    pub relayed_chat: Counter,
    pub joins: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            connections: gauge!("bedside_connections"),
            relayed_signals: counter!("bedside_messages_relayed_total", "kind" => "signal"),
            relayed_chat: counter!("bedside_messages_relayed_total", "kind" => "chat"),
            joins: counter!("bedside_joins_total"),
        }
    }

    /// Counts a refusal by its protocol error code (a small fixed set).
    pub fn error(&self, code: &'static str) {
        counter!("bedside_errors_total", "code" => code).increment(1);
    }

    pub fn closed(&self, code: u16) {
        counter!("bedside_ws_closes_total", "code" => code.to_string()).increment(1);
    }
}
