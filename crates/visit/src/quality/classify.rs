//! Good, fair or poor: the classification of one participant's connection, with hysteresis
//! so that it does not flap.
//!
//! Each `stats` frame becomes one [`Sample`]: the worst of its peer connections (the largest
//! packet loss in either direction, the longest round trip, the largest jitter, whether the
//! outgoing video is held back by bandwidth, whether media is relayed). A sample's class is
//! the worst its measurements reach against [`LOSS`], [`RTT_MS`] and [`JITTER_MS`] (and
//! fair when the browser holds the outgoing video back for bandwidth, below
//! [`LOW_VIDEO_KBPS`]).
//!
//! The class shown ([`Classifier`]) gets worse at once, with the first sample that is worse:
//! a report already averages five seconds, and a doctor should learn of trouble while it
//! happens. It gets better only after [`RECOVERY_SAMPLES`] samples in a row that are better
//! even against thresholds scaled by [`RECOVERY_MARGIN`]: a connection hovering around a
//! threshold stays in the worse class instead of changing every few seconds, and a class
//! changes for the better at most once per `RECOVERY_SAMPLES` reports (about 15 s).
//!
//! docs/quality.md explains the thresholds to clinics.

use super::report::{Limitation, StatsReport};
use crate::record::text_enum;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A connection's quality class. Ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Quality {
    Good,
    Fair,
    Poor,
}

text_enum!(Quality { Good => "good", Fair => "fair", Poor => "poor" });

/// What holds a connection back (fair or poor), or what is worth knowing about a good one
/// (`relay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Reason {
    PacketLoss,
    Latency,
    Jitter,
    Bandwidth,
    Relay,
}

text_enum!(Reason {
    PacketLoss => "packet_loss",
    Latency => "latency",
    Jitter => "jitter",
    Bandwidth => "bandwidth",
    Relay => "relay",
});

/// Where a measurement turns a connection fair, and poor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub fair: f64,
    pub poor: f64,
}

impl Limits {
    fn class(&self, value: f64, scale: f64) -> Quality {
        if value >= self.poor * scale {
            Quality::Poor
        } else if value >= self.fair * scale {
            Quality::Fair
        } else {
            Quality::Good
        }
    }
}

/// Packet loss, as a fraction of packets: 3% makes speech choppy, 10% breaks video up.
pub const LOSS: Limits = Limits {
    fair: 0.03,
    poor: 0.10,
};
/// Round-trip time in milliseconds: past 300 ms people start talking over each other
/// (ITU-T G.114's 150 ms one way); past 600 ms a conversation is hard.
pub const RTT_MS: Limits = Limits {
    fair: 300.0,
    poor: 600.0,
};
/// Jitter in milliseconds: what jitter buffers absorb without audible delay, and what they
/// cannot.
pub const JITTER_MS: Limits = Limits {
    fair: 30.0,
    poor: 75.0,
};
/// Outgoing video the browser holds back for bandwidth counts against a connection only
/// below this bitrate, in kbit/s: browsers report `bandwidth` while their estimate ramps up at
/// the start of every call, and a picture still sent at this rate is usable.
pub const LOW_VIDEO_KBPS: f64 = 150.0;
/// Getting better is judged against the thresholds scaled by this.
pub const RECOVERY_MARGIN: f64 = 0.8;
/// Getting better takes this many better samples in a row.
pub const RECOVERY_SAMPLES: u32 = 3;

/// One report, reduced to the worst of its peer connections.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Sample {
    pub loss: Option<f64>,
    pub rtt_ms: Option<f64>,
    pub jitter_ms: Option<f64>,
    pub bandwidth_limited: bool,
    pub relayed: bool,
}

fn worst(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl Sample {
    /// The worst of a report's peers; `None` if nothing in it was measured.
    pub fn of(report: &StatsReport) -> Option<Self> {
        let mut s = Sample::default();
        for p in &report.peers {
            s.loss = worst(s.loss, worst(p.inbound.loss, p.outbound.loss));
            s.rtt_ms = worst(s.rtt_ms, p.rtt_ms);
            s.jitter_ms = worst(s.jitter_ms, p.jitter_ms);
            s.bandwidth_limited |= p.limitation == Some(Limitation::Bandwidth)
                && p.outbound
                    .video_kbps
                    .is_some_and(|kbps| kbps < LOW_VIDEO_KBPS);
            s.relayed |= p.pair.is_some_and(|pair| pair.relayed());
        }
        let measured = s.loss.is_some() || s.rtt_ms.is_some() || s.jitter_ms.is_some();
        measured.then_some(s)
    }

    /// The class against the thresholds scaled by `scale`, and what decided it. Between
    /// measurements of the same class, packet loss is named first (it is what people hear
    /// and see), then latency, jitter and bandwidth.
    pub fn class(&self, scale: f64) -> (Quality, Option<Reason>) {
        let measured = [
            (self.loss.map(|v| LOSS.class(v, scale)), Reason::PacketLoss),
            (self.rtt_ms.map(|v| RTT_MS.class(v, scale)), Reason::Latency),
            (
                self.jitter_ms.map(|v| JITTER_MS.class(v, scale)),
                Reason::Jitter,
            ),
            (
                self.bandwidth_limited.then_some(Quality::Fair),
                Reason::Bandwidth,
            ),
        ];
        let mut class = Quality::Good;
        let mut reason = None;
        for (c, r) in measured {
            if let Some(c) = c
                && c > class
            {
                class = c;
                reason = Some(r);
            }
        }
        if class == Quality::Good && self.relayed {
            reason = Some(Reason::Relay);
        }
        (class, reason)
    }
}

/// The class as shown, with the hysteresis described in the module comment.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Classifier {
    pub current: Option<(Quality, Option<Reason>)>,
    /// Better samples in a row so far.
    #[serde(default)]
    better: u32,
}

impl Classifier {
    /// Takes one sample; returns the class and reason to show if they changed.
    pub fn observe(&mut self, sample: &Sample) -> Option<(Quality, Option<Reason>)> {
        let (class, reason) = sample.class(1.0);
        let Some((shown, shown_reason)) = self.current else {
            return self.show((class, reason));
        };
        if class > shown {
            return self.show((class, reason));
        }
        if class == shown {
            self.better = 0;
            // A good connection's only note is whether it is relayed; a worse one keeps the
            // reason it got worse for until its class changes.
            let relay_changed = shown == Quality::Good && reason != shown_reason;
            return if relay_changed {
                self.show((class, reason))
            } else {
                None
            };
        }
        let (cleared, cleared_reason) = sample.class(RECOVERY_MARGIN);
        if cleared >= shown {
            self.better = 0;
            return None;
        }
        self.better += 1;
        if self.better < RECOVERY_SAMPLES {
            return None;
        }
        self.show((cleared, cleared_reason))
    }

    fn show(&mut self, next: (Quality, Option<Reason>)) -> Option<(Quality, Option<Reason>)> {
        self.better = 0;
        self.current = Some(next);
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss(v: f64) -> Sample {
        Sample {
            loss: Some(v),
            ..Sample::default()
        }
    }

    #[test]
    fn a_sample_is_as_bad_as_its_worst_measurement() {
        assert_eq!(loss(0.0).class(1.0), (Quality::Good, None));
        assert_eq!(
            loss(0.03).class(1.0),
            (Quality::Fair, Some(Reason::PacketLoss))
        );
        assert_eq!(
            loss(0.10).class(1.0),
            (Quality::Poor, Some(Reason::PacketLoss))
        );
        let s = Sample {
            loss: Some(0.04),
            rtt_ms: Some(700.0),
            jitter_ms: Some(10.0),
            ..Sample::default()
        };
        assert_eq!(s.class(1.0), (Quality::Poor, Some(Reason::Latency)));
        let limited = Sample {
            rtt_ms: Some(20.0),
            bandwidth_limited: true,
            ..Sample::default()
        };
        assert_eq!(limited.class(1.0), (Quality::Fair, Some(Reason::Bandwidth)));
        let relayed = Sample {
            rtt_ms: Some(20.0),
            relayed: true,
            ..Sample::default()
        };
        assert_eq!(relayed.class(1.0), (Quality::Good, Some(Reason::Relay)));
        // Recovery thresholds are stricter: 2.5% is fair against them.
        assert_eq!(loss(0.025).class(1.0).0, Quality::Good);
        assert_eq!(loss(0.025).class(RECOVERY_MARGIN).0, Quality::Fair);
    }

    #[test]
    fn bandwidth_limits_count_only_when_the_video_sent_is_low() {
        let report = |kbps: f64| {
            StatsReport::parse(&format!(
                r#"{{"peers":[{{"rtt_ms":20,"outbound":{{"video_kbps":{kbps},"limitation":"bandwidth"}}}}]}}"#
            ))
            .unwrap()
        };
        let ramping = Sample::of(&report(250.0)).unwrap();
        assert_eq!(ramping.class(1.0), (Quality::Good, None));
        let starved = Sample::of(&report(90.0)).unwrap();
        assert_eq!(starved.class(1.0), (Quality::Fair, Some(Reason::Bandwidth)));
    }

    #[test]
    fn worse_at_once_better_after_three_clean_samples() {
        let mut c = Classifier::default();
        assert_eq!(c.observe(&loss(0.0)), Some((Quality::Good, None)));
        assert_eq!(
            c.observe(&loss(0.2)),
            Some((Quality::Poor, Some(Reason::PacketLoss)))
        );
        assert_eq!(c.observe(&loss(0.0)), None);
        assert_eq!(c.observe(&loss(0.0)), None);
        assert_eq!(c.observe(&loss(0.0)), Some((Quality::Good, None)));
    }

    #[test]
    fn a_bad_sample_in_the_middle_of_a_recovery_restarts_it() {
        let mut c = Classifier::default();
        c.observe(&loss(0.2));
        c.observe(&loss(0.0));
        c.observe(&loss(0.0));
        assert_eq!(
            c.observe(&loss(0.2)),
            None,
            "still poor: no change to report"
        );
        assert_eq!(c.observe(&loss(0.0)), None);
        assert_eq!(c.observe(&loss(0.0)), None);
        assert_eq!(c.observe(&loss(0.0)), Some((Quality::Good, None)));
    }
}
