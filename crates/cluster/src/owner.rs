//! The owner's side of cross-node relay: participants connected to other nodes, in visits
//! this node runs. Each is a session keyed by (their node, session number); the visit sees
//! an ordinary connection whose outbox publishes to their node.

use crate::bus::{Bus, Item, Seated, Wire};
use crate::lease::join_stage;
use crate::node::{NodeId, SessionId};
use bedside_auth::TenantId;
use bedside_protocol::{JoinedExtras, encode, error_frame, input_of};
use bedside_rooms::RoomError;
use bedside_rooms::{Outbox, Outgoing, Registry, VisitHandle};
use bedside_visit::{CloseCode, ConnId, JoinRequest, Notice, VisitId};
use chrono::Utc;
use dashmap::DashMap;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

type Key = (NodeId, SessionId);

struct Session {
    conn: ConnId,
    visit: VisitHandle,
    outbox: Arc<RemoteOutbox>,
}

/// A remote participant's outbox: each item is published to their node.
struct RemoteOutbox {
    bus: Bus,
    node: NodeId,
    session: SessionId,
}

impl Outbox for RemoteOutbox {
    fn push(&self, item: Outgoing) {
        let item = match item {
            Outgoing::Notice(notice) => match *notice {
                Notice::Joined {
                    participant_id,
                    role,
                    visit,
                } => Item::Joined {
                    participant_id,
                    role,
                    status: visit.status,
                },
                Notice::Waiting(standing) => Item::Waiting { standing },
                Notice::Admitted { participants } => Item::Admitted { participants },
                notice => Item::Frame {
                    frame: encode(
                        notice,
                        &JoinedExtras {
                            ice_servers: &[],
                            resume_token: "",
                        },
                    ),
                },
            },
            Outgoing::Frame(frame) => Item::Frame { frame: *frame },
            Outgoing::Close(code) => Item::Close { code },
            // The participant's node checks on its own connections.
            Outgoing::Heartbeat => return,
        };
        self.bus.send(
            &self.node,
            &Wire::Deliver {
                session: self.session,
                item,
            },
        );
    }
}

/// Where a remote participant's session stands on the owner.
enum Slot {
    /// Their join is being handled.
    Joining,
    /// Their node gave up waiting (a Leave came) before the join finished.
    Abandoned,
    Joined(Session),
}

pub struct Owned {
    registry: Arc<Registry>,
    bus: Bus,
    sessions: DashMap<Key, Slot>,
    /// Frames and leaves from other nodes that came while this node could not vouch for
    /// its claims (a lease renewal running late on a busy machine), in arrival order:
    /// handled once it can, instead of refused. Bounded by [`WAITING_MAX`].
    waiting: Mutex<VecDeque<Waiting>>,
    /// Set while a task works through `waiting`: what arrives meanwhile queues behind it.
    draining: AtomicBool,
}

/// Most frames from other nodes held while a renewal is late; past that they are refused
/// (`unavailable`), as they all were before they could wait.
const WAITING_MAX: usize = 10_000;

enum Waiting {
    Frame(Key, String),
    Leave(Key),
}

impl Owned {
    pub fn new(registry: Arc<Registry>, bus: Bus) -> Self {
        Self {
            registry,
            bus,
            sessions: DashMap::new(),
            waiting: Mutex::new(VecDeque::new()),
            draining: AtomicBool::new(false),
        }
    }

    /// Whether what arrives now must queue: a renewal is late, or earlier arrivals still
    /// wait. Frames and leaves come from one listener, in order, so this keeps their order.
    fn must_wait(&self) -> bool {
        self.draining.load(Ordering::Acquire) || !self.registry.fresh()
    }

    /// Queues `item` behind whatever waits, and starts the task that handles the queue
    /// once the node vouches for its claims again. Past [`WAITING_MAX`] a frame is refused.
    fn wait(self: &Arc<Self>, item: Waiting) {
        let mut waiting = self.waiting.lock();
        if waiting.len() >= WAITING_MAX {
            drop(waiting);
            match item {
                Waiting::Frame(key, frame) => self.refuse(&key, &frame, RoomError::Unavailable),
                Waiting::Leave(key) => self.leave_now(&key),
            }
            return;
        }
        waiting.push_back(item);
        if !self.draining.swap(true, Ordering::AcqRel) {
            let this = self.clone();
            tokio::spawn(async move { this.drain().await });
        }
    }

    async fn drain(&self) {
        loop {
            // Bounded: if the claims stay in doubt, frames are refused as before.
            self.registry.vouched().await;
            let batch = {
                let mut waiting = self.waiting.lock();
                if waiting.is_empty() {
                    self.draining.store(false, Ordering::Release);
                    return;
                }
                std::mem::take(&mut *waiting)
            };
            for item in batch {
                match item {
                    Waiting::Frame(key, frame) => self.frame_now(&key, &frame),
                    Waiting::Leave(key) => self.leave_now(&key),
                }
            }
        }
    }

    /// A join arrived: called in arrival order, before its Leave (if any) can be.
    pub fn joining(&self, key: Key) {
        self.sessions.insert(key, Slot::Joining);
    }

    /// Handles a join [`Owned::joining`] recorded; answers the participant's node.
    pub async fn join(
        &self,
        from: NodeId,
        session: SessionId,
        visit: VisitId,
        tenant: TenantId,
        req: JoinRequest,
    ) {
        let key = (from.clone(), session);
        // Given up on already: joining now would only add a connection nobody reads.
        if matches!(self.sessions.get(&key).as_deref(), Some(Slot::Abandoned)) {
            self.sessions.remove(&key);
            return;
        }
        let outbox = Arc::new(RemoteOutbox {
            bus: self.bus.clone(),
            node: from.clone(),
            session,
        });
        let conn = req.conn;
        let started = tokio::time::Instant::now();
        let result = self
            .registry
            .join(visit, &tenant, req, outbox.clone(), Utc::now())
            .await;
        join_stage("at_owner", started);
        let result = match result {
            Ok((handle, participant)) => {
                let seated = Seated {
                    participant,
                    expires_at: handle.expires_at(),
                };
                let joined = Session {
                    conn,
                    visit: handle.clone(),
                    outbox,
                };
                // The Leave may have come while the join was being handled.
                let abandoned = match self.sessions.get_mut(&key) {
                    Some(mut slot) if matches!(*slot, Slot::Joining) => {
                        *slot = Slot::Joined(joined);
                        false
                    }
                    _ => true,
                };
                if abandoned {
                    self.sessions.remove(&key);
                    self.registry.disconnect(&handle, conn, Utc::now());
                }
                Ok(seated)
            }
            Err(e) => {
                self.sessions.remove(&key);
                Err(e)
            }
        };
        self.bus.send(&from, &Wire::JoinResult { session, result });
    }

    pub fn frame(self: &Arc<Self>, key: &Key, frame: &str) {
        if self.must_wait() {
            self.wait(Waiting::Frame(key.clone(), frame.to_owned()));
        } else {
            self.frame_now(key, frame);
        }
    }

    fn frame_now(&self, key: &Key, frame: &str) {
        let Some(slot) = self.sessions.get(key) else {
            return;
        };
        let Slot::Joined(session) = &*slot else {
            return;
        };
        let Ok(input) = input_of(frame, session.conn, None) else {
            return;
        };
        if let Err(e) = self.registry.handle(&session.visit, input, Utc::now()) {
            metrics::counter!("bedside_errors_total", "code" => e.code()).increment(1);
            let frame = error_frame(e.code(), &e.to_string());
            session.outbox.push(Outgoing::Frame(Box::new(frame)));
        }
    }

    /// Answers a frame that cannot wait with `error`.
    fn refuse(&self, key: &Key, frame: &str, error: RoomError) {
        let Some(slot) = self.sessions.get(key) else {
            return;
        };
        let Slot::Joined(session) = &*slot else {
            return;
        };
        if input_of(frame, session.conn, None).is_err() {
            return;
        }
        metrics::counter!("bedside_errors_total", "code" => error.code()).increment(1);
        let frame = error_frame(error.code(), &error.to_string());
        session.outbox.push(Outgoing::Frame(Box::new(frame)));
    }

    pub fn leave(self: &Arc<Self>, key: &Key) {
        if self.must_wait() {
            self.wait(Waiting::Leave(key.clone()));
        } else {
            self.leave_now(key);
        }
    }

    fn leave_now(&self, key: &Key) {
        // A join still under way is marked: it undoes itself when it finishes.
        if let Some(mut slot) = self.sessions.get_mut(key)
            && matches!(*slot, Slot::Joining)
        {
            *slot = Slot::Abandoned;
            return;
        }
        if let Some((_, Slot::Joined(session))) = self
            .sessions
            .remove_if(key, |_, slot| matches!(slot, Slot::Joined(_)))
        {
            self.registry
                .disconnect(&session.visit, session.conn, Utc::now());
        }
    }

    /// The nodes remote participants are connected to.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self.sessions.iter().map(|e| e.key().0.clone()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// Disconnects the participants of `node` (it died), or of every node (`None`: messages
    /// may have been lost). They are told to reconnect, in case their node is still there.
    pub fn drop_sessions(&self, node: Option<&NodeId>) {
        let keys: Vec<Key> = self
            .sessions
            .iter()
            .filter(|e| node.is_none_or(|n| &e.key().0 == n))
            .map(|e| e.key().clone())
            .collect();
        for key in keys {
            // A join under way finds its slot gone and undoes itself.
            if let Some((_, Slot::Joined(session))) = self.sessions.remove(&key) {
                session.outbox.push(Outgoing::Close(CloseCode::Moved));
                self.registry
                    .disconnect(&session.visit, session.conn, Utc::now());
            }
        }
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }
}
