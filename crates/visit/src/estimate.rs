//! How long a waiting patient will likely wait: an estimate from the provider's own recent
//! consultations on this tenant.
//!
//! - A *typical consultation* of the provider is the median of their last N durations: one
//!   that ran two hours, or one cut short after a minute, does not drag it around as a mean
//!   would.
//! - While N is small the median is a guess from few cases, so it is shrunk toward the
//!   clinic's configured default as if the default had been seen `prior_weight` times:
//!   `(n · median + k · default) / (n + k)`. With no default configured the median stands
//!   alone; with neither history nor default there is no estimate at all.
//! - The expected wait is a typical consultation for every visit ahead (a patient and their
//!   interpreter are one), plus what is likely left of the one the provider is in now: a
//!   typical consultation less the time it has run, never below zero.
//! - It is shown in whole minutes, rounded up: a wait given to the second would claim a
//!   precision the estimate does not have, and would change every second.

use chrono::TimeDelta;

/// The estimate's settings (`clinic.*` in configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitModel {
    /// A typical consultation when the provider has no history yet; `None`: no estimate
    /// until they have one.
    pub default: Option<TimeDelta>,
    /// How many consultations the default counts as while the history is short.
    pub prior_weight: u32,
    /// How many of the provider's most recent consultations are looked at.
    pub history: usize,
}

impl Default for WaitModel {
    fn default() -> Self {
        Self {
            default: None,
            prior_weight: 3,
            history: 20,
        }
    }
}

fn millis(d: TimeDelta) -> i64 {
    d.num_milliseconds().max(0)
}

/// The median of `durations` (the mean of the middle two for an even count).
fn median(durations: &[TimeDelta]) -> Option<i64> {
    let mut ms: Vec<i64> = durations.iter().copied().map(millis).collect();
    if ms.is_empty() {
        return None;
    }
    ms.sort_unstable();
    let mid = ms.len() / 2;
    Some(if ms.len() % 2 == 1 {
        ms[mid]
    } else {
        ms[mid - 1] / 2 + ms[mid] / 2 + (ms[mid - 1] % 2 + ms[mid] % 2) / 2
    })
}

impl WaitModel {
    /// A typical consultation of a provider whose recent durations are `history` (newest
    /// first; only the first [`WaitModel::history`] count).
    pub fn typical(&self, history: &[TimeDelta]) -> Option<TimeDelta> {
        let recent = &history[..history.len().min(self.history)];
        let default = self.default.map(millis);
        let typical = match (median(recent), default) {
            (None, default) => default?,
            (Some(m), None) => m,
            (Some(m), Some(d)) => {
                let n = recent.len() as i128;
                let k = i128::from(self.prior_weight);
                ((n * i128::from(m) + k * i128::from(d)) / (n + k)) as i64
            }
        };
        Some(TimeDelta::milliseconds(typical))
    }

    /// The expected wait of someone with `visits_ahead` consultations before theirs, while
    /// the provider has been in another consultation for `current` (`None`: they are not).
    /// Never negative; `None` with neither history nor default.
    pub fn expected_wait(
        &self,
        history: &[TimeDelta],
        visits_ahead: usize,
        current: Option<TimeDelta>,
    ) -> Option<TimeDelta> {
        let typical = millis(self.typical(history)?);
        let ahead = typical.saturating_mul(i64::try_from(visits_ahead).unwrap_or(i64::MAX));
        let left = current.map_or(0, |ran| (typical - millis(ran)).max(0));
        Some(TimeDelta::milliseconds(ahead.saturating_add(left)))
    }
}

/// A wait as shown: seconds, rounded up to whole minutes.
pub fn shown_secs(wait: TimeDelta) -> u64 {
    let ms = u64::try_from(millis(wait)).unwrap_or(0);
    ms.div_ceil(60_000) * 60
}

#[cfg(test)]
mod tests {
    use super::*;

    fn min(m: i64) -> TimeDelta {
        TimeDelta::minutes(m)
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[min(3)]), Some(180_000));
        assert_eq!(median(&[min(9), min(1), min(5)]), Some(300_000));
        assert_eq!(median(&[min(4), min(1), min(10), min(6)]), Some(300_000));
        assert_eq!(
            median(&[TimeDelta::milliseconds(1), TimeDelta::milliseconds(2)]),
            Some(1)
        );
    }

    #[test]
    fn shown_in_whole_minutes_rounded_up() {
        assert_eq!(shown_secs(TimeDelta::zero()), 0);
        assert_eq!(shown_secs(TimeDelta::milliseconds(1)), 60);
        assert_eq!(shown_secs(TimeDelta::seconds(60)), 60);
        assert_eq!(shown_secs(TimeDelta::seconds(61)), 120);
        assert_eq!(shown_secs(TimeDelta::seconds(-5)), 0);
    }
}
