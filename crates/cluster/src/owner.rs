//! The owner's side of cross-node relay: participants connected to other nodes, in visits
//! this node runs. Each is a session keyed by (their node, session number); the visit sees
//! an ordinary connection whose outbox publishes to their node.

use crate::NodeId;
use crate::bus::{Bus, Item, Seated, Wire};
use bedside_auth::TenantId;
use bedside_rooms::{
    ConnId, JoinRequest, Notice, Outbox, Outgoing, Registry, RoomError, VisitHandle, VisitId,
};
use bedside_signaling::input_of;
use bedside_signaling::protocol::{JoinedExtras, encode};
use chrono::Utc;
use dashmap::{DashMap, DashSet};
use std::sync::Arc;

type Key = (NodeId, u64);

struct Session {
    conn: ConnId,
    visit: VisitHandle,
    outbox: Arc<RemoteOutbox>,
}

/// A remote participant's outbox: each item is published to their node.
struct RemoteOutbox {
    bus: Bus,
    node: NodeId,
    session: u64,
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
                notice => Item::Frame {
                    frame: encode(
                        &notice,
                        &JoinedExtras {
                            ice_servers: &[],
                            resume_token: "",
                        },
                    ),
                },
            },
            Outgoing::Frame(frame) => Item::Frame { frame: *frame },
            Outgoing::Close(code) => Item::Close { code },
            Outgoing::Refused(error) => Item::Refused { error },
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

pub struct Owned {
    registry: Arc<Registry>,
    bus: Bus,
    sessions: DashMap<Key, Session>,
    /// Sessions their node gave up on before the join finished here.
    abandoned: DashSet<Key>,
}

impl Owned {
    pub fn new(registry: Arc<Registry>, bus: Bus) -> Self {
        Self {
            registry,
            bus,
            sessions: DashMap::new(),
            abandoned: DashSet::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn join(
        &self,
        from: NodeId,
        session: u64,
        visit: VisitId,
        tenant: String,
        req: JoinRequest,
    ) {
        let outbox = Arc::new(RemoteOutbox {
            bus: self.bus.clone(),
            node: from.clone(),
            session,
        });
        let conn = req.conn;
        let result = match TenantId::new(tenant) {
            Ok(tenant) => {
                self.registry
                    .join(visit, &tenant, req, outbox.clone(), Utc::now())
                    .await
            }
            Err(_) => Err(RoomError::WrongTenant),
        };
        let result = result.map(|(handle, participant)| {
            let seated = Seated {
                participant,
                expires_at: handle.expires_at(),
            };
            let key = (from.clone(), session);
            self.sessions.insert(
                key.clone(),
                Session {
                    conn,
                    visit: handle,
                    outbox,
                },
            );
            if self.abandoned.remove(&key).is_some() {
                self.leave(&key);
            }
            seated
        });
        self.bus.send(&from, &Wire::JoinResult { session, result });
    }

    pub fn frame(&self, key: &Key, frame: &str) {
        let Some(session) = self.sessions.get(key) else {
            return;
        };
        let Ok(input) = input_of(frame, session.conn) else {
            return;
        };
        if let Err(e) = self.registry.handle(&session.visit, input, Utc::now()) {
            session.outbox.push(Outgoing::Refused(e));
        }
    }

    pub fn leave(&self, key: &Key) {
        match self.sessions.remove(key) {
            Some((_, session)) => {
                self.registry
                    .disconnect(&session.visit, session.conn, Utc::now())
            }
            None => {
                self.abandoned.insert(key.clone());
            }
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
            if let Some((_, session)) = self.sessions.remove(&key) {
                session
                    .outbox
                    .push(Outgoing::Close(bedside_rooms::CloseCode::GoingAway));
                self.registry
                    .disconnect(&session.visit, session.conn, Utc::now());
            }
        }
        self.abandoned.clear();
    }

    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }
}
