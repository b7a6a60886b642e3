//! [`RedisBoard`]: providers' queues shared between nodes, behind the desk's
//! [`QueueBoard`] seam.
//!
//! Per provider (always within their tenant) two keys, so a provider's queue is read and
//! written on its own, never by scanning everyone's:
//! - `bedside:queue:TENANT:PROVIDER`, a hash: visit id → `{node, part}`, the part of the
//!   provider's queue that visit reports (its waiting participants: id, name, role, since,
//!   consent, pre-call check; since when the provider is in it), written by the node that
//!   runs the visit and removed by it (only by it: a newer owner's entry stays).
//! - `bedside:desk:TENANT:PROVIDER`, a hash: the session of the dashboard holding the desk,
//!   and its state (node, name, chosen presence, connected since when).
//!
//! Both expire a day after their last write. An entry counts only while the node it names is
//! alive (`bedside:alive:NODE`, which the lease code renews): readers skip a dead node's
//! entries and delete them; nodes following a provider drop them when the node's liveness
//! lapses (one MGET a second over the few nodes they hold entries of).
//!
//! Every change is also published on one channel, `bedside:desks`, which every node hears
//! through the bus's listener: a node follows the providers with a visit or a dashboard on
//! it, reading the two keys once when it starts to, then applying the messages. When
//! messages may have been lost (the listener reconnected, a write failed), every node
//! follows its providers afresh and publishes its own parts again.

use crate::lease::alive_key;
use crate::node::NodeId;
use async_trait::async_trait;
use bedside_rooms::{DeskFeed, DeskState, NodePart, ProviderKey, QueueBoard, Registry, RoomError};
use bedside_visit::{Input, VisitId, VisitQueue};
use chrono::Utc;
use redis::Script;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// The channel every node listens on for queue changes.
pub(crate) const CHANNEL: &str = "bedside:desks";
/// Keys live this long after their last write (a provider's day, and then some).
const KEY_TTL_MS: u64 = 24 * 3600 * 1000;
/// After a failed write, how long before everything is published again.
const RETRY: Duration = Duration::from_secs(1);

fn queue_key((tenant, provider): &ProviderKey) -> String {
    // Tenant ids have no ':' (letters, digits, `._-`): the provider, which may, comes last.
    format!("bedside:queue:{tenant}:{provider}")
}

fn desk_key((tenant, provider): &ProviderKey) -> String {
    format!("bedside:desk:{tenant}:{provider}")
}

/// KEYS: the queue hash; ARGV: visit, node, message to publish. Removes the visit's entry
/// if this node wrote it, and tells the others.
const DROP_PART: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and cjson.decode(v).node == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('PUBLISH', ARGV[4], ARGV[3])
  return 1
end
return 0";

/// KEYS: the desk hash; ARGV: session, state, fresh (1/0), ttl ms, channel, message. A
/// fresh dashboard takes the desk; a change counts only from the dashboard holding it (or
/// when nobody does, as after a Redis restart).
const PUT_DESK: &str = r"
local cur = redis.call('HGET', KEYS[1], 'session')
if ARGV[3] == '0' and cur and cur ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'session', ARGV[1], 'state', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1";

/// KEYS: the queue hash; ARGV: pairs of visit and the exact entry read. Deletes a dead
/// node's entries, unless rewritten since.
const SWEEP_PARTS: &str = r"
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 0";

static DROP_PART_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(DROP_PART));
static PUT_DESK_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PUT_DESK));
static SWEEP_PARTS_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SWEEP_PARTS));

/// What is published on [`CHANNEL`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum BoardMsg {
    /// A visit's part of a provider's queue (`None`: it adds nothing any more).
    Part {
        key: ProviderKey,
        visit: VisitId,
        node: String,
        part: Option<VisitQueue>,
    },
    Desk {
        key: ProviderKey,
        state: DeskState,
        fresh: bool,
    },
    /// A provider's words for the waiting rooms of these visits (each node feeds those it
    /// runs).
    Notify {
        node: String,
        key: ProviderKey,
        visits: Vec<VisitId>,
        text: String,
    },
}

enum Job {
    Part {
        key: ProviderKey,
        visit: VisitId,
        part: Option<VisitQueue>,
    },
    Desk {
        key: ProviderKey,
        state: DeskState,
        fresh: bool,
    },
    Notify(BoardMsg),
    Follow(ProviderKey),
    Check(Vec<String>),
}

pub struct RedisBoard {
    node: NodeId,
    jobs: mpsc::UnboundedSender<Job>,
    redis: ConnectionManager,
    feed: DeskFeed,
    registry: Arc<Registry>,
}

impl RedisBoard {
    /// The board, and its task's future (which does the Redis work in order).
    pub fn new(
        node: NodeId,
        redis: ConnectionManager,
        feed: DeskFeed,
        registry: Arc<Registry>,
    ) -> (Arc<Self>, impl Future<Output = ()>) {
        let (jobs, rx) = mpsc::unbounded_channel();
        let worker = Worker {
            node: node.clone(),
            redis: redis.clone(),
            feed: feed.clone(),
            retrying: Arc::new(AtomicBool::new(false)),
        };
        (
            Arc::new(Self {
                node,
                jobs,
                redis,
                feed,
                registry,
            }),
            worker.run(rx),
        )
    }

    /// A message on [`CHANNEL`], from any node (this one included).
    pub(crate) fn heard(&self, payload: &[u8]) {
        let msg: BoardMsg = match serde_json::from_slice(payload) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable queue message");
                return;
            }
        };
        match msg {
            BoardMsg::Part {
                key,
                visit,
                node,
                part,
            } => self.feed.remote_part(key, visit, node, part),
            BoardMsg::Desk { key, state, fresh } => self.feed.remote_desk(key, state, fresh),
            BoardMsg::Notify {
                node,
                key,
                visits,
                text,
            } => {
                if node == self.node.as_str() {
                    return;
                }
                let now = Utc::now();
                for visit in visits {
                    // Only the provider's own visits of that tenant, as the registry runs them.
                    if !self.registry.provider_is(visit, &key.0, &key.1) {
                        continue;
                    }
                    let input = Input::ProviderMessage { text: text.clone() };
                    if let Err(e) = self.registry.feed_live(visit, input, now) {
                        tracing::debug!(visit = %visit, error = %e, "provider message not delivered");
                    }
                }
            }
        }
    }

    /// Messages may have been lost: the desk follows its providers afresh.
    pub(crate) fn resync(&self) {
        self.feed.resync();
    }

    fn push(&self, job: Job) {
        let _ = self.jobs.send(job);
    }
}

#[async_trait]
impl QueueBoard for RedisBoard {
    fn node(&self) -> Option<&str> {
        Some(self.node.as_str())
    }

    fn follow(&self, key: &ProviderKey) {
        self.push(Job::Follow(key.clone()));
    }

    fn publish_part(&self, key: &ProviderKey, visit: VisitId, part: Option<&VisitQueue>) {
        self.push(Job::Part {
            key: key.clone(),
            visit,
            part: part.cloned(),
        });
    }

    fn publish_desk(&self, key: &ProviderKey, state: &DeskState, fresh: bool) {
        self.push(Job::Desk {
            key: key.clone(),
            state: state.clone(),
            fresh,
        });
    }

    fn notify(&self, key: &ProviderKey, visits: &[VisitId], text: &str) {
        self.push(Job::Notify(BoardMsg::Notify {
            node: self.node.as_str().to_owned(),
            key: key.clone(),
            visits: visits.to_vec(),
            text: text.to_owned(),
        }));
    }

    fn check(&self, nodes: Vec<String>) {
        self.push(Job::Check(nodes));
    }

    async fn parts(&self, key: &ProviderKey) -> Result<Option<Vec<NodePart>>, RoomError> {
        let mut redis = self.redis.clone();
        let parts = read_parts(&mut redis, key).await.map_err(|e| {
            tracing::warn!(error = %e, "redis unavailable");
            RoomError::Unavailable
        })?;
        Ok(Some(parts))
    }
}

/// The board's task: Redis work, one job after another, so what this node publishes
/// arrives in the order it happened.
struct Worker {
    node: NodeId,
    redis: ConnectionManager,
    feed: DeskFeed,
    retrying: Arc<AtomicBool>,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = rx.recv().await {
            if let Err(e) = self.work(job).await {
                tracing::warn!(error = %e, "sharing the queue through redis failed");
                self.retry_later();
            }
        }
    }

    /// What this node published may not have arrived: once Redis answers again, the desk
    /// follows its providers afresh and publishes its own parts again.
    fn retry_later(&self) {
        if self.retrying.swap(true, Ordering::AcqRel) {
            return;
        }
        let (feed, retrying) = (self.feed.clone(), self.retrying.clone());
        tokio::spawn(async move {
            tokio::time::sleep(RETRY).await;
            retrying.store(false, Ordering::Release);
            feed.resync();
        });
    }

    async fn work(&mut self, job: Job) -> Result<(), redis::RedisError> {
        let node = self.node.as_str().to_owned();
        match job {
            Job::Part { key, visit, part } => {
                let hash = queue_key(&key);
                let field = visit.to_string();
                match part {
                    Some(part) => {
                        let entry = NodePart {
                            node: node.clone(),
                            part,
                        };
                        let stored = to_json(&entry);
                        let msg = to_json(&BoardMsg::Part {
                            key,
                            visit,
                            node,
                            part: Some(entry.part),
                        });
                        redis::pipe()
                            .hset(&hash, field, stored)
                            .ignore()
                            .pexpire(&hash, KEY_TTL_MS as i64)
                            .ignore()
                            .publish(CHANNEL, msg)
                            .ignore()
                            .query_async::<()>(&mut self.redis)
                            .await?;
                    }
                    None => {
                        let msg = to_json(&BoardMsg::Part {
                            key,
                            visit,
                            node: node.clone(),
                            part: None,
                        });
                        DROP_PART_SCRIPT
                            .key(hash)
                            .arg(field)
                            .arg(node)
                            .arg(msg)
                            .arg(CHANNEL)
                            .invoke_async::<i64>(&mut self.redis)
                            .await?;
                    }
                }
            }
            Job::Desk { key, state, fresh } => {
                let msg = to_json(&BoardMsg::Desk {
                    key: key.clone(),
                    state: state.clone(),
                    fresh,
                });
                PUT_DESK_SCRIPT
                    .key(desk_key(&key))
                    .arg(state.session.to_string())
                    .arg(to_json(&state))
                    .arg(if fresh { "1" } else { "0" })
                    .arg(KEY_TTL_MS)
                    .arg(CHANNEL)
                    .arg(msg)
                    .invoke_async::<i64>(&mut self.redis)
                    .await?;
            }
            Job::Notify(msg) => {
                redis::cmd("PUBLISH")
                    .arg(CHANNEL)
                    .arg(to_json(&msg))
                    .query_async::<()>(&mut self.redis)
                    .await?;
            }
            Job::Follow(key) => match self.snapshot(&key).await {
                Ok((parts, desk)) => self.feed.snapshot(key, Some(parts), desk),
                Err(e) => {
                    // Positions go out with what this node has, rather than never.
                    self.feed.snapshot(key, None, None);
                    return Err(e);
                }
            },
            Job::Check(nodes) => {
                let alive = alive(&mut self.redis, &nodes).await?;
                for (node, alive) in nodes.into_iter().zip(alive) {
                    if !alive {
                        self.feed.node_gone(node);
                    }
                }
            }
        }
        Ok(())
    }

    /// What Redis holds of a provider: the parts of live nodes, and the dashboard (one
    /// on a dead node counts as gone since now).
    async fn snapshot(
        &mut self,
        key: &ProviderKey,
    ) -> Result<(Vec<NodePart>, Option<DeskState>), redis::RedisError> {
        let parts = read_parts(&mut self.redis, key).await?;
        let desk: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(desk_key(key))
            .query_async(&mut self.redis)
            .await?;
        let mut desk: Option<DeskState> =
            desk.get("state").and_then(|s| serde_json::from_str(s).ok());
        if let Some(d) = &mut desk
            && d.desk.connected
            && !alive(&mut self.redis, std::slice::from_ref(&d.node))
                .await?
                .first()
                .copied()
                .unwrap_or(false)
        {
            d.desk.connected = false;
            d.desk.since = Utc::now();
        }
        Ok((parts, desk))
    }
}

/// A provider's parts from live nodes; a dead node's entries are deleted on the way.
async fn read_parts(
    redis: &mut ConnectionManager,
    key: &ProviderKey,
) -> Result<Vec<NodePart>, redis::RedisError> {
    let hash = queue_key(key);
    let raw: HashMap<String, String> = redis::cmd("HGETALL").arg(&hash).query_async(redis).await?;
    let mut read: Vec<(String, String, NodePart)> = Vec::with_capacity(raw.len());
    for (field, value) in raw {
        match serde_json::from_str::<NodePart>(&value) {
            Ok(part) => read.push((field, value, part)),
            Err(e) => tracing::warn!(error = %e, "unreadable queue entry"),
        }
    }
    let mut nodes: Vec<String> = read.iter().map(|(_, _, p)| p.node.clone()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let alive: HashMap<String, bool> = nodes
        .iter()
        .cloned()
        .zip(alive(redis, &nodes).await?)
        .collect();
    let (live, dead): (Vec<_>, Vec<_>) = read
        .into_iter()
        .partition(|(_, _, p)| alive.get(&p.node).copied().unwrap_or(false));
    if !dead.is_empty() {
        let mut sweep = SWEEP_PARTS_SCRIPT.key(&hash);
        for (field, value, _) in &dead {
            sweep.arg(field).arg(value);
        }
        sweep.invoke_async::<i64>(redis).await?;
    }
    Ok(live.into_iter().map(|(_, _, p)| p).collect())
}

async fn alive(
    redis: &mut ConnectionManager,
    nodes: &[String],
) -> Result<Vec<bool>, redis::RedisError> {
    if nodes.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = nodes
        .iter()
        .map(|n| alive_key(&NodeId::new(n.as_str())))
        .collect();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(keys).query_async(redis).await?;
    Ok(values.into_iter().map(|v| v.is_some()).collect())
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bedside_auth::TenantId;
    use bedside_visit::ProviderId;

    #[test]
    fn keys_keep_tenants_apart_and_read_one_way() {
        let a = (
            TenantId::new("clinic-a").unwrap(),
            ProviderId::new("dr:lee").unwrap(),
        );
        let b = (
            TenantId::new("clinic-a.dr").unwrap(),
            ProviderId::new("lee").unwrap(),
        );
        assert_eq!(queue_key(&a), "bedside:queue:clinic-a:dr:lee");
        assert_ne!(queue_key(&a), queue_key(&b));
        assert_eq!(desk_key(&b), "bedside:desk:clinic-a.dr:lee");
    }
}
