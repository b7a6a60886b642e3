//! The live visits of this node.
//!
//! A visit is loaded into memory when someone joins it (or the API acts on it) and dropped
//! again once nobody is in it. Each live visit sits behind its own mutex: an input is
//! handled and its outputs routed under that lock, so every participant sees a visit's
//! notices in the order the state machine produced them. Routing never waits: notices go
//! into participants' [`Outbox`]es with a non-blocking push, changes into the
//! [`StorageWriter`].
//!
//! Lock order: a visit's mutex may be held while touching the map, never the reverse.

use crate::desk::DeskFeed;
use crate::error::RoomError;
use crate::links::{LinkRequest, Links};
use crate::ownership::{Claim, Ownership};
use crate::storage::{Storage, StorageError, StorageWriter, StoredVisit, WriteOp};
use bedside_auth::{Role, TenantId};
use bedside_visit::quality::{ParticipantQuality, StoredQuality};
use bedside_visit::{
    Actor, AuditActor, AuditEvent, AuditKind, Block, CloseCode, ConnId, Input, Invite, InviteLink,
    JoinRequest, Notice, Output, ParticipantId, ParticipantView, ProviderId, Refusal,
    StoredParticipant, Target, Visit, VisitId, VisitRecord, VisitStatus,
};
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use dashmap::DashMap;
use parking_lot::{ArcMutexGuard, Mutex, RawMutex};
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

thread_local! {
    /// The outputs of the input being run on this thread: see [`VisitHandle::run`]. Taken
    /// (leaving an empty one) rather than borrowed, so a nested run could not conflict.
    static OUTPUTS: Cell<Vec<Output>> = const { Cell::new(Vec::new()) };
}

/// Largest scratch buffer kept for the next input; a rare bigger one (an admission into
/// a full visit) is freed.
const MAX_KEPT_OUTPUTS: usize = 32;

/// Where a participant's notices go: a local connection's bounded queue, or for a
/// participant connected to another node, that node (through the cluster).
pub trait Outbox: Send + Sync + 'static {
    /// Queues an item without waiting. A full queue is the outbox's own problem: it must
    /// drop its slow reader rather than hold up the visit.
    fn push(&self, item: Outgoing);
}

#[derive(Debug)]
pub enum Outgoing {
    /// Boxed so queue slots stay small: every connection's queue is allocated in blocks
    /// of slots, and an idle connection should not pay for its largest notice 32 times.
    Notice(Box<Notice>),
    /// Close the connection after what was queued before. Kept to one word (no reason
    /// text) so queue slots stay small; [`CloseCode::reason`] names it.
    Close(CloseCode),
    /// Check the peer is still there (sent to every connection each ping interval, so no
    /// connection needs a timer of its own).
    Heartbeat,
    /// A frame already encoded: by the visit's owner node for a participant connected
    /// here, notices and refusals alike. Boxed twice over so the slot stays one word.
    Frame(Box<String>),
}

struct Inner {
    id: VisitId,
    tenant: TenantId,
    visit: Visit,
    outboxes: HashMap<ConnId, Arc<dyn Outbox>>,
    /// Set when the visit leaves the map; a holder of a stale handle must reload.
    retired: bool,
    /// In a cluster, the epoch this node claimed the visit under: every write carries it.
    epoch: Option<i64>,
    /// In a cluster, notices waiting for the changes they report to be stored, oldest
    /// first (see [`Registry::run`]).
    held: VecDeque<Held>,
}

/// Notices of one input, held until storage has everything up to `position`.
struct Held {
    position: u64,
    items: Vec<(Arc<dyn Outbox>, Outgoing)>,
}

/// A connection's handle on the visit it joined: no map lookup per frame.
#[derive(Clone)]
pub struct VisitHandle(Arc<Mutex<Inner>>);

impl VisitHandle {
    /// When the visit ends by itself (its `expires_at`): credentials handed to its
    /// participants, such as TURN passwords, need not outlive it.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.0.lock().visit.record().expires_at
    }
}

type Guard = ArcMutexGuard<RawMutex, Inner>;

/// A visit as stored: its record, participants and their call quality.
type Loaded = (
    VisitRecord,
    Vec<StoredParticipant>,
    Access,
    Vec<StoredQuality>,
);

/// A stored visit as the registry restores it.
fn unpack(v: StoredVisit) -> Loaded {
    (
        v.record,
        v.participants,
        (v.blocks, v.used_links),
        v.quality,
    )
}

/// How long an input checked with [`Registry::fresh`] may take to reach the visit's rules.
/// Renewals normally leave well over a second of trust, so only a late one makes inputs
/// wait; a thread preempted this long between the check and the rules is what it covers.
pub const FRESH_MARGIN: std::time::Duration = std::time::Duration::from_millis(250);

/// What a visit remembers about access: its blocks, and its used single-use links.
type Access = (Vec<Block>, Vec<String>);

/// Longest a reload waits for a retired visit's queued changes to reach storage.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// Call quality across visits, for operators (docs/operations.md lists the families).
mod quality_metrics {
    use bedside_visit::quality::Observation;

    pub(super) fn record(o: &Observation) {
        for rtt in &o.rtt_ms {
            metrics::histogram!("bedside_call_rtt_seconds").record(rtt / 1000.0);
        }
        for jitter in &o.jitter_ms {
            metrics::histogram!("bedside_call_jitter_seconds").record(jitter / 1000.0);
        }
        for loss in &o.loss {
            metrics::histogram!("bedside_call_packet_loss_ratio").record(*loss);
        }
        // Whole seconds: reports come about every 5 s, so rounding each loses little.
        let seconds = ((o.measured.num_milliseconds().max(0) + 500) / 1000) as u64;
        metrics::counter!("bedside_call_measured_seconds_total").increment(seconds);
        if o.relayed {
            metrics::counter!("bedside_call_relay_seconds_total").increment(seconds);
        }
        if let Some(q) = o.became {
            metrics::counter!("bedside_call_quality_changes_total", "quality" => q.as_str())
                .increment(1);
        }
    }
}

pub struct Registry {
    visits: DashMap<VisitId, Arc<Mutex<Inner>>>,
    /// Visits that left memory, with the writer position that covers their last change:
    /// reloading one must wait until that is on disk.
    retired: DashMap<VisitId, u64>,
    storage: Arc<dyn Storage>,
    writer: StorageWriter,
    grace: TimeDelta,
    /// How long before a visit's end its participants are warned.
    expiry_warning: TimeDelta,
    /// When this process started: participants connected to its predecessor count as
    /// dropped at this moment.
    boot: DateTime<Utc>,
    /// Set in a cluster: visits are loaded only once claimed.
    ownership: Option<Arc<dyn Ownership>>,
    /// Where visits' parts of their providers' queues go (the node's [`crate::desk`]).
    desk: Option<DeskFeed>,
    /// Mints the guest links doctors ask for from the call (`invite`).
    links: Option<Arc<Links>>,
}

fn unavailable(e: StorageError) -> RoomError {
    tracing::error!(error = %e, "storage unavailable");
    RoomError::Unavailable
}

impl Registry {
    pub fn new(
        storage: Arc<dyn Storage>,
        writer: StorageWriter,
        grace: TimeDelta,
        boot: DateTime<Utc>,
    ) -> Self {
        Self {
            visits: DashMap::new(),
            retired: DashMap::new(),
            storage,
            writer,
            grace,
            expiry_warning: TimeDelta::minutes(crate::visit::EXPIRY_WARNING_MINUTES),
            boot,
            ownership: None,
            desk: None,
            links: None,
        }
    }

    /// Mints the guest links doctors ask for from the call with these keys.
    pub fn with_links(mut self, links: Arc<Links>) -> Self {
        self.links = Some(links);
        self
    }

    /// The node's link minter, if it has keys to mint with.
    pub fn links(&self) -> Option<&Links> {
        self.links.as_deref()
    }

    /// Reports every visit's part of its provider's queue to the node's desk.
    pub fn with_desk(mut self, feed: DeskFeed) -> Self {
        self.desk = Some(feed);
        self
    }

    /// Whether an input handled now will find this node able to act on its visits (always,
    /// on one node): its claims stay fresh for [`FRESH_MARGIN`] more. See
    /// [`Ownership::fresh_for`].
    pub fn fresh(&self) -> bool {
        self.ownership
            .as_ref()
            .is_none_or(|o| o.fresh_for(FRESH_MARGIN))
    }

    /// Waits, a bounded time, until [`Registry::fresh`]; whether it is.
    pub async fn vouched(&self) -> bool {
        match &self.ownership {
            Some(o) if !o.fresh_for(FRESH_MARGIN) => o.vouched().await,
            _ => true,
        }
    }

    /// Runs this registry as one node of a cluster: visits are claimed before they are
    /// loaded, and every write is fenced with the claim's epoch.
    pub fn with_ownership(mut self, ownership: Arc<dyn Ownership>) -> Self {
        self.ownership = Some(ownership);
        self
    }

    /// Sets how long before a visit's end its participants are warned.
    pub fn with_expiry_warning(mut self, before: TimeDelta) -> Self {
        self.expiry_warning = before;
        self
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn writer(&self) -> &StorageWriter {
        &self.writer
    }

    /// Visits currently in memory.
    pub fn live_visits(&self) -> usize {
        self.visits.len()
    }

    async fn open(&self, id: VisitId, now: DateTime<Utc>) -> Result<Arc<Mutex<Inner>>, RoomError> {
        if let Some(live) = self.visits.get(&id).map(|v| v.clone()) {
            return Ok(live);
        }
        // A visit retired a moment ago may still have changes queued: let them land first
        // (and if the database cannot take them now, say so rather than read a stale copy).
        if let Some((_, position)) = self.retired.remove(&id)
            && !self.writer.wait_within(position, CATCH_UP).await
        {
            self.retired.insert(id, position);
            return Err(RoomError::Unavailable);
        }
        let (epoch, read) = match &self.ownership {
            None => (None, None),
            Some(ownership) => match ownership.claim_loading(id).await? {
                (Claim::Mine { epoch }, read) => (Some(epoch), read),
                (Claim::Elsewhere, _) => return Err(RoomError::Elsewhere),
            },
        };
        // Taking a visit over reads it with the epoch's raise (one pooled connection for
        // both); a visit this node already held, or one node alone, loads it here.
        let loaded = match read {
            Some(v) => Ok(unpack(v)),
            None => {
                let loading = std::time::Instant::now();
                let loaded = self.load(id).await;
                metrics::histogram!("bedside_join_stage_seconds", "stage" => "load")
                    .record(loading.elapsed());
                loaded
            }
        };
        let (record, stored, (blocks, used_links), quality) = match loaded {
            Ok(loaded) => loaded,
            Err(e) => {
                // Claimed but not loaded: nothing to keep the claim for.
                if let Some(ownership) = &self.ownership {
                    ownership.release(id, self.writer.position());
                }
                return Err(e);
            }
        };
        let tenant = record.tenant.clone();
        // A visit taken over from another node: its participants dropped from that node
        // now, as far as this one can tell.
        let dropped_at = if epoch.is_some() { now } else { self.boot };
        let visit = Visit::restore(record, stored, dropped_at, self.grace)
            .with_blocks(blocks)
            .with_used_links(used_links)
            .with_quality(quality, now)
            .with_expiry_warning(self.expiry_warning);
        let inner = Inner {
            id,
            tenant,
            visit,
            outboxes: HashMap::new(),
            retired: false,
            epoch,
            held: VecDeque::new(),
        };
        Ok(self
            .visits
            .entry(id)
            .or_insert_with(|| Arc::new(Mutex::new(inner)))
            .clone())
    }

    /// A visit as stored, its blocks, and unless it has ended, its participants and their
    /// call quality.
    async fn load(&self, id: VisitId) -> Result<Loaded, RoomError> {
        let v = self
            .storage
            .load_visit(id)
            .await
            .map_err(unavailable)?
            .ok_or(Refusal::VisitNotFound)?;
        Ok(unpack(v))
    }

    /// Locks the live visit `id`, loading it if needed.
    async fn lock(&self, id: VisitId, now: DateTime<Utc>) -> Result<Guard, RoomError> {
        loop {
            let live = self.open(id, now).await?;
            let guard = Mutex::lock_arc(&live);
            if !guard.retired {
                return Ok(guard);
            }
            drop(guard);
            self.visits.remove_if(&id, |_, v| Arc::ptr_eq(v, &live));
        }
    }

    /// Handles one input under the visit's lock and routes its outputs.
    fn run(&self, g: &mut Guard, input: Input, now: DateTime<Utc>) -> Result<(), RoomError> {
        // Storage keeps microseconds: the visit's times must read back the same. A signal
        // stores and schedules nothing, so the relay path skips the rounding.
        let now = match input {
            Input::Signal { .. } => now,
            _ => now.trunc_subsecs(6),
        };
        // A node that cannot vouch for its claims right now does not act on them; a
        // departure is still taken note of, so a kept claim keeps an accurate visit.
        if let Some(ownership) = &self.ownership
            && !ownership.fresh()
            && !matches!(input, Input::Disconnected { .. })
        {
            return Err(RoomError::Unavailable);
        }
        let inner = &mut **g;
        // In a cluster, what participants are told must already be stored: a node may die
        // any moment, and the next owner knows only what storage holds. So there, notices
        // are collected and sent once the changes they report are written (a few
        // milliseconds); with one node, a restart loses at most those milliseconds and
        // notices go out at once.
        let durable_first = inner.epoch.is_some();
        let mut deliveries = Vec::new();
        let mut deliver = |outbox: &Arc<dyn Outbox>, item: Outgoing| {
            if durable_first {
                deliveries.push((outbox.clone(), item));
            } else {
                outbox.push(item);
            }
        };
        // Knock to admit, for operators: how long the admitted one waited.
        let waited = match &input {
            Input::Admit { target, .. } => inner.visit.waiting_since(*target).map(|t| now - t),
            _ => None,
        };
        // The thread's scratch buffer, not one per visit (a join's outputs would pin their
        // capacity in every live visit) nor one per input (an allocation per relayed frame).
        let mut out = OUTPUTS.take();
        let result = inner
            .visit
            .handle(input, now, &mut out)
            .map_err(RoomError::from);
        if let (Ok(()), Some(waited)) = (&result, waited) {
            metrics::histogram!("bedside_admission_wait_seconds")
                .record(waited.as_seconds_f64().max(0.0));
        }
        let mut writes = Vec::new();
        let mut changed = false;
        // Guest links on one node, held until their rows are stored.
        let mut links = Vec::new();
        for output in out.drain(..) {
            match output {
                Output::Send { to, notice } => {
                    if let Some(outbox) = inner.outboxes.get(&to) {
                        deliver(outbox, Outgoing::Notice(Box::new(notice)));
                    }
                }
                Output::Close { conn, code } => {
                    if let Some(outbox) = inner.outboxes.remove(&conn) {
                        deliver(&outbox, Outgoing::Close(code));
                    }
                }
                Output::Persist(change) => {
                    changed |= change.precedes_notices();
                    writes.push(WriteOp::Change {
                        visit: inner.id,
                        change,
                    });
                }
                Output::Event(event) => writes.push(WriteOp::Event {
                    visit: inner.id,
                    tenant: inner.tenant.clone(),
                    event,
                }),
                Output::Audit(event) => writes.push(WriteOp::Audit {
                    visit: inner.id,
                    tenant: inner.tenant.clone(),
                    event,
                }),
                Output::Observed(observation) => quality_metrics::record(&observation),
                Output::Queue(part) => {
                    if let Some(desk) = &self.desk {
                        desk.report(part, now);
                    }
                }
                Output::Invite(invite) => {
                    let Some(outbox) = inner.outboxes.get(&invite.conn) else {
                        continue;
                    };
                    let conn = invite.conn;
                    match self.invite(&inner.tenant, inner.id, invite, now) {
                        Some((link, audit)) => {
                            // The link goes out once its `invited` row is stored, on one
                            // node too (as the API's links): a link nobody can trace is
                            // never handed out.
                            changed = true;
                            writes.push(WriteOp::Audit {
                                visit: inner.id,
                                tenant: inner.tenant.clone(),
                                event: audit,
                            });
                            let link = Outgoing::Notice(Box::new(link));
                            if durable_first {
                                deliver(outbox, link);
                            } else {
                                links.push((outbox.clone(), link));
                            }
                        }
                        None => {
                            tracing::warn!(visit = %inner.id, %conn, "no key to sign a guest link with");
                            let frame = r#"{"type":"error","code":"internal","message":"the link could not be signed"}"#;
                            deliver(outbox, Outgoing::Frame(Box::new(frame.to_owned())));
                        }
                    }
                }
            }
        }
        if out.capacity() <= MAX_KEPT_OUTPUTS {
            OUTPUTS.set(out);
        }
        if !writes.is_empty() {
            if let Some(epoch) = inner.epoch {
                writes.insert(
                    0,
                    WriteOp::Fence {
                        visit: inner.id,
                        epoch,
                    },
                );
            }
            // One transaction: a change, its audit rows and its events stand or fall together.
            self.writer.push_group(writes);
        }
        if durable_first {
            self.hold(g, deliveries, changed);
        } else if !links.is_empty() {
            self.hold(g, links, true);
        }
        self.retire_if_idle(g);
        result
    }

    /// Mints the guest link a visit agreed to (a fresh identity and token id), and the
    /// `invited` row that records it; `None` without keys for the tenant.
    fn invite(
        &self,
        tenant: &TenantId,
        visit: VisitId,
        invite: Invite,
        now: DateTime<Utc>,
    ) -> Option<(Notice, AuditEvent)> {
        let links = self.links.as_ref()?;
        let key = links.signer_for(tenant)?;
        // Opaque, unique, and plainly not one of the clinic's own identities.
        let identity = format!("invite:{}", uuid::Uuid::new_v4().simple());
        let link = links
            .mint(
                &key,
                LinkRequest {
                    visit,
                    identity: identity.clone(),
                    role: Role::Guest,
                    name: invite.name.clone(),
                    issued_at: now.timestamp(),
                    now,
                    expires_at: invite.expires_at,
                    // The guest still waits for the doctor, who sees who knocks.
                    single_use: false,
                },
            )
            .ok()?;
        tracing::info!(visit = %visit, participant = %invite.by, "guest link minted from the call");
        let audit = AuditEvent {
            identity: Some(identity),
            role: Some(Role::Guest),
            ..AuditEvent::new(AuditKind::Invited, now)
                .actor(AuditActor::Participant(invite.by))
                .detail(link.jti)
        };
        let notice = Notice::InviteLink(Box::new(InviteLink {
            token: link.token,
            join_url: link.join_url,
            expires_at: invite.expires_at,
            name: invite.name,
        }));
        Some((notice, audit))
    }

    /// Sends `items` now, or once storage has the change they report (`changed`) and
    /// whatever was held before them: a participant never hears of a change before it is
    /// stored, nor of anything in a different order than the visit produced it.
    fn hold(&self, g: &mut Guard, items: Vec<(Arc<dyn Outbox>, Outgoing)>, changed: bool) {
        if !changed && g.held.is_empty() {
            for (outbox, item) in items {
                outbox.push(item);
            }
            return;
        }
        if items.is_empty() && !changed {
            return;
        }
        let position = if changed {
            self.writer.position()
        } else {
            g.held.back().map_or(0, |h| h.position)
        };
        g.held.push_back(Held { position, items });
        if changed {
            let visit = ArcMutexGuard::mutex(g).clone();
            let writer = self.writer.clone();
            tokio::spawn(async move {
                writer.wait_for(position).await;
                let mut g = visit.lock();
                while g
                    .held
                    .front()
                    .is_some_and(|h| writer.has_written(h.position))
                {
                    if let Some(held) = g.held.pop_front() {
                        for (outbox, item) in held.items {
                            outbox.push(item);
                        }
                    }
                }
            });
        }
    }

    /// Drops a visit nobody is in from memory; its state is in storage.
    fn retire_if_idle(&self, g: &mut Guard) {
        if g.visit.is_vacant() && g.outboxes.is_empty() {
            self.retire(g);
        }
    }

    fn retire(&self, g: &mut Guard) {
        g.retired = true;
        let id = g.id;
        let position = self.writer.position();
        self.retired.insert(id, position);
        let live = ArcMutexGuard::mutex(g);
        self.visits.remove_if(&id, |_, v| Arc::ptr_eq(v, live));
        if let Some(ownership) = &self.ownership {
            ownership.release(id, position);
        }
    }

    /// Stops acting for a visit at once: another node owns it now. Its connections here
    /// are told to reconnect (1001), which brings them to the new owner.
    pub fn evict(&self, id: VisitId) {
        if let Some(live) = self.visits.get(&id).map(|v| v.clone()) {
            let mut g = Mutex::lock_arc(&live);
            // What was held reports changes storage may well have refused: the new owner
            // tells these participants how things stand when they reconnect.
            g.held.clear();
            if !g.retired {
                // Its part of its provider's queue is the new owner's to report now.
                if let (Some(desk), Some(mut part)) = (&self.desk, g.visit.queue_part()) {
                    part.knocks.clear();
                    part.busy_since = None;
                    desk.report(part, Utc::now());
                }
                for (_, outbox) in g.outboxes.drain() {
                    outbox.push(Outgoing::Close(CloseCode::Moved));
                }
                tracing::info!(visit = %id, "visit handed over to another node");
                self.retire(&mut g);
            }
        }
        // Only now: until the held notices are gone, their release must see the refusal.
        self.writer.clear_refused(id);
    }

    /// Joins a connection to a visit. On success the connection's outbox receives the
    /// visit's notices until it is closed or [`Registry::disconnect`]ed.
    pub async fn join(
        &self,
        id: VisitId,
        tenant: &TenantId,
        req: JoinRequest,
        outbox: Arc<dyn Outbox>,
        now: DateTime<Utc>,
    ) -> Result<(VisitHandle, ParticipantId), RoomError> {
        // Another tenant's visit does not exist, as far as this token can tell: the same
        // answer as a visit that was never created.
        let mut g = self.lock_for(tenant, id, now).await?;
        let conn = req.conn;
        g.outboxes.insert(conn, outbox);
        match self.run(&mut g, Input::Join(req), now) {
            Ok(()) => {
                let participant = g.visit.participant_of(conn).ok_or(Refusal::NotJoined)?;
                Ok((VisitHandle(ArcMutexGuard::mutex(&g).clone()), participant))
            }
            Err(e) => {
                g.outboxes.remove(&conn);
                Err(e)
            }
        }
    }

    /// Feeds an input from a joined connection.
    pub fn handle(
        &self,
        visit: &VisitHandle,
        input: Input,
        now: DateTime<Utc>,
    ) -> Result<(), RoomError> {
        let mut g = Mutex::lock_arc(&visit.0);
        if g.retired {
            return Err(Refusal::NotJoined.into());
        }
        self.run(&mut g, input, now)
    }

    /// The connection is gone (closed by the peer, failed, or closed by us).
    pub fn disconnect(&self, visit: &VisitHandle, conn: ConnId, now: DateTime<Utc>) {
        let mut g = Mutex::lock_arc(&visit.0);
        if g.retired {
            return;
        }
        g.outboxes.remove(&conn);
        let _ = self.run(&mut g, Input::Disconnected { conn }, now);
    }

    /// Ends a visit on behalf of its tenant's backend (`by` names the API key). Ending an
    /// ended visit is not an error: the clinic's retry gets the same answer.
    pub async fn end(
        &self,
        tenant: &TenantId,
        id: VisitId,
        by: Actor,
        now: DateTime<Utc>,
    ) -> Result<VisitRecord, RoomError> {
        let mut g = self.lock_for(tenant, id, now).await?;
        if g.visit.record().status == VisitStatus::Ended {
            self.retire_if_idle(&mut g);
        } else {
            self.run(&mut g, Input::End { by }, now)?;
        }
        Ok(g.visit.record().clone())
    }

    /// Removes a participant (by identity) on behalf of the tenant's backend.
    pub async fn remove(
        &self,
        tenant: &TenantId,
        id: VisitId,
        identity: &str,
        by: Actor,
        now: DateTime<Utc>,
    ) -> Result<(), RoomError> {
        let mut g = self.lock_for(tenant, id, now).await?;
        self.run(
            &mut g,
            Input::Remove {
                by,
                target: Target::Identity(identity.to_owned()),
            },
            now,
        )
    }

    /// Everyone's call quality so far, if the visit is live on this node and has not ended
    /// (an ended visit's is all in storage).
    pub fn quality(&self, id: VisitId) -> Option<Vec<ParticipantQuality>> {
        let live = self.visits.get(&id).map(|v| v.clone())?;
        let g = live.lock();
        (!g.retired && g.visit.record().status != VisitStatus::Ended).then(|| g.visit.quality())
    }

    /// Moves a visit to another provider's queue on behalf of the tenant's backend.
    pub async fn transfer(
        &self,
        tenant: &TenantId,
        id: VisitId,
        provider: ProviderId,
        by: Actor,
        now: DateTime<Utc>,
    ) -> Result<VisitRecord, RoomError> {
        let mut g = self.lock_for(tenant, id, now).await?;
        self.run(&mut g, Input::Transfer { by, provider }, now)?;
        Ok(g.visit.record().clone())
    }

    /// Feeds an input to a visit only if it is live on this node (the desk's standings and
    /// a provider's messages: a visit nobody is in has nobody to tell).
    pub fn feed_live(
        &self,
        id: VisitId,
        input: Input,
        now: DateTime<Utc>,
    ) -> Result<(), RoomError> {
        let Some(live) = self.visits.get(&id).map(|v| v.clone()) else {
            return Ok(());
        };
        let mut g = Mutex::lock_arc(&live);
        if g.retired {
            return Ok(());
        }
        self.run(&mut g, input, now)
    }

    /// Whether `id` runs here, is `tenant`'s, and is in `provider`'s queue.
    pub fn provider_is(&self, id: VisitId, tenant: &TenantId, provider: &ProviderId) -> bool {
        let Some(live) = self.visits.get(&id).map(|v| v.clone()) else {
            return false;
        };
        let g = live.lock();
        !g.retired && &g.tenant == tenant && g.visit.record().provider.as_ref() == Some(provider)
    }

    /// Who is in the visit right now, if it is live on this node.
    pub fn participants(&self, id: VisitId) -> Option<Vec<ParticipantView>> {
        let live = self.visits.get(&id).map(|v| v.clone())?;
        let g = live.lock();
        Some(g.visit.participants())
    }

    async fn lock_for(
        &self,
        tenant: &TenantId,
        id: VisitId,
        now: DateTime<Utc>,
    ) -> Result<Guard, RoomError> {
        let g = self.lock(id, now).await?;
        // Another tenant's visit does not exist, as far as this caller can tell.
        if &g.tenant != tenant {
            return Err(Refusal::VisitNotFound.into());
        }
        Ok(g)
    }

    /// Acts on deadlines of live visits: grace periods, expiry. Call about once a second.
    pub fn tick(&self, now: DateTime<Utc>) {
        self.retired
            .retain(|_, position| !self.writer.has_written(*position));
        // Collect first: a visit's lock must not be taken while the map is being iterated.
        let live: Vec<_> = self.visits.iter().map(|e| e.value().clone()).collect();
        for visit in live {
            let mut g = Mutex::lock_arc(&visit);
            if !g.retired
                && (g.visit.is_vacant() || g.visit.next_deadline().is_some_and(|d| d <= now))
            {
                let _ = self.run(&mut g, Input::Tick, now);
            }
        }
    }

    /// Ends visits whose expiry passed while nobody was in them. Returns how many.
    pub async fn expire_due(&self, now: DateTime<Utc>) -> Result<usize, RoomError> {
        let due = self
            .storage
            .due_for_expiry(now, 500)
            .await
            .map_err(unavailable)?;
        for id in &due {
            match self.lock(*id, now).await {
                Ok(mut g) => {
                    let _ = self.run(&mut g, Input::Tick, now);
                }
                // Its owner node expires it.
                Err(RoomError::Elsewhere) => {}
                Err(e) => tracing::warn!(visit = %id, error = %e, "could not expire visit"),
            }
        }
        Ok(due.len())
    }

    /// Every connection's outbox, local and remote (heartbeats, the drain's 1001s).
    pub fn outboxes(&self) -> Vec<Arc<dyn Outbox>> {
        let live: Vec<_> = self.visits.iter().map(|e| e.value().clone()).collect();
        live.iter()
            .flat_map(|visit| visit.lock().outboxes.values().cloned().collect::<Vec<_>>())
            .collect()
    }
}
