//! The visit state machine.
//!
//! A [`Visit`] is plain data. [`Visit::handle`] takes one [`Input`] and the current time
//! and appends [`Output`]s: notices for participants' connections, connections to close,
//! changes to persist and audit events. It never blocks, sleeps, reads a clock or touches
//! a socket; the caller owns all of that. Deadlines (grace periods, expiry) are reported by
//! [`Visit::next_deadline`] and acted on when the caller feeds [`Input::Tick`].
//!
//! The rules (docs/protocol.md, "Rules"):
//! - a doctor is admitted on join; patients and guests wait until a doctor admits them,
//!   one by one, and a doctor's arrival admits nobody;
//! - a participant who drops keeps their place for the grace period; coming back (same
//!   identity) within it needs no new admission; after it, or after being denied or
//!   removed, they start in the waiting room again;
//! - a new connection of the same identity replaces the old one (closed with 4009);
//! - signals and chat flow only between admitted participants;
//! - an admitted participant's browser reports its connections' statistics (`stats`), at
//!   most once every 4 s; their quality class is shown to the others and to themselves when
//!   it changes, and summarized for the clinic ([`crate::quality`]). A waiting participant
//!   reports its pre-call check (`precheck`), which doctors see in the waiting list.
//! - where the visit asks for consent, a patient or guest is in nobody's waiting room until
//!   they agree to it (`consent_required`, then `consent`);
//! - a visit with a provider reports its part of the provider's queue ([`Output::Queue`])
//!   whenever it changes, and tells its waiting participants where they stand when the
//!   caller feeds back [`Input::Standings`].
//! - a removal or denial blocks that identity: credentials issued until then are refused
//!   ([`crate::access`]), and a resume token reopens only the place it names, while it is
//!   held;
//! - only doctors see other participants' identities.

use crate::access::{Block, Credential, revokes};
use crate::audit::{AuditActor, AuditEvent, AuditKind};
use crate::consent::ConsentGiven;
use crate::event::{EventKind, EventParticipant, LeftReason, VisitEvent};
use crate::notice::{CloseCode, LeaveReason, Notice, VisitSummary};
use crate::participant::{LobbyEntry, MediaState, ParticipantState, ParticipantView};
use crate::payload::Payload;
use crate::quality::{
    Observation, Precheck, Quality, Reason, StatsReport, StoredQuality, TooSoon, Tracker,
};
use crate::queue::{Knock, ProviderView, Standing, VisitQueue};
use crate::record::{EndReason, VisitRecord, VisitStatus};
use crate::refusal::Refusal;
use crate::{ConnId, Invite, ParticipantId, ProviderId};
use bedside_auth::{KeyId, Role};
use chrono::{DateTime, TimeDelta, Utc};
use std::sync::Arc;

/// Longest chat message, in characters.
pub const MAX_CHAT_CHARS: usize = 2000;
/// Longest reason a doctor may give when denying, in characters.
const MAX_REASON_CHARS: usize = 200;
/// Longest message a provider may send to their waiting room, in characters.
pub const MAX_MESSAGE_CHARS: usize = 1000;

/// Who asks for a privileged action: a connected participant, or the clinic's backend
/// (named by the API key it used, for the audit trail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Conn(ConnId),
    Api(KeyId),
}

/// A participant named by id (protocol) or by identity (REST API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Id(ParticipantId),
    Identity(String),
}

/// A verified join: the caller has checked the token.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub conn: ConnId,
    pub identity: String,
    pub role: Role,
    pub name: String,
    /// Used if this identity is new to the visit; the caller supplies randomness.
    pub new_id: ParticipantId,
    /// What the connection verified: a join token or a resume token, and when it was
    /// issued (a block refuses those issued no later than itself).
    pub credential: Credential,
}

#[derive(Debug)]
pub enum Input {
    Join(JoinRequest),
    /// The connection went away without `leave`: the grace period starts.
    Disconnected {
        conn: ConnId,
    },
    Leave {
        conn: ConnId,
    },
    Admit {
        conn: ConnId,
        target: ParticipantId,
    },
    Deny {
        conn: ConnId,
        target: ParticipantId,
        reason: Option<String>,
    },
    Remove {
        by: Actor,
        target: Target,
    },
    Signal {
        conn: ConnId,
        to: ParticipantId,
        data: Payload,
    },
    Chat {
        conn: ConnId,
        text: String,
    },
    Media {
        conn: ConnId,
        media: MediaState,
    },
    /// The sender's browser's statistics of its peer connections (admitted only).
    Stats {
        conn: ConnId,
        report: StatsReport,
    },
    /// The result of the sender's pre-call check (waiting only).
    Precheck {
        conn: ConnId,
        precheck: Precheck,
    },
    End {
        by: Actor,
    },
    /// A patient or guest agrees to the consent text they were shown.
    Consent {
        conn: ConnId,
        version: String,
    },
    /// The visit moves to another provider's queue; nobody in it moves.
    Transfer {
        by: Actor,
        provider: ProviderId,
    },
    /// Where the visit's waiting participants stand in the provider's queue, and how the
    /// provider shows (from whoever lines the provider's queue up).
    Standings {
        provider: Option<ProviderView>,
        standings: Vec<(ParticipantId, Standing)>,
    },
    /// The provider's words to this visit's waiting room.
    ProviderMessage {
        text: String,
    },
    /// A doctor asks for a guest link (`invite {role, name}`; see [`crate::invite`]).
    Invite {
        conn: ConnId,
        role: String,
        name: String,
    },
    /// Time passed: expire grace periods and the visit itself where due.
    Tick,
}

/// A participant as stored, so admissions survive a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredParticipant {
    pub participant_id: ParticipantId,
    pub identity: String,
    pub role: Role,
    pub name: String,
    pub state: ParticipantState,
    pub since: DateTime<Utc>,
    /// When their connection dropped; `None` while connected.
    pub dropped_at: Option<DateTime<Utc>>,
    /// The consent they gave, where the visit asks for one.
    pub consent: Option<ConsentGiven>,
}

/// A durable change to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The visit became active (first join) or ended; `at` is when.
    Status {
        status: VisitStatus,
        reason: Option<EndReason>,
        at: DateTime<Utc>,
    },
    /// A doctor and a patient were in the visit together for the first time.
    Started {
        at: DateTime<Utc>,
    },
    Participant(StoredParticipant),
    ParticipantGone {
        participant_id: ParticipantId,
    },
    /// The visit is now in this provider's queue.
    Provider {
        provider: ProviderId,
    },
    /// The provider was in this visit from `started_at` to `ended_at`: one consultation of
    /// the history their patients' expected wait is estimated from.
    Consultation {
        provider: ProviderId,
        started_at: DateTime<Utc>,
        ended_at: DateTime<Utc>,
    },
    /// `identity` was removed or denied at `at`: credentials issued until then are refused.
    Blocked {
        identity: String,
        at: DateTime<Utc>,
    },
    /// The single-use link `jti` let someone in at `at`: it lets nobody else in. Written
    /// with the join's audit row (which names the same `jti`), in one transaction.
    LinkUsed {
        jti: String,
        at: DateTime<Utc>,
    },
    /// A participant's call quality so far. Boxed: it is the largest change by far, and
    /// rare. Unlike the others, notices never wait for it to be stored (see
    /// [`Change::precedes_notices`]).
    Quality(Box<StoredQuality>),
}

impl Change {
    /// Whether notices about this change must wait until it is stored (in a cluster, where
    /// a node may die any moment). A quality summary is not worth holding a visit's
    /// notices for: the next owner carries on from the last one stored.
    pub fn precedes_notices(&self) -> bool {
        !matches!(self, Change::Quality(_))
    }
}

#[derive(Debug)]
pub enum Output {
    Send {
        to: ConnId,
        notice: Notice,
    },
    /// Close this connection; any notice for it was queued before.
    Close {
        conn: ConnId,
        code: CloseCode,
    },
    Persist(Change),
    Audit(AuditEvent),
    /// For the clinic's systems (webhooks, `GET /v1/events`).
    Event(VisitEvent),
    /// A `stats` report's measurements, for operators' metrics across visits.
    Observed(Box<Observation>),
    /// The visit's part of its provider's queue changed (reported only for visits that
    /// have a provider).
    Queue(VisitQueue),
    /// Mint this guest link, record it (`invited`) and send it to the asking doctor only:
    /// the caller holds the keys and draws the link's identity and token id.
    Invite(Invite),
}

#[derive(Debug, Clone)]
struct Participant {
    id: ParticipantId,
    identity: String,
    role: Role,
    name: String,
    state: ParticipantState,
    media: MediaState,
    conn: Option<ConnId>,
    /// Waiting since, or admitted since.
    since: DateTime<Utc>,
    dropped_at: Option<DateTime<Utc>>,
    /// Their connection's class as last shown, and why.
    quality: Option<(Quality, Option<Reason>)>,
    consent: Option<ConsentGiven>,
    /// What their last `waiting` frame said.
    standing: Standing,
}

impl Participant {
    fn admitted(&self) -> bool {
        self.state == ParticipantState::Admitted
    }

    /// In the waiting room: waiting, and past any consent the visit asks for.
    fn knocking(&self, consent_required: bool) -> bool {
        self.state == ParticipantState::Waiting && (!consent_required || self.consent.is_some())
    }

    /// The participant as `viewer_is_host` may see them: only doctors (and the clinic's
    /// backend) see identities.
    fn view(&self, viewer_is_host: bool) -> ParticipantView {
        ParticipantView {
            participant_id: self.id,
            identity: viewer_is_host.then(|| self.identity.clone()),
            role: self.role,
            name: self.name.clone(),
            state: self.state,
            media: self.media,
            connected: self.conn.is_some(),
            quality: self.quality.map(|(q, _)| q),
            quality_reason: self.quality.and_then(|(_, r)| r),
        }
    }

    fn stored(&self) -> StoredParticipant {
        StoredParticipant {
            participant_id: self.id,
            identity: self.identity.clone(),
            role: self.role,
            name: self.name.clone(),
            state: self.state,
            since: self.since,
            dropped_at: self.dropped_at,
            consent: self.consent.clone(),
        }
    }

    fn audit(&self, kind: AuditKind, at: DateTime<Utc>) -> AuditEvent {
        AuditEvent {
            participant_id: Some(self.id),
            identity: Some(self.identity.clone()),
            role: Some(self.role),
            ..AuditEvent::new(kind, at)
        }
    }

    fn event(&self, kind: EventKind, at: DateTime<Utc>) -> Output {
        Output::Event(VisitEvent {
            participant: Some(self.who()),
            ..VisitEvent::new(kind, at)
        })
    }

    fn left(&self, reason: LeftReason, at: DateTime<Utc>) -> Output {
        Output::Event(VisitEvent {
            participant: Some(self.who()),
            reason: Some(reason.as_str()),
            ..VisitEvent::new(EventKind::ParticipantLeft, at)
        })
    }

    fn who(&self) -> EventParticipant {
        EventParticipant {
            participant_id: self.id,
            identity: self.identity.clone(),
            role: self.role,
        }
    }
}

/// One visit's live state.
#[derive(Debug, Clone)]
pub struct Visit {
    record: VisitRecord,
    grace: TimeDelta,
    participants: Vec<Participant>,
    /// Identities removed or denied, with the latest block of each.
    blocks: Vec<Block>,
    /// The `jti`s of single-use links that let someone in (see [`Visit::with_used_links`]).
    used_links: Vec<String>,
    /// How long before `expires_at` everyone is warned that the visit is about to end.
    warn_before: TimeDelta,
    warned: bool,
    /// Call quality of everyone who reported any, kept after they leave.
    quality: Vec<StoredQuality>,
    /// The part of the provider's queue last reported ([`Output::Queue`]).
    reported: Option<VisitQueue>,
    /// How the provider showed in the last [`Input::Standings`].
    provider_view: Option<ProviderView>,
}

/// Default lead time of the expiry warning.
pub const EXPIRY_WARNING_MINUTES: i64 = 5;

impl Visit {
    /// A visit nobody is in yet.
    pub fn new(record: VisitRecord, grace: TimeDelta) -> Self {
        Self {
            record,
            grace,
            participants: Vec::new(),
            blocks: Vec::new(),
            used_links: Vec::new(),
            warn_before: TimeDelta::minutes(EXPIRY_WARNING_MINUTES),
            warned: false,
            quality: Vec::new(),
            reported: None,
            provider_view: None,
        }
    }

    /// A visit rebuilt from storage after a restart. Participants who were connected when
    /// the previous process stopped count as dropped at `boot`, so their grace period runs
    /// from the restart.
    pub fn restore(
        record: VisitRecord,
        stored: Vec<StoredParticipant>,
        boot: DateTime<Utc>,
        grace: TimeDelta,
    ) -> Self {
        let participants = if record.status == VisitStatus::Ended {
            Vec::new()
        } else {
            stored
                .into_iter()
                .map(|p| Participant {
                    id: p.participant_id,
                    identity: p.identity,
                    role: p.role,
                    name: p.name,
                    state: p.state,
                    media: MediaState::default(),
                    conn: None,
                    since: p.since,
                    dropped_at: Some(p.dropped_at.map_or(boot, |d| d.min(boot))),
                    quality: None,
                    consent: p.consent,
                    standing: Standing::default(),
                })
                .collect()
        };
        Self {
            record,
            grace,
            participants,
            blocks: Vec::new(),
            used_links: Vec::new(),
            warn_before: TimeDelta::minutes(EXPIRY_WARNING_MINUTES),
            warned: false,
            quality: Vec::new(),
            reported: None,
            provider_view: None,
        }
    }

    /// Carries on with the call quality stored for this visit (read back at `now`).
    pub fn with_quality(mut self, stored: Vec<StoredQuality>, now: DateTime<Utc>) -> Self {
        self.quality = stored
            .into_iter()
            .map(|q| StoredQuality {
                tracker: q.tracker.restored(now),
                ..q
            })
            .collect();
        for p in &mut self.participants {
            p.quality = self
                .quality
                .iter()
                .find(|q| q.participant_id == p.id)
                .and_then(|q| q.tracker.current());
        }
        self
    }

    /// The visit's blocks, as stored: loaded with the visit, so every node that runs it and
    /// every restart refuses what they refuse.
    pub fn with_blocks(mut self, blocks: Vec<Block>) -> Self {
        for block in blocks {
            self.note_block(block.identity, block.at);
        }
        self
    }

    /// The single-use links already used in this visit, as stored: loaded with the visit,
    /// so every node that runs it and every restart refuses them.
    pub fn with_used_links(mut self, jtis: Vec<String>) -> Self {
        self.used_links = jtis;
        self
    }

    /// Everyone's call quality so far, in the order they first reported.
    pub fn quality(&self) -> Vec<crate::quality::ParticipantQuality> {
        self.quality.iter().map(StoredQuality::summary).collect()
    }

    /// When `identity` was last blocked in this visit, if it was.
    pub fn blocked_at(&self, identity: &str) -> Option<DateTime<Utc>> {
        self.blocks
            .iter()
            .find(|b| b.identity == identity)
            .map(|b| b.at)
    }

    /// Keeps the latest block of `identity`.
    fn note_block(&mut self, identity: String, at: DateTime<Utc>) {
        match self.blocks.iter_mut().find(|b| b.identity == identity) {
            Some(block) => block.at = block.at.max(at),
            None => self.blocks.push(Block { identity, at }),
        }
    }

    /// Blocks `identity` from `now` on, and stores the block with whatever else this input
    /// changes.
    fn block(&mut self, identity: String, now: DateTime<Utc>, out: &mut Vec<Output>) {
        self.note_block(identity.clone(), now);
        out.push(Output::Persist(Change::Blocked { identity, at: now }));
    }

    /// Sets how long before the visit's end its participants are warned.
    pub fn with_expiry_warning(mut self, before: TimeDelta) -> Self {
        self.warn_before = before;
        self
    }

    fn warn_at(&self) -> DateTime<Utc> {
        self.record.expires_at - self.warn_before
    }

    pub fn record(&self) -> &VisitRecord {
        &self.record
    }

    /// Everyone present, admitted first, as the clinic's backend sees them (identities
    /// included).
    pub fn participants(&self) -> Vec<ParticipantView> {
        let mut views: Vec<_> = self.participants.iter().map(|p| p.view(true)).collect();
        views.sort_by_key(|v| v.state != ParticipantState::Admitted);
        views
    }

    /// Since when `id` has waited in the waiting room, if it waits there.
    pub fn waiting_since(&self, id: ParticipantId) -> Option<DateTime<Utc>> {
        let p = &self.participants[self.by_id(id)?];
        (!p.admitted()).then_some(p.since)
    }

    /// The participant a connection speaks for.
    pub fn participant_of(&self, conn: ConnId) -> Option<ParticipantId> {
        self.by_conn(conn).map(|i| self.participants[i].id)
    }

    /// No one is connected or within a grace period: nothing left to keep in memory.
    pub fn is_vacant(&self) -> bool {
        self.participants.is_empty()
    }

    /// The earliest time at which [`Input::Tick`] has something to do.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        if self.record.status == VisitStatus::Ended {
            return None;
        }
        let warning = (!self.warned).then(|| self.warn_at());
        self.participants
            .iter()
            .filter_map(|p| p.dropped_at.map(|d| d + self.grace))
            .chain(std::iter::once(self.record.expires_at))
            .chain(warning)
            .min()
    }

    /// Applies one input at time `now`, appending what must happen to `out`.
    pub fn handle(
        &mut self,
        input: Input,
        now: DateTime<Utc>,
        out: &mut Vec<Output>,
    ) -> Result<(), Refusal> {
        // Signals change nothing a queue shows: the hot path skips the comparison.
        let signal = matches!(input, Input::Signal { .. });
        let result = self.apply(input, now, out);
        if !signal {
            self.report_queue(now, out);
        }
        result
    }

    fn apply(
        &mut self,
        input: Input,
        now: DateTime<Utc>,
        out: &mut Vec<Output>,
    ) -> Result<(), Refusal> {
        // Deadlines that passed are acted on first, whether or not the caller fed a tick in
        // time: a visit loaded from storage long after a restart must not hand back an
        // admission whose grace period is over. Signals skip it: they are the hot path,
        // change no deadline, and reach only connected participants anyway (the caller's
        // next tick, within a second, catches up).
        if !matches!(input, Input::Tick | Input::Signal { .. }) {
            self.tick(now, out);
        }
        match input {
            Input::Join(req) => self.join(req, now, out),
            Input::Disconnected { conn } => {
                self.disconnected(conn, now, out);
                Ok(())
            }
            Input::Leave { conn } => {
                let i = self.by_conn(conn).ok_or(Refusal::NotJoined)?;
                out.push(Output::Close {
                    conn,
                    code: CloseCode::Normal,
                });
                out.push(Output::Audit(
                    self.participants[i].audit(AuditKind::Left, now),
                ));
                out.push(self.participants[i].left(LeftReason::Left, now));
                self.remove_at(i, LeaveReason::Left, out);
                Ok(())
            }
            Input::Admit { conn, target } => self.admit(conn, target, now, out),
            Input::Deny {
                conn,
                target,
                reason,
            } => self.deny(conn, target, reason, now, out),
            Input::Remove { by, target } => self.remove(by, target, now, out),
            Input::Signal { conn, to, data } => self.signal(conn, to, data, out),
            Input::Chat { conn, text } => self.chat(conn, text, now, out),
            Input::Stats { conn, report } => self.stats(conn, &report, now, out),
            Input::Precheck { conn, precheck } => self.precheck(conn, precheck, now, out),
            Input::Media { conn, media } => {
                let i = self.by_conn(conn).ok_or(Refusal::NotJoined)?;
                self.participants[i].media = media;
                if self.participants[i].admitted() {
                    let p = &self.participants[i];
                    self.to_admitted(Some(i), out, |host| Notice::ParticipantUpdated {
                        participant: p.view(host),
                    });
                }
                Ok(())
            }
            Input::End { by } => {
                let actor = self.authorize(&by)?;
                if self.record.status == VisitStatus::Ended {
                    return Err(Refusal::VisitEnded);
                }
                let reason = if matches!(by, Actor::Api(_)) {
                    EndReason::EndedByApi
                } else {
                    EndReason::EndedByDoctor
                };
                self.end(reason, actor, now, out);
                Ok(())
            }
            Input::Consent { conn, version } => self.consent(conn, version, now, out),
            Input::Transfer { by, provider } => self.transfer(by, provider, now, out),
            Input::Standings {
                provider,
                standings,
            } => {
                self.standings(provider, standings, out);
                Ok(())
            }
            Input::ProviderMessage { text } => self.provider_message(text, now, out),
            Input::Invite { conn, role, name } => {
                // An ended visit first: its doctor may already be out of it (expiry is acted
                // on above), and "ended" is what they need to hear.
                if self.record.status == VisitStatus::Ended {
                    return Err(Refusal::VisitEnded);
                }
                let by = match self.authorize(&Actor::Conn(conn))? {
                    AuditActor::Participant(id) => id,
                    _ => return Err(Refusal::Forbidden),
                };
                let name = crate::invite::guest_name(&role, &name)?;
                out.push(Output::Invite(Invite {
                    conn,
                    by,
                    name,
                    expires_at: crate::invite::expiry(now, self.record.expires_at),
                }));
                Ok(())
            }
            Input::Tick => {
                self.tick(now, out);
                Ok(())
            }
        }
    }

    fn consent_required(&self) -> bool {
        self.record.consent.is_some()
    }

    /// This visit's part of its provider's queue now; `None` for a visit without a
    /// provider.
    pub fn queue_part(&self) -> Option<VisitQueue> {
        let provider = self.record.provider.clone()?;
        let required = self.consent_required();
        let live = self.record.status != VisitStatus::Ended;
        let mut knocks: Vec<Knock> = self
            .participants
            .iter()
            .filter(|p| live && p.knocking(required))
            .map(|p| Knock {
                participant_id: p.id,
                name: p.name.clone(),
                role: p.role,
                since: p.since,
                consent: p.consent.clone(),
                precheck: self.tracker(p.id).and_then(|t| t.precheck().copied()),
            })
            .collect();
        knocks.sort_by_key(|k| (k.since, k.participant_id));
        let busy_since = self
            .participants
            .iter()
            .filter(|p| live && p.admitted() && p.role.is_host() && p.identity == provider.as_str())
            .map(|p| p.since)
            .min();
        Some(VisitQueue {
            visit: self.record.id,
            tenant: self.record.tenant.clone(),
            provider: Some(provider),
            external_ref: self.record.external_ref.clone(),
            knocks,
            busy_since,
        })
    }

    fn report_queue(&mut self, now: DateTime<Utc>, out: &mut Vec<Output>) {
        let part = self.queue_part();
        if part.is_none() || part == self.reported {
            return;
        }
        // The provider's consultation here ended (they left, the visit ended, or it moved
        // to another provider's queue): one more for their history.
        if let Some(VisitQueue {
            provider: Some(provider),
            busy_since: Some(started_at),
            ..
        }) = &self.reported
            && part
                .as_ref()
                .is_none_or(|p| p.busy_since.is_none() || p.provider.as_ref() != Some(provider))
        {
            out.push(Output::Persist(Change::Consultation {
                provider: provider.clone(),
                started_at: *started_at,
                ended_at: now,
            }));
        }
        self.reported = part.clone();
        out.extend(part.map(Output::Queue));
    }

    fn consent(
        &mut self,
        conn: ConnId,
        version: String,
        now: DateTime<Utc>,
        out: &mut Vec<Output>,
    ) -> Result<(), Refusal> {
        let i = self.by_conn(conn).ok_or(Refusal::NotJoined)?;
        let asked = self.record.consent.as_ref().filter(|_| {
            let p = &self.participants[i];
            !p.role.is_host() && !p.admitted() && p.consent.is_none()
        });
        let text = asked.ok_or(Refusal::ConsentNotRequired)?;
        if text.version() != version {
            return Err(Refusal::WrongConsentVersion);
        }
        let (detail, sha256) = (text.audit_detail(), text.sha256());
        let p = &mut self.participants[i];
        p.consent = Some(ConsentGiven {
            version: version.clone(),
            at: now,
        });
        // Their knock is when they agreed: the queue is in order of knocks.
        p.since = now;
        out.push(Output::Persist(Change::Participant(p.stored())));
        out.push(Output::Audit(
            p.audit(AuditKind::Consented, now).detail(detail),
        ));
        out.push(Output::Event(VisitEvent {
            participant: Some(p.who()),
            fields: vec![("version", version), ("sha256", sha256)],
            ..VisitEvent::new(EventKind::ParticipantConsented, now)
        }));
        out.push(p.event(EventKind::ParticipantWaiting, now));
        self.send_waiting(i, out);
        self.lobby_to_doctors(out);
        Ok(())
    }

    fn transfer(
        &mut self,
        by: Actor,
        provider: ProviderId,
        now: DateTime<Utc>,
        out: &mut Vec<Output>,
    ) -> Result<(), Refusal> {
        let actor = self.authorize(&by)?;
        if self.record.status == VisitStatus::Ended {
            return Err(Refusal::VisitEnded);
        }
        let previous = self.record.provider.replace(provider.clone());
        // The old provider's presence no longer applies; the new one's follows.
        self.provider_view = None;
        for p in &mut self.participants {
            p.standing = Standing::default();
        }
        out.push(Output::Persist(Change::Provider {
            provider: provider.clone(),
        }));
        let mut audit = AuditEvent {
            identity: Some(provider.to_string()),
            ..AuditEvent::new(AuditKind::Transferred, now)
        }
        .actor(actor);
        if let Some(previous) = &previous {
            audit = audit.detail(previous.to_string());
        }
        out.push(Output::Audit(audit));
        let mut fields = vec![("provider", provider.to_string())];
        fields.extend(previous.map(|p| ("previous_provider", p.to_string())));
        out.push(Output::Event(VisitEvent {
            fields,
            ..VisitEvent::new(EventKind::VisitTransferred, now)
        }));
        Ok(())
    }

    fn standings(
        &mut self,
        provider: Option<ProviderView>,
        standings: Vec<(ParticipantId, Standing)>,
        out: &mut Vec<Output>,
    ) {
        self.provider_view = provider;
        let required = self.consent_required();
        for (id, standing) in standings {
            let Some(i) = self.by_id(id) else { continue };
            if self.participants[i].knocking(required) && self.participants[i].standing != standing
            {
                self.participants[i].standing = standing;
                self.send_waiting(i, out);
            }
        }
    }

    /// Tells participant `i` where they stand: their last standing, with the provider as
    /// last seen.
    fn send_waiting(&mut self, i: usize, out: &mut Vec<Output>) {
        let p = &mut self.participants[i];
        if self.record.provider.is_some() && p.standing.provider.is_none() {
            p.standing.provider = self.provider_view.clone();
        }
        if let Some(conn) = p.conn {
            out.push(Output::Send {
                to: conn,
                notice: Notice::Waiting(p.standing.clone()),
            });
        }
    }

    fn provider_message(
        &mut self,
        text: String,
        now: DateTime<Utc>,
        out: &mut Vec<Output>,
    ) -> Result<(), Refusal> {
        let text = text.trim();
        if text.is_empty() || text.chars().count() > MAX_MESSAGE_CHARS {
            return Err(Refusal::InvalidText);
        }
        let text: Arc<str> = text.into();
        let required = self.consent_required();
        for p in &self.participants {
            if let (Some(conn), true) = (p.conn, p.knocking(required)) {
                out.push(Output::Send {
                    to: conn,
                    notice: Notice::ProviderMessage {
                        text: text.clone(),
                        at: now,
                    },
                });
            }
        }
        Ok(())
    }

    fn by_conn(&self, conn: ConnId) -> Option<usize> {
        self.participants.iter().position(|p| p.conn == Some(conn))
    }

    fn by_id(&self, id: ParticipantId) -> Option<usize> {
        self.participants.iter().position(|p| p.id == id)
    }

    /// Checks that `by` may run the visit; returns who the audit trail names as actor.
    fn authorize(&self, by: &Actor) -> Result<AuditActor, Refusal> {
        match by {
            Actor::Api(key) => Ok(AuditActor::Api(key.clone())),
            Actor::Conn(conn) => {
                let p = &self.participants[self.by_conn(*conn).ok_or(Refusal::NotJoined)?];
                if p.role.is_host() && p.admitted() {
                    Ok(AuditActor::Participant(p.id))
                } else {
                    Err(Refusal::Forbidden)
                }
            }
        }
    }

    fn lobby(&self) -> Arc<[LobbyEntry]> {
        let required = self.consent_required();
        self.participants
            .iter()
            .filter(|p| p.knocking(required))
            .map(|p| LobbyEntry {
                participant_id: p.id,
                name: p.name.clone(),
                role: p.role,
                since: p.since,
                connected: p.conn.is_some(),
                precheck: self.tracker(p.id).and_then(|t| t.precheck().copied()),
                consent: p.consent.clone(),
            })
            .collect()
    }

    /// Sends the waiting list to every connected doctor.
    fn lobby_to_doctors(&self, out: &mut Vec<Output>) {
        let waiting = self.lobby();
        for p in &self.participants {
            if let (Some(conn), true) = (p.conn, p.role.is_host() && p.admitted()) {
                out.push(Output::Send {
                    to: conn,
                    notice: Notice::Lobby {
                        waiting: waiting.clone(),
                    },
                });
            }
        }
    }

    /// Sends a notice to every connected admitted participant except `skip`; `notice` is
    /// told whether its recipient is a doctor (who may see identities).
    fn to_admitted(
        &self,
        skip: Option<usize>,
        out: &mut Vec<Output>,
        notice: impl Fn(bool) -> Notice,
    ) {
        for (i, p) in self.participants.iter().enumerate() {
            if let (Some(conn), true) = (p.conn, p.admitted() && Some(i) != skip) {
                out.push(Output::Send {
                    to: conn,
                    notice: notice(p.role.is_host()),
                });
            }
        }
    }

    /// The admitted participants other than `viewer`, as an `admitted` frame to `viewer`
    /// lists them.
    fn admitted_views(&self, viewer: usize) -> Vec<ParticipantView> {
        let host = self.participants[viewer].role.is_host();
        self.participants
            .iter()
            .enumerate()
            .filter(|&(i, p)| i != viewer && p.admitted())
            .map(|(_, p)| p.view(host))
            .collect()
    }

    /// Whether joins are possible at `now` (an expired visit was ended by the tick that
    /// runs before every input).
    fn check_joinable(&self, now: DateTime<Utc>) -> Result<(), Refusal> {
        if self.record.status == VisitStatus::Ended {
            return Err(Refusal::VisitEnded);
        }
        if self.record.not_before.is_some_and(|nb| now < nb) {
            return Err(Refusal::NotStarted);
        }
        Ok(())
    }

    fn join(
        &mut self,
        req: JoinRequest,
        now: DateTime<Utc>,
        out: &mut Vec<Output>,
    ) -> Result<(), Refusal> {
        self.check_joinable(now)?;
        if self
            .blocked_at(&req.identity)
            .is_some_and(|block| revokes(block, req.credential.issued_at()))
        {
            return Err(Refusal::AccessRevoked);
        }
        // A single-use link lets one person in once: from the join it was first used for
        // (knocking counts, so a leaked copy cannot take the waiting holder's place).
        let once = req.credential.single_use_jti().map(str::to_owned);
        if once
            .as_ref()
            .is_some_and(|jti| self.used_links.contains(jti))
        {
            return Err(Refusal::TokenUsed);
        }
        let existing = self
            .participants
            .iter()
            .position(|p| p.identity == req.identity);
        // A resume token reopens the place it names while that place is held (connected,
        // or within its grace period), and nothing else: after `leave` or a timeout the
        // place is gone.
        if let Credential::Resume { place, .. } = req.credential
            && existing.map(|i| self.participants[i].id) != Some(place)
        {
            return Err(Refusal::PlaceGone);
        }
        let via = req.credential.audit_name().to_owned();
        // A changed role is a different person as far as the visit goes: they re-enter.
        if let Some(i) = existing.filter(|&i| self.participants[i].role != req.role) {
            if let Some(old) = self.participants[i].conn {
                out.push(Output::Close {
                    conn: old,
                    code: CloseCode::Replaced,
                });
            }
            out.push(Output::Audit(
                self.participants[i]
                    .audit(AuditKind::Replaced, now)
                    .detail(via),
            ));
            out.push(self.participants[i].left(LeftReason::Replaced, now));
            self.remove_at(i, LeaveReason::Left, out);
            return self.join(req, now, out);
        }
        let i = match existing {
            Some(i) => {
                let p = &mut self.participants[i];
                let kind = match p.conn.replace(req.conn) {
                    Some(old) => {
                        out.push(Output::Close {
                            conn: old,
                            code: CloseCode::Replaced,
                        });
                        AuditKind::Replaced
                    }
                    None => AuditKind::Rejoined,
                };
                p.dropped_at = None;
                p.name = req.name;
                out.push(Output::Audit(p.audit(kind, now).detail(via)));
                i
            }
            None => {
                if self.participants.len() >= usize::from(self.record.max_participants) {
                    return Err(Refusal::VisitFull);
                }
                let state = if req.role.is_host() {
                    ParticipantState::Admitted
                } else {
                    ParticipantState::Waiting
                };
                // One slot at a time: a visit holds a handful of participants for hours,
                // and the doubling growth of `push` would leave a two-person visit with
                // room for four (BENCHMARKS.md, memory per idle connection).
                self.participants.reserve_exact(1);
                self.participants.push(Participant {
                    id: req.new_id,
                    identity: req.identity,
                    role: req.role,
                    name: req.name,
                    state,
                    media: MediaState::default(),
                    conn: Some(req.conn),
                    since: now,
                    dropped_at: None,
                    quality: None,
                    consent: None,
                    standing: Standing::default(),
                });
                if self.record.status == VisitStatus::Open {
                    self.record.status = VisitStatus::Active;
                    out.push(Output::Persist(Change::Status {
                        status: VisitStatus::Active,
                        reason: None,
                        at: now,
                    }));
                }
                let i = self.participants.len() - 1;
                out.push(Output::Audit(
                    self.participants[i]
                        .audit(AuditKind::Joined, now)
                        .detail(via),
                ));
                // Someone asked for consent first knocks when they give it.
                let kind = match state {
                    ParticipantState::Waiting
                        if self.participants[i].knocking(self.consent_required()) =>
                    {
                        Some(EventKind::ParticipantWaiting)
                    }
                    ParticipantState::Waiting => None,
                    ParticipantState::Admitted => Some(EventKind::ParticipantJoined),
                };
                if let Some(kind) = kind {
                    out.push(self.participants[i].event(kind, now));
                }
                self.check_started(now, out);
                i
            }
        };
        if let Some(jti) = once {
            self.used_links.push(jti.clone());
            out.push(Output::Persist(Change::LinkUsed { jti, at: now }));
        }
        let p = &self.participants[i];
        out.push(Output::Persist(Change::Participant(p.stored())));
        out.push(Output::Send {
            to: req.conn,
            notice: Notice::Joined {
                participant_id: p.id,
                role: p.role,
                visit: VisitSummary {
                    id: self.record.id,
                    status: self.record.status,
                },
            },
        });
        if p.admitted() {
            out.push(Output::Send {
                to: req.conn,
                notice: Notice::Admitted {
                    participants: self.admitted_views(i),
                },
            });
            if p.role.is_host() {
                out.push(Output::Send {
                    to: req.conn,
                    notice: Notice::Lobby {
                        waiting: self.lobby(),
                    },
                });
            }
            if existing.is_some() {
                self.to_admitted(Some(i), out, |host| Notice::ParticipantUpdated {
                    participant: p.view(host),
                });
            } else {
                self.to_admitted(Some(i), out, |host| Notice::ParticipantJoined {
                    participant: p.view(host),
                });
            }
        } else if !p.knocking(self.consent_required()) {
            if let Some(consent) = &self.record.consent {
                out.push(Output::Send {
                    to: req.conn,
                    notice: Notice::ConsentRequired {
                        version: consent.version().into(),
                        text: consent.text().into(),
                    },
                });
            }
        } else {
            self.send_waiting(i, out);
            self.lobby_to_doctors(out);
        }
        // Whoever arrives after the warning went out still hears it.
        if self.warned {
            out.push(Output::Send {
                to: req.conn,
                notice: Notice::VisitExpiring {
                    expires_at: self.record.expires_at,
                },
            });
        }
        Ok(())
    }

    fn disconnected(&mut self, conn: ConnId, now: DateTime<Utc>, out: &mut Vec<Output>) {
        // A connection that was replaced or removed is no longer anyone's: nothing to do.
        let Some(i) = self.by_conn(conn) else { return };
        let p = &mut self.participants[i];
        p.conn = None;
        p.dropped_at = Some(now);
        out.push(Output::Persist(Change::Participant(p.stored())));
        out.push(Output::Audit(p.audit(AuditKind::Dropped, now)));
        if p.admitted() {
            let p = &self.participants[i];
            self.to_admitted(Some(i), out, |host| Notice::ParticipantUpdated {
                participant: p.view(host),
            });
        } else {
            self.lobby_to_doctors(out);
        }
    }

    /// The visit starts the first time a doctor and a patient are in it together.
    fn check_started(&mut self, now: DateTime<Utc>, out: &mut Vec<Output>) {
        let present = |role: Role| {
            self.participants
                .iter()
                .any(|p| p.role == role && p.admitted())
        };
        if self.record.started_at.is_none() && present(Role::Doctor) && present(Role::Patient) {
            self.record.started_at = Some(now);
            out.push(Output::Persist(Change::Started { at: now }));
            out.push(Output::Event(VisitEvent::new(EventKind::VisitStarted, now)));
        }
    }

    fn admit(
        &mut self,
        conn: ConnId,
        target: ParticipantId,
        now: DateTime<Utc>,
        out: &mut Vec<Output>,
    ) -> Result<(), Refusal> {
        let actor = self.authorize(&Actor::Conn(conn))?;
        let i = self.by_id(target).ok_or(Refusal::UnknownParticipant)?;
        let required = self.consent_required();
        let p = &mut self.participants[i];
        if p.admitted() {
            return Err(Refusal::NotWaiting);
        }
        // Not in the waiting room until they consent: no doctor can see them yet.
        if !p.knocking(required) {
            return Err(Refusal::UnknownParticipant);
        }
        p.state = ParticipantState::Admitted;
        p.since = now;
        out.push(Output::Persist(Change::Participant(p.stored())));
        out.push(Output::Audit(
            p.audit(AuditKind::Admitted, now).actor(actor),
        ));
        out.push(p.event(EventKind::ParticipantAdmitted, now));
        out.push(p.event(EventKind::ParticipantJoined, now));
        self.check_started(now, out);
        let p = &self.participants[i];
        if let Some(their_conn) = p.conn {
            out.push(Output::Send {
                to: their_conn,
                notice: Notice::Admitted {
                    participants: self.admitted_views(i),
                },
            });
        }
        self.to_admitted(Some(i), out, |host| Notice::ParticipantJoined {
            participant: p.view(host),
        });
        self.lobby_to_doctors(out);
        Ok(())
    }

    fn deny(
        &mut self,
        conn: ConnId,
        target: ParticipantId,
        reason: Option<String>,
        now: DateTime<Utc>,
        out: &mut Vec<Output>,
    ) -> Result<(), Refusal> {
        let actor = self.authorize(&Actor::Conn(conn))?;
        let i = self.by_id(target).ok_or(Refusal::UnknownParticipant)?;
        if self.participants[i].admitted() {
            return Err(Refusal::NotWaiting);
        }
        let reason = reason
            .map(|r| {
                bedside_auth::sanitize_display_name(&r)
                    .chars()
                    .take(MAX_REASON_CHARS)
                    .collect::<String>()
            })
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "denied".to_owned());
        // The doctor's words go to the patient only, never to the audit trail.
        out.push(Output::Audit(
            self.participants[i]
                .audit(AuditKind::Denied, now)
                .actor(actor),
        ));
        out.push(self.participants[i].event(EventKind::ParticipantDenied, now));
        // Turned away means turned away: the link (and resume token) they came with is
        // refused from now on; a new link from the clinic lets them knock again.
        self.block(self.participants[i].identity.clone(), now, out);
        self.expel(i, reason.into(), LeaveReason::Removed, out);
        Ok(())
    }

    fn remove(
        &mut self,
        by: Actor,
        target: Target,
        now: DateTime<Utc>,
        out: &mut Vec<Output>,
    ) -> Result<(), Refusal> {
        let actor = self.authorize(&by)?;
        let found = match &target {
            Target::Id(id) => self.by_id(*id),
            Target::Identity(identity) => self
                .participants
                .iter()
                .position(|p| &p.identity == identity),
        };
        let i = match (found, target) {
            (Some(i), _) => i,
            // The clinic revokes a link that was never used, or leaked before its owner
            // came: nobody to take out, but the identity is blocked all the same.
            (None, Target::Identity(identity)) => {
                out.push(Output::Audit(AuditEvent {
                    identity: Some(identity.clone()),
                    ..AuditEvent::new(AuditKind::Removed, now).actor(actor)
                }));
                self.block(identity, now, out);
                return Ok(());
            }
            (None, Target::Id(_)) => return Err(Refusal::UnknownParticipant),
        };
        if let Actor::Conn(conn) = by
            && self.participants[i].conn == Some(conn)
        {
            return Err(Refusal::InvalidTarget);
        }
        out.push(Output::Audit(
            self.participants[i]
                .audit(AuditKind::Removed, now)
                .actor(actor),
        ));
        out.push(self.participants[i].left(LeftReason::Removed, now));
        self.block(self.participants[i].identity.clone(), now, out);
        self.expel(i, "removed".into(), LeaveReason::Removed, out);
        Ok(())
    }

    /// Tells a participant they are out (`denied`), closes them with 4003 and removes them.
    fn expel(&mut self, i: usize, reason: Arc<str>, why: LeaveReason, out: &mut Vec<Output>) {
        if let Some(conn) = self.participants[i].conn {
            out.push(Output::Send {
                to: conn,
                notice: Notice::Denied { reason },
            });
            out.push(Output::Close {
                conn,
                code: CloseCode::NotAllowed,
            });
        }
        self.remove_at(i, why, out);
    }

    /// Drops participant `i` and tells whoever could see them.
    fn remove_at(&mut self, i: usize, reason: LeaveReason, out: &mut Vec<Output>) {
        let p = self.participants.remove(i);
        self.save_quality(Some(p.id), None, out);
        out.push(Output::Persist(Change::ParticipantGone {
            participant_id: p.id,
        }));
        if p.admitted() {
            self.to_admitted(None, out, |_| Notice::ParticipantLeft {
                participant_id: p.id,
                reason,
            });
        } else {
            self.lobby_to_doctors(out);
        }
    }

    fn signal(
        &mut self,
        conn: ConnId,
        to: ParticipantId,
        data: Payload,
        out: &mut Vec<Output>,
    ) -> Result<(), Refusal> {
        let from = &self.participants[self.by_conn(conn).ok_or(Refusal::NotJoined)?];
        if !from.admitted() {
            return Err(Refusal::NotAdmitted);
        }
        // Waiting participants are invisible to everyone but doctors: same error as unknown.
        let target = self
            .participants
            .iter()
            .find(|p| p.id == to && p.admitted() && p.id != from.id)
            .ok_or(Refusal::UnknownParticipant)?;
        let target_conn = target.conn.ok_or(Refusal::ParticipantUnavailable)?;
        out.push(Output::Send {
            to: target_conn,
            notice: Notice::Signal {
                from: from.id,
                data,
            },
        });
        Ok(())
    }

    fn chat(
        &mut self,
        conn: ConnId,
        text: String,
        now: DateTime<Utc>,
        out: &mut Vec<Output>,
    ) -> Result<(), Refusal> {
        let from = &self.participants[self.by_conn(conn).ok_or(Refusal::NotJoined)?];
        if !from.admitted() {
            return Err(Refusal::NotAdmitted);
        }
        let text = text.trim();
        if text.is_empty() || text.chars().count() > MAX_CHAT_CHARS {
            return Err(Refusal::InvalidChat);
        }
        let text: Arc<str> = text.into();
        let from = from.id;
        // Echoed to the sender too, so everyone holds the same transcript.
        self.to_admitted(None, out, |_| Notice::Chat {
            from,
            text: text.clone(),
            at: now,
        });
        Ok(())
    }

    fn end(
        &mut self,
        reason: EndReason,
        actor: AuditActor,
        now: DateTime<Utc>,
        out: &mut Vec<Output>,
    ) {
        self.record.status = VisitStatus::Ended;
        self.record.ended_reason = Some(reason);
        self.record.ended_at = Some(now);
        for p in self.participants.drain(..) {
            out.push(p.left(LeftReason::VisitEnded, now));
            if let Some(conn) = p.conn {
                out.push(Output::Send {
                    to: conn,
                    notice: Notice::VisitEnded { reason },
                });
                out.push(Output::Close {
                    conn,
                    code: CloseCode::VisitGone,
                });
            }
        }
        self.save_quality(None, None, out);
        out.push(Output::Persist(Change::Status {
            status: VisitStatus::Ended,
            reason: Some(reason),
            at: now,
        }));
        out.push(Output::Audit(
            AuditEvent::new(AuditKind::Ended, now)
                .actor(actor)
                .detail(reason.as_str()),
        ));
        let duration = self
            .record
            .started_at
            .map_or(0, |started| (now - started).num_seconds().max(0));
        // Serializing plain data with string keys cannot fail.
        let quality = serde_json::to_value(self.quality()).unwrap_or_default();
        out.push(Output::Event(VisitEvent {
            reason: Some(reason.as_str()),
            duration_seconds: Some(duration),
            quality: Some(quality),
            ..VisitEvent::new(EventKind::VisitEnded, now)
        }));
    }

    fn tracker(&self, id: ParticipantId) -> Option<&Tracker> {
        self.quality
            .iter()
            .find(|q| q.participant_id == id)
            .map(|q| &q.tracker)
    }

    /// Participant `i`'s tracker, started on their first report.
    fn tracker_of(&mut self, i: usize) -> &mut Tracker {
        let p = &self.participants[i];
        let at = match self.quality.iter().position(|q| q.participant_id == p.id) {
            Some(at) => at,
            None => {
                self.quality.push(StoredQuality {
                    participant_id: p.id,
                    identity: p.identity.clone(),
                    role: p.role,
                    tracker: Tracker::new(),
                });
                self.quality.len() - 1
            }
        };
        &mut self.quality[at].tracker
    }

    /// Writes trackers with something unsaved: `only` one participant's, or everyone's;
    /// with `due_at`, only those due by then.
    fn save_quality(
        &mut self,
        only: Option<ParticipantId>,
        due_at: Option<DateTime<Utc>>,
        out: &mut Vec<Output>,
    ) {
        let now = due_at.or(self.record.ended_at);
        for q in &mut self.quality {
            let wanted = only.is_none_or(|id| id == q.participant_id);
            let due = match due_at {
                Some(at) => q.tracker.due(at),
                None => q.tracker.unsaved(),
            };
            if wanted && due {
                if let Some(now) = now {
                    q.tracker.saved(now);
                } else {
                    q.tracker
                        .saved(q.tracker.summary().last_sample_at.unwrap_or_default());
                }
                out.push(Output::Persist(Change::Quality(Box::new(q.clone()))));
            }
        }
    }

    fn stats(
        &mut self,
        conn: ConnId,
        report: &StatsReport,
        now: DateTime<Utc>,
        out: &mut Vec<Output>,
    ) -> Result<(), Refusal> {
        let i = self.by_conn(conn).ok_or(Refusal::NotJoined)?;
        if !self.participants[i].admitted() {
            return Err(Refusal::NotAdmitted);
        }
        let recorded = self
            .tracker_of(i)
            .record(report, now)
            .map_err(|TooSoon| Refusal::TooFrequent)?;
        if let Some(change) = recorded.change {
            let p = &mut self.participants[i];
            p.quality = Some(change);
            if let Some(own) = p.conn {
                out.push(Output::Send {
                    to: own,
                    notice: Notice::Quality {
                        quality: change.0,
                        reason: change.1,
                    },
                });
            }
            let p = &self.participants[i];
            self.to_admitted(Some(i), out, |host| Notice::ParticipantUpdated {
                participant: p.view(host),
            });
        }
        out.push(Output::Observed(Box::new(recorded.observation)));
        let id = self.participants[i].id;
        self.save_quality(Some(id), Some(now), out);
        Ok(())
    }

    fn precheck(
        &mut self,
        conn: ConnId,
        precheck: Precheck,
        now: DateTime<Utc>,
        out: &mut Vec<Output>,
    ) -> Result<(), Refusal> {
        let i = self.by_conn(conn).ok_or(Refusal::NotJoined)?;
        if self.participants[i].admitted() {
            return Err(Refusal::PrecheckNotWaiting);
        }
        let changed = self
            .tracker_of(i)
            .set_precheck(precheck, now)
            .map_err(|TooSoon| Refusal::TooFrequent)?;
        let id = self.participants[i].id;
        self.save_quality(Some(id), Some(now), out);
        if changed {
            self.lobby_to_doctors(out);
        }
        Ok(())
    }

    fn tick(&mut self, now: DateTime<Utc>, out: &mut Vec<Output>) {
        if self.record.status == VisitStatus::Ended {
            return;
        }
        if self.record.expires_at <= now {
            self.end(EndReason::Expired, AuditActor::Bedside, now, out);
            return;
        }
        if !self.warned && self.warn_at() <= now {
            self.warned = true;
            let expires_at = self.record.expires_at;
            for conn in self.participants.iter().filter_map(|p| p.conn) {
                out.push(Output::Send {
                    to: conn,
                    notice: Notice::VisitExpiring { expires_at },
                });
            }
        }
        while let Some(i) = self
            .participants
            .iter()
            .position(|p| p.dropped_at.is_some_and(|d| d + self.grace <= now))
        {
            out.push(Output::Audit(
                self.participants[i].audit(AuditKind::TimedOut, now),
            ));
            out.push(self.participants[i].left(LeftReason::Dropped, now));
            self.remove_at(i, LeaveReason::TimedOut, out);
        }
    }
}
