//! Visit leases in Redis: which node acts for a visit, and the epoch that fences its
//! writes.
//!
//! A lease is a key `bedside:lease:VISIT` holding the owner's node id, with a time to live
//! the owner keeps renewing. Taking a visit over raises its epoch in the database
//! ([`Fencing::claim`]); every write the owner makes carries that epoch, and storage refuses
//! writes carrying an older one. So a node that was paused or cut off past its lease can
//! never end or change a visit another node has taken over, whatever it believes.
//!
//! The node also keeps a key `bedside:alive:NODE` alive with each renewal: other nodes use
//! it to notice a dead peer quickly.

use crate::node::NodeId;
use bedside_rooms::storage::{Fencing, StorageWriter};
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

/// 1: taken now; 2: this node's already (extended); 0: another node's.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 2
end
return 0",
    )
});

/// Marks the node alive (KEYS[1]) and renews its leases (KEYS[2..]). Returns the
/// positions of leases another node holds, and of leases that had lapsed (a Redis restart,
/// or this node was paused) and were taken again.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
local lost, retaken = {}, {}
for i = 2, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  elseif not v then
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
    table.insert(retaken, i - 1)
  else
    table.insert(lost, i - 1)
  end
end
return {lost, retaken}",
    )
});

/// Deletes a lease if this node holds it.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0",
    )
});

pub(crate) fn lease_key(visit: VisitId) -> String {
    format!("bedside:lease:{visit}")
}

pub(crate) fn alive_key(node: &NodeId) -> String {
    format!("bedside:alive:{node}")
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
    /// For tasks that outlive a call (releases).
    me: Weak<Leases>,
}

const STRIPES: usize = 64;

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

    /// Which node holds `visit`'s lease, if any.
    pub async fn owner(&self, visit: VisitId) -> Result<Option<NodeId>, RoomError> {
        let owner: Option<String> = redis::cmd("GET")
            .arg(lease_key(visit))
            .query_async(&mut self.redis.clone())
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

    /// Renews every lease this node holds. Returns the visits it no longer owns (another
    /// node holds their lease, or took them over while this node's lease had lapsed), and
    /// whether the rest can be trusted: the caller stops acting for the first, then
    /// [`Leases::vouch`]es, so no input slips in for a lost visit in between.
    pub async fn renew(&self) -> Renewal {
        let visits: Vec<(VisitId, Held)> = self.held.iter().map(|e| (*e.key(), *e)).collect();
        let mut script = RENEW.key(alive_key(&self.node));
        for (visit, _) in &visits {
            script.key(lease_key(*visit));
        }
        let start = Instant::now();
        let result: Result<(Vec<usize>, Vec<usize>), _> = script
            .arg(self.node.as_str())
            .arg(self.ttl_ms())
            .invoke_async(&mut self.redis.clone())
            .await;
        let mut gone = Vec::new();
        let mut vouch = None;
        match result {
            Ok((lost, retaken)) => {
                self.reached(true);
                let at = |i: usize| visits.get(i.wrapping_sub(1)).copied();
                gone.extend(lost.into_iter().filter_map(at).map(|(visit, _)| visit));
                // A lapsed lease (Redis restarted, or this node was paused) is ours again
                // only if nobody ran the visit meanwhile: its epoch would have moved.
                let retaken: Vec<(VisitId, Held)> = retaken.into_iter().filter_map(at).collect();
                match self.moved(&retaken).await {
                    Some(moved) => gone.extend(moved),
                    // Cannot tell: give them up rather than act on a doubt.
                    None => gone.extend(retaken.iter().map(|(visit, _)| *visit)),
                }
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
                if let Some(moved) = self.moved(&visits).await {
                    gone.extend(moved);
                    vouch = Some(start);
                }
            }
        }
        for visit in &gone {
            self.forget(*visit).await;
        }
        Renewal { gone, vouch }
    }

    /// After a [`Renewal`] whose lost visits the node has stopped acting for.
    pub fn vouch(&self, renewal: &Renewal) {
        if let Some(start) = renewal.vouch {
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
            .arg(self.node.as_str())
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
        for visit in visits {
            self.forget(visit).await;
        }
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[async_trait::async_trait]
impl Ownership for Leases {
    async fn claim(&self, visit: VisitId) -> Result<Claim, RoomError> {
        let _turn = self.stripe(visit).lock().await;
        let start = Instant::now();
        let taken: i64 = CLAIM
            .key(lease_key(visit))
            .arg(self.node.as_str())
            .arg(self.ttl_ms())
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(|e| {
                self.reached(false);
                unavailable(e)
            })?;
        self.reached(true);
        let claim = self.claims.fetch_add(1, Ordering::Relaxed) + 1;
        if taken == 0 {
            return Ok(Claim::Elsewhere);
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
            return Ok(Claim::Mine { epoch: held.epoch });
        }
        match self.storage.claim(visit).await {
            Ok(Some(epoch)) => {
                tracing::info!(visit = %visit, epoch, "took visit over");
                self.held.insert(visit, Held { epoch, claim });
                Ok(Claim::Mine { epoch })
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

    fn fresh(&self) -> bool {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        now < self.valid_until.load(Ordering::Acquire)
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
