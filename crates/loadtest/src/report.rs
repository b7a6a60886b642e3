//! What a run measured: latency histograms (HDR, microseconds), counts, errors by kind,
//! and server-side costs; printed as a table or as JSON.

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Latencies in microseconds, up to 10 minutes, 3 significant figures.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static bounds are valid")
}

/// What one task measured; tasks merge into one at the end.
#[derive(Clone, Default)]
pub struct Stats {
    pub latencies: BTreeMap<&'static str, Histogram<u64>>,
    pub counts: BTreeMap<&'static str, u64>,
    pub errors: BTreeMap<String, u64>,
}

impl Stats {
    pub fn record(&mut self, name: &'static str, took: Duration) {
        let us = took.as_micros().clamp(1, 600_000_000) as u64;
        let _ = self
            .latencies
            .entry(name)
            .or_insert_with(histogram)
            .record(us);
    }

    pub fn record_ns(&mut self, name: &'static str, ns: u64) {
        let us = (ns / 1000).clamp(1, 600_000_000);
        let _ = self
            .latencies
            .entry(name)
            .or_insert_with(histogram)
            .record(us);
    }

    pub fn count(&mut self, name: &'static str, n: u64) {
        *self.counts.entry(name).or_default() += n;
    }

    pub fn error(&mut self, kind: impl Into<String>) {
        let kind: String = kind.into();
        // Keep kinds few: cut per-instance details.
        let kind = kind.chars().take(60).collect::<String>();
        *self.errors.entry(kind).or_default() += 1;
    }

    pub fn merge(&mut self, other: Stats) {
        for (k, h) in other.latencies {
            let _ = self.latencies.entry(k).or_insert_with(histogram).add(&h);
        }
        for (k, n) in other.counts {
            *self.counts.entry(k).or_default() += n;
        }
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
    }
}

/// The result of one scenario run against one target.
pub struct Report {
    pub scenario: String,
    pub target: String,
    pub params: Value,
    /// Length of the measured phase.
    pub elapsed: Duration,
    pub stats: Stats,
    /// Server-side figures, when its pid was given: cpu seconds, rss bytes...
    pub server: BTreeMap<&'static str, f64>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Report {
    /// Messages per second over the measured phase.
    pub fn rate(&self, count: &str) -> f64 {
        let n = self.stats.counts.get(count).copied().unwrap_or(0) as f64;
        n / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn to_json(&self) -> Value {
        let latencies: serde_json::Map<String, Value> = self
            .stats
            .latencies
            .iter()
            .map(|(k, h)| {
                (
                    k.to_string(),
                    json!({
                        "count": h.len(),
                        "p50_ms": ms(h.value_at_quantile(0.5)),
                        "p90_ms": ms(h.value_at_quantile(0.9)),
                        "p99_ms": ms(h.value_at_quantile(0.99)),
                        "max_ms": ms(h.max()),
                    }),
                )
            })
            .collect();
        json!({
            "scenario": self.scenario,
            "target": self.target,
            "params": self.params,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "latency": latencies,
            "counts": self.stats.counts,
            "rates_per_s": self.stats.counts.keys().map(|k| (k.to_string(), json!(self.rate(k)))).collect::<serde_json::Map<_, _>>(),
            "errors": self.stats.errors,
            "server": self.server,
        })
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} against {} ({}), measured for {:.1} s",
            self.scenario,
            self.target,
            self.params,
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "  {:<22} {:>9} {:>9} {:>9} {:>9} {:>10}",
            "latency (ms)", "p50", "p90", "p99", "max", "count"
        );
        for (k, h) in &self.stats.latencies {
            let _ = writeln!(
                out,
                "  {:<22} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10}",
                k,
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.9)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max()),
                h.len()
            );
        }
        for (k, n) in &self.stats.counts {
            let _ = writeln!(out, "  {:<22} {:>12} ({:.0}/s)", k, n, self.rate(k));
        }
        for (k, v) in &self.server {
            let _ = writeln!(out, "  server {:<15} {:>12.1}", k, v);
        }
        if self.stats.errors.is_empty() {
            let _ = writeln!(out, "  errors: none");
        } else {
            for (k, n) in &self.stats.errors {
                let _ = writeln!(out, "  error {k}: {n}");
            }
        }
        out
    }
}
