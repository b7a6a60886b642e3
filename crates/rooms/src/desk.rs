//! The node's desk: each provider's queue, lined up from the parts their visits report,
//! fed back to the visits as standings (`waiting {position, expected_wait_secs, provider}`)
//! and shown on the provider's dashboard.
//!
//! Visits report through a [`DeskFeed`] (a channel: the registry holds a visit's lock while
//! routing, and the desk locks visits to feed them, so neither ever waits on the other).
//! The desk task re-lines a provider's queue whenever one of their visits reports, their
//! dashboard changes, and once a second (presence turns `away` by the clock, the current
//! consultation gets older). The rules are pure, in `bedside_visit::{queue, estimate,
//! presence}`; this module only collects and routes.
//!
//! One node: the desk sees the visits this node runs. (Lining up a queue whose visits run on
//! several nodes is not built yet; see docs/architecture.md.)

use crate::registry::Registry;
use bedside_auth::TenantId;
use bedside_visit::presence::{self, Presence};
use bedside_visit::queue::{self, ProviderView, QueueEntry, VisitQueue};
use bedside_visit::{Input, ProviderId, VisitId, WaitModel};
use chrono::{DateTime, TimeDelta, Utc};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// A provider of a tenant: providers are scoped to their tenant.
pub type ProviderKey = (TenantId, ProviderId);

enum Update {
    /// A visit's part of its provider's queue changed.
    Part(VisitQueue),
    /// Something about the provider changed (their dashboard): line their queue up again.
    Poke(ProviderKey),
}

/// How visits report to the desk: never waits.
#[derive(Clone)]
pub struct DeskFeed(mpsc::UnboundedSender<Update>);

impl DeskFeed {
    pub fn report(&self, part: VisitQueue, _now: DateTime<Utc>) {
        let _ = self.0.send(Update::Part(part));
    }
}

/// The desk's settings (`clinic.*` in configuration).
#[derive(Debug, Clone, Copy)]
pub struct DeskSettings {
    pub model: WaitModel,
    /// How long a dashboard may be gone before its provider shows as `away`.
    pub away_after: TimeDelta,
}

/// What a provider's dashboard shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Board {
    pub entries: Vec<QueueEntry>,
    /// As their patients see it (`None`: nothing known, no dashboard and not busy).
    pub presence: Option<Presence>,
    /// What they chose.
    pub chosen: Presence,
    /// The dashboard connection this board is for; an older one seeing a newer session
    /// has been replaced.
    pub session: u64,
}

struct ProviderState {
    parts: HashMap<VisitId, VisitQueue>,
    /// Recent consultation durations, newest first; `None` until (re)loaded.
    history: Option<Arc<[TimeDelta]>>,
    desk: Option<presence::Desk>,
    board: watch::Sender<Board>,
    sessions: u64,
}

impl ProviderState {
    fn new() -> Self {
        Self {
            parts: HashMap::new(),
            history: None,
            desk: None,
            board: watch::Sender::new(Board::default()),
            sessions: 0,
        }
    }

    fn idle(&self) -> bool {
        self.parts.is_empty() && self.desk.is_none() && self.board.receiver_count() == 0
    }
}

pub struct Desk {
    providers: Mutex<HashMap<ProviderKey, ProviderState>>,
    /// Whose queue each reporting visit is in.
    visits: Mutex<HashMap<VisitId, ProviderKey>>,
    settings: DeskSettings,
    feed: DeskFeed,
    updates: Mutex<Option<mpsc::UnboundedReceiver<Update>>>,
}

impl Desk {
    pub fn new(settings: DeskSettings) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Self {
            providers: Mutex::new(HashMap::new()),
            visits: Mutex::new(HashMap::new()),
            settings,
            feed: DeskFeed(tx),
            updates: Mutex::new(Some(rx)),
        })
    }

    /// What the registry reports through.
    pub fn feed(&self) -> DeskFeed {
        self.feed.clone()
    }

    /// Lines queues up and feeds standings back until `shutdown`.
    pub async fn run(self: Arc<Self>, registry: Arc<Registry>, shutdown: CancellationToken) {
        let Some(mut rx) = self.updates.lock().take() else {
            return;
        };
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dirty = HashSet::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                update = rx.recv() => {
                    let Some(update) = update else { return };
                    self.apply(update, &mut dirty);
                    while let Ok(more) = rx.try_recv() {
                        self.apply(more, &mut dirty);
                    }
                }
                _ = tick.tick() => dirty.extend(self.providers.lock().keys().cloned()),
            }
            for key in dirty.drain() {
                self.refresh(&registry, &key, Utc::now()).await;
            }
        }
    }

    fn apply(&self, update: Update, dirty: &mut HashSet<ProviderKey>) {
        let part = match update {
            Update::Poke(key) => {
                dirty.insert(key);
                return;
            }
            Update::Part(part) => part,
        };
        let Some(provider) = part.provider.clone() else {
            return;
        };
        let key = (part.tenant.clone(), provider);
        let previous = self.visits.lock().insert(part.visit, key.clone());
        let mut providers = self.providers.lock();
        if let Some(old) = previous.filter(|old| *old != key)
            && let Some(state) = providers.get_mut(&old)
        {
            // Transferred: out of the old provider's queue, and their consultation here
            // (if any) is now in their history.
            if state
                .parts
                .remove(&part.visit)
                .is_some_and(|p| p.busy_since.is_some())
            {
                state.history = None;
            }
            dirty.insert(old);
        }
        let state = providers
            .entry(key.clone())
            .or_insert_with(ProviderState::new);
        let was_busy = state
            .parts
            .get(&part.visit)
            .is_some_and(|p| p.busy_since.is_some());
        if was_busy && part.busy_since.is_none() {
            state.history = None;
        }
        if part.is_empty() {
            state.parts.remove(&part.visit);
            self.visits.lock().remove(&part.visit);
        } else {
            state.parts.insert(part.visit, part);
        }
        dirty.insert(key);
    }

    async fn refresh(&self, registry: &Registry, key: &ProviderKey, now: DateTime<Utc>) {
        let needs_history = {
            let providers = self.providers.lock();
            match providers.get(key) {
                None => return,
                Some(state) => state.history.is_none() && !state.parts.is_empty(),
            }
        };
        if needs_history {
            let limit = u32::try_from(self.settings.model.history).unwrap_or(u32::MAX);
            match registry
                .storage()
                .consultations(&key.0, &key.1, limit)
                .await
            {
                Ok(history) => {
                    if let Some(state) = self.providers.lock().get_mut(key) {
                        state.history = Some(history.into());
                    }
                }
                // The estimate waits for the next refresh; positions go out regardless.
                Err(e) => tracing::warn!(error = %e, "could not read consultation history"),
            }
        }
        let mut feeds: HashMap<VisitId, Vec<_>> = HashMap::new();
        let view;
        {
            let mut providers = self.providers.lock();
            let Some(state) = providers.get_mut(key) else {
                return;
            };
            if state.idle() {
                providers.remove(key);
                return;
            }
            let entries = queue::line_up(state.parts.values());
            let current = queue::current_consultation(state.parts.values(), now);
            let shown = presence::shown(
                state.desk.as_ref(),
                current.is_some(),
                now,
                self.settings.away_after,
            );
            view = shown.map(|presence| ProviderView {
                name: state.desk.as_ref().and_then(|d| d.name.clone()),
                presence,
            });
            let history = state.history.clone().unwrap_or_default();
            for (visit, participant, standing) in queue::standings(
                &entries,
                &self.settings.model,
                &history,
                current,
                view.as_ref(),
            ) {
                feeds
                    .entry(visit)
                    .or_default()
                    .push((participant, standing));
            }
            // Visits with nobody waiting still learn the provider's presence.
            for visit in state.parts.keys() {
                feeds.entry(*visit).or_default();
            }
            let chosen = state.desk.as_ref().map(|d| d.chosen).unwrap_or_default();
            state.board.send_if_modified(|board| {
                let changed =
                    board.entries != entries || board.presence != shown || board.chosen != chosen;
                if changed {
                    board.entries = entries;
                    board.presence = shown;
                    board.chosen = chosen;
                }
                changed
            });
        }
        for (visit, standings) in feeds {
            let input = Input::Standings {
                provider: view.clone(),
                standings,
            };
            if let Err(e) = registry.feed_live(visit, input, now) {
                tracing::debug!(visit = %visit, error = %e, "standings not delivered");
            }
        }
    }

    /// The provider's queue as this node sees it now.
    pub fn queue(&self, tenant: &TenantId, provider: &ProviderId) -> Vec<QueueEntry> {
        let key = (tenant.clone(), provider.clone());
        self.providers
            .lock()
            .get(&key)
            .map(|s| queue::line_up(s.parts.values()))
            .unwrap_or_default()
    }

    /// The provider's live visits with someone waiting or the provider in them.
    pub fn visits_of(&self, tenant: &TenantId, provider: &ProviderId) -> Vec<VisitId> {
        let key = (tenant.clone(), provider.clone());
        self.providers
            .lock()
            .get(&key)
            .map(|s| s.parts.keys().copied().collect())
            .unwrap_or_default()
    }

    /// A provider's dashboard connects: it replaces any earlier one (which sees a newer
    /// session on its board) and watches the board from now on.
    pub fn connect(
        &self,
        key: &ProviderKey,
        name: Option<String>,
        now: DateTime<Utc>,
    ) -> (u64, watch::Receiver<Board>) {
        let mut providers = self.providers.lock();
        let state = providers
            .entry(key.clone())
            .or_insert_with(ProviderState::new);
        state.sessions += 1;
        let session = state.sessions;
        let chosen = state.desk.as_ref().map(|d| d.chosen).unwrap_or_default();
        state.desk = Some(presence::Desk {
            name,
            chosen,
            connected: true,
            since: now,
        });
        state.board.send_modify(|b| b.session = session);
        let rx = state.board.subscribe();
        drop(providers);
        let _ = self.feed.0.send(Update::Poke(key.clone()));
        (session, rx)
    }

    /// The provider chooses how they show.
    pub fn choose(&self, key: &ProviderKey, session: u64, chosen: Presence) {
        if let Some(state) = self.providers.lock().get_mut(key)
            && state.sessions == session
            && let Some(desk) = &mut state.desk
        {
            desk.chosen = chosen;
        }
        let _ = self.feed.0.send(Update::Poke(key.clone()));
    }

    /// The dashboard of `session` is gone; the provider turns `away` after a while.
    pub fn disconnect(&self, key: &ProviderKey, session: u64, now: DateTime<Utc>) {
        if let Some(state) = self.providers.lock().get_mut(key)
            && state.sessions == session
            && let Some(desk) = &mut state.desk
        {
            desk.connected = false;
            desk.since = now;
        }
        let _ = self.feed.0.send(Update::Poke(key.clone()));
    }
}
