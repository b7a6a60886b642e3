//! One task per connection: wait for `join`, then carry frames between the socket and the
//! visit until either side is done.
//!
//! The task owns the socket. Frames from the client are decoded, rate-limited and fed to
//! the visit; the visit's notices arrive through the connection's bounded [`Inbox`] and
//! are written in batches. A server ping goes out every `ping_interval`; a peer silent for
//! `idle_timeout` is dead and its place enters the grace period.

#[path = "dashboard.rs"]
mod dashboard;

use crate::outbox::{Alarm, Inbox, LocalOutbox};
use crate::trace_links::{self, Key};
use crate::{IceGrant, Signaling};
use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bedside_auth::{ResumeClaims, Role, TenantId, TokenError};
use bedside_protocol::{ClientMsg, JoinedExtras, ServerMsg, encode, error_frame, input_of};
use bedside_rooms::{NextConnId, Outgoing, RandomId, RoomError, Seat};
use bedside_visit::{
    CloseCode, ConnId, Credential, Input, JoinRequest, Notice, ParticipantId, Refusal, VisitId,
};
use chrono::{DateTime, Utc};
use futures_util::SinkExt;
use governor::clock::MonotonicClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite;

type Limiter =
    RateLimiter<NotKeyed, InMemoryState, MonotonicClock, NoOpMiddleware<std::time::Instant>>;

/// Most queued notices written before one flush.
const WRITE_BATCH: usize = 64;
/// How long a closing peer gets to answer our close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// How a connection ends.
#[derive(Debug)]
enum Exit {
    /// Send this close frame.
    Close(CloseCode, &'static str),
    /// The peer is gone or closed first: nothing more to send.
    Gone,
}

/// Who a verified token says the client is.
struct Credentials {
    tenant: TenantId,
    visit: String,
    identity: String,
    role: Role,
    name: String,
    /// Which token, and when it was issued: what a block in the visit is checked against.
    credential: Credential,
}

/// What a frame from the socket calls for.
enum Inbound {
    Text(Utf8Bytes),
    /// Answer at once (e.g. an error for a binary frame).
    Reply(String),
    Nothing,
}

struct Joined {
    visit: Seat,
    inbox: Inbox,
    /// Until the `joined` frame carries it.
    resume_token: Option<String>,
    /// Whether `joined` carries the call's ICE servers (a doctor's) or the waiting ones.
    role: Role,
    /// The pseudonym TURN credentials name this person by, in this visit.
    turn_subject: String,
    /// TURN credentials are issued no earlier than the credential this join used.
    issued_floor: DateTime<Utc>,
}

struct Connection {
    socket: WebSocket,
    sig: Arc<Signaling>,
    conn: ConnId,
    limiter: Limiter,
    last_seen: Instant,
    /// Relayed frames until the next one is timed.
    until_sample: u32,
    /// For log lines: set once joined. Logs name connections by these pseudonyms only.
    visit: Option<VisitId>,
    participant: Option<ParticipantId>,
    /// Whatever the caller wants held while the connection lives (a slot of the cap).
    _slot: Box<dyn Send>,
}

/// Serves one upgraded WebSocket until it closes; `slot` is dropped when it does.
///
/// Written so the task holds each thing once, as measured by the test below: a plain
/// function building the connection and an `async move` block borrowing it in place. An
/// `async fn` taking the socket (or `mut self`), or an async block awaiting a captured
/// future, keeps a second, moved-from copy in the task for its whole life.
pub fn serve(
    socket: WebSocket,
    sig: Arc<Signaling>,
    slot: impl Send + 'static,
) -> impl Future<Output = ()> + Send {
    let conn = ConnId::next();
    let config = sig.config();
    let quota =
        Quota::per_second(NonZeroU32::new(config.rate_per_second).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(config.rate_burst).unwrap_or(NonZeroU32::MIN));
    let limiter = RateLimiter::direct_with_clock(quota, MonotonicClock);
    sig.metrics.connections.increment(1.0);
    let mut c = Connection {
        socket,
        sig,
        conn,
        limiter,
        last_seen: Instant::now(),
        until_sample: 0,
        visit: None,
        participant: None,
        _slot: Box::new(slot),
    };
    // No tracing span around the task: entering one on every poll cost measurable CPU on
    // the relay path; log lines carry conn/visit/participant fields instead.
    async move { c.run().await }
}

impl Connection {
    async fn run(&mut self) {
        // Boxed: the join phase's futures (token checks, loading the visit) are large and
        // short-lived; inline, every connection's task would carry their size for its life.
        // Matched by reference: moving `Joined` out of the result would keep a second slot
        // for it (the emptied result) in the task for the connection's whole life.
        let mut joined = Box::pin(self.await_join()).await;
        let exit = match &mut joined {
            Ok(joined) => {
                let exit = self.relay(joined).await;
                joined.visit.leave(Utc::now());
                exit
            }
            Err(exit) => std::mem::replace(exit, Exit::Gone),
        };
        drop(joined);
        tracing::debug!(conn = %self.conn, visit = ?self.visit, participant = ?self.participant, ?exit, "connection closed");
        // Boxed for the same reason as the join phase: only the last second of a connection
        // needs it.
        Box::pin(self.finish(exit)).await;
        self.sig.metrics.connections.decrement(1.0);
    }

    async fn await_join(&mut self) -> Result<Joined, Exit> {
        let deadline = Instant::now() + self.sig.config().join_timeout;
        let shutdown = self.sig.shutdown.clone();
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return Err(Exit::Close(CloseCode::GoingAway, "server restarting")),
                _ = sleep_until(deadline) => {
                    let message = format!(
                        "send join within {} seconds of connecting (ws.join_timeout_secs)",
                        self.sig.config().join_timeout.as_secs()
                    );
                    self.send_error("join_timeout", &message).await?;
                    return Err(Exit::Close(CloseCode::Policy, "join timeout"));
                }
                msg = self.socket.recv() => msg,
            };
            let text = match self.inbound(msg)? {
                Inbound::Text(text) => text,
                Inbound::Reply(reply) => {
                    self.write(reply).await?;
                    continue;
                }
                Inbound::Nothing => continue,
            };
            let reply = match ClientMsg::decode(&text) {
                Ok(ClientMsg::Join {
                    token,
                    resume_token,
                }) => return self.join(token, resume_token).await,
                Ok(ClientMsg::Ping) => ServerMsg::Pong {}.to_json(),
                Ok(_) => error_frame("not_joined", "send join first"),
                Err(e) => error_frame(e.code(), &e.to_string()),
            };
            self.write(reply).await?;
        }
    }

    /// Checks the tokens of a `join`: the credentials to try, in order (a valid resume
    /// token first, then a valid join token), or why neither is valid.
    fn verify(
        &self,
        token: Option<&str>,
        resume_token: Option<&str>,
    ) -> Result<Vec<Credentials>, TokenError> {
        let now = Utc::now();
        let resumed = resume_token.map(|rt| {
            let c = self.sig.resume.verify(rt, now)?;
            let tenant = TenantId::new(c.tenant).map_err(|_| TokenError::Malformed)?;
            let place = c.pid.parse().map_err(|_| TokenError::Malformed)?;
            Ok(Credentials {
                tenant,
                visit: c.visit,
                identity: c.sub,
                role: c.role,
                name: c.name,
                credential: Credential::resume(place, c.iat),
            })
        });
        let joined = token.map(|token| {
            let v = self.sig.keys.verify_join(token, now)?;
            let c = v.claims;
            Ok(Credentials {
                tenant: v.tenant,
                visit: c.visit,
                identity: c.sub,
                role: c.role,
                name: c.name,
                credential: Credential::token(c.jti, c.iat).single_use(v.single_use),
            })
        });
        let mut valid = Vec::new();
        let mut error = TokenError::Malformed;
        for verified in [resumed, joined].into_iter().flatten() {
            match verified {
                Ok(c) => valid.push(c),
                Err(e) => error = e,
            }
        }
        if valid.is_empty() {
            Err(error)
        } else {
            Ok(valid)
        }
    }

    async fn join(
        &mut self,
        token: Option<String>,
        resume_token: Option<String>,
    ) -> Result<Joined, Exit> {
        let started = std::time::Instant::now();
        // Pseudonymous fields only; a join from a minted link continues the mint's trace.
        let span = tracing::info_span!(
            "join",
            visit = tracing::field::Empty,
            participant = tracing::field::Empty,
            role = tracing::field::Empty,
            resumed = resume_token.is_some(),
        );
        // A provider token opens the provider's dashboard, not a visit.
        if resume_token.is_none()
            && let Some(t) = token.as_deref()
        {
            match self.sig.keys.verify_provider(t, Utc::now()) {
                Ok(provider) => return Err(self.dashboard(provider).await),
                // Only a well-signed provider token gets this far: say it is out of time.
                Err(e @ (TokenError::Expired | TokenError::NotYetValid)) => {
                    self.sig.metrics.error(e.code());
                    self.send_error(e.code(), &e.to_string()).await?;
                    return Err(Exit::Close(CloseCode::BadToken, "invalid token"));
                }
                Err(_) => {}
            }
        }
        let candidates = match self.verify(token.as_deref(), resume_token.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                self.sig.metrics.error(e.code());
                self.send_error(e.code(), &e.to_string()).await?;
                return Err(Exit::Close(CloseCode::BadToken, "invalid token"));
            }
        };
        let mut candidates = candidates.into_iter().peekable();
        // A resume token whose place is gone (or whose identity was blocked since) gives way
        // to a join token sent with it: the person knocks again as new, if that token is
        // still good.
        let (creds, visit_id, visit, participant, inbox) = loop {
            let Some(creds) = candidates.next() else {
                return Err(Exit::Gone);
            };
            let Ok(visit_id) = creds.visit.parse::<VisitId>() else {
                self.send_error("visit_not_found", "visit not found")
                    .await?;
                return Err(Exit::Close(CloseCode::VisitGone, "visit not found"));
            };
            if let Credential::Token { jti, .. } = &creds.credential {
                trace_links::continue_from(&Key::Token(jti.clone()), &span);
            }
            let (outbox, inbox) = LocalOutbox::new(self.sig.config().queue_capacity);
            let req = JoinRequest {
                conn: self.conn,
                identity: creds.identity.clone(),
                role: creds.role,
                name: creds.name.clone(),
                new_id: ParticipantId::random(),
                credential: creds.credential.clone(),
            };
            match self
                .sig
                .router
                .join(visit_id, &creds.tenant, req, outbox)
                .await
            {
                Ok((visit, participant)) => break (creds, visit_id, visit, participant, inbox),
                Err(RoomError::Refused(Refusal::PlaceGone | Refusal::AccessRevoked))
                    if candidates.peek().is_some() => {}
                Err(e) => {
                    self.sig.metrics.error(e.code());
                    self.send_error(e.code(), &e.to_string()).await?;
                    return Err(Exit::Close(e.join_close_code(), "join refused"));
                }
            }
        };
        let now = Utc::now();
        self.visit = Some(visit_id);
        self.participant = Some(participant);
        tracing::info!(conn = %self.conn, visit = %visit_id, %participant, role = %creds.role, "joined");
        self.sig.metrics.joins.increment(1);
        self.sig.metrics.join_duration.record(started.elapsed());
        if trace_links::enabled() {
            span.record("visit", tracing::field::display(visit_id));
            span.record("participant", tracing::field::display(participant));
            span.record("role", tracing::field::display(creds.role));
            trace_links::remember(Key::Participant(participant.to_string()), &span);
        }
        let expires = now
            + chrono::Duration::from_std(self.sig.config().resume_ttl)
                .unwrap_or(chrono::Duration::hours(12));
        // Never issued before the credential it was earned with: a link minted a moment
        // after a block may carry an `iat` up to a second ahead (crates/visit/src/access.rs),
        // and the resume token must be as much after the block as that link.
        let issued = now.max(creds.credential.issued_at());
        let claims = ResumeClaims::new(
            creds.tenant.as_str(),
            &creds.visit,
            &creds.identity,
            creds.role,
            &creds.name,
            issued,
            expires,
        )
        .at_place(&participant.to_string());
        let resume_token = self.sig.resume.mint(&claims).ok();
        Ok(Joined {
            visit,
            inbox,
            resume_token,
            role: creds.role,
            turn_subject: self.sig.turn_subject(&creds.visit, &creds.identity),
            issued_floor: creds.credential.issued_at(),
        })
    }

    async fn relay(&mut self, j: &mut Joined) -> Exit {
        // Shutdown reaches joined connections as a 1001 in their inbox (the server's drain);
        // one that joined while shutdown began would have missed it.
        if self.sig.shutdown.is_cancelled() {
            return Exit::Close(CloseCode::GoingAway, "server restarting");
        }
        loop {
            // A queue that overflowed while this task was busy wakes it through the inbox;
            // one that overflows during a stuck write is caught in `deliver`.
            if j.inbox.overflowed.is_raised() {
                return self.slow_reader();
            }
            let step = tokio::select! {
                biased;
                item = j.inbox.rx.recv() => match item {
                    Some(item) => self.deliver(item, j).await,
                    None => Err(Exit::Gone),
                },
                msg = self.socket.recv() => {
                    // Deciding is synchronous; the one possible reply is written here, so
                    // the task holds a single write in flight at most.
                    let reply = match self.inbound(msg) {
                        Ok(Inbound::Text(text)) => {
                            // A lease renewal running late (a starved machine): the frame
                            // waits for it rather than being refused. Boxed: rarely needed.
                            if !j.visit.fresh() {
                                Box::pin(j.visit.vouched()).await;
                            }
                            Ok(self.handle_frame(text.as_str(), j))
                        }
                        Ok(Inbound::Reply(reply)) => Ok(Some(reply)),
                        Ok(Inbound::Nothing) => Ok(None),
                        Err(exit) => Err(exit),
                    };
                    match reply {
                        Ok(Some(reply)) => self.write(reply).await,
                        Ok(None) => Ok(()),
                        Err(exit) => Err(exit),
                    }
                }
            };
            if let Err(exit) = step {
                return exit;
            }
        }
    }

    fn slow_reader(&self) -> Exit {
        tracing::info!(conn = %self.conn, visit = ?self.visit, participant = ?self.participant, "outbound queue full: disconnecting slow reader");
        Exit::Close(CloseCode::Policy, "too slow to keep up")
    }

    /// Writes a queued notice and whatever else is already queued behind it, then flushes.
    /// A write stuck on a full socket gives way as soon as the queue overflows.
    async fn deliver(&mut self, first: Outgoing, j: &mut Joined) -> Result<(), Exit> {
        // The time limit and the alarm are looked up at each write rather than kept in
        // locals: locals live across the writes, in every connection's task.
        let mut next = Some(first);
        let mut written = 0;
        while let Some(item) = next.take() {
            // One write await for every kind of frame: each await point of its own would
            // take room of its own in the relay loop's future.
            let frame = match item {
                Outgoing::Notice(notice) => self.frame_of(*notice, j),
                Outgoing::Frame(frame) => Message::Text((*frame).into()),
                Outgoing::Close(code) => {
                    unless(
                        &j.inbox.overflowed,
                        self.sig.config().write_timeout,
                        self.socket.flush(),
                    )
                    .await?;
                    return Err(Exit::Close(code, code.reason()));
                }
                Outgoing::Heartbeat => {
                    if self.last_seen.elapsed() >= self.sig.config().idle_timeout {
                        tracing::info!(conn = %self.conn, visit = ?self.visit, participant = ?self.participant, "no sign of life: dropping connection");
                        return Err(Exit::Gone);
                    }
                    Message::Ping(Bytes::new())
                }
            };
            unless(
                &j.inbox.overflowed,
                self.sig.config().write_timeout,
                self.socket.feed(frame),
            )
            .await?;
            written += 1;
            if written < WRITE_BATCH {
                next = j.inbox.rx.try_recv().ok();
            }
        }
        unless(
            &j.inbox.overflowed,
            self.sig.config().write_timeout,
            self.socket.flush(),
        )
        .await
    }

    /// Encodes a notice for this participant. Not async, so nothing it builds (the notice
    /// taken out of its box, ICE servers, the resume token) takes room in the relay loop's
    /// future, which every connection holds for its whole life.
    fn frame_of(&self, notice: Notice, j: &mut Joined) -> Message {
        // The resume token goes out once, in `joined`; no need to keep it.
        let resume_token = match notice {
            Notice::Joined { .. } => j.resume_token.take().unwrap_or_default(),
            _ => String::new(),
        };
        // TURN credentials are minted for this participant as the frame is written: the
        // call's once admitted, a probe while waiting (docs/nat-traversal.md); other frames
        // carry none.
        let grant = match notice {
            Notice::Joined { .. } if j.role.is_host() => Some(IceGrant::Call),
            Notice::Joined { .. } | Notice::Waiting(_) => Some(IceGrant::Probe),
            Notice::Admitted { .. } => Some(IceGrant::Call),
            _ => None,
        };
        let ice_servers = match grant {
            Some(grant) => self.sig.ice_servers_for(
                &j.turn_subject,
                grant,
                j.visit.expires_at(),
                Utc::now().max(j.issued_floor),
            ),
            None => std::borrow::Cow::Borrowed(&[][..]),
        };
        let extras = JoinedExtras {
            ice_servers: &ice_servers,
            resume_token: &resume_token,
        };
        Message::Text(encode(notice, &extras).into())
    }

    /// Feeds a client frame to the visit. Returns the frame to answer with, if any (`pong`,
    /// or an `error` for a frame that was refused).
    fn handle_frame(&mut self, text: &str, j: &Joined) -> Option<String> {
        // One frame in RELAY_SAMPLE is timed, from here (it is off the socket) until its
        // copies are queued: decoding, the visit's rules, routing.
        self.until_sample = self.until_sample.saturating_sub(1);
        let started = (self.until_sample == 0).then(|| {
            self.until_sample = crate::metrics::RELAY_SAMPLE;
            std::time::Instant::now()
        });
        let input = match input_of(text, self.conn, self.participant) {
            Ok(input) => input,
            Err(reply) => return Some(reply),
        };
        let counter = match &input {
            Input::Signal { .. } => Some(&self.sig.metrics.relayed_signals),
            Input::Chat { .. } => Some(&self.sig.metrics.relayed_chat),
            _ => None,
        };
        // Only frames that are relayed count in the histogram.
        let started = started.filter(|_| counter.is_some());
        // An admission continues the trace of the admitted participant's join.
        let _admission = match &input {
            Input::Admit { target, .. } if trace_links::enabled() => {
                let visit = self.visit.map(tracing::field::display);
                let span = tracing::info_span!("admit", visit, participant = %target);
                let key = Key::Participant(target.to_string());
                trace_links::continue_from(&key, &span);
                trace_links::remember(key, &span);
                Some(span)
            }
            _ => None,
        };
        // A visit running on another node answers a refusal through the outbox.
        match j.visit.send(input, text, Utc::now()) {
            Ok(()) => {
                if let Some(counter) = counter {
                    counter.increment(1);
                }
                if let Some(started) = started {
                    self.sig.metrics.relay_duration.record(started.elapsed());
                }
                None
            }
            Err(e) => {
                self.sig.metrics.error(e.code());
                Some(error_frame(e.code(), &e.to_string()))
            }
        }
    }

    /// Sorts out what the socket produced: a text frame to handle, a reply to send at once,
    /// nothing to do, or the end of the connection.
    fn inbound(&mut self, msg: Option<Result<Message, axum::Error>>) -> Result<Inbound, Exit> {
        let msg = match msg {
            None => return Err(Exit::Gone),
            Some(Err(e)) => {
                use tungstenite::error::ProtocolError;
                // A peer that broke the framing is told why with the standard close code
                // (RFC 6455 7.4.1); a peer that is simply gone is sent nothing.
                return match e.into_inner().downcast::<tungstenite::Error>().map(|e| *e) {
                    Ok(tungstenite::Error::Capacity(_)) => {
                        self.sig.metrics.error("message_too_large");
                        Err(Exit::Close(CloseCode::TooBig, "message too large"))
                    }
                    Ok(tungstenite::Error::Utf8(_)) => Err(Exit::Close(
                        CloseCode::InvalidPayload,
                        CloseCode::InvalidPayload.reason(),
                    )),
                    // A dropped TCP connection, or data after the peer's own close: there
                    // is no one left to send a close frame to.
                    Ok(tungstenite::Error::Protocol(
                        ProtocolError::ResetWithoutClosingHandshake
                        | ProtocolError::ReceivedAfterClosing,
                    )) => Err(Exit::Gone),
                    // Unmasked frames, reserved bits (a compressed frame: permessage-deflate
                    // is never negotiated), unknown opcodes, bad fragmentation or control
                    // frames.
                    Ok(tungstenite::Error::Protocol(_)) => Err(Exit::Close(
                        CloseCode::ProtocolError,
                        CloseCode::ProtocolError.reason(),
                    )),
                    _ => Err(Exit::Gone),
                };
            }
            Some(Ok(msg)) => msg,
        };
        self.last_seen = Instant::now();
        // Every frame counts, pongs too: unsolicited pongs cost as much to read as pings,
        // and a browser sends one per ping of ours, far below the limit.
        if self.limiter.check().is_err() {
            self.sig.metrics.error("rate_limited");
            return Err(Exit::Close(CloseCode::Policy, "too many messages"));
        }
        match msg {
            Message::Text(text) => Ok(Inbound::Text(text)),
            Message::Binary(_) => Ok(Inbound::Reply(error_frame(
                "binary_not_supported",
                "frames must be JSON text",
            ))),
            Message::Close(_) => Err(Exit::Gone),
            Message::Ping(_) | Message::Pong(_) => Ok(Inbound::Nothing),
        }
    }

    // Plain functions returning the write itself, not `async fn`s: each async layer would
    // keep its argument beside the write in every connection's task.
    fn send_error(
        &mut self,
        code: &'static str,
        message: &str,
    ) -> impl Future<Output = Result<(), Exit>> + use<'_> {
        self.write(error_frame(code, message))
    }

    fn write(&mut self, text: String) -> impl Future<Output = Result<(), Exit>> + use<'_> {
        self.send(Message::Text(text.into()))
    }

    fn send(&mut self, msg: Message) -> impl Future<Output = Result<(), Exit>> + use<'_> {
        timed(self.sig.config().write_timeout, self.socket.send(msg))
    }

    async fn finish(&mut self, exit: Exit) {
        let Exit::Close(code, reason) = exit else {
            return;
        };
        self.sig.metrics.closed(code.as_u16());
        let frame = CloseFrame {
            code: code.as_u16(),
            reason: reason.into(),
        };
        if timeout(CLOSE_LINGER, self.socket.send(Message::Close(Some(frame))))
            .await
            .is_ok()
        {
            // Let the peer answer, so the close is clean on its side too.
            let _ = timeout(CLOSE_LINGER, async {
                while let Some(Ok(_)) = self.socket.recv().await {}
            })
            .await;
        }
    }
}

pin_project_lite::pin_project! {
    /// A write that must finish within its time limit (or the peer counts as gone), given
    /// up as soon as the connection's outbox overflows: a write stuck on a full socket is
    /// exactly when a slow reader's queue fills.
    ///
    /// A hand-rolled future rather than `select!` over a `timeout`: every connection's task
    /// holds room for its largest write in flight for its whole life, and the async-fn
    /// version kept the write future twice (the argument and its pinned copy) beside the
    /// macro's own state. The timer is only created if the write does not complete at once,
    /// and lives on the heap while it waits: most writes never need one.
    struct Guarded<'a, F> {
        #[pin]
        write: F,
        limit: Duration,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        overflowed: Option<&'a Alarm>,
    }
}

impl<F: Future<Output = Result<(), axum::Error>>> Future for Guarded<'_, F> {
    type Output = Result<(), Exit>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The write goes first: when it completes at once, nothing else is looked at.
        if let Poll::Ready(result) = this.write.poll(cx) {
            return Poll::Ready(result.map_err(|_| Exit::Gone));
        }
        let limit = *this.limit;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Exit::Gone));
        }
        if let Some(alarm) = this.overflowed
            && alarm.poll_raised(cx).is_ready()
        {
            return Poll::Ready(Err(Exit::Close(CloseCode::Policy, "too slow to keep up")));
        }
        Poll::Pending
    }
}

/// A write that must finish within `limit` (see [`Guarded`]), given up once `overflowed`
/// is raised.
fn unless<F: Future<Output = Result<(), axum::Error>>>(
    overflowed: &Alarm,
    limit: Duration,
    write: F,
) -> Guarded<'_, F> {
    Guarded {
        write,
        limit,
        timer: None,
        overflowed: Some(overflowed),
    }
}

/// A write that must finish within `limit`, or the peer counts as gone.
fn timed<F: Future<Output = Result<(), axum::Error>>>(
    limit: Duration,
    write: F,
) -> Guarded<'static, F> {
    Guarded {
        write,
        limit,
        timer: None,
        overflowed: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Size of the future a function returns, without calling it.
    fn future_size<A, B, F: FnOnce(A, B) -> Fut, Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    fn future3_size<A, B, C, F: FnOnce(A, B, C) -> Fut, Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// Every open connection holds this future for its whole life: it is the largest part
    /// of an idle connection's memory after the socket's buffers (BENCHMARKS.md). A layout
    /// change that duplicates a slot shows up here before it shows up in a benchmark.
    /// tokio rounds a task's cell (this future, the task tracker's token and about 100
    /// bytes of header and trailer) up to a multiple of 128 bytes: 1,024 bytes keeps the
    /// cell at 1,152 (it was 1,664 when the future was 1,536).
    #[test]
    fn the_connection_task_stays_small() {
        let task = future3_size(&|socket, sig, ()| serve(socket, sig, ()));
        let relay = future_size(&Connection::relay);
        assert!(
            task <= 1024,
            "a connection's task future is {task} bytes (relay {relay})"
        );
        assert!(relay <= 376, "the relay loop's future is {relay} bytes");
    }

    /// The guard around every write: the write's own result when it finishes, the peer
    /// counted gone when it does not finish in time, and a close for a slow reader as soon
    /// as the outbox overflows while it waits.
    #[tokio::test]
    async fn a_write_finishes_times_out_or_gives_way_to_an_overflow() {
        let alarm = Alarm::default();
        let done = unless(&alarm, Duration::from_secs(60), async { Ok(()) });
        assert!(done.timer.is_none());
        assert!(matches!(done.await, Ok(())));
        let failed = unless(&alarm, Duration::from_secs(60), async {
            Err(axum::Error::new("broken pipe"))
        });
        assert!(matches!(failed.await, Err(Exit::Gone)));

        let stuck = timed(Duration::from_millis(20), std::future::pending());
        assert!(matches!(stuck.await, Err(Exit::Gone)));

        let stuck = unless(&alarm, Duration::from_secs(60), std::future::pending());
        let raise = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            alarm.raise();
        };
        let (result, ()) = tokio::join!(stuck, raise);
        assert!(matches!(
            result,
            Err(Exit::Close(CloseCode::Policy, "too slow to keep up"))
        ));
    }
}
