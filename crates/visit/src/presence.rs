//! A provider's presence, as their waiting patients see it: `available`, `busy` or `away`.
//!
//! The provider chooses one on their dashboard; two facts override the choice:
//! - while they are admitted in one of their visits they are `busy` (and back to their
//!   choice once they leave it);
//! - once their dashboard has been gone for `away_after` they are `away` (a closed laptop
//!   is not an available doctor), until it is back.
//!
//! A provider who never opened a dashboard has no presence to show, unless they are busy.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Presence {
    #[default]
    Available,
    Busy,
    Away,
}

crate::record::text_enum!(Presence { Available => "available", Busy => "busy", Away => "away" });

/// What is known of a provider's dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desk {
    /// The name their token carries, for their patients' waiting screens.
    pub name: Option<String>,
    /// What they chose last.
    pub chosen: Presence,
    /// Whether a dashboard is connected now.
    pub connected: bool,
    /// Since when it has been connected, or gone.
    pub since: DateTime<Utc>,
}

/// The presence shown at `now`: `busy` if the provider is in one of their visits, else
/// their choice while their dashboard is there (or gone for less than `away_after`), else
/// `away`. `None` for a provider with no dashboard ever seen who is not busy.
pub fn shown(
    desk: Option<&Desk>,
    busy: bool,
    now: DateTime<Utc>,
    away_after: TimeDelta,
) -> Option<Presence> {
    if busy {
        return Some(Presence::Busy);
    }
    let desk = desk?;
    if !desk.connected && now - desk.since >= away_after {
        return Some(Presence::Away);
    }
    Some(desk.chosen)
}

/// When [`shown`] changes by itself (the dashboard's absence turning into `away`), if it will.
pub fn changes_at(desk: Option<&Desk>, away_after: TimeDelta) -> Option<DateTime<Utc>> {
    desk.filter(|d| !d.connected && d.chosen != Presence::Away)
        .map(|d| d.since + away_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, 0).unwrap() + TimeDelta::seconds(s)
    }

    const AWAY: TimeDelta = TimeDelta::seconds(120);

    #[test]
    fn busy_overrides_the_choice_and_a_gone_dashboard_turns_away_in_time() {
        let mut desk = Desk {
            name: Some("Dr Lee".into()),
            chosen: Presence::Available,
            connected: true,
            since: t(0),
        };
        assert_eq!(
            shown(Some(&desk), false, t(5), AWAY),
            Some(Presence::Available)
        );
        assert_eq!(shown(Some(&desk), true, t(5), AWAY), Some(Presence::Busy));
        assert_eq!(changes_at(Some(&desk), AWAY), None);
        // The laptop closes at t=10.
        desk.connected = false;
        desk.since = t(10);
        assert_eq!(changes_at(Some(&desk), AWAY), Some(t(130)));
        assert_eq!(
            shown(Some(&desk), false, t(129), AWAY),
            Some(Presence::Available)
        );
        assert_eq!(
            shown(Some(&desk), false, t(130), AWAY),
            Some(Presence::Away)
        );
        // In a visit (from another device) they are busy whatever the dashboard does.
        assert_eq!(shown(Some(&desk), true, t(500), AWAY), Some(Presence::Busy));
        // Chose away: nothing to wait for.
        desk.chosen = Presence::Away;
        assert_eq!(changes_at(Some(&desk), AWAY), None);
        assert_eq!(shown(Some(&desk), false, t(11), AWAY), Some(Presence::Away));
    }

    #[test]
    fn a_provider_without_a_dashboard_shows_nothing_unless_busy() {
        assert_eq!(shown(None, false, t(0), AWAY), None);
        assert_eq!(shown(None, true, t(0), AWAY), Some(Presence::Busy));
    }

    #[test]
    fn presence_reads_back_from_text() {
        for p in [Presence::Available, Presence::Busy, Presence::Away] {
            assert_eq!(p.as_str().parse::<Presence>(), Ok(p));
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        assert!("asleep".parse::<Presence>().is_err());
    }
}
