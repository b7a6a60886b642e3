//! The signaling metrics, registered once so the relay path only bumps atomics. (Their
//! HELP texts and buckets are set where the recorder is: the server's `prometheus.rs`.)

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

/// One relayed frame in this many is timed: the relay histogram costs a clock read and a
/// sample per that many frames, not per frame.
pub(crate) const RELAY_SAMPLE: u32 = 32;

pub(crate) struct Metrics {
    pub connections: Gauge,
    pub relayed_signals: Counter,
    pub relayed_chat: Counter,
    pub joins: Counter,
    /// Token check to `joined` queued.
    pub join_duration: Histogram,
    /// A relayed frame off the socket to its copies queued (sampled, see [`RELAY_SAMPLE`]).
    pub relay_duration: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            connections: gauge!("bedside_connections"),
            relayed_signals: counter!("bedside_messages_relayed_total", "kind" => "signal"),
            relayed_chat: counter!("bedside_messages_relayed_total", "kind" => "chat"),
            joins: counter!("bedside_joins_total"),
            join_duration: histogram!("bedside_join_duration_seconds"),
            relay_duration: histogram!("bedside_relay_duration_seconds"),
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
