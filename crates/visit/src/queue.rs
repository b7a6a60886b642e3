//! A provider's queue: everyone waiting in any of the provider's visits, oldest knock first.
//!
//! Each visit reports its own part ([`VisitQueue`]) whenever it changes; whoever collects
//! the parts of one provider (the node's desk, across nodes in a cluster) lines them up with
//! [`line_up`]. What a waiting participant is then told ([`Standing`]) comes back to the
//! visit as an input, and the visit sends the `waiting` frame itself.

use crate::consent::ConsentGiven;
use crate::estimate::{WaitModel, shown_secs};
use crate::presence::Presence;
use crate::quality::PrecheckRecord;
use crate::{ParticipantId, ProviderId, VisitId};
use bedside_auth::{Role, TenantId};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Someone in a provider's queue: a waiting participant of one of their visits who has
/// given any consent the visit asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Knock {
    pub participant_id: ParticipantId,
    pub name: String,
    pub role: Role,
    /// When they entered the waiting room (their knock).
    pub since: DateTime<Utc>,
    pub consent: Option<ConsentGiven>,
    /// Their pre-call check, once they sent one (as doctors' `lobby` entries show it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precheck: Option<PrecheckRecord>,
}

/// One visit's part of its provider's queue, as the visit reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitQueue {
    pub visit: VisitId,
    pub tenant: TenantId,
    /// `None` only for a visit that had a provider and reports that it no longer counts.
    pub provider: Option<ProviderId>,
    pub external_ref: Option<String>,
    /// Oldest first.
    pub knocks: Vec<Knock>,
    /// Since when the provider (their identity, as a doctor) has been admitted in this
    /// visit: they are busy with it.
    pub busy_since: Option<DateTime<Utc>>,
}

impl VisitQueue {
    /// Nobody waits and the provider is not here: the visit adds nothing to the queue.
    pub fn is_empty(&self) -> bool {
        self.knocks.is_empty() && self.busy_since.is_none()
    }
}

/// A participant as a queue entry shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueuedParticipant {
    pub participant_id: ParticipantId,
    pub name: String,
    pub role: Role,
    /// When they entered the waiting room.
    pub since: DateTime<Utc>,
}

/// One entry of a provider's queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueEntry {
    pub visit_id: VisitId,
    pub external_ref: Option<String>,
    pub participant: QueuedParticipant,
    /// Place in the provider's whole queue, from 1.
    pub position: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<ConsentGiven>,
    /// What their pre-call check found, once they sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precheck: Option<PrecheckRecord>,
}

/// A provider's queue from the parts their visits reported: oldest knock first (ties by
/// visit, then participant, so every node lines the same parts up the same way), with
/// positions from 1.
pub fn line_up<'a>(parts: impl IntoIterator<Item = &'a VisitQueue>) -> Vec<QueueEntry> {
    let mut entries: Vec<QueueEntry> = parts
        .into_iter()
        .flat_map(|part| {
            part.knocks.iter().map(move |k| QueueEntry {
                visit_id: part.visit,
                external_ref: part.external_ref.clone(),
                participant: QueuedParticipant {
                    participant_id: k.participant_id,
                    name: k.name.clone(),
                    role: k.role,
                    since: k.since,
                },
                position: 0,
                consent: k.consent.clone(),
                precheck: k.precheck,
            })
        })
        .collect();
    entries.sort_by(|a, b| {
        (
            a.participant.since,
            a.visit_id,
            a.participant.participant_id,
        )
            .cmp(&(
                b.participant.since,
                b.visit_id,
                b.participant.participant_id,
            ))
    });
    for (i, entry) in entries.iter_mut().enumerate() {
        entry.position = u32::try_from(i + 1).unwrap_or(u32::MAX);
    }
    entries
}

/// How many consultations come before the one of `entries[index]`: the other visits with
/// someone ahead of them in the queue. A patient and their interpreter waiting in one visit
/// are one consultation.
pub fn visits_ahead(entries: &[QueueEntry], index: usize) -> usize {
    let Some(own) = entries.get(index).map(|e| e.visit_id) else {
        return 0;
    };
    entries[..index]
        .iter()
        .map(|e| e.visit_id)
        .filter(|v| *v != own)
        .collect::<HashSet<_>>()
        .len()
}

/// The provider as a waiting participant sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub presence: Presence,
}

/// Where a waiting participant stands: what their `waiting` frame says. All absent in a
/// visit without a provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_wait_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderView>,
}

/// What each waiting participant of a provider's queue is told: their position, the
/// expected wait (from `model` and the provider's recent consultation durations `history`,
/// newest first, and how long the consultation they are in now has run, `current`), and the
/// provider as shown. One entry per queue entry, in queue order.
pub fn standings(
    entries: &[QueueEntry],
    model: &WaitModel,
    history: &[TimeDelta],
    current: Option<TimeDelta>,
    provider: Option<&ProviderView>,
) -> Vec<(VisitId, ParticipantId, Standing)> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let wait = model.expected_wait(history, visits_ahead(entries, i), current);
            (
                e.visit_id,
                e.participant.participant_id,
                Standing {
                    position: Some(e.position),
                    expected_wait_secs: wait.map(shown_secs),
                    provider: provider.cloned(),
                },
            )
        })
        .collect()
}

/// How long the provider has been in the consultation they are in now, across `parts` (the
/// earliest, if they are in several), at `now`.
pub fn current_consultation<'a>(
    parts: impl IntoIterator<Item = &'a VisitQueue>,
    now: DateTime<Utc>,
) -> Option<TimeDelta> {
    parts
        .into_iter()
        .filter_map(|p| p.busy_since)
        .min()
        .map(|since| (now - since).max(TimeDelta::zero()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 9, min, 0).unwrap()
    }

    fn part(n: u128, knocks: &[(u64, u32)]) -> VisitQueue {
        VisitQueue {
            visit: VisitId::from_uuid(uuid::Uuid::from_u128(n)),
            tenant: TenantId::new("clinic-a").unwrap(),
            provider: Some(ProviderId::new("dr-lee").unwrap()),
            external_ref: Some(format!("appt-{n}")),
            knocks: knocks
                .iter()
                .map(|&(id, min)| Knock {
                    participant_id: ParticipantId::from_bits(id),
                    name: format!("p{id}"),
                    role: Role::Patient,
                    since: at(min),
                    consent: None,
                    precheck: None,
                })
                .collect(),
            busy_since: None,
        }
    }

    #[test]
    fn oldest_knock_first_across_visits_with_positions_from_one() {
        let a = part(1, &[(1, 10), (2, 3)]);
        let b = part(2, &[(3, 5)]);
        let c = part(3, &[]);
        let q = line_up([&a, &b, &c]);
        let ids: Vec<String> = q.iter().map(|e| e.participant.name.clone()).collect();
        assert_eq!(ids, ["p2", "p3", "p1"]);
        assert_eq!(q.iter().map(|e| e.position).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(q[1].external_ref.as_deref(), Some("appt-2"));
        // The same parts in any order line up the same.
        assert_eq!(line_up([&c, &b, &a]), q);
    }

    #[test]
    fn ties_are_broken_the_same_way_everywhere() {
        let a = part(7, &[(9, 5)]);
        let b = part(3, &[(1, 5)]);
        let q = line_up([&a, &b]);
        assert_eq!(q[0].visit_id, b.visit);
        assert_eq!(line_up([&b, &a]), q);
    }

    #[test]
    fn a_patient_and_their_interpreter_are_one_consultation_ahead() {
        let a = part(1, &[(1, 1), (2, 2)]);
        let b = part(2, &[(3, 3)]);
        let c = part(3, &[(4, 4), (5, 6)]);
        let q = line_up([&a, &b, &c]);
        let ahead: Vec<usize> = (0..q.len()).map(|i| visits_ahead(&q, i)).collect();
        assert_eq!(ahead, [0, 0, 1, 2, 2]);
        assert_eq!(visits_ahead(&q, 99), 0);
    }
}
