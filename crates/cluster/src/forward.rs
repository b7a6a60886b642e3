//! The participant's side of cross-node relay: connections to this node whose visit runs
//! on another. Their frames are published to the owner; what the owner sends back lands
//! in their ordinary outbox, so the connection task cannot tell the difference.

use crate::bus::{Bus, Item, Seated, Wire};
use crate::lease::{Leases, join_stage};
use crate::node::{NodeId, SessionId};
use bedside_auth::TenantId;
use bedside_rooms::{Outbox, Outgoing, RemoteSeat, RoomError, Seat};
use bedside_visit::{CloseCode, JoinRequest, Notice, ParticipantId, VisitId, VisitSummary};
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

struct Entry {
    visit: VisitId,
    owner: NodeId,
    outbox: Arc<dyn Outbox>,
    /// Until the owner answers the join.
    pending: Option<oneshot::Sender<Result<Seated, RoomError>>>,
}

pub struct Forwarding {
    node: NodeId,
    bus: Bus,
    leases: Arc<Leases>,
    seats: Arc<DashMap<SessionId, Entry>>,
    next: AtomicU64,
}

impl Forwarding {
    pub fn new(node: NodeId, bus: Bus, leases: Arc<Leases>) -> Self {
        Self {
            node,
            bus,
            leases,
            seats: Arc::new(DashMap::new()),
            next: AtomicU64::new(0),
        }
    }

    pub fn join_result(&self, session: SessionId, result: Result<Seated, RoomError>) {
        if let Some(mut entry) = self.seats.get_mut(&session)
            && let Some(tx) = entry.pending.take()
        {
            let _ = tx.send(result);
        }
    }

    pub fn deliver(&self, session: SessionId, item: Item) {
        let Some(entry) = self.seats.get(&session) else {
            return;
        };
        let item = match item {
            Item::Joined {
                participant_id,
                role,
                status,
            } => Outgoing::Notice(Box::new(Notice::Joined {
                participant_id,
                role,
                visit: VisitSummary {
                    id: entry.visit,
                    status,
                },
            })),
            Item::Waiting { standing } => Outgoing::Notice(Box::new(Notice::Waiting(standing))),
            Item::Admitted { participants } => {
                Outgoing::Notice(Box::new(Notice::Admitted { participants }))
            }
            Item::Frame { frame } => Outgoing::Frame(Box::new(frame)),
            Item::Close { code } => Outgoing::Close(code),
        };
        entry.outbox.push(item);
    }

    /// The owners this node's participants are seated with.
    pub fn owners(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self.seats.iter().map(|e| e.owner.clone()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// Tells the participants seated with `owner` (it died), or with every owner (`None`),
    /// to reconnect: they will find the visit's new owner. A join still waiting for that
    /// owner's answer is not closed but told to look again ([`RoomError::Unavailable`]):
    /// its connection has not been answered yet, and the router goes on to claim the
    /// visit or find its new owner, so the client gets `joined` without reconnecting.
    /// (Closing it here once queued a bare close ahead of a `joined` the client never saw.)
    pub fn unseat(&self, owner: Option<&NodeId>) {
        let sessions: Vec<SessionId> = self
            .seats
            .iter()
            .filter(|e| owner.is_none_or(|o| &e.owner == o))
            .map(|e| *e.key())
            .collect();
        for session in sessions {
            if let Some((_, mut entry)) = self.seats.remove(&session) {
                match entry.pending.take() {
                    Some(tx) => {
                        let _ = tx.send(Err(RoomError::Unavailable));
                    }
                    None => entry.outbox.push(Outgoing::Close(CloseCode::Moved)),
                }
            }
        }
    }

    /// Sends `item` to every seated participant (heartbeats, shutdown).
    pub fn to_every_seat(&self, item: impl Fn() -> Outgoing) {
        for entry in self.seats.iter().filter(|e| e.pending.is_none()) {
            entry.outbox.push(item());
        }
    }

    /// The outbox of every seated participant. Not of joins still waiting for their
    /// owner's answer: nothing goes to a connection before its `joined` (a shutdown
    /// reaches those through the connection task itself).
    pub fn outboxes(&self) -> Vec<Arc<dyn Outbox>> {
        self.seats
            .iter()
            .filter(|e| e.pending.is_none())
            .map(|e| e.outbox.clone())
            .collect()
    }

    pub fn seats(&self) -> usize {
        self.seats.len()
    }

    /// The owner's answer, or an error as soon as `owner` no longer holds the visit's
    /// lease (it died and the lease lapsed): no use waiting for a dead node.
    async fn answer(
        &self,
        visit: VisitId,
        owner: &NodeId,
        rx: oneshot::Receiver<Result<Seated, RoomError>>,
    ) -> Result<Result<Seated, RoomError>, oneshot::error::RecvError> {
        let mut rx = std::pin::pin!(rx);
        let mut look = tokio::time::interval(Duration::from_millis(250));
        look.tick().await;
        loop {
            tokio::select! {
                answer = &mut rx => return answer,
                _ = look.tick() => {
                    if self.leases.owner(visit).await.ok().flatten().as_ref() != Some(owner) {
                        return Ok(Err(RoomError::Unavailable));
                    }
                }
            }
        }
    }
}

impl Forwarding {
    /// Seats a participant with the node that owns `visit`. The owner's notices for it
    /// arrive in `outbox`, as they would from a local visit. [`RoomError::Elsewhere`] means
    /// nobody owns it right now: claim it here. Waits no later than `deadline`.
    pub async fn join(
        &self,
        visit: VisitId,
        tenant: &TenantId,
        req: &JoinRequest,
        outbox: Arc<dyn Outbox>,
        deadline: tokio::time::Instant,
    ) -> Result<(Seat, ParticipantId), RoomError> {
        let looking = tokio::time::Instant::now();
        let owner = self.leases.owner(visit).await?;
        join_stage("owner", looking);
        let owner = match owner {
            Some(owner) if owner != self.node => owner,
            // Free, or this node's after all: claim it locally.
            _ => return Err(RoomError::Elsewhere),
        };
        let asked = tokio::time::Instant::now();
        let session = SessionId(self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        self.seats.insert(
            session,
            Entry {
                visit,
                owner: owner.clone(),
                outbox,
                pending: Some(tx),
            },
        );
        self.bus.send(
            &owner,
            &Wire::Join {
                from: self.node.clone(),
                session,
                visit,
                tenant: tenant.clone(),
                identity: req.identity.clone(),
                role: req.role,
                name: req.name.clone(),
                new_id: req.new_id,
                credential: req.credential.clone(),
            },
        );
        // A join may make the owner load the visit (and wait for a previous owner's
        // changes). A live owner is waited for until the deadline: giving up earlier and
        // asking again would leave it a join it may still carry out, written in the audit
        // trail for nobody. A dead one is noticed within a look (`answer`), or by
        // `unseat`, and the router goes on at once.
        let answer = tokio::time::timeout_at(deadline, self.answer(visit, &owner, rx)).await;
        join_stage("forwarded", asked);
        match answer {
            Ok(Ok(Ok(seated))) => Ok((
                Seat::Remote(Box::new(ForwardedSeat {
                    node: self.node.clone(),
                    owner,
                    session,
                    expires_at: seated.expires_at,
                    bus: self.bus.clone(),
                    seats: self.seats.clone(),
                })),
                seated.participant,
            )),
            Ok(Ok(Err(e))) => {
                self.seats.remove(&session);
                // Given up on here (the owner changed, or the seat was reset), not refused
                // there: the owner may still carry the join out, and must undo it. A Leave
                // for a join the owner answered finds nothing.
                if e == RoomError::Unavailable {
                    self.bus.send(
                        &owner,
                        &Wire::Leave {
                            from: self.node.clone(),
                            session,
                        },
                    );
                }
                Err(e)
            }
            // No answer in time (the owner died or is stuck), or the seat was reset.
            _ => {
                self.seats.remove(&session);
                self.bus.send(
                    &owner,
                    &Wire::Leave {
                        from: self.node.clone(),
                        session,
                    },
                );
                Err(RoomError::Unavailable)
            }
        }
    }
}

/// A participant's seat with the visit's owner node.
struct ForwardedSeat {
    node: NodeId,
    owner: NodeId,
    session: SessionId,
    expires_at: DateTime<Utc>,
    bus: Bus,
    seats: Arc<DashMap<SessionId, Entry>>,
}

impl RemoteSeat for ForwardedSeat {
    fn forward(&self, frame: &str) {
        self.bus.send(
            &self.owner,
            &Wire::Frame {
                from: self.node.clone(),
                session: self.session,
                frame: frame.to_owned(),
            },
        );
    }

    fn leave(&self) {
        self.seats.remove(&self.session);
        self.bus.send(
            &self.owner,
            &Wire::Leave {
                from: self.node.clone(),
                session: self.session,
            },
        );
    }

    fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }
}
