//! Visit leases in Redis: which node acts for a visit, and the epoch that fences its
//! writes.
//!
//! A node proves it is alive with one key, `bedside:alive:NODE`, which it renews every
//! third of the lease time. A visit's lease is a key `bedside:lease:VISIT` naming its owner,
//! with no time to live of its own: it counts only while the node it names is alive. So a
//! renewal costs the same whatever the number of visits (one SET), and a dead node's
//! visits all become free at once, when its one key lapses. Taking a visit over raises its
//! epoch in the database ([`Fencing::claim`]); every write the owner makes carries that
//! epoch, and storage refuses writes carrying an older one. So a node that was paused or
//! cut off past its lease can never end or change a visit another node has taken over,
//! whatever it believes.
//!
//! Only a node whose liveness lapsed (it was paused, cut off, or Redis lost its keys) looks
//! at its visits one by one, when it comes back, and in slices so Redis is never held long.
//! Each node also lists its leases in `bedside:held:NODE`, and nodes are listed in
//! `bedside:nodes`: every renewal clears a bounded slice of a dead node's leftovers.
//!
//! The scripts build key names from values (a lease names a node, whose liveness key they
//! read), which a standalone Redis allows and Redis Cluster would not.

use crate::node::NodeId;
use bedside_rooms::storage::{Fencing, StorageWriter, StoredVisit};
use bedside_rooms::{Claim, Ownership, RoomError};
use bedside_visit::{Refusal, VisitId};
use dashmap::DashMap;
use redis::aio::ConnectionManager;
use redis::{RedisError, Script};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// The scripts' Lua, public for the renewal-cost benchmark (`examples/lease_cost.rs`).
pub mod lua {
    /// KEYS: lease, this node's liveness, this node's lease list; ARGV: node, visit.
    /// 1: taken now; 2: this node's already; the name of the live node that holds it;
    /// -1: this node is not known alive (its renewal has not run since it lapsed): it must
    /// look first.
    pub const CLAIM: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then return 2 end
if v and redis.call('EXISTS', 'bedside:alive:' .. v) == 1 then return v end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
return 1";

    /// KEYS: this node's liveness, the node list; ARGV: lease time in ms, node.
    /// 1 when the node was alive until now, 0 when its liveness had lapsed.
    pub const RENEW: &str = r"
local was = redis.call('SET', KEYS[1], '1', 'PX', ARGV[1], 'GET')
redis.call('SADD', KEYS[2], ARGV[2])
if was then return 1 end
return 0";

    /// After a lapse, a slice of this node's leases. KEYS: this node's lease list, then
    /// leases; ARGV: node, then the leases' visits. Returns the positions (1-based, among
    /// the leases) of those another node holds, and of those that were gone and are taken
    /// again.
    pub const RECHECK: &str = r"
local lost, retaken = {}, {}
for i = 2, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v == ARGV[1] then
  elseif not v then
    redis.call('SET', KEYS[i], ARGV[1])
    redis.call('SADD', KEYS[1], ARGV[i])
    table.insert(retaken, i - 1)
  else
    table.insert(lost, i - 1)
  end
end
return {lost, retaken}";

    /// KEYS: lease. Its holder, if that node is alive.
    pub const OWNER: &str = r"
local v = redis.call('GET', KEYS[1])
if v and redis.call('EXISTS', 'bedside:alive:' .. v) == 1 then return v end
return false";

    /// KEYS: lease, this node's lease list; ARGV: node, visit. Deletes the lease if this
    /// node holds it.
    pub const RELEASE: &str = r"
redis.call('SREM', KEYS[2], ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

    /// KEYS: the node list; ARGV: most leases to clear. Picks a listed node; if it is
    /// dead, deletes up to that many of the leases it still holds, and unlists it once
    /// none is left. Returns how many it looked at.
    pub const SWEEP: &str = r"
local node = redis.call('SRANDMEMBER', KEYS[1])
if not node then return 0 end
if redis.call('EXISTS', 'bedside:alive:' .. node) == 1 then return 0 end
local held = 'bedside:held:' .. node
local visits = redis.call('SPOP', held, ARGV[1])
for _, visit in ipairs(visits) do
  local key = 'bedside:lease:' .. visit
  if redis.call('GET', key) == node then redis.call('DEL', key) end
end
if redis.call('SCARD', held) == 0 then redis.call('SREM', KEYS[1], node) end
return #visits";
}

static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(lua::CLAIM));
static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(lua::RENEW));
static RECHECK: LazyLock<Script> = LazyLock::new(|| Script::new(lua::RECHECK));
static OWNER: LazyLock<Script> = LazyLock::new(|| Script::new(lua::OWNER));
static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(lua::RELEASE));
static SWEEP: LazyLock<Script> = LazyLock::new(|| Script::new(lua::SWEEP));

/// Leases looked at per script call after a lapse: Redis is held about a millisecond.
const RECHECK_SLICE: usize = 500;
/// A dead node's leftover leases cleared per renewal.
const SWEEP_SLICE: usize = 100;
const NODES_KEY: &str = "bedside:nodes";

pub(crate) fn lease_key(visit: VisitId) -> String {
    format!("bedside:lease:{visit}")
}

pub(crate) fn alive_key(node: &NodeId) -> String {
    format!("bedside:alive:{node}")
}

fn held_key(node: &NodeId) -> String {
    format!("bedside:held:{node}")
}

/// What a renewal found.
pub struct Renewal {
    /// Visits this node no longer owns.
    pub gone: Vec<VisitId>,
    /// When the exchange that confirmed the others began, if they were confirmed.
    vouch: Option<Instant>,
}

#[derive(Clone, Copy)]
struct Held {
    epoch: i64,
    /// Which claim this is: a release scheduled before a later claim must not undo it.
    claim: u64,
}

pub struct Leases {
    redis: ConnectionManager,
    node: NodeId,
    storage: Arc<dyn Fencing>,
    writer: StorageWriter,
    ttl: Duration,
    held: DashMap<VisitId, Held>,
    claims: AtomicU64,
    /// Until when this node's claims can be trusted, in milliseconds since `base`.
    valid_until: AtomicU64,
    base: Instant,
    /// Whether the last exchange with Redis worked.
    reachable: AtomicBool,
    /// Claims and releases of one visit take one of these in turn, so two joins arriving
    /// at once claim it once (one epoch), and a release never deletes a lease a claim has
    /// just renewed. Striped: a lock per visit would need a map that grows.
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// Counts renewals that confirmed this node alive: a claim refused because its
    /// liveness had lapsed waits for the next one.
    renewed: tokio::sync::watch::Sender<u64>,
    /// For tasks that outlive a call (releases).
    me: Weak<Leases>,
    /// The owner a claim just found for a visit another node holds, and when: the join or
    /// API action that asked goes there without looking again (one Redis round trip less).
    seen: DashMap<VisitId, (NodeId, Instant)>,
}

/// Enough that joins of different visits in a burst seldom share a stripe: a claim holds
/// its stripe while it raises the visit's epoch in storage, which on a busy database takes
/// milliseconds, and with 64 stripes most joins of a 64-visit burst waited for another's.
const STRIPES: usize = 1024;
/// How long the owner a claim found stands in for a look of its own ([`Leases::owner`]):
/// a join or API action that found the visit elsewhere asks who owns it at once.
const SEEN_FOR: Duration = Duration::from_millis(500);

/// Records how long a stage of a join took, from `since` (`bedside_join_stage_seconds`,
/// docs/operations.md): where a cluster join's time goes.
pub(crate) fn join_stage(stage: &'static str, since: Instant) {
    metrics::histogram!("bedside_join_stage_seconds", "stage" => stage).record(since.elapsed());
}
/// How often an input waiting for a late renewal looks again.
const VOUCH_POLL: Duration = Duration::from_millis(10);

fn unavailable(e: RedisError) -> RoomError {
    tracing::warn!(error = %e, "redis unavailable");
    RoomError::Unavailable
}

impl Leases {
    pub fn new(
        redis: ConnectionManager,
        node: NodeId,
        storage: Arc<dyn Fencing>,
        writer: StorageWriter,
        ttl: Duration,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            redis,
            node,
            storage,
            writer,
            ttl,
            held: DashMap::new(),
            claims: AtomicU64::new(0),
            valid_until: AtomicU64::new(0),
            base: Instant::now(),
            reachable: AtomicBool::new(false),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            renewed: tokio::sync::watch::Sender::new(0),
            seen: DashMap::new(),
        })
    }

    fn stripe(&self, visit: VisitId) -> &tokio::sync::Mutex<()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(visit);
        &self.stripes[(hash as usize) % STRIPES]
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Trusts this node's claims until a third of the lease before it lapses, counted from
    /// `start` (when the exchange that confirmed them began).
    fn vouch_from(&self, start: Instant) {
        let until = start.duration_since(self.base) + self.ttl * 2 / 3;
        let until = u64::try_from(until.as_millis()).unwrap_or(u64::MAX);
        self.valid_until.fetch_max(until, Ordering::AcqRel);
    }

    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    fn reached(&self, ok: bool) {
        if self.reachable.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                tracing::info!("redis reachable");
            } else {
                tracing::warn!("redis unreachable: visits on this node go on, new ones wait");
            }
        }
    }

    /// Which node holds `visit`'s lease, if any: a lease of a dead node holds nothing.
    /// What a claim found a moment ago ([`SEEN_FOR`]) answers once without asking Redis
    /// again; it is no staler than an answer from Redis is by the time it is used, and an
    /// owner that died meanwhile is noticed the same way.
    pub async fn owner(&self, visit: VisitId) -> Result<Option<NodeId>, RoomError> {
        if let Some((_, (owner, at))) = self.seen.remove(&visit)
            && at.elapsed() < SEEN_FOR
        {
            return Ok(Some(owner));
        }
        let owner: Option<String> = OWNER
            .key(lease_key(visit))
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(unavailable)?;
        Ok(owner.map(NodeId::new))
    }

    /// Which of `nodes` are alive. An error means Redis cannot tell.
    pub async fn alive(&self, nodes: &[NodeId]) -> Result<Vec<bool>, RedisError> {
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = nodes.iter().map(alive_key).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(values.into_iter().map(|v| v.is_some()).collect())
    }

    /// Renews this node's liveness, which keeps every lease it holds: one SET, however
    /// many. Only if the liveness had lapsed (this node was paused or cut off, or Redis
    /// lost its keys) does it look at its leases, to learn which visits it no longer owns
    /// (another node holds their lease, or took them over meanwhile). Returns those, and
    /// whether the rest can be trusted: the caller stops acting for the first, then
    /// [`Leases::vouch`]es, so no input slips in for a lost visit in between.
    pub async fn renew(&self) -> Renewal {
        let start = Instant::now();
        let result: Result<i64, _> = RENEW
            .key(alive_key(&self.node))
            .key(NODES_KEY)
            .arg(self.ttl_ms())
            .arg(self.node.as_str())
            .invoke_async(&mut self.redis.clone())
            .await;
        let mut gone = Vec::new();
        let mut vouch = None;
        let visits =
            || -> Vec<(VisitId, Held)> { self.held.iter().map(|e| (*e.key(), *e)).collect() };
        let checked = match result {
            Ok(1) => Ok(()),
            Ok(_) => self.recheck(&visits(), &mut gone).await,
            Err(e) => Err(e),
        };
        match checked {
            Ok(()) => {
                self.reached(true);
                vouch = Some(start);
            }
            Err(e) => {
                if self.reachable() {
                    tracing::warn!(error = %e, "renewing leases failed");
                }
                self.reached(false);
                // Redis cannot be reached: no node can take a lease over through it, but this
                // node may be the only one cut off. The epochs in PostgreSQL tell: visits
                // nobody took over go on here; the others are given up.
                gone.clear();
                if let Some(moved) = self.moved(&visits()).await {
                    gone.extend(moved);
                    vouch = Some(start);
                }
            }
        }
        for visit in &gone {
            self.forget(*visit).await;
        }
        if vouch.is_some() {
            self.renewed.send_modify(|n| *n += 1);
        }
        Renewal { gone, vouch }
    }

    /// After a lapse: which of `visits` this node lost, slice by slice. A lease that was
    /// gone (Redis restarted, or a dead node's leftovers were cleared) is this node's again
    /// only if nobody ran the visit meanwhile: its epoch would have moved.
    async fn recheck(
        &self,
        visits: &[(VisitId, Held)],
        gone: &mut Vec<VisitId>,
    ) -> Result<(), RedisError> {
        tracing::warn!(
            leases = visits.len(),
            "liveness had lapsed; checking every lease"
        );
        for slice in visits.chunks(RECHECK_SLICE) {
            let mut script = RECHECK.key(held_key(&self.node));
            script.arg(self.node.as_str());
            for (visit, _) in slice {
                script.key(lease_key(*visit)).arg(visit.to_string());
            }
            let (lost, retaken): (Vec<usize>, Vec<usize>) =
                script.invoke_async(&mut self.redis.clone()).await?;
            let at = |i: usize| slice.get(i.wrapping_sub(1)).copied();
            gone.extend(lost.into_iter().filter_map(at).map(|(visit, _)| visit));
            let retaken: Vec<(VisitId, Held)> = retaken.into_iter().filter_map(at).collect();
            match self.moved(&retaken).await {
                Some(moved) => gone.extend(moved),
                // Cannot tell: give them up rather than act on a doubt.
                None => gone.extend(retaken.iter().map(|(visit, _)| *visit)),
            }
        }
        Ok(())
    }

    /// Clears a bounded slice of a dead node's leftover leases (their visits were never
    /// opened again): Redis does not keep them forever. Done after a renewal has vouched,
    /// so that it never delays one.
    pub async fn sweep(&self) {
        // Owners that claims found and nobody asked for (expiry looks at visits elsewhere).
        self.seen.retain(|_, (_, at)| at.elapsed() < SEEN_FOR);
        let result: Result<i64, _> = SWEEP
            .key(NODES_KEY)
            .arg(SWEEP_SLICE)
            .invoke_async(&mut self.redis.clone())
            .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "could not clear a dead node's leases");
        }
    }

    /// After a [`Renewal`] whose lost visits the node has stopped acting for.
    pub fn vouch(&self, renewal: &Renewal) {
        if let Some(start) = renewal.vouch {
            // Said when it happens: inputs waited (they were not refused) meanwhile, and an
            // operator seeing this often has a node starved of CPU or a slow Redis.
            let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
            let until = self.valid_until.load(Ordering::Acquire);
            if until > 0 && now > until {
                tracing::warn!(
                    unconfirmed_ms = now - until,
                    "a lease renewal came late: inputs waited for it"
                );
            }
            self.vouch_from(start);
        }
    }

    /// Which of `visits` another node has taken over since this node claimed them (their
    /// epoch moved, or they are gone); `None` if storage cannot tell.
    async fn moved(&self, visits: &[(VisitId, Held)]) -> Option<Vec<VisitId>> {
        if visits.is_empty() {
            return Some(Vec::new());
        }
        let ids: Vec<VisitId> = visits.iter().map(|(visit, _)| *visit).collect();
        let stored = match self.storage.epochs(&ids).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "could not check epochs");
                return None;
            }
        };
        let stored: std::collections::HashMap<VisitId, i64> = stored.into_iter().collect();
        Some(
            visits
                .iter()
                .filter(|(visit, held)| stored.get(visit) != Some(&held.epoch))
                .map(|(visit, _)| *visit)
                .collect(),
        )
    }

    /// Stops holding `visit` and gives its lease up if it is still this node's.
    pub async fn forget(&self, visit: VisitId) {
        let _turn = self.stripe(visit).lock().await;
        self.held.remove(&visit);
        self.delete(visit).await;
    }

    async fn delete(&self, visit: VisitId) {
        let result: Result<i64, _> = RELEASE
            .key(lease_key(visit))
            .key(held_key(&self.node))
            .arg(self.node.as_str())
            .arg(visit.to_string())
            .invoke_async(&mut self.redis.clone())
            .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, visit = %visit, "could not release lease; it lapses");
        }
    }

    /// Gives up every lease (shutdown, after storage was flushed): the next owner need
    /// not wait for them to lapse.
    pub async fn release_all(&self) {
        let visits: Vec<VisitId> = self.held.iter().map(|e| *e.key()).collect();
        let released = tokio::time::timeout(self.ttl, async {
            for visit in visits {
                self.forget(visit).await;
            }
        })
        .await;
        // Bounded: one at a time, thousands of leases take seconds, and with Redis gone each
        // waits for its timeout (a bench node holding 10,000 visits, its Redis stopped with
        // it, had not exited minutes later). The rest count only while this node's liveness
        // does, which is deleted next or lapses within a lease.
        if released.is_err() {
            tracing::warn!("not every lease was given back in time; the rest lapse");
        }
        // Holding nothing: other nodes may stop waiting for this one at once.
        let result: Result<(), _> = redis::pipe()
            .del(alive_key(&self.node))
            .del(held_key(&self.node))
            .srem(NODES_KEY, self.node.as_str())
            .query_async(&mut self.redis.clone())
            .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "could not unlist this node; its liveness lapses");
        }
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }
}

impl Leases {
    /// [`Ownership::claim`]; with `load`, a visit taken over is read with its epoch's
    /// raise ([`Fencing::claim_loading`]), under the claim's stripe like the raise itself.
    async fn take(
        &self,
        visit: VisitId,
        load: bool,
    ) -> Result<(Claim, Option<StoredVisit>), RoomError> {
        let asked = Instant::now();
        let mut renewed = self.renewed.subscribe();
        let mut waited = false;
        let (_turn, start, taken) = loop {
            let turn = self.stripe(visit).lock().await;
            let start = Instant::now();
            let reply: redis::Value = CLAIM
                .key(lease_key(visit))
                .key(alive_key(&self.node))
                .key(held_key(&self.node))
                .arg(self.node.as_str())
                .arg(visit.to_string())
                .invoke_async(&mut self.redis.clone())
                .await
                .map_err(|e| {
                    self.reached(false);
                    unavailable(e)
                })?;
            let taken = match reply {
                redis::Value::Int(taken) => taken,
                redis::Value::BulkString(owner) => {
                    let owner = NodeId::new(String::from_utf8_lossy(&owner).into_owned());
                    self.seen.insert(visit, (owner, Instant::now()));
                    0
                }
                other => {
                    tracing::warn!(reply = ?other, "unexpected reply to a lease claim");
                    return Err(RoomError::Unavailable);
                }
            };
            if taken != -1 {
                break (turn, start, taken);
            }
            // This node's liveness lapsed: its next renewal looks at what it holds first.
            // Not holding the turn meanwhile: that renewal may give visits up, taking theirs.
            drop(turn);
            renewed.borrow_and_update();
            if waited
                || tokio::time::timeout(self.ttl, renewed.changed())
                    .await
                    .is_err()
            {
                return Err(RoomError::Unavailable);
            }
            waited = true;
        };
        self.reached(true);
        join_stage("lease", asked);
        let claim = self.claims.fetch_add(1, Ordering::Relaxed) + 1;
        if taken == 0 {
            return Ok((Claim::Elsewhere, None));
        }
        // A node holding nothing else can trust its claims from here; one that holds other
        // visits waits for its renewal to say which of those are still its own.
        if self.held.is_empty() {
            self.vouch_from(start);
        }
        if taken == 2
            && let Some(mut held) = self.held.get_mut(&visit)
        {
            held.claim = claim;
            return Ok((Claim::Mine { epoch: held.epoch }, None));
        }
        let raising = Instant::now();
        let raised = if load {
            self.storage.claim_loading(visit).await
        } else {
            self.storage
                .claim(visit)
                .await
                .map(|raised| raised.map(|epoch| (epoch, None)))
        };
        join_stage("epoch", raising);
        match raised {
            Ok(Some((epoch, stored))) => {
                tracing::info!(visit = %visit, epoch, "took visit over");
                self.held.insert(visit, Held { epoch, claim });
                Ok((Claim::Mine { epoch }, stored))
            }
            Ok(None) => {
                self.delete(visit).await;
                Err(Refusal::VisitNotFound.into())
            }
            Err(e) => {
                tracing::error!(error = %e, "storage unavailable");
                self.delete(visit).await;
                Err(RoomError::Unavailable)
            }
        }
    }
}

#[async_trait::async_trait]
impl Ownership for Leases {
    async fn claim(&self, visit: VisitId) -> Result<Claim, RoomError> {
        Ok(self.take(visit, false).await?.0)
    }

    async fn claim_loading(
        &self,
        visit: VisitId,
    ) -> Result<(Claim, Option<StoredVisit>), RoomError> {
        self.take(visit, true).await
    }

    fn fresh(&self) -> bool {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        now < self.valid_until.load(Ordering::Acquire)
    }

    fn fresh_for(&self, margin: Duration) -> bool {
        let now = self.base.elapsed() + margin;
        let now = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        now < self.valid_until.load(Ordering::Acquire)
    }

    async fn vouched(&self) -> bool {
        // Polled: only inputs that arrive while a renewal is late get here, and the
        // renewal that vouches again may come from either renewal path.
        let deadline = tokio::time::Instant::now() + self.ttl;
        while !self.fresh_for(bedside_rooms::FRESH_MARGIN) {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(VOUCH_POLL).await;
        }
        true
    }

    fn release(&self, visit: VisitId, position: u64) {
        let Some(claim) = self.held.get(&visit).map(|h| h.claim) else {
            return;
        };
        let writer = self.writer.clone();
        let Some(this) = self.me.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            // The next owner reads the visit from storage: it must all be there first.
            let written = writer.wait_within(position, Duration::from_secs(10)).await;
            if this
                .held
                .remove_if(&visit, |_, held| held.claim == claim)
                .is_some()
                && written
            {
                this.delete(visit).await;
            }
        });
    }
}
