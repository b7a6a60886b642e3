//! Messages between nodes, over Redis pub/sub: each node listens on its own channel
//! (`bedside:node:NODE`), and everything it sends goes out through one publisher task, so
//! what a node sends another arrives in the order it was sent.
//!
//! Pub/sub keeps nothing for a listener that is away. When this node's channel connection
//! drops, or a publish fails, messages may have been lost: the cluster then resets every
//! cross-node session (their participants reconnect), rather than carry on with a gap.

use crate::node::{NodeId, SessionId};
use bedside_auth::{KeyId, Role, TenantId};
use bedside_rooms::RoomError;
use bedside_visit::{
    CloseCode, Credential, ParticipantId, ParticipantView, ProviderId, Standing, VisitId,
    VisitStatus,
};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Most messages sent in one pipelined round trip.
const BATCH: usize = 256;

pub(crate) fn channel(node: &NodeId) -> String {
    format!("bedside:node:{node}")
}

/// A message between two nodes. Sessions are numbered by the participant's node.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Wire {
    /// Participant's node to owner: join this verified participant.
    Join {
        from: NodeId,
        session: SessionId,
        visit: VisitId,
        tenant: TenantId,
        identity: String,
        role: Role,
        name: String,
        new_id: ParticipantId,
        /// Which token the participant's node verified, and when it was issued: the owner
        /// checks it against the visit's blocks.
        credential: Credential,
    },
    /// Participant's node to owner: a client frame.
    Frame {
        from: NodeId,
        session: SessionId,
        frame: String,
    },
    /// Participant's node to owner: the connection is gone.
    Leave { from: NodeId, session: SessionId },
    /// Owner to participant's node: how the join went.
    JoinResult {
        session: SessionId,
        result: Result<Seated, RoomError>,
    },
    /// Owner to participant's node: something for the participant.
    Deliver { session: SessionId, item: Item },
    /// Any node to owner: the clinic's backend asks for this, through the API.
    Api {
        from: NodeId,
        request: u64,
        op: ApiOp,
    },
    /// Owner to the asking node; sent once what was done is in storage.
    ApiResult {
        request: u64,
        result: Result<ApiDone, RoomError>,
    },
    /// A node to itself, through Redis: its subscription still delivers.
    Heartbeat,
}

/// What the REST API does to a live visit, done by the visit's owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ApiOp {
    End {
        tenant: TenantId,
        visit: VisitId,
        key: KeyId,
    },
    Remove {
        tenant: TenantId,
        visit: VisitId,
        identity: String,
        key: KeyId,
    },
    Participants {
        visit: VisitId,
    },
    Transfer {
        tenant: TenantId,
        visit: VisitId,
        provider: ProviderId,
        key: KeyId,
    },
}

impl ApiOp {
    pub fn visit(&self) -> VisitId {
        match self {
            ApiOp::End { visit, .. }
            | ApiOp::Remove { visit, .. }
            | ApiOp::Participants { visit }
            | ApiOp::Transfer { visit, .. } => *visit,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum ApiDone {
    Done,
    Participants { participants: Vec<ParticipantView> },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Seated {
    pub participant: ParticipantId,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Item {
    /// The `joined` notice; the participant's node adds its own extras (resume token,
    /// ICE servers).
    Joined {
        participant_id: ParticipantId,
        role: Role,
        status: VisitStatus,
    },
    /// `waiting` and `admitted`: the participant's node adds the ICE servers it grants.
    Waiting {
        #[serde(default)]
        standing: Standing,
    },
    Admitted {
        participants: Vec<ParticipantView>,
    },
    /// Any other notice, or a refusal of the participant's frame, already encoded.
    Frame {
        frame: String,
    },
    Close {
        code: CloseCode,
    },
}

/// Sends messages to other nodes. Never waits.
#[derive(Clone)]
pub struct Bus {
    tx: mpsc::UnboundedSender<(NodeId, String)>,
    /// Set when a publish failed, until the cluster has reset its cross-node sessions:
    /// meanwhile nothing is published, so no node sees messages after a gap.
    broken: Arc<AtomicBool>,
}

impl Bus {
    /// The bus and the publisher task's future. `failed` is told when a publish fails.
    pub fn new(
        redis: redis::aio::ConnectionManager,
        failed: mpsc::UnboundedSender<()>,
    ) -> (Self, impl Future<Output = ()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let broken = Arc::new(AtomicBool::new(false));
        (
            Self {
                tx,
                broken: broken.clone(),
            },
            publish(redis, rx, failed, broken),
        )
    }

    /// Publishing may resume: the sessions a lost message could have touched are gone.
    pub fn mend(&self) {
        self.broken.store(false, Ordering::Release);
    }

    pub fn send(&self, to: &NodeId, msg: &Wire) {
        match encode(msg) {
            Ok(text) => {
                let _ = self.tx.send((to.clone(), text));
            }
            Err(e) => tracing::error!(error = %e, "could not encode a cluster message"),
        }
    }
}

/// A message as published. Frames, the bulk of the traffic, go as a one-line header and
/// the frame's text as is (`F SESSION FROM` to the owner, `D SESSION` back): a signal is
/// copied once, never escaped into JSON and parsed out again. Everything else is JSON.
fn encode(msg: &Wire) -> Result<String, serde_json::Error> {
    match msg {
        Wire::Frame {
            from,
            session,
            frame,
        } => Ok(format!("F {session} {from}\n{frame}")),
        Wire::Deliver {
            session,
            item: Item::Frame { frame },
        } => Ok(format!("D {session}\n{frame}")),
        other => serde_json::to_string(other),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("bad frame header")]
    Header,
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("not UTF-8")]
    Utf8(#[from] std::str::Utf8Error),
}

fn decode(payload: &[u8]) -> Result<Wire, DecodeError> {
    if payload.first() == Some(&b'{') {
        return Ok(serde_json::from_slice(payload)?);
    }
    let text = std::str::from_utf8(payload)?;
    let (header, frame) = text.split_once('\n').ok_or(DecodeError::Header)?;
    let mut words = header.split(' ');
    let kind = words.next();
    let session = words
        .next()
        .and_then(|s| s.parse().ok())
        .map(SessionId)
        .ok_or(DecodeError::Header)?;
    let frame = frame.to_owned();
    match (kind, words.next(), words.next()) {
        (Some("F"), Some(from), None) => Ok(Wire::Frame {
            from: NodeId::new(from),
            session,
            frame,
        }),
        (Some("D"), None, None) => Ok(Wire::Deliver {
            session,
            item: Item::Frame { frame },
        }),
        _ => Err(DecodeError::Header),
    }
}

async fn publish(
    mut redis: redis::aio::ConnectionManager,
    mut rx: mpsc::UnboundedReceiver<(NodeId, String)>,
    failed: mpsc::UnboundedSender<()>,
    broken: Arc<AtomicBool>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        if broken.load(Ordering::Acquire) {
            batch.clear();
            continue;
        }
        let mut pipe = redis::pipe();
        for (to, text) in batch.drain(..) {
            pipe.publish(channel(&to), text).ignore();
        }
        if let Err(e) = pipe.query_async::<()>(&mut redis).await {
            tracing::warn!(error = %e, "publishing to other nodes failed");
            broken.store(true, Ordering::Release);
            let _ = failed.send(());
        }
    }
}

/// Listens on this node's channel until `shutdown`, reconnecting as needed. Each message
/// goes to `deliver`; `reset` is called whenever messages may have been missed. The node
/// sends itself a [`Wire::Heartbeat`] regularly: a subscription that delivers nothing for
/// `silence` (a connection that died without closing) is replaced. Messages on the
/// channel all nodes share for providers' queues (`crate::board`) go to `board`, as they
/// came.
pub async fn listen(
    client: redis::Client,
    node: NodeId,
    deliver: impl Fn(Wire),
    board: impl Fn(&[u8]),
    reset: impl Fn(),
    silence: Duration,
    shutdown: CancellationToken,
) {
    let name = channel(&node);
    let mut connected_before = false;
    while !shutdown.is_cancelled() {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&name).await?;
            pubsub.subscribe(crate::board::CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let mut pubsub = match tokio::time::timeout(Duration::from_secs(2), subscribed).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot listen for other nodes yet");
                wait(&shutdown, Duration::from_millis(250)).await;
                continue;
            }
            Err(_) => continue,
        };
        if connected_before {
            tracing::info!("listening for other nodes again");
            reset();
        }
        connected_before = true;
        let mut messages = pubsub.on_message();
        let mut heard = tokio::time::Instant::now();
        loop {
            // In this order: after a stall (a starved runtime), messages already waiting
            // count as heard before the silence deadline is looked at.
            let msg = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                msg = messages.next() => msg,
                _ = tokio::time::sleep_until(heard + silence) => {
                    tracing::warn!("nothing heard from redis for a while; listening again");
                    break;
                }
            };
            let Some(msg) = msg else { break };
            heard = tokio::time::Instant::now();
            if msg.get_channel_name() == crate::board::CHANNEL {
                board(msg.get_payload_bytes());
                continue;
            }
            match decode(msg.get_payload_bytes()) {
                Ok(wire) => deliver(wire),
                Err(e) => tracing::warn!(error = %e, "unreadable cluster message"),
            }
        }
        tracing::warn!("lost the connection to redis; cross-node sessions reset");
        reset();
    }
}

async fn wait(shutdown: &CancellationToken, pause: Duration) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(pause) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(msg: &Wire) -> Wire {
        decode(encode(msg).unwrap().as_bytes()).unwrap()
    }

    #[test]
    fn frames_travel_as_they_are_and_everything_else_as_json() {
        let frame = r#"{"type":"signal","to":"p_1","data":{"sdp":"v=0\r\n a\"b\n"}}"#;
        let wire = Wire::Frame {
            from: NodeId::new("node1.0a1b2c3d"),
            session: SessionId(42),
            frame: frame.into(),
        };
        let text = encode(&wire).unwrap();
        assert!(text.ends_with(frame), "not escaped: {text}");
        match round_trip(&wire) {
            Wire::Frame {
                from,
                session,
                frame: f,
            } => assert_eq!(
                (from.as_str(), session.0, f.as_str()),
                ("node1.0a1b2c3d", 42, frame)
            ),
            other => panic!("{other:?}"),
        }
        let deliver = Wire::Deliver {
            session: SessionId(7),
            item: Item::Frame {
                frame: "line one\nline two".into(),
            },
        };
        match round_trip(&deliver) {
            Wire::Deliver {
                session: SessionId(7),
                item: Item::Frame { frame },
            } => assert_eq!(frame, "line one\nline two"),
            other => panic!("{other:?}"),
        }
        let leave = Wire::Leave {
            from: NodeId::new("n"),
            session: SessionId(1),
        };
        assert!(encode(&leave).unwrap().starts_with('{'));
        assert!(matches!(
            round_trip(&leave),
            Wire::Leave {
                session: SessionId(1),
                ..
            }
        ));
    }

    #[test]
    fn garbage_is_refused_not_misread() {
        for bad in [
            &b"F x n\n{}"[..],
            b"F 1\n{}",
            b"D 1 extra\n{}",
            b"X 1\n",
            b"F 1 n",
            b"{nope",
            b"\xff",
        ] {
            assert!(decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
