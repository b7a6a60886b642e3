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
//! In a cluster the desk also holds what other nodes' visits report for the providers it
//! follows (those with a visit or a dashboard here), through its [`QueueBoard`]: every node
//! lines up the same queue from the same parts, so a waiting patient's position is right
//! whichever node runs their visit, and a dashboard on any node shows all of it.

use crate::board::{DeskState, LocalBoard, NodePart, QueueBoard};
use crate::error::RoomError;
use crate::registry::Registry;
use bedside_auth::TenantId;
use bedside_visit::presence::{self, Presence};
use bedside_visit::queue::{self, ProviderView, QueueEntry, VisitQueue};
use bedside_visit::{Input, ProviderId, VisitId, WaitModel};
use chrono::{DateTime, TimeDelta, Utc};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// A provider of a tenant: providers are scoped to their tenant.
pub type ProviderKey = (TenantId, ProviderId);

enum Update {
    /// A visit's part of its provider's queue changed.
    Part(VisitQueue),
    /// Something about the provider changed (their dashboard): line their queue up again.
    Poke(ProviderKey),
    /// Another node's visit: its part of `key`'s queue, or `None` once it adds nothing.
    Remote {
        key: ProviderKey,
        visit: VisitId,
        node: String,
        part: Option<VisitQueue>,
    },
    /// A dashboard of the provider on some node: connected (`fresh`) or changed.
    RemoteDesk {
        key: ProviderKey,
        state: DeskState,
        fresh: bool,
    },
    /// What the board held of a provider when the desk began following them (`parts`:
    /// `None` when it could not be read).
    Snapshot {
        key: ProviderKey,
        parts: Option<Vec<NodePart>>,
        desk: Option<DeskState>,
    },
    /// A node died: what it published no longer counts.
    NodeGone(String),
    /// Messages between nodes may have been lost: follow every provider afresh.
    Resync,
}

/// How visits (and, in a cluster, the board) report to the desk: never waits.
#[derive(Clone)]
pub struct DeskFeed(mpsc::UnboundedSender<Update>);

impl DeskFeed {
    pub fn report(&self, part: VisitQueue, _now: DateTime<Utc>) {
        let _ = self.0.send(Update::Part(part));
    }

    /// Another node's visit's part of `key`'s queue (`None`: it adds nothing any more).
    pub fn remote_part(
        &self,
        key: ProviderKey,
        visit: VisitId,
        node: String,
        part: Option<VisitQueue>,
    ) {
        let _ = self.0.send(Update::Remote {
            key,
            visit,
            node,
            part,
        });
    }

    /// A provider's dashboard, as published by the node it is connected to.
    pub fn remote_desk(&self, key: ProviderKey, state: DeskState, fresh: bool) {
        let _ = self.0.send(Update::RemoteDesk { key, state, fresh });
    }

    /// What the board holds of a provider the desk began following.
    pub fn snapshot(
        &self,
        key: ProviderKey,
        parts: Option<Vec<NodePart>>,
        desk: Option<DeskState>,
    ) {
        let _ = self.0.send(Update::Snapshot { key, parts, desk });
    }

    pub fn node_gone(&self, node: String) {
        let _ = self.0.send(Update::NodeGone(node));
    }

    pub fn resync(&self) {
        let _ = self.0.send(Update::Resync);
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
    /// Parts of visits this node runs.
    parts: HashMap<VisitId, VisitQueue>,
    /// Parts of visits other nodes run, and which node.
    remote: HashMap<VisitId, NodePart>,
    /// Set while the board's snapshot of this provider is awaited: the visits (and whether
    /// the dashboard) a message has told of meanwhile, which the snapshot must not undo.
    pending: Option<(HashSet<VisitId>, bool)>,
    /// Recent consultation durations, newest first; `None` until (re)loaded.
    history: Option<Arc<[TimeDelta]>>,
    desk: Option<presence::Desk>,
    /// Which dashboard holds the desk: its node (`None`: this one) and session.
    holder: Option<(Option<String>, u64)>,
    /// The dashboard connected here, and whether its connection has come back through the
    /// board (in a cluster, a connect counts in the order Redis saw it: one from another
    /// node heard before our own was earlier, and does not replace ours).
    local: Option<(u64, bool)>,
    board: watch::Sender<Board>,
}

impl ProviderState {
    fn new(pending: bool) -> Self {
        Self {
            parts: HashMap::new(),
            remote: HashMap::new(),
            pending: pending.then(|| (HashSet::new(), false)),
            history: None,
            desk: None,
            holder: None,
            local: None,
            board: watch::Sender::new(Board::default()),
        }
    }

    /// Nothing here needs the provider: no visit of theirs runs here, no dashboard of
    /// theirs is connected here. (On one node, a dashboard gone keeps its state: when it
    /// left counts toward `away`. In a cluster the board keeps it.)
    fn idle(&self, shared: bool) -> bool {
        self.parts.is_empty()
            && self.board.receiver_count() == 0
            && (self.desk.is_none() || (shared && self.local.is_none()))
    }

    /// Every part of the provider's queue: this node's, and the others' (this node's copy
    /// of a visit wins: it is the freshest).
    fn all_parts(&self) -> impl Iterator<Item = &VisitQueue> {
        self.parts.values().chain(
            self.remote
                .iter()
                .filter(|(visit, _)| !self.parts.contains_key(visit))
                .map(|(_, p)| &p.part),
        )
    }
}

pub struct Desk {
    providers: Mutex<HashMap<ProviderKey, ProviderState>>,
    /// Whose queue each reporting visit is in.
    visits: Mutex<HashMap<VisitId, ProviderKey>>,
    settings: DeskSettings,
    feed: DeskFeed,
    updates: Mutex<Option<mpsc::UnboundedReceiver<Update>>>,
    board: OnceLock<Arc<dyn QueueBoard>>,
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
            board: OnceLock::new(),
        })
    }

    /// Shares queues through `board` (set once, before any visit or dashboard; without
    /// one the desk is a single node's).
    pub fn with_board(&self, board: Arc<dyn QueueBoard>) {
        let _ = self.board.set(board);
    }

    fn board(&self) -> &dyn QueueBoard {
        match self.board.get() {
            Some(board) => board.as_ref(),
            None => &LocalBoard,
        }
    }

    fn shared(&self) -> bool {
        self.board().node().is_some()
    }

    /// The provider's state, created (and followed on the board) if new.
    fn state<'a>(
        &self,
        providers: &'a mut HashMap<ProviderKey, ProviderState>,
        key: &ProviderKey,
    ) -> &'a mut ProviderState {
        providers.entry(key.clone()).or_insert_with(|| {
            let shared = self.shared();
            if shared {
                self.board().follow(key);
            }
            ProviderState::new(shared)
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
                _ = tick.tick() => {
                    let providers = self.providers.lock();
                    dirty.extend(providers.keys().cloned());
                    if self.shared() {
                        // Nodes whose parts or dashboards this node holds: one look (an
                        // MGET of a few liveness keys) a second, whatever the visits.
                        let mut nodes: Vec<String> = providers
                            .values()
                            .flat_map(|s| {
                                s.remote.values().map(|p| p.node.clone()).chain(
                                    s.holder.iter().filter_map(|(node, _)| node.clone()),
                                )
                            })
                            .collect();
                        nodes.sort_unstable();
                        nodes.dedup();
                        if !nodes.is_empty() {
                            self.board().check(nodes);
                        }
                    }
                }
            }
            for key in dirty.drain() {
                self.refresh(&registry, &key, Utc::now()).await;
            }
        }
    }

    fn apply(&self, update: Update, dirty: &mut HashSet<ProviderKey>) {
        match update {
            Update::Poke(key) => {
                dirty.insert(key);
            }
            Update::Part(part) => self.apply_part(part, dirty),
            Update::Remote {
                key,
                visit,
                node,
                part,
            } => self.apply_remote(key, visit, node, part, dirty),
            Update::RemoteDesk { key, state, fresh } => {
                self.apply_remote_desk(key, state, fresh, dirty)
            }
            Update::Snapshot { key, parts, desk } => {
                let me = self.board().node().map(str::to_owned);
                let mut providers = self.providers.lock();
                let Some(state) = providers.get_mut(&key) else {
                    return;
                };
                let (told, desk_told) = state.pending.take().unwrap_or_default();
                if let Some(parts) = parts {
                    state.remote.retain(|visit, _| told.contains(visit));
                    for p in parts {
                        if Some(&p.node) != me.as_ref() && !told.contains(&p.part.visit) {
                            state.remote.insert(p.part.visit, p);
                        }
                    }
                    state.history = None;
                }
                if !desk_told
                    && state.local.is_none()
                    && let Some(d) = desk
                {
                    let node = (Some(&d.node) != me.as_ref()).then_some(d.node);
                    state.holder = Some((node, d.session));
                    state.desk = Some(d.desk);
                }
                dirty.insert(key);
            }
            Update::NodeGone(node) => {
                let now = Utc::now();
                for (key, state) in self.providers.lock().iter_mut() {
                    let before = state.remote.len();
                    state.remote.retain(|_, p| p.node != node);
                    let mut changed = before != state.remote.len();
                    if state
                        .holder
                        .as_ref()
                        .is_some_and(|(n, _)| n.as_deref() == Some(node.as_str()))
                        && let Some(desk) = &mut state.desk
                        && desk.connected
                    {
                        // Its dashboard went with it: `away` after a while, from now.
                        desk.connected = false;
                        desk.since = now;
                        changed = true;
                    }
                    if changed {
                        tracing::info!(node = %node, "a node is gone: its queue parts no longer count");
                        dirty.insert(key.clone());
                    }
                }
            }
            Update::Resync => {
                let board = self.board();
                let mut providers = self.providers.lock();
                for (key, state) in providers.iter_mut() {
                    state.pending = Some((HashSet::new(), false));
                    board.follow(key);
                    // What this node published may be lost too: again.
                    for (visit, part) in &state.parts {
                        board.publish_part(key, *visit, Some(part));
                    }
                    if let (Some((session, _)), Some(desk), Some(node)) =
                        (state.local, &state.desk, board.node())
                    {
                        let desk_state = DeskState {
                            node: node.to_owned(),
                            session,
                            desk: desk.clone(),
                        };
                        board.publish_desk(key, &desk_state, false);
                    }
                    dirty.insert(key.clone());
                }
            }
        }
    }

    fn apply_part(&self, part: VisitQueue, dirty: &mut HashSet<ProviderKey>) {
        let Some(provider) = part.provider.clone() else {
            return;
        };
        let board = self.board();
        let key = (part.tenant.clone(), provider);
        let previous = self.visits.lock().insert(part.visit, key.clone());
        let mut providers = self.providers.lock();
        if let Some(old) = previous.filter(|old| *old != key) {
            board.publish_part(&old, part.visit, None);
            if let Some(state) = providers.get_mut(&old) {
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
        }
        if part.is_empty() {
            board.publish_part(&key, part.visit, None);
            self.visits.lock().remove(&part.visit);
            if let Some(state) = providers.get_mut(&key) {
                if state
                    .parts
                    .remove(&part.visit)
                    .is_some_and(|p| p.busy_since.is_some())
                {
                    state.history = None;
                }
                dirty.insert(key);
            }
            return;
        }
        board.publish_part(&key, part.visit, Some(&part));
        let state = self.state(&mut providers, &key);
        let was_busy = state
            .parts
            .get(&part.visit)
            .is_some_and(|p| p.busy_since.is_some());
        if was_busy && part.busy_since.is_none() {
            state.history = None;
        }
        state.parts.insert(part.visit, part);
        dirty.insert(key);
    }

    fn apply_remote(
        &self,
        key: ProviderKey,
        visit: VisitId,
        node: String,
        part: Option<VisitQueue>,
        dirty: &mut HashSet<ProviderKey>,
    ) {
        if self.board().node() == Some(node.as_str()) {
            return;
        }
        let mut providers = self.providers.lock();
        // A provider nobody here needs: nothing to keep.
        let Some(state) = providers.get_mut(&key) else {
            return;
        };
        if let Some((told, _)) = &mut state.pending {
            told.insert(visit);
        }
        let was_busy = state
            .remote
            .get(&visit)
            .is_some_and(|p| p.part.busy_since.is_some());
        match part {
            Some(part) => {
                if was_busy && part.busy_since.is_none() {
                    state.history = None;
                }
                state.remote.insert(visit, NodePart { node, part });
            }
            // Only the node that published it takes it back: a newer owner's stays.
            None => {
                if state.remote.get(&visit).is_some_and(|p| p.node == node) {
                    state.remote.remove(&visit);
                    if was_busy {
                        state.history = None;
                    }
                }
            }
        }
        dirty.insert(key);
    }

    fn apply_remote_desk(
        &self,
        key: ProviderKey,
        d: DeskState,
        fresh: bool,
        dirty: &mut HashSet<ProviderKey>,
    ) {
        let mine = self.board().node() == Some(d.node.as_str());
        let mut providers = self.providers.lock();
        let Some(state) = providers.get_mut(&key) else {
            return;
        };
        if let Some((_, desk_told)) = &mut state.pending {
            *desk_told = true;
        }
        if mine {
            // Our own connect, back in Redis's order: from now on a connect elsewhere is
            // a later one.
            if fresh
                && let Some((session, confirmed)) = &mut state.local
                && *session == d.session
            {
                *confirmed = true;
            }
            return;
        }
        if fresh {
            if state.local.is_some_and(|(_, confirmed)| !confirmed) {
                // Heard before our own connect came back: it was earlier, ours wins.
                return;
            }
            // A newer dashboard elsewhere: it holds the desk, ours (if any) is replaced.
            state.local = None;
            state.holder = Some((Some(d.node), d.session));
            state.desk = Some(d.desk);
        } else if state.holder.as_ref().map(|(_, s)| *s) == Some(d.session) {
            state.desk = Some(d.desk);
        } else {
            return;
        }
        dirty.insert(key);
    }

    async fn refresh(&self, registry: &Registry, key: &ProviderKey, now: DateTime<Utc>) {
        let needs_history = {
            let providers = self.providers.lock();
            match providers.get(key) {
                None => return,
                // Until the other nodes' parts are known, positions would be wrong.
                Some(state) if state.pending.is_some() => return,
                Some(state) => state.history.is_none() && state.all_parts().next().is_some(),
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
        let shared = self.shared();
        let mut feeds: HashMap<VisitId, Vec<_>> = HashMap::new();
        let view;
        {
            let mut providers = self.providers.lock();
            let Some(state) = providers.get_mut(key) else {
                return;
            };
            if state.idle(shared) {
                providers.remove(key);
                return;
            }
            let entries = queue::line_up(state.all_parts());
            let current = queue::current_consultation(state.all_parts(), now);
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
                // Other nodes tell their own visits.
                if state.parts.contains_key(&visit) {
                    feeds
                        .entry(visit)
                        .or_default()
                        .push((participant, standing));
                }
            }
            // Visits with nobody waiting still learn the provider's presence.
            for visit in state.parts.keys() {
                feeds.entry(*visit).or_default();
            }
            let chosen = state.desk.as_ref().map(|d| d.chosen).unwrap_or_default();
            let session = state.holder.as_ref().map_or(0, |(_, s)| *s);
            state.board.send_if_modified(|board| {
                let changed = board.entries != entries
                    || board.presence != shown
                    || board.chosen != chosen
                    || board.session != session;
                if changed {
                    board.entries = entries;
                    board.presence = shown;
                    board.chosen = chosen;
                    board.session = session;
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

    /// The provider's queue as this node's desk sees it now.
    pub fn queue(&self, tenant: &TenantId, provider: &ProviderId) -> Vec<QueueEntry> {
        let key = (tenant.clone(), provider.clone());
        self.providers
            .lock()
            .get(&key)
            .map(|s| queue::line_up(s.all_parts()))
            .unwrap_or_default()
    }

    /// The provider's whole queue, whichever nodes run their visits (on one node: what
    /// [`Desk::queue`] says; in a cluster, read from the board).
    pub async fn queue_everywhere(
        &self,
        tenant: &TenantId,
        provider: &ProviderId,
    ) -> Result<Vec<QueueEntry>, RoomError> {
        let key = (tenant.clone(), provider.clone());
        let Some(mut parts) = self.board().parts(&key).await? else {
            return Ok(self.queue(tenant, provider));
        };
        // This node's own visits as it knows them now (the board may lag a moment).
        let local: Vec<VisitQueue> = self
            .providers
            .lock()
            .get(&key)
            .map(|s| s.parts.values().cloned().collect())
            .unwrap_or_default();
        parts.retain(|p| !local.iter().any(|l| l.visit == p.part.visit));
        Ok(queue::line_up(
            local.iter().chain(parts.iter().map(|p| &p.part)),
        ))
    }

    /// The provider's live visits with someone waiting or the provider in them, on any
    /// node this desk knows of.
    pub fn visits_of(&self, tenant: &TenantId, provider: &ProviderId) -> Vec<VisitId> {
        let key = (tenant.clone(), provider.clone());
        self.providers
            .lock()
            .get(&key)
            .map(|s| s.all_parts().map(|p| p.visit).collect())
            .unwrap_or_default()
    }

    /// Passes a provider's message on to the other nodes, for the visits among `visits`
    /// they run (this node feeds its own).
    pub fn notify_elsewhere(&self, key: &ProviderKey, visits: &[VisitId], text: &str) {
        if self.shared() && !visits.is_empty() {
            self.board().notify(key, visits, text);
        }
    }

    /// A provider's dashboard connects: it replaces any earlier one, here or on another
    /// node (which sees a newer session on its board) and watches the board from now on.
    pub fn connect(
        &self,
        key: &ProviderKey,
        name: Option<String>,
        now: DateTime<Utc>,
    ) -> (u64, watch::Receiver<Board>) {
        // Never 0, which stands for "no dashboard".
        let session = rand::random::<u64>().max(1);
        let shared = self.shared();
        let mut providers = self.providers.lock();
        let state = self.state(&mut providers, key);
        let chosen = state.desk.as_ref().map(|d| d.chosen).unwrap_or_default();
        let desk = presence::Desk {
            name,
            chosen,
            connected: true,
            since: now,
        };
        state.local = Some((session, !shared));
        state.holder = Some((None, session));
        state.desk = Some(desk.clone());
        state.board.send_modify(|b| b.session = session);
        let rx = state.board.subscribe();
        drop(providers);
        self.publish_desk(key, session, desk, true);
        let _ = self.feed.0.send(Update::Poke(key.clone()));
        (session, rx)
    }

    fn publish_desk(&self, key: &ProviderKey, session: u64, desk: presence::Desk, fresh: bool) {
        let board = self.board();
        if let Some(node) = board.node() {
            let state = DeskState {
                node: node.to_owned(),
                session,
                desk,
            };
            board.publish_desk(key, &state, fresh);
        }
    }

    /// The provider chooses how they show.
    pub fn choose(&self, key: &ProviderKey, session: u64, chosen: Presence) {
        let mut changed = None;
        if let Some(state) = self.providers.lock().get_mut(key)
            && state.local.is_some_and(|(s, _)| s == session)
            && let Some(desk) = &mut state.desk
        {
            desk.chosen = chosen;
            changed = Some(desk.clone());
        }
        if let Some(desk) = changed {
            self.publish_desk(key, session, desk, false);
        }
        let _ = self.feed.0.send(Update::Poke(key.clone()));
    }

    /// The dashboard of `session` is gone; the provider turns `away` after a while.
    pub fn disconnect(&self, key: &ProviderKey, session: u64, now: DateTime<Utc>) {
        let mut changed = None;
        if let Some(state) = self.providers.lock().get_mut(key)
            && state.local.is_some_and(|(s, _)| s == session)
            && let Some(desk) = &mut state.desk
        {
            desk.connected = false;
            desk.since = now;
            state.local = None;
            changed = Some(desk.clone());
        }
        if let Some(desk) = changed {
            self.publish_desk(key, session, desk, false);
        }
        let _ = self.feed.0.send(Update::Poke(key.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bedside_auth::Role;
    use bedside_visit::ParticipantId;
    use bedside_visit::queue::Knock;

    /// A board of node `a` that only records what the desk asks of it.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl QueueBoard for Recorder {
        fn node(&self) -> Option<&str> {
            Some("a")
        }
        fn follow(&self, key: &ProviderKey) {
            self.0.lock().push(format!("follow {}", key.1));
        }
        fn publish_part(&self, _: &ProviderKey, visit: VisitId, part: Option<&VisitQueue>) {
            self.0.lock().push(format!(
                "part {visit} {}",
                part.map_or(0, |p| p.knocks.len())
            ));
        }
        fn publish_desk(&self, _: &ProviderKey, state: &DeskState, fresh: bool) {
            self.0
                .lock()
                .push(format!("desk {} {fresh}", state.desk.connected));
        }
    }

    fn desk() -> (Arc<Desk>, Arc<Recorder>) {
        let desk = Desk::new(DeskSettings {
            model: WaitModel::default(),
            away_after: TimeDelta::seconds(120),
        });
        let board = Arc::new(Recorder::default());
        desk.with_board(board.clone());
        (desk, board)
    }

    fn key() -> ProviderKey {
        (
            TenantId::new("clinic-a").unwrap(),
            ProviderId::new("dr-lee").unwrap(),
        )
    }

    fn visit(n: u128) -> VisitId {
        VisitId::from_uuid(uuid::Uuid::from_u128(n))
    }

    /// Visit `n`'s part with one knock at minute `min`.
    fn part(n: u128, min: i64) -> VisitQueue {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap() + TimeDelta::minutes(min);
        VisitQueue {
            visit: visit(n),
            tenant: key().0,
            provider: Some(key().1),
            external_ref: None,
            knocks: vec![Knock {
                participant_id: ParticipantId::from_bits(n as u64),
                name: format!("p{n}"),
                role: Role::Patient,
                since: at,
                consent: None,
                precheck: None,
            }],
            busy_since: None,
        }
    }

    fn remote(n: u128, min: i64, node: &str) -> Update {
        Update::Remote {
            key: key(),
            visit: visit(n),
            node: node.into(),
            part: Some(part(n, min)),
        }
    }

    fn queued(desk: &Desk) -> Vec<VisitId> {
        desk.queue(&key().0, &key().1)
            .iter()
            .map(|e| e.visit_id)
            .collect()
    }

    #[test]
    fn other_nodes_parts_line_up_with_this_nodes_and_a_dead_nodes_drop_out() {
        let (desk, board) = desk();
        let dirty = &mut HashSet::new();
        desk.apply(Update::Part(part(1, 5)), dirty);
        assert_eq!(
            *board.0.lock(),
            [format!("part {} 1", visit(1)), "follow dr-lee".into()]
        );
        // The board's snapshot, then changes: one queue, oldest knock first.
        desk.apply(
            Update::Snapshot {
                key: key(),
                parts: Some(vec![NodePart {
                    node: "b".into(),
                    part: part(2, 1),
                }]),
                desk: None,
            },
            dirty,
        );
        desk.apply(remote(3, 9, "c"), dirty);
        assert_eq!(queued(&desk), [visit(2), visit(1), visit(3)]);
        assert_eq!(desk.visits_of(&key().0, &key().1).len(), 3);
        // What this node publishes itself comes back and is not counted twice.
        desk.apply(remote(1, 5, "a"), dirty);
        assert_eq!(queued(&desk).len(), 3);
        desk.apply(Update::NodeGone("b".into()), dirty);
        assert_eq!(queued(&desk), [visit(1), visit(3)]);
        // Another provider's followers are not told of a provider nobody here needs.
        let other = (key().0, ProviderId::new("dr-kim").unwrap());
        desk.apply(
            Update::Remote {
                key: other.clone(),
                visit: visit(9),
                node: "b".into(),
                part: Some(part(9, 0)),
            },
            dirty,
        );
        assert!(desk.queue(&other.0, &other.1).is_empty());
    }

    #[test]
    fn a_snapshot_never_undoes_what_a_message_told_meanwhile() {
        let (desk, _) = desk();
        let dirty = &mut HashSet::new();
        desk.apply(Update::Part(part(1, 5)), dirty);
        // While the snapshot is read: visit 2 moves on, visit 3 leaves the queue.
        desk.apply(remote(2, 7, "b"), dirty);
        desk.apply(remote(3, 8, "b"), dirty);
        desk.apply(
            Update::Remote {
                key: key(),
                visit: visit(3),
                node: "b".into(),
                part: None,
            },
            dirty,
        );
        let stale = |n, min| NodePart {
            node: "b".into(),
            part: part(n, min),
        };
        desk.apply(
            Update::Snapshot {
                key: key(),
                parts: Some(vec![stale(2, 0), stale(3, 0), stale(4, 6)]),
                desk: None,
            },
            dirty,
        );
        let q = desk.queue(&key().0, &key().1);
        let order: Vec<VisitId> = q.iter().map(|e| e.visit_id).collect();
        assert_eq!(order, [visit(1), visit(4), visit(2)]);
    }

    #[test]
    fn only_the_node_that_published_an_entry_takes_it_back() {
        let (desk, _) = desk();
        let dirty = &mut HashSet::new();
        desk.apply(Update::Part(part(1, 5)), dirty);
        desk.apply(
            Update::Snapshot {
                key: key(),
                parts: Some(Vec::new()),
                desk: None,
            },
            dirty,
        );
        // Node c took visit 2 over from b; b's late withdrawal changes nothing.
        desk.apply(remote(2, 1, "c"), dirty);
        desk.apply(
            Update::Remote {
                key: key(),
                visit: visit(2),
                node: "b".into(),
                part: None,
            },
            dirty,
        );
        assert_eq!(queued(&desk), [visit(2), visit(1)]);
    }

    fn connect_elsewhere(node: &str, session: u64, fresh: bool) -> Update {
        Update::RemoteDesk {
            key: key(),
            state: DeskState {
                node: node.into(),
                session,
                desk: presence::Desk {
                    name: None,
                    chosen: Presence::Away,
                    connected: true,
                    since: Utc::now(),
                },
            },
            fresh,
        }
    }

    fn holder(desk: &Desk) -> Option<(Option<String>, u64)> {
        desk.providers
            .lock()
            .get(&key())
            .and_then(|s| s.holder.clone())
    }

    #[test]
    fn dashboards_replace_each_other_in_the_order_redis_saw_them_connect() {
        let (desk, board) = desk();
        let dirty = &mut HashSet::new();
        let (session, rx) = desk.connect(&key(), Some("Dr Lee".into()), Utc::now());
        assert!(board.0.lock().contains(&"desk true true".to_owned()));
        // A connect on node b heard before ours came back through Redis was earlier.
        desk.apply(connect_elsewhere("b", 7, true), dirty);
        assert_eq!(holder(&desk), Some((None, session)));
        // Ours comes back: from now on, a connect elsewhere is a newer one and takes over.
        desk.apply(connect_elsewhere("a", session, true), dirty);
        // A change from a dashboard that does not hold the desk is ignored.
        desk.apply(connect_elsewhere("b", 7, false), dirty);
        assert_eq!(holder(&desk), Some((None, session)));
        desk.apply(connect_elsewhere("b", 8, true), dirty);
        assert_eq!(holder(&desk), Some((Some("b".into()), 8)));
        // The replaced dashboard's departure changes nothing and is not published.
        let published = board.0.lock().len();
        desk.disconnect(&key(), session, Utc::now());
        desk.choose(&key(), session, Presence::Busy);
        assert_eq!(board.0.lock().len(), published);
        let shown = desk
            .providers
            .lock()
            .get(&key())
            .and_then(|s| s.desk.clone());
        assert_eq!(
            shown.map(|d| (d.connected, d.chosen)),
            Some((true, Presence::Away))
        );
        drop(rx);
        // Its node dies: the provider is gone from now (and `away` after a while).
        desk.apply(Update::NodeGone("b".into()), dirty);
        let shown = desk
            .providers
            .lock()
            .get(&key())
            .and_then(|s| s.desk.clone());
        assert_eq!(shown.map(|d| d.connected), Some(false));
    }
}
