//! One participant's call quality over a visit: every report folded into a [`Tracker`] that
//! stays the same size however long the call lasts (bucket counts, sums and extremes, not
//! samples), and the [`Summary`] clinics read from it.
//!
//! What a report stands for in time: the stretch since the previous report, capped at
//! [`MAX_GAP`] (a participant who stopped reporting for a while is not counted as measured
//! for that while); a first report stands for [`NOMINAL_INTERVAL`].

use super::classify::{Classifier, Quality, Reason, Sample};
use super::report::{Precheck, StatsReport};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Reports closer together than this are refused (`too_frequent`); so are prechecks.
pub const MIN_INTERVAL: TimeDelta = TimeDelta::seconds(4);
/// What a participant's first report stands for: the interval clients report at.
pub const NOMINAL_INTERVAL: TimeDelta = TimeDelta::seconds(5);
/// The longest stretch one report accounts for.
pub const MAX_GAP: TimeDelta = TimeDelta::seconds(10);
/// The length of the stretch `worst_window` looks at.
pub const WINDOW: TimeDelta = TimeDelta::seconds(30);
/// How often, at most, a tracker whose class did not change is written to storage.
pub const PERSIST_EVERY: TimeDelta = TimeDelta::seconds(60);

/// Upper bounds of the round-trip buckets, in milliseconds (the last is the largest value a
/// report may carry). Percentiles are reported as the bound of their bucket.
const RTT_BOUNDS: &[f64] = &[
    10.0, 20.0, 30.0, 40.0, 50.0, 75.0, 100.0, 125.0, 150.0, 200.0, 250.0, 300.0, 400.0, 500.0,
    600.0, 800.0, 1000.0, 1500.0, 2000.0, 3000.0, 5000.0, 10000.0, 60000.0,
];
/// Upper bounds of the jitter buckets, in milliseconds.
const JITTER_BOUNDS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 75.0, 100.0, 150.0, 200.0, 500.0, 1000.0,
    60000.0,
];
/// Upper bounds of the packet loss buckets, as fractions.
const LOSS_BOUNDS: &[f64] = &[
    0.0, 0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0,
];

/// Counts per bucket of fixed upper bounds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
struct Buckets(Vec<u32>);

impl Buckets {
    fn record(&mut self, bounds: &[f64], value: f64) {
        // Bounds changed by a later version: start over rather than misread the counts.
        if self.0.len() != bounds.len() {
            self.0 = vec![0; bounds.len()];
        }
        let i = bounds.partition_point(|b| *b < value).min(bounds.len() - 1);
        self.0[i] = self.0[i].saturating_add(1);
    }

    /// The upper bound of the bucket holding quantile `q`.
    fn quantile(&self, bounds: &[f64], q: f64) -> Option<f64> {
        if self.0.len() != bounds.len() {
            return None;
        }
        let total: u64 = self.0.iter().map(|&c| u64::from(c)).sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (count, bound) in self.0.iter().zip(bounds) {
            seen += u64::from(*count);
            if seen >= rank {
                return Some(*bound);
            }
        }
        bounds.last().copied()
    }
}

/// Time spent in each class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ByQuality<T> {
    pub good: T,
    pub fair: T,
    pub poor: T,
}

impl<T> ByQuality<T> {
    fn get_mut(&mut self, q: Quality) -> &mut T {
        match q {
            Quality::Good => &mut self.good,
            Quality::Fair => &mut self.fair,
            Quality::Poor => &mut self.poor,
        }
    }
}

/// The precheck a participant sent, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PrecheckRecord {
    #[serde(flatten)]
    pub precheck: Precheck,
    pub at: DateTime<Utc>,
}

/// The worst stretch of up to [`WINDOW`]: the means of the reports in it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub quality: Quality,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    pub packet_loss: Option<f64>,
    pub rtt_ms: Option<f64>,
    pub jitter_ms: Option<f64>,
}

impl Window {
    /// Worse first by class, then by loss, round trip and jitter.
    fn worse_than(&self, other: &Window) -> bool {
        let key = |w: &Window| {
            [
                w.packet_loss.unwrap_or(0.0),
                w.rtt_ms.unwrap_or(0.0),
                w.jitter_ms.unwrap_or(0.0),
            ]
        };
        match self.quality.cmp(&other.quality) {
            std::cmp::Ordering::Equal => key(self)
                .partial_cmp(&key(other))
                .is_some_and(|o| o.is_gt()),
            o => o.is_gt(),
        }
    }
}

/// A report within the last [`WINDOW`].
#[derive(Debug, Clone, Copy, PartialEq)]
struct Recent {
    at: DateTime<Utc>,
    span: TimeDelta,
    sample: Sample,
}

/// Everything kept about one participant's quality. Serialized as is to storage, but for
/// its last 30 s of reports (a restart may forget them) and what it knows of its writes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Tracker {
    classifier: Classifier,
    worst: Option<Quality>,
    samples: u32,
    first_sample_at: Option<DateTime<Utc>>,
    last_sample_at: Option<DateTime<Utc>>,
    last_report_at: Option<DateTime<Utc>>,
    measured_ms: i64,
    relay_ms: i64,
    class_ms: ByQuality<i64>,
    rtt_ms: Buckets,
    jitter_ms: Buckets,
    loss: Buckets,
    loss_sum: f64,
    loss_count: u32,
    loss_max: f64,
    kbps_in_sum: f64,
    kbps_out_sum: f64,
    kbps_count: u32,
    worst_window: Option<Window>,
    precheck: Option<PrecheckRecord>,
    #[serde(skip)]
    recent: VecDeque<Recent>,
    /// Something was taken since the tracker was last written.
    #[serde(skip)]
    unsaved: bool,
    /// ... and it should be written now (a change of class, a precheck, a first report).
    #[serde(skip)]
    urgent: bool,
    #[serde(skip)]
    saved_at: Option<DateTime<Utc>>,
}

/// A report or precheck came sooner than [`MIN_INTERVAL`] after the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooSoon;

/// What one report changed, and its values for operators' metrics.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recorded {
    /// The class (and reason) to show from now on, if it changed.
    pub change: Option<(Quality, Option<Reason>)>,
    pub observation: Observation,
}

/// A report's measurements, for metrics across visits: each peer connection's round trip,
/// jitter and loss, and the time it stands for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observation {
    pub rtt_ms: Vec<f64>,
    pub jitter_ms: Vec<f64>,
    pub loss: Vec<f64>,
    /// The time this report stands for, if it measured anything.
    pub measured: TimeDelta,
    /// Whether media was relayed during it.
    pub relayed: bool,
    /// The class shown from now on, if it changed.
    pub became: Option<Quality>,
}

fn add(sum: Option<f64>, value: Option<f64>) -> Option<f64> {
    match (sum, value) {
        (Some(s), Some(v)) => Some(s + v),
        (s, v) => s.or(v),
    }
}

fn mean(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let (sum, n) = values
        .flatten()
        .fold((0.0, 0u32), |(sum, n), v| (sum + v, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

/// Rounded for reading: fractions to 4 places, milliseconds and kbit/s to 1.
fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// A tracker read back from storage at `now`: it carries on from the class it showed.
    pub fn restored(mut self, now: DateTime<Utc>) -> Self {
        self.saved_at = Some(now);
        self
    }

    /// The class shown now and why, once a report measured something.
    pub fn current(&self) -> Option<(Quality, Option<Reason>)> {
        self.classifier.current
    }

    pub fn precheck(&self) -> Option<&PrecheckRecord> {
        self.precheck.as_ref()
    }

    /// Takes one `stats` report received at `now`.
    pub fn record(
        &mut self,
        report: &StatsReport,
        now: DateTime<Utc>,
    ) -> Result<Recorded, TooSoon> {
        if self
            .last_report_at
            .is_some_and(|last| now - last < MIN_INTERVAL)
        {
            return Err(TooSoon);
        }
        let span = self
            .last_report_at
            .map_or(NOMINAL_INTERVAL, |last| (now - last).min(MAX_GAP));
        self.last_report_at = Some(now);
        let mut observation = Observation::default();
        let (mut kbps_in, mut kbps_out) = (None, None);
        for peer in &report.peers {
            if let Some(rtt) = peer.rtt_ms {
                self.rtt_ms.record(RTT_BOUNDS, rtt);
                observation.rtt_ms.push(rtt);
            }
            if let Some(jitter) = peer.jitter_ms {
                self.jitter_ms.record(JITTER_BOUNDS, jitter);
                observation.jitter_ms.push(jitter);
            }
            if let Some(loss) = match (peer.inbound.loss, peer.outbound.loss) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            } {
                self.loss.record(LOSS_BOUNDS, loss);
                self.loss_sum += loss;
                self.loss_count += 1;
                self.loss_max = self.loss_max.max(loss);
                observation.loss.push(loss);
            }
            kbps_in = add(
                kbps_in,
                add(peer.inbound.audio_kbps, peer.inbound.video_kbps),
            );
            kbps_out = add(
                kbps_out,
                add(peer.outbound.audio_kbps, peer.outbound.video_kbps),
            );
        }
        if kbps_in.is_some() || kbps_out.is_some() {
            self.kbps_in_sum += kbps_in.unwrap_or(0.0);
            self.kbps_out_sum += kbps_out.unwrap_or(0.0);
            self.kbps_count += 1;
        }
        let Some(sample) = Sample::of(report) else {
            return Ok(Recorded {
                change: None,
                observation,
            });
        };
        self.unsaved = true;
        if self.samples == 0 {
            self.urgent = true;
            self.first_sample_at = Some(now);
        }
        self.samples = self.samples.saturating_add(1);
        self.last_sample_at = Some(now);
        let ms = span.num_milliseconds();
        self.measured_ms += ms;
        if sample.relayed {
            self.relay_ms += ms;
        }
        observation.measured = span;
        observation.relayed = sample.relayed;
        let before = self.classifier.current.map(|(class, _)| class);
        let change = self.classifier.observe(&sample);
        if let Some((class, _)) = change {
            if before != Some(class) {
                observation.became = Some(class);
            }
            self.worst = self.worst.max(Some(class));
            self.urgent = true;
        }
        if let Some((shown, _)) = self.classifier.current {
            *self.class_ms.get_mut(shown) += ms;
        }
        self.note_window(Recent {
            at: now,
            span,
            sample,
        });
        Ok(Recorded {
            change,
            observation,
        })
    }

    /// Keeps the worst stretch of up to [`WINDOW`] ending with `latest`.
    fn note_window(&mut self, latest: Recent) {
        self.recent.push_back(latest);
        while self
            .recent
            .front()
            .is_some_and(|r| r.at <= latest.at - WINDOW)
        {
            self.recent.pop_front();
        }
        let Some(first) = self.recent.front() else {
            return;
        };
        let means = Sample {
            loss: mean(self.recent.iter().map(|r| r.sample.loss)),
            rtt_ms: mean(self.recent.iter().map(|r| r.sample.rtt_ms)),
            jitter_ms: mean(self.recent.iter().map(|r| r.sample.jitter_ms)),
            bandwidth_limited: self.recent.iter().any(|r| r.sample.bandwidth_limited),
            relayed: self.recent.iter().any(|r| r.sample.relayed),
        };
        let (quality, reason) = means.class(1.0);
        let window = Window {
            start: first.at - first.span,
            end: latest.at,
            quality,
            reason,
            packet_loss: means.loss.map(|v| round(v, 4)),
            rtt_ms: means.rtt_ms.map(|v| round(v, 1)),
            jitter_ms: means.jitter_ms.map(|v| round(v, 1)),
        };
        if self
            .worst_window
            .as_ref()
            .is_none_or(|w| window.worse_than(w))
        {
            self.worst_window = Some(window);
        }
    }

    /// Takes a precheck received at `now`; `Ok(true)` if it differs from the last one.
    pub fn set_precheck(
        &mut self,
        precheck: Precheck,
        now: DateTime<Utc>,
    ) -> Result<bool, TooSoon> {
        if self
            .precheck
            .is_some_and(|last| now - last.at < MIN_INTERVAL)
        {
            return Err(TooSoon);
        }
        let changed = self.precheck.is_none_or(|last| last.precheck != precheck);
        self.precheck = Some(PrecheckRecord { precheck, at: now });
        self.unsaved = true;
        self.urgent |= changed;
        Ok(changed)
    }

    /// Whether the tracker should be written now: something urgent happened, or what was
    /// taken since the last write is [`PERSIST_EVERY`] old.
    pub fn due(&self, now: DateTime<Utc>) -> bool {
        self.unsaved && (self.urgent || self.saved_at.is_none_or(|at| now - at >= PERSIST_EVERY))
    }

    /// Whether anything was taken since the last write.
    pub fn unsaved(&self) -> bool {
        self.unsaved
    }

    /// The tracker was handed to storage at `now`.
    pub fn saved(&mut self, now: DateTime<Utc>) {
        self.unsaved = false;
        self.urgent = false;
        self.saved_at = Some(now);
    }

    /// What clinics read.
    pub fn summary(&self) -> Summary {
        let seconds = |ms: i64| (ms.max(0) + 500) / 1000;
        let spread = |b: &Buckets, bounds: &[f64]| {
            Some(Spread {
                p50: b.quantile(bounds, 0.5)?,
                p95: b.quantile(bounds, 0.95)?,
            })
        };
        let (quality, quality_reason) = match self.classifier.current {
            Some((class, reason)) => (Some(class), reason),
            None => (None, None),
        };
        Summary {
            quality,
            quality_reason,
            worst_quality: self.worst,
            samples: self.samples,
            first_sample_at: self.first_sample_at,
            last_sample_at: self.last_sample_at,
            measured_seconds: seconds(self.measured_ms),
            seconds_by_quality: ByQuality {
                good: seconds(self.class_ms.good),
                fair: seconds(self.class_ms.fair),
                poor: seconds(self.class_ms.poor),
            },
            relay_seconds: seconds(self.relay_ms),
            rtt_ms: spread(&self.rtt_ms, RTT_BOUNDS),
            jitter_ms: spread(&self.jitter_ms, JITTER_BOUNDS),
            packet_loss: (self.loss_count > 0).then(|| LossSpread {
                mean: round(self.loss_sum / f64::from(self.loss_count), 4),
                p95: self
                    .loss
                    .quantile(LOSS_BOUNDS, 0.95)
                    .unwrap_or(self.loss_max),
                max: round(self.loss_max, 4),
            }),
            bitrate_kbps: (self.kbps_count > 0).then(|| Bitrates {
                inbound: round(self.kbps_in_sum / f64::from(self.kbps_count), 1),
                outbound: round(self.kbps_out_sum / f64::from(self.kbps_count), 1),
            }),
            worst_window: self.worst_window,
            precheck: self.precheck,
        }
    }
}

/// Median and 95th percentile, each the upper bound of its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Spread {
    pub p50: f64,
    pub p95: f64,
}

/// Packet loss over the call, as fractions: the mean of every peer connection's reports,
/// the 95th percentile (the upper bound of its bucket) and the largest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LossSpread {
    pub mean: f64,
    pub p95: f64,
    pub max: f64,
}

/// Mean audio and video bitrate received and sent, in kbit/s, over all peer connections.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Bitrates {
    pub inbound: f64,
    pub outbound: f64,
}

/// A participant's call quality over the visit (docs/quality.md): what
/// `GET /v1/visits/{id}/quality` and the `visit.ended` webhook carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Summary {
    /// The class shown last (`null` before any report measured something).
    pub quality: Option<Quality>,
    /// Why it is not good, or `relay` for a good connection through TURN.
    pub quality_reason: Option<Reason>,
    /// The worst class shown during the visit.
    pub worst_quality: Option<Quality>,
    /// Reports that measured something.
    pub samples: u32,
    pub first_sample_at: Option<DateTime<Utc>>,
    pub last_sample_at: Option<DateTime<Utc>>,
    /// The time those reports stand for.
    pub measured_seconds: i64,
    /// How long each class was shown.
    #[cfg_attr(feature = "openapi", schema(value_type = ByQuality<i64>))]
    pub seconds_by_quality: ByQuality<i64>,
    /// How long media went through a TURN relay.
    pub relay_seconds: i64,
    /// Round-trip time of the peer connections, in milliseconds.
    pub rtt_ms: Option<Spread>,
    /// Jitter of what arrived, in milliseconds.
    pub jitter_ms: Option<Spread>,
    pub packet_loss: Option<LossSpread>,
    pub bitrate_kbps: Option<Bitrates>,
    /// The worst stretch of up to 30 seconds.
    pub worst_window: Option<Window>,
    /// What the pre-call check found, if the participant ran it in the waiting room.
    pub precheck: Option<PrecheckRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, 0).unwrap() + TimeDelta::seconds(secs)
    }

    fn report(rtt: f64, loss: f64) -> StatsReport {
        StatsReport::parse(&format!(
            r#"{{"peers":[{{"rtt_ms":{rtt},"inbound":{{"loss":{loss},"audio_kbps":30,"video_kbps":500}}}}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn percentiles_are_bucket_bounds_over_every_report() {
        let mut tr = Tracker::new();
        for i in 0..20 {
            let rtt = if i == 19 { 700.0 } else { 45.0 };
            tr.record(&report(rtt, 0.0), t(5 * i)).unwrap();
        }
        let s = tr.summary();
        assert_eq!(
            s.rtt_ms,
            Some(Spread {
                p50: 50.0,
                p95: 50.0
            })
        );
        tr.record(&report(700.0, 0.0), t(100)).unwrap();
        assert_eq!(tr.summary().rtt_ms.map(|r| r.p95), Some(800.0));
        assert_eq!(tr.summary().bitrate_kbps.map(|b| b.inbound), Some(530.0));
    }

    #[test]
    fn a_silence_counts_for_at_most_max_gap_and_the_worst_window_is_kept() {
        let mut tr = Tracker::new();
        tr.record(&report(40.0, 0.0), t(0)).unwrap();
        tr.record(&report(40.0, 0.0), t(300)).unwrap();
        assert_eq!(
            tr.summary().measured_seconds,
            (NOMINAL_INTERVAL + MAX_GAP).num_seconds()
        );
        for i in 1..=6 {
            tr.record(&report(40.0, 0.2), t(300 + 5 * i)).unwrap();
        }
        for i in 7..=20 {
            tr.record(&report(40.0, 0.0), t(300 + 5 * i)).unwrap();
        }
        let w = tr.summary().worst_window.unwrap();
        assert_eq!(w.quality, Quality::Poor);
        assert_eq!(w.packet_loss, Some(0.2));
        // The report at 305 s stands for the 5 s before it.
        assert_eq!(
            (w.start, w.end),
            (t(300), t(330)),
            "the stretch of loss, kept after it"
        );
    }

    #[test]
    fn a_tracker_is_written_when_urgent_or_once_a_minute() {
        let mut tr = Tracker::new();
        tr.record(&report(40.0, 0.0), t(0)).unwrap();
        assert!(tr.due(t(0)), "a first report");
        tr.saved(t(0));
        tr.record(&report(40.0, 0.0), t(5)).unwrap();
        assert!(!tr.due(t(5)));
        assert!(tr.due(t(0) + PERSIST_EVERY));
        tr.record(&report(40.0, 0.5), t(10)).unwrap();
        assert!(tr.due(t(10)), "a change of class");
        assert_eq!(
            tr.record(&report(40.0, 0.0), t(13)).unwrap_err(),
            TooSoon,
            "sooner than MIN_INTERVAL"
        );
    }
}
