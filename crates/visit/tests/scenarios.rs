//! The waiting-room rules of docs/protocol.md ("Rules"), played against the visit state machine with
//! simulated time: no sockets, no sleeps.

use bedside_auth::{KeyId, Role, TenantId};
use bedside_visit::visit::MAX_CHAT_CHARS;
use bedside_visit::{
    Actor, AuditKind, Block, Change, CloseCode, ConnId, Credential, EndReason, Input, JoinRequest,
    LeaveReason, MediaState, Notice, Output, ParticipantId, ParticipantState, Payload, Refusal,
    StoredParticipant, Target, Visit, VisitId, VisitRecord, VisitStatus,
};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};

const GRACE: i64 = 30;

/// A fresh participant id: the visit core takes ids from its caller.
fn pid() -> ParticipantId {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0x5eed_0000_0000_0001);
    ParticipantId::from_bits(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A fresh connection number.
fn conn_id() -> ConnId {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    ConnId::from_raw(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The clinic's backend, calling with API key `key`.
fn api(key: &str) -> Actor {
    Actor::Api(KeyId::new(key).unwrap())
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, 0).unwrap()
}

fn record(max: u8) -> VisitRecord {
    VisitRecord {
        id: VisitId::from_uuid(uuid::Uuid::new_v4()),
        tenant: TenantId::new("clinic-a").unwrap(),
        external_ref: None,
        status: VisitStatus::Open,
        ended_reason: None,
        created_at: t0(),
        not_before: None,
        expires_at: t0() + TimeDelta::hours(2),
        started_at: None,
        ended_at: None,
        max_participants: max,
        metadata: None,
        provider: None,
        consent: None,
    }
}

struct Sim {
    visit: Visit,
    now: DateTime<Utc>,
}

/// Someone in the simulation: their current connection and participant id.
#[derive(Clone, Copy)]
struct Who {
    conn: ConnId,
    id: ParticipantId,
}

impl Sim {
    fn new() -> Self {
        Self::with(record(4))
    }

    fn with(record: VisitRecord) -> Self {
        Self {
            visit: Visit::new(record, TimeDelta::seconds(GRACE)),
            now: t0(),
        }
    }

    fn step(&mut self, input: Input) -> (Result<(), Refusal>, Vec<Output>) {
        let mut out = Vec::new();
        let r = self.visit.handle(input, self.now, &mut out);
        (r, out)
    }

    fn ok(&mut self, input: Input) -> Vec<Output> {
        let (r, out) = self.step(input);
        r.expect("input accepted");
        out
    }

    fn err(&mut self, input: Input) -> (Refusal, Vec<Output>) {
        let (r, out) = self.step(input);
        (r.expect_err("input refused"), out)
    }

    fn join_as(&mut self, identity: &str, role: Role) -> (Who, Vec<Output>) {
        let conn = conn_id();
        let out = self.ok(Input::Join(self.request(conn, identity, role)));
        let id = match notices(&out, conn).first() {
            Some(Notice::Joined { participant_id, .. }) => *participant_id,
            other => panic!("expected joined first, got {other:?}"),
        };
        (Who { conn, id }, out)
    }

    /// A join with a link minted now.
    fn request(&self, conn: ConnId, identity: &str, role: Role) -> JoinRequest {
        self.request_with(
            conn,
            identity,
            role,
            Credential::token("jti", self.now.timestamp()),
        )
    }

    fn request_with(
        &self,
        conn: ConnId,
        identity: &str,
        role: Role,
        credential: Credential,
    ) -> JoinRequest {
        JoinRequest {
            conn,
            identity: identity.into(),
            role,
            name: format!("{identity} name"),
            new_id: pid(),
            credential,
        }
    }

    fn join(&mut self, identity: &str, role: Role) -> Who {
        self.join_as(identity, role).0
    }

    fn admit(&mut self, doctor: Who, patient: Who) -> Vec<Output> {
        self.ok(Input::Admit {
            conn: doctor.conn,
            target: patient.id,
        })
    }

    fn advance(&mut self, secs: i64) {
        self.now += TimeDelta::seconds(secs);
    }
}

fn notices(out: &[Output], conn: ConnId) -> Vec<&Notice> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { to, notice } if *to == conn => Some(notice),
            _ => None,
        })
        .collect()
}

fn closes(out: &[Output]) -> Vec<(ConnId, CloseCode)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Close { conn, code, .. } => Some((*conn, *code)),
            _ => None,
        })
        .collect()
}

fn audits(out: &[Output]) -> Vec<AuditKind> {
    out.iter()
        .filter_map(|o| match o {
            Output::Audit(e) => Some(e.kind),
            _ => None,
        })
        .collect()
}

fn kinds(notices: &[&Notice]) -> Vec<&'static str> {
    notices
        .iter()
        .map(|n| match n {
            Notice::Joined { .. } => "joined",
            Notice::Waiting(_) => "waiting",
            Notice::ConsentRequired { .. } => "consent_required",
            Notice::ProviderMessage { .. } => "provider_message",
            Notice::Lobby { .. } => "lobby",
            Notice::Admitted { .. } => "admitted",
            Notice::ParticipantJoined { .. } => "participant_joined",
            Notice::ParticipantLeft { .. } => "participant_left",
            Notice::ParticipantUpdated { .. } => "participant_updated",
            Notice::Signal { .. } => "signal",
            Notice::Chat { .. } => "chat",
            Notice::Denied { .. } => "denied",
            Notice::VisitExpiring { .. } => "visit_expiring",
            Notice::VisitEnded { .. } => "visit_ended",
            Notice::Quality { .. } => "quality",
            Notice::InviteLink(_) => "invite_link",
        })
        .collect()
}

fn lobby_ids(n: &Notice) -> Vec<ParticipantId> {
    match n {
        Notice::Lobby { waiting } => waiting.iter().map(|w| w.participant_id).collect(),
        other => panic!("expected lobby, got {other:?}"),
    }
}

fn raw(s: &str) -> Payload {
    Payload::new(s.to_owned())
}

#[test]
fn a_doctor_is_admitted_on_join_and_sees_the_lobby() {
    let mut sim = Sim::new();
    let (doc, out) = sim.join_as("dr-1", Role::Doctor);
    assert_eq!(
        kinds(&notices(&out, doc.conn)),
        ["joined", "admitted", "lobby"]
    );
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Persist(Change::Status {
            status: VisitStatus::Active,
            ..
        })
    )));
    assert_eq!(audits(&out), [AuditKind::Joined]);
    assert_eq!(sim.visit.record().status, VisitStatus::Active);
}

#[test]
fn patients_and_guests_wait_and_the_doctor_sees_them() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    for (identity, role) in [("pt-1", Role::Patient), ("guest-1", Role::Guest)] {
        let (who, out) = sim.join_as(identity, role);
        assert_eq!(kinds(&notices(&out, who.conn)), ["joined", "waiting"]);
        let to_doctor = notices(&out, doc.conn);
        assert_eq!(kinds(&to_doctor), ["lobby"]);
        assert!(lobby_ids(to_doctor[0]).contains(&who.id));
    }
}

#[test]
fn a_doctor_arriving_admits_nobody() {
    let mut sim = Sim::new();
    let pt = sim.join("pt-1", Role::Patient);
    let (doc, out) = sim.join_as("dr-1", Role::Doctor);
    assert!(
        notices(&out, pt.conn).is_empty(),
        "the patient hears nothing"
    );
    let to_doctor = notices(&out, doc.conn);
    assert_eq!(kinds(&to_doctor), ["joined", "admitted", "lobby"]);
    assert_eq!(lobby_ids(to_doctor[2]), [pt.id]);
    match to_doctor[1] {
        Notice::Admitted { participants } => assert!(participants.is_empty()),
        _ => unreachable!(),
    }
}

#[test]
fn the_doctor_admits_one_patient_at_a_time() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let a = sim.join("pt-a", Role::Patient);
    let b = sim.join("pt-b", Role::Guest);

    let out = sim.admit(doc, a);
    match notices(&out, a.conn).as_slice() {
        [Notice::Admitted { participants }] => {
            assert_eq!(
                participants
                    .iter()
                    .map(|p| p.participant_id)
                    .collect::<Vec<_>>(),
                [doc.id]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        kinds(&notices(&out, doc.conn)),
        ["participant_joined", "lobby"]
    );
    assert_eq!(
        lobby_ids(notices(&out, doc.conn)[1]),
        [b.id],
        "b still waits"
    );
    assert!(notices(&out, b.conn).is_empty());
    assert_eq!(audits(&out), [AuditKind::Admitted]);

    // Admitting again is refused; b is admitted separately and a hears of it.
    assert_eq!(
        sim.err(Input::Admit {
            conn: doc.conn,
            target: a.id
        })
        .0,
        Refusal::NotWaiting
    );
    let out = sim.admit(doc, b);
    assert_eq!(kinds(&notices(&out, a.conn)), ["participant_joined"]);
}

#[test]
fn only_doctors_admit_deny_remove_or_end() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let a = sim.join("pt-a", Role::Patient);
    let b = sim.join("pt-b", Role::Patient);
    sim.admit(doc, a);
    for input in [
        Input::Admit {
            conn: a.conn,
            target: b.id,
        },
        Input::Deny {
            conn: a.conn,
            target: b.id,
            reason: None,
        },
        Input::Remove {
            by: Actor::Conn(a.conn),
            target: Target::Id(b.id),
        },
        Input::End {
            by: Actor::Conn(a.conn),
        },
    ] {
        let (e, out) = sim.err(input);
        assert_eq!(e, Refusal::Forbidden);
        assert!(out.is_empty());
    }
    assert_eq!(
        sim.err(Input::Admit {
            conn: b.conn,
            target: b.id
        })
        .0,
        Refusal::Forbidden
    );
}

#[test]
fn deny_closes_the_patient_and_keeps_the_reason_out_of_the_audit() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let pt = sim.join("pt-1", Role::Patient);
    let out = sim.ok(Input::Deny {
        conn: doc.conn,
        target: pt.id,
        reason: Some("Please call\nthe front desk".into()),
    });
    match notices(&out, pt.conn).as_slice() {
        [Notice::Denied { reason }] => assert_eq!(&**reason, "Please call the front desk"),
        other => panic!("{other:?}"),
    }
    assert_eq!(closes(&out), [(pt.conn, CloseCode::NotAllowed)]);
    assert!(lobby_ids(notices(&out, doc.conn)[0]).is_empty());
    assert!(out.iter().any(|o| matches!(o, Output::Persist(Change::ParticipantGone { participant_id }) if *participant_id == pt.id)));
    for o in &out {
        if let Output::Audit(e) = o {
            assert_eq!(e.kind, AuditKind::Denied);
            assert_eq!(
                e.actor.as_ref().map(ToString::to_string).as_deref(),
                Some(doc.id.to_string().as_str())
            );
            assert!(e.detail.is_none());
        }
    }
}

#[test]
fn a_denied_patient_who_returns_waits_again() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let pt = sim.join("pt-1", Role::Patient);
    let out = sim.ok(Input::Deny {
        conn: doc.conn,
        target: pt.id,
        reason: None,
    });
    assert!(blocked(&out, "pt-1"), "a denial blocks: {out:?}");
    // The link they came with is refused, now and later...
    sim.advance(600);
    let old = Credential::token("jti", t0().timestamp());
    let req = sim.request_with(conn_id(), "pt-1", Role::Patient, old);
    assert_eq!(sim.err(Input::Join(req)).0, Refusal::AccessRevoked);
    // ...and a link the clinic mints afterwards knocks again, as someone new.
    let (again, out) = sim.join_as("pt-1", Role::Patient);
    assert_eq!(kinds(&notices(&out, again.conn)), ["joined", "waiting"]);
    assert_ne!(again.id, pt.id, "a new participant");
}

/// Whether `out` stores a block of `identity`.
fn blocked(out: &[Output], identity: &str) -> bool {
    out.iter()
        .any(|o| matches!(o, Output::Persist(Change::Blocked { identity: i, .. }) if i == identity))
}

#[test]
fn removal_by_doctor_or_api_closes_and_tells_the_others() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let a = sim.join("pt-a", Role::Patient);
    let b = sim.join("pt-b", Role::Guest);
    sim.admit(doc, a);
    sim.admit(doc, b);

    let out = sim.ok(Input::Remove {
        by: Actor::Conn(doc.conn),
        target: Target::Id(a.id),
    });
    assert_eq!(kinds(&notices(&out, a.conn)), ["denied"]);
    assert_eq!(closes(&out), [(a.conn, CloseCode::NotAllowed)]);
    for other in [doc, b] {
        match notices(&out, other.conn).as_slice() {
            [
                Notice::ParticipantLeft {
                    participant_id,
                    reason,
                },
            ] => {
                assert_eq!((*participant_id, *reason), (a.id, LeaveReason::Removed));
            }
            n => panic!("{n:?}"),
        }
    }

    let out = sim.ok(Input::Remove {
        by: api("clinic-a"),
        target: Target::Identity("pt-b".into()),
    });
    assert_eq!(closes(&out), [(b.conn, CloseCode::NotAllowed)]);
    assert!(out.iter().any(|o| matches!(o, Output::Audit(e) if e.kind == AuditKind::Removed && e.actor.as_ref().map(ToString::to_string).as_deref() == Some("api:clinic-a"))));

    // Removed participants come back, with a new link, through the waiting room.
    sim.advance(1);
    let (back, out) = sim.join_as("pt-a", Role::Patient);
    assert_eq!(kinds(&notices(&out, back.conn)), ["joined", "waiting"]);

    assert_eq!(
        sim.err(Input::Remove {
            by: Actor::Conn(doc.conn),
            target: Target::Id(pid())
        })
        .0,
        Refusal::UnknownParticipant
    );
    assert_eq!(
        sim.err(Input::Remove {
            by: Actor::Conn(doc.conn),
            target: Target::Id(doc.id)
        })
        .0,
        Refusal::InvalidTarget
    );
}

#[test]
fn coming_back_within_the_grace_period_keeps_the_admission() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let pt = sim.join("pt-1", Role::Patient);
    sim.admit(doc, pt);

    let out = sim.ok(Input::Disconnected { conn: pt.conn });
    match notices(&out, doc.conn).as_slice() {
        [Notice::ParticipantUpdated { participant }] => assert!(!participant.connected),
        n => panic!("{n:?}"),
    }
    assert_eq!(
        sim.visit.next_deadline(),
        Some(sim.now + TimeDelta::seconds(GRACE))
    );

    sim.advance(GRACE - 1);
    sim.ok(Input::Tick);
    let (back, out) = sim.join_as("pt-1", Role::Patient);
    assert_eq!(back.id, pt.id, "same participant");
    assert_eq!(kinds(&notices(&out, back.conn)), ["joined", "admitted"]);
    match notices(&out, doc.conn).as_slice() {
        [Notice::ParticipantUpdated { participant }] => assert!(participant.connected),
        n => panic!("{n:?}"),
    }
    assert_eq!(audits(&out), [AuditKind::Rejoined]);
}

#[test]
fn coming_back_after_the_grace_period_means_waiting_again() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let pt = sim.join("pt-1", Role::Patient);
    sim.admit(doc, pt);
    sim.ok(Input::Disconnected { conn: pt.conn });
    sim.advance(GRACE);
    let out = sim.ok(Input::Tick);
    match notices(&out, doc.conn).as_slice() {
        [
            Notice::ParticipantLeft {
                participant_id,
                reason,
            },
        ] => {
            assert_eq!((*participant_id, *reason), (pt.id, LeaveReason::TimedOut));
        }
        n => panic!("{n:?}"),
    }
    assert_eq!(audits(&out), [AuditKind::TimedOut]);
    let (back, out) = sim.join_as("pt-1", Role::Patient);
    assert_eq!(kinds(&notices(&out, back.conn)), ["joined", "waiting"]);
}

#[test]
fn a_waiting_patient_who_drops_stays_listed_until_the_grace_period_ends() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let pt = sim.join("pt-1", Role::Patient);
    let out = sim.ok(Input::Disconnected { conn: pt.conn });
    match notices(&out, doc.conn).as_slice() {
        [Notice::Lobby { waiting }] => assert!(!waiting[0].connected),
        n => panic!("{n:?}"),
    }
    sim.advance(GRACE + 1);
    let out = sim.ok(Input::Tick);
    assert!(lobby_ids(notices(&out, doc.conn)[0]).is_empty());
}

#[test]
fn a_second_connection_replaces_the_first() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let pt = sim.join("pt-1", Role::Patient);
    sim.admit(doc, pt);
    let (tab2, out) = sim.join_as("pt-1", Role::Patient);
    assert_eq!(tab2.id, pt.id);
    assert_eq!(closes(&out), [(pt.conn, CloseCode::Replaced)]);
    assert_eq!(kinds(&notices(&out, tab2.conn)), ["joined", "admitted"]);
    assert_eq!(audits(&out), [AuditKind::Replaced]);
    // The old socket's goodbye changes nothing.
    let out = sim.ok(Input::Disconnected { conn: pt.conn });
    assert!(out.is_empty());
    assert_eq!(
        sim.err(Input::Chat {
            conn: pt.conn,
            text: "hi".into()
        })
        .0,
        Refusal::NotJoined
    );
}

#[test]
fn a_changed_role_re_enters_the_visit() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let pt = sim.join("person-1", Role::Patient);
    let (as_guest, out) = sim.join_as("person-1", Role::Guest);
    assert_eq!(closes(&out), [(pt.conn, CloseCode::Replaced)]);
    assert_eq!(kinds(&notices(&out, as_guest.conn)), ["joined", "waiting"]);
    assert_eq!(
        lobby_ids(notices(&out, doc.conn).last().unwrap()),
        [as_guest.id]
    );
}

#[test]
fn the_participant_cap_holds_but_returning_participants_fit() {
    let mut sim = Sim::with(record(2));
    let doc = sim.join("dr-1", Role::Doctor);
    let pt = sim.join("pt-1", Role::Patient);
    let conn = conn_id();
    let req = JoinRequest {
        conn,
        identity: "guest-1".into(),
        role: Role::Guest,
        name: String::new(),
        new_id: pid(),
        credential: Credential::token("jti", t0().timestamp()),
    };
    let (e, out) = sim.err(Input::Join(req));
    assert_eq!(e, Refusal::VisitFull);
    assert!(notices(&out, doc.conn).is_empty());
    assert_eq!(e.join_close_code(), CloseCode::NotAllowed);
    // Reconnecting identities are not new participants.
    sim.ok(Input::Disconnected { conn: pt.conn });
    sim.join("pt-1", Role::Patient);
}

#[test]
fn ending_closes_everyone_and_refuses_later_joins() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let a = sim.join("pt-a", Role::Patient);
    let b = sim.join("pt-b", Role::Patient);
    sim.admit(doc, a);
    let out = sim.ok(Input::End {
        by: Actor::Conn(doc.conn),
    });
    for who in [doc, a, b] {
        match notices(&out, who.conn).as_slice() {
            [Notice::VisitEnded { reason }] => assert_eq!(*reason, EndReason::EndedByDoctor),
            n => panic!("{n:?}"),
        }
    }
    let mut closed = closes(&out);
    closed.sort();
    let mut expected = vec![
        (doc.conn, CloseCode::VisitGone),
        (a.conn, CloseCode::VisitGone),
        (b.conn, CloseCode::VisitGone),
    ];
    expected.sort();
    assert_eq!(closed, expected);
    assert!(sim.visit.is_vacant());
    assert_eq!(
        sim.visit.record().ended_reason,
        Some(EndReason::EndedByDoctor)
    );
    assert!(sim.visit.next_deadline().is_none());

    let req = JoinRequest {
        conn: conn_id(),
        identity: "pt-a".into(),
        role: Role::Patient,
        name: String::new(),
        new_id: pid(),
        credential: Credential::token("jti", t0().timestamp()),
    };
    assert_eq!(sim.err(Input::Join(req)).0, Refusal::VisitEnded);
    assert_eq!(
        sim.err(Input::End {
            by: api("clinic-a")
        })
        .0,
        Refusal::VisitEnded
    );
}

#[test]
fn ending_by_api_is_recorded_as_such() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let out = sim.ok(Input::End {
        by: api("clinic-a"),
    });
    assert!(matches!(
        notices(&out, doc.conn)[0],
        Notice::VisitEnded {
            reason: EndReason::EndedByApi
        }
    ));
    assert!(out.iter().any(|o| matches!(o, Output::Audit(e) if e.kind == AuditKind::Ended && e.actor.as_ref().map(ToString::to_string).as_deref() == Some("api:clinic-a"))));
}

#[test]
fn nothing_is_relayed_to_or_from_a_waiting_participant() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let pt = sim.join("pt-1", Role::Patient);
    let data = || raw(r#"{"sdp":"v=0"}"#);

    let (e, out) = sim.err(Input::Signal {
        conn: pt.conn,
        to: doc.id,
        data: data(),
    });
    assert_eq!(e, Refusal::NotAdmitted);
    assert!(out.is_empty());
    // To the doctor, a waiting patient is not someone to signal.
    assert_eq!(
        sim.err(Input::Signal {
            conn: doc.conn,
            to: pt.id,
            data: data()
        })
        .0,
        Refusal::UnknownParticipant
    );
    assert_eq!(
        sim.err(Input::Chat {
            conn: pt.conn,
            text: "hello?".into()
        })
        .0,
        Refusal::NotAdmitted
    );
    let out = sim.ok(Input::Chat {
        conn: doc.conn,
        text: "one moment".into(),
    });
    assert!(notices(&out, pt.conn).is_empty());
    let out = sim.ok(Input::Media {
        conn: pt.conn,
        media: MediaState {
            audio: true,
            video: false,
            screen: false,
        },
    });
    assert!(out.is_empty());
}

#[test]
fn signals_go_to_the_named_admitted_peer_byte_for_byte() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let pt = sim.join("pt-1", Role::Patient);
    let guest = sim.join("guest-1", Role::Guest);
    sim.admit(doc, pt);
    sim.admit(doc, guest);
    let payload =
        r#"{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n","x":[1, 2.50,"é"]}"#;
    let out = sim.ok(Input::Signal {
        conn: doc.conn,
        to: pt.id,
        data: raw(payload),
    });
    assert_eq!(out.len(), 1);
    match notices(&out, pt.conn).as_slice() {
        [Notice::Signal { from, data }] => {
            assert_eq!(*from, doc.id);
            assert_eq!(data.get(), payload);
        }
        n => panic!("{n:?}"),
    }
    assert_eq!(
        sim.err(Input::Signal {
            conn: doc.conn,
            to: doc.id,
            data: raw("{}")
        })
        .0,
        Refusal::UnknownParticipant
    );
    assert_eq!(
        sim.err(Input::Signal {
            conn: doc.conn,
            to: pid(),
            data: raw("{}")
        })
        .0,
        Refusal::UnknownParticipant
    );
    sim.ok(Input::Disconnected { conn: pt.conn });
    assert_eq!(
        sim.err(Input::Signal {
            conn: doc.conn,
            to: pt.id,
            data: raw("{}")
        })
        .0,
        Refusal::ParticipantUnavailable
    );
}

#[test]
fn chat_reaches_every_admitted_participant_including_the_sender() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let pt = sim.join("pt-1", Role::Patient);
    sim.admit(doc, pt);
    let out = sim.ok(Input::Chat {
        conn: pt.conn,
        text: "  can you hear me?  ".into(),
    });
    for who in [doc, pt] {
        match notices(&out, who.conn).as_slice() {
            [Notice::Chat { from, text, at }] => {
                assert_eq!((*from, &**text, *at), (pt.id, "can you hear me?", sim.now));
            }
            n => panic!("{n:?}"),
        }
    }
    assert!(
        audits(&out).is_empty(),
        "chat content never reaches the audit trail"
    );
    for text in [String::new(), "   ".into(), "x".repeat(MAX_CHAT_CHARS + 1)] {
        assert_eq!(
            sim.err(Input::Chat {
                conn: pt.conn,
                text
            })
            .0,
            Refusal::InvalidChat
        );
    }
}

#[test]
fn media_state_is_shown_to_the_others() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let pt = sim.join("pt-1", Role::Patient);
    sim.admit(doc, pt);
    let muted = MediaState {
        audio: false,
        video: true,
        screen: false,
    };
    let out = sim.ok(Input::Media {
        conn: pt.conn,
        media: muted,
    });
    match notices(&out, doc.conn).as_slice() {
        [Notice::ParticipantUpdated { participant }] => assert_eq!(participant.media, muted),
        n => panic!("{n:?}"),
    }
    assert!(notices(&out, pt.conn).is_empty());
}

#[test]
fn leaving_is_final_and_told_to_the_others() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let pt = sim.join("pt-1", Role::Patient);
    sim.admit(doc, pt);
    let out = sim.ok(Input::Leave { conn: pt.conn });
    assert_eq!(closes(&out), [(pt.conn, CloseCode::Normal)]);
    assert!(matches!(
        notices(&out, doc.conn)[0],
        Notice::ParticipantLeft {
            reason: LeaveReason::Left,
            ..
        }
    ));
    let (back, out) = sim.join_as("pt-1", Role::Patient);
    assert_eq!(kinds(&notices(&out, back.conn)), ["joined", "waiting"]);
}

#[test]
fn a_visit_expires_on_time_and_refuses_joins_afterwards() {
    let mut r = record(4);
    r.expires_at = t0() + TimeDelta::minutes(30);
    let mut sim = Sim::with(r);
    let doc = sim.join("dr-1", Role::Doctor);
    sim.advance(29 * 60);
    assert_eq!(
        kinds(&notices(&sim.ok(Input::Tick), doc.conn)),
        ["visit_expiring"]
    );
    assert_eq!(
        sim.visit.next_deadline(),
        Some(t0() + TimeDelta::minutes(30))
    );
    sim.advance(60);
    let out = sim.ok(Input::Tick);
    assert!(matches!(
        notices(&out, doc.conn)[0],
        Notice::VisitEnded {
            reason: EndReason::Expired
        }
    ));
    assert_eq!(closes(&out), [(doc.conn, CloseCode::VisitGone)]);
    let req = JoinRequest {
        conn: conn_id(),
        identity: "pt".into(),
        role: Role::Patient,
        name: String::new(),
        new_id: pid(),
        credential: Credential::token("jti", t0().timestamp()),
    };
    assert_eq!(sim.err(Input::Join(req)).0, Refusal::VisitEnded);
}

#[test]
fn a_join_after_expiry_ends_the_visit_even_without_a_tick() {
    let mut r = record(4);
    r.expires_at = t0() + TimeDelta::minutes(1);
    let mut sim = Sim::with(r);
    sim.advance(61);
    let req = JoinRequest {
        conn: conn_id(),
        identity: "pt".into(),
        role: Role::Patient,
        name: String::new(),
        new_id: pid(),
        credential: Credential::token("jti", t0().timestamp()),
    };
    let (e, out) = sim.err(Input::Join(req));
    assert_eq!(e, Refusal::VisitEnded);
    assert_eq!(e.join_close_code(), CloseCode::VisitGone);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Persist(Change::Status {
            reason: Some(EndReason::Expired),
            ..
        })
    )));
}

#[test]
fn joins_before_not_before_are_refused() {
    let mut r = record(4);
    r.not_before = Some(t0() + TimeDelta::minutes(10));
    let mut sim = Sim::with(r);
    let req = JoinRequest {
        conn: conn_id(),
        identity: "pt".into(),
        role: Role::Patient,
        name: String::new(),
        new_id: pid(),
        credential: Credential::token("jti", t0().timestamp()),
    };
    assert_eq!(sim.err(Input::Join(req)).0, Refusal::NotStarted);
    sim.advance(600);
    sim.join("pt", Role::Patient);
}

#[test]
fn after_a_restart_admissions_hold_for_one_grace_period() {
    let boot = t0() + TimeDelta::minutes(5);
    let mut r = record(4);
    r.status = VisitStatus::Active;
    let stored = |identity: &str, role, state| StoredParticipant {
        participant_id: pid(),
        identity: identity.into(),
        role,
        name: "n".into(),
        state,
        since: t0(),
        dropped_at: None,
        consent: None,
    };
    let pt = stored("pt-1", Role::Patient, ParticipantState::Admitted);
    let waiting = stored("pt-2", Role::Patient, ParticipantState::Waiting);
    let mut sim = Sim {
        visit: Visit::restore(
            r,
            vec![pt.clone(), waiting],
            boot,
            TimeDelta::seconds(GRACE),
        ),
        now: boot,
    };
    assert_eq!(
        sim.visit.next_deadline(),
        Some(boot + TimeDelta::seconds(GRACE))
    );

    sim.advance(10);
    let (back, out) = sim.join_as("pt-1", Role::Patient);
    assert_eq!(back.id, pt.participant_id);
    assert_eq!(kinds(&notices(&out, back.conn)), ["joined", "admitted"]);

    sim.advance(GRACE);
    sim.ok(Input::Tick);
    let (late, out) = sim.join_as("pt-2", Role::Patient);
    assert_eq!(kinds(&notices(&out, late.conn)), ["joined", "waiting"]);
}

#[test]
fn a_visit_first_touched_after_the_grace_period_readmits_no_one() {
    let boot = t0() + TimeDelta::minutes(5);
    let mut r = record(4);
    r.status = VisitStatus::Active;
    let pt = StoredParticipant {
        participant_id: pid(),
        identity: "pt-1".into(),
        role: Role::Patient,
        name: "n".into(),
        state: ParticipantState::Admitted,
        since: t0(),
        dropped_at: None,
        consent: None,
    };
    let mut sim = Sim {
        visit: Visit::restore(r, vec![pt], boot, TimeDelta::seconds(GRACE)),
        now: boot,
    };
    // No tick in between: the registry loads a visit only when someone joins it.
    sim.advance(GRACE + 2);
    let (back, out) = sim.join_as("pt-1", Role::Patient);
    assert_eq!(kinds(&notices(&out, back.conn)), ["joined", "waiting"]);
    assert!(
        events(&out).contains(&("participant.left", Some("dropped"))),
        "the lapsed admission is reported as a drop: {:?}",
        events(&out)
    );
}

#[test]
fn the_lobby_shows_name_role_and_time_waited_to_every_doctor() {
    let mut sim = Sim::new();
    let d1 = sim.join("dr-1", Role::Doctor);
    let d2 = sim.join("dr-2", Role::Doctor);
    sim.advance(42);
    let (pt, out) = sim.join_as("pt-1", Role::Patient);
    for doc in [d1, d2] {
        match notices(&out, doc.conn).as_slice() {
            [Notice::Lobby { waiting }] => {
                assert_eq!(waiting.len(), 1);
                assert_eq!(waiting[0].participant_id, pt.id);
                assert_eq!(waiting[0].name, "pt-1 name");
                assert_eq!(waiting[0].role, Role::Patient);
                assert_eq!(waiting[0].since, t0() + TimeDelta::seconds(42));
            }
            n => panic!("{n:?}"),
        }
    }
}

#[test]
fn everyone_is_warned_before_the_visit_expires() {
    let mut r = record(4);
    r.expires_at = t0() + TimeDelta::minutes(30);
    let mut sim = Sim::with(r);
    let doc = sim.join("dr-1", Role::Doctor);
    let pt = sim.join("pt-1", Role::Patient);
    assert_eq!(
        sim.visit.next_deadline(),
        Some(t0() + TimeDelta::minutes(25)),
        "the warning is due first"
    );
    sim.advance(25 * 60 - 1);
    assert!(sim.ok(Input::Tick).is_empty());
    sim.advance(1);
    let out = sim.ok(Input::Tick);
    for who in [doc, pt] {
        match notices(&out, who.conn).as_slice() {
            [Notice::VisitExpiring { expires_at }] => {
                assert_eq!(*expires_at, t0() + TimeDelta::minutes(30))
            }
            n => panic!("{n:?}"),
        }
    }
    assert!(sim.ok(Input::Tick).is_empty(), "warned once");
    assert_eq!(
        sim.visit.next_deadline(),
        Some(t0() + TimeDelta::minutes(30))
    );
    // Someone arriving after the warning hears it too.
    let (late, out) = sim.join_as("guest-1", Role::Guest);
    assert_eq!(
        kinds(&notices(&out, late.conn)),
        ["joined", "waiting", "visit_expiring"]
    );
    sim.advance(5 * 60);
    let out = sim.ok(Input::Tick);
    assert!(matches!(
        notices(&out, pt.conn)[0],
        Notice::VisitEnded {
            reason: EndReason::Expired
        }
    ));
}

fn events(out: &[Output]) -> Vec<(&'static str, Option<&'static str>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some((e.kind.as_str(), e.reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_clinics_systems_hear_every_step_of_a_visit() {
    let mut sim = Sim::new();
    let (doc, out) = sim.join_as("dr-1", Role::Doctor);
    assert_eq!(events(&out), [("participant.joined", None)]);
    let (pt, out) = sim.join_as("pt-1", Role::Patient);
    assert_eq!(events(&out), [("participant.waiting", None)]);
    let (guest, _) = sim.join_as("guest-1", Role::Guest);
    sim.advance(60);
    let out = sim.admit(doc, pt);
    assert_eq!(
        events(&out),
        [
            ("participant.admitted", None),
            ("participant.joined", None),
            ("visit.started", None)
        ]
    );
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Persist(Change::Started { .. })))
    );
    let out = sim.ok(Input::Deny {
        conn: doc.conn,
        target: guest.id,
        reason: None,
    });
    assert_eq!(events(&out), [("participant.denied", None)]);

    // A drop that outlasts the grace period is a departure; a return within it is not.
    sim.ok(Input::Disconnected { conn: pt.conn });
    sim.advance(GRACE - 1);
    let (back, out) = sim.join_as("pt-1", Role::Patient);
    assert!(events(&out).is_empty(), "a reconnection is not a new join");
    sim.ok(Input::Disconnected { conn: back.conn });
    sim.advance(GRACE);
    assert_eq!(
        events(&sim.ok(Input::Tick)),
        [("participant.left", Some("dropped"))]
    );

    sim.advance(600);
    let out = sim.ok(Input::End {
        by: Actor::Conn(doc.conn),
    });
    assert_eq!(
        events(&out),
        [
            ("participant.left", Some("visit_ended")),
            ("visit.ended", Some("ended_by_doctor"))
        ]
    );
    let ended = out.iter().find_map(|o| match o {
        Output::Event(e) if e.kind.as_str() == "visit.ended" => e.duration_seconds,
        _ => None,
    });
    assert_eq!(
        ended,
        Some(GRACE - 1 + GRACE + 600),
        "from visit.started to the end"
    );
}

#[test]
fn a_visit_without_a_doctor_and_a_patient_together_never_starts() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let guest = sim.join("interpreter", Role::Guest);
    let out = sim.admit(doc, guest);
    assert!(!events(&out).contains(&("visit.started", None)));
    let out = sim.ok(Input::Leave { conn: guest.conn });
    assert_eq!(events(&out), [("participant.left", Some("left"))]);
    let out = sim.ok(Input::End {
        by: api("clinic-a"),
    });
    let duration = out.iter().find_map(|o| match o {
        Output::Event(e) => e.duration_seconds,
        _ => None,
    });
    assert_eq!(duration, Some(0));
}

// Access the clinic can take back (crates/visit/src/access.rs).

/// A resume token for `who`'s place, issued now.
fn resume(sim: &Sim, who: Who) -> Credential {
    Credential::resume(who.id, sim.now.timestamp())
}

#[test]
fn a_removal_refuses_every_credential_issued_until_then_and_nothing_after() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let pt = sim.join("pt-1", Role::Patient);
    sim.admit(doc, pt);
    let link = Credential::token("link-1", sim.now.timestamp());
    let their_resume = resume(&sim, pt);
    sim.advance(5);
    let out = sim.ok(Input::Remove {
        by: Actor::Conn(doc.conn),
        target: Target::Id(pt.id),
    });
    assert!(blocked(&out, "pt-1"));
    assert_eq!(sim.visit.blocked_at("pt-1"), Some(sim.now));
    // The link, the resume token, and a link minted in the block's very second: refused.
    sim.advance(3600);
    let same_second = Credential::token("link-2", (sim.now - TimeDelta::seconds(3600)).timestamp());
    for credential in [link.clone(), their_resume, same_second] {
        let req = sim.request_with(conn_id(), "pt-1", Role::Patient, credential);
        let (e, out) = sim.err(Input::Join(req));
        assert_eq!(e, Refusal::AccessRevoked);
        assert_eq!(
            (e.code(), e.join_close_code()),
            ("access_revoked", CloseCode::NotAllowed)
        );
        assert!(audits(&out).is_empty(), "a refused join is not a join");
    }
    // A link issued after the block knocks again; the old one stays refused.
    let (back, out) = sim.join_as("pt-1", Role::Patient);
    assert_eq!(kinds(&notices(&out, back.conn)), ["joined", "waiting"]);
    sim.ok(Input::Leave { conn: back.conn });
    let req = sim.request_with(conn_id(), "pt-1", Role::Patient, link);
    assert_eq!(sim.err(Input::Join(req)).0, Refusal::AccessRevoked);
}

#[test]
fn the_clinic_blocks_a_link_nobody_used_and_an_identity_never_seen() {
    let mut sim = Sim::new();
    let leaked = Credential::token("leaked", sim.now.timestamp());
    sim.advance(1);
    let out = sim.ok(Input::Remove {
        by: api("clinic-a"),
        target: Target::Identity("pt-9".into()),
    });
    assert!(blocked(&out, "pt-9"));
    let audit = out.iter().find_map(|o| match o {
        Output::Audit(e) => Some(e),
        _ => None,
    });
    let audit = audit.expect("the removal is in the audit trail");
    assert_eq!(audit.kind, AuditKind::Removed);
    assert_eq!(audit.identity.as_deref(), Some("pt-9"));
    assert_eq!(
        audit.actor.as_ref().map(ToString::to_string).as_deref(),
        Some("api:clinic-a")
    );
    assert!(audit.participant_id.is_none(), "nobody was there");
    let req = sim.request_with(conn_id(), "pt-9", Role::Patient, leaked);
    assert_eq!(sim.err(Input::Join(req)).0, Refusal::AccessRevoked);
    // Removing twice moves the block on: links minted between the two are refused too.
    sim.advance(10);
    let between = Credential::token("between", sim.now.timestamp());
    sim.advance(10);
    sim.ok(Input::Remove {
        by: api("clinic-a"),
        target: Target::Identity("pt-9".into()),
    });
    let req = sim.request_with(conn_id(), "pt-9", Role::Patient, between);
    assert_eq!(sim.err(Input::Join(req)).0, Refusal::AccessRevoked);
}

#[test]
fn a_removed_doctor_is_out_like_anyone() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let link = Credential::token("dr-link", sim.now.timestamp());
    let out = sim.ok(Input::Remove {
        by: api("clinic-a"),
        target: Target::Identity("dr-1".into()),
    });
    assert_eq!(kinds(&notices(&out, doc.conn)), ["denied"]);
    assert_eq!(closes(&out), [(doc.conn, CloseCode::NotAllowed)]);
    let req = sim.request_with(conn_id(), "dr-1", Role::Doctor, link);
    assert_eq!(sim.err(Input::Join(req)).0, Refusal::AccessRevoked);
}

#[test]
fn blocks_come_back_with_the_visit() {
    let when = t0() + TimeDelta::minutes(1);
    let mut sim = Sim {
        visit: Visit::new(record(4), TimeDelta::seconds(GRACE)).with_blocks(vec![
            Block {
                identity: "pt-1".into(),
                at: when,
            },
            Block {
                identity: "pt-1".into(),
                at: when - TimeDelta::minutes(1),
            },
        ]),
        now: when + TimeDelta::hours(1),
    };
    assert_eq!(
        sim.visit.blocked_at("pt-1"),
        Some(when),
        "the latest block counts"
    );
    let req = sim.request_with(
        conn_id(),
        "pt-1",
        Role::Patient,
        Credential::token("j", when.timestamp()),
    );
    assert_eq!(sim.err(Input::Join(req)).0, Refusal::AccessRevoked);
    sim.join("pt-1", Role::Patient);
    sim.join("pt-2", Role::Patient);
}

#[test]
fn a_resume_token_reopens_its_place_only_while_it_is_held() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let pt = sim.join("pt-1", Role::Patient);
    sim.admit(doc, pt);
    let token = resume(&sim, pt);
    // Dropped, back within the grace period: the same place, no new admission.
    sim.ok(Input::Disconnected { conn: pt.conn });
    sim.advance(GRACE - 1);
    let conn = conn_id();
    let out = sim.ok(Input::Join(sim.request_with(
        conn,
        "pt-1",
        Role::Patient,
        token.clone(),
    )));
    assert_eq!(kinds(&notices(&out, conn)), ["joined", "admitted"]);
    let rejoined = out.iter().find_map(|o| match o {
        Output::Audit(e) if e.kind == AuditKind::Rejoined => e.detail.clone(),
        _ => None,
    });
    assert_eq!(
        rejoined.as_deref(),
        Some("resume"),
        "the trail says which credential"
    );
    // Over the grace period: the place is gone, and the token with it.
    sim.ok(Input::Disconnected { conn });
    sim.advance(GRACE);
    sim.ok(Input::Tick);
    let req = sim.request_with(conn_id(), "pt-1", Role::Patient, token.clone());
    let (e, _) = sim.err(Input::Join(req));
    assert_eq!(e, Refusal::PlaceGone);
    assert_eq!(
        (e.code(), e.join_close_code()),
        ("invalid_token", CloseCode::BadToken)
    );
    // A place of the same identity taken later is not the one the token named.
    let again = sim.join("pt-1", Role::Patient);
    let req = sim.request_with(conn_id(), "pt-1", Role::Patient, token);
    assert_eq!(sim.err(Input::Join(req)).0, Refusal::PlaceGone);
    // After leave, its own token is refused too.
    let token = resume(&sim, again);
    sim.ok(Input::Leave { conn: again.conn });
    let req = sim.request_with(conn_id(), "pt-1", Role::Patient, token);
    assert_eq!(sim.err(Input::Join(req)).0, Refusal::PlaceGone);
}

#[test]
fn after_a_restart_a_resume_token_reopens_a_place_within_one_grace_period() {
    let boot = t0() + TimeDelta::minutes(5);
    let mut r = record(4);
    r.status = VisitStatus::Active;
    let pt = StoredParticipant {
        participant_id: pid(),
        identity: "pt-1".into(),
        role: Role::Patient,
        name: "n".into(),
        state: ParticipantState::Admitted,
        since: t0(),
        dropped_at: None,
        consent: None,
    };
    let token = Credential::resume(pt.participant_id, t0().timestamp());
    let mut sim = Sim {
        visit: Visit::restore(r, vec![pt.clone()], boot, TimeDelta::seconds(GRACE)),
        now: boot + TimeDelta::seconds(GRACE - 1),
    };
    let conn = conn_id();
    let out = sim.ok(Input::Join(sim.request_with(
        conn,
        "pt-1",
        Role::Patient,
        token,
    )));
    assert_eq!(kinds(&notices(&out, conn)), ["joined", "admitted"]);
}

#[test]
fn only_doctors_see_identities() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let pt = sim.join("pt-1", Role::Patient);
    let out = sim.admit(doc, pt);
    let identities = |n: &Notice| match n {
        Notice::Admitted { participants } => {
            participants.iter().map(|p| p.identity.clone()).collect()
        }
        Notice::ParticipantJoined { participant } | Notice::ParticipantUpdated { participant } => {
            vec![participant.identity.clone()]
        }
        _ => Vec::new(),
    };
    let to_patient: Vec<_> = notices(&out, pt.conn)
        .into_iter()
        .flat_map(identities)
        .collect();
    assert_eq!(
        to_patient,
        [None],
        "the patient sees the doctor without an identity"
    );
    let to_doctor: Vec<_> = notices(&out, doc.conn)
        .into_iter()
        .flat_map(identities)
        .collect();
    assert_eq!(to_doctor, [Some("pt-1".to_owned())]);
    // A guest admitted later: the doctor sees who they are, the patient does not.
    let guest = sim.join("interp-1", Role::Guest);
    let out = sim.admit(doc, guest);
    let seen = |who: Who| -> Vec<_> {
        notices(&out, who.conn)
            .into_iter()
            .flat_map(identities)
            .collect()
    };
    assert_eq!(seen(doc), [Some("interp-1".to_owned())]);
    assert_eq!(seen(pt), [None]);
    assert_eq!(seen(guest), [None, None]);
    // The clinic's backend sees everyone's.
    assert!(
        sim.visit
            .participants()
            .iter()
            .all(|p| p.identity.is_some())
    );
    let out = sim.ok(Input::Media {
        conn: pt.conn,
        media: MediaState {
            audio: true,
            video: false,
            screen: false,
        },
    });
    assert_eq!(seen_in(&out, doc), [Some("pt-1".to_owned())]);
    assert_eq!(seen_in(&out, guest), [None]);

    fn seen_in(out: &[Output], who: Who) -> Vec<Option<String>> {
        notices(out, who.conn)
            .into_iter()
            .filter_map(|n| match n {
                Notice::ParticipantUpdated { participant } => Some(participant.identity.clone()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn joins_name_the_credential_they_used() {
    let mut sim = Sim::new();
    let conn = conn_id();
    let out = sim.ok(Input::Join(sim.request_with(
        conn,
        "pt-1",
        Role::Patient,
        Credential::token("5f0c-jti", sim.now.timestamp()),
    )));
    let joined = out.iter().find_map(|o| match o {
        Output::Audit(e) if e.kind == AuditKind::Joined => e.detail.clone(),
        _ => None,
    });
    assert_eq!(joined.as_deref(), Some("5f0c-jti"));
}

// Single-use links (docs/security.md, "Single-use links").

/// The `LinkUsed` changes among `out`.
fn links_used(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Persist(Change::LinkUsed { jti, .. }) => Some(jti.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_single_use_link_lets_one_person_in_once_and_their_resume_token_still_works() {
    let mut sim = Sim::new();
    let doc = sim.join("dr-1", Role::Doctor);
    let once = Credential::token("once-1", sim.now.timestamp()).single_use(true);
    let req = sim.request_with(conn_id(), "pt-1", Role::Patient, once.clone());
    let conn = req.conn;
    let out = sim.ok(Input::Join(req));
    // Spent with the join that knocked, in the same group as its audit row.
    assert_eq!(links_used(&out), ["once-1"]);
    assert!(audits(&out).contains(&AuditKind::Joined));
    let pt = match notices(&out, conn).first() {
        Some(Notice::Joined { participant_id, .. }) => Who {
            conn,
            id: *participant_id,
        },
        other => panic!("expected joined, got {other:?}"),
    };
    // A second join with it while the holder waits: refused, and the holder stays.
    sim.advance(1);
    let again = sim.request_with(conn_id(), "pt-1", Role::Patient, once.clone());
    let (e, out) = sim.err(Input::Join(again));
    assert_eq!(
        (e.code(), e.join_close_code()),
        ("token_used", CloseCode::BadToken)
    );
    assert!(audits(&out).is_empty(), "{out:?}");
    sim.admit(doc, pt);
    let again = sim.request_with(conn_id(), "pt-2", Role::Patient, once.clone());
    assert_eq!(sim.err(Input::Join(again)).0, Refusal::TokenUsed);
    // Their connection drops; their resume token brings them back, admitted.
    sim.ok(Input::Disconnected { conn: pt.conn });
    let back = sim.request_with(conn_id(), "pt-1", Role::Patient, resume(&sim, pt));
    let out = sim.ok(Input::Join(back));
    assert!(links_used(&out).is_empty());
    // An ordinary link is used as often as it is good.
    let plain = Credential::token("plain", sim.now.timestamp());
    for _ in 0..2 {
        let req = sim.request_with(conn_id(), "gu-1", Role::Guest, plain.clone());
        let out = sim.ok(Input::Join(req));
        assert!(links_used(&out).is_empty());
    }
}

#[test]
fn used_links_come_back_with_the_visit() {
    let mut sim = Sim {
        visit: Visit::new(record(4), TimeDelta::seconds(GRACE))
            .with_used_links(vec!["once-1".into()]),
        now: t0(),
    };
    let once = Credential::token("once-1", sim.now.timestamp()).single_use(true);
    let req = sim.request_with(conn_id(), "pt-1", Role::Patient, once);
    assert_eq!(sim.err(Input::Join(req)).0, Refusal::TokenUsed);
    // The same jti on a link that is not single-use is not refused: the claim decides.
    let plain = Credential::token("once-1", sim.now.timestamp());
    let req = sim.request_with(conn_id(), "pt-1", Role::Patient, plain);
    sim.ok(Input::Join(req));
}
