//! The clinic's day (docs/protocol.md): consent before the knock, a provider's queue across
//! visits, where each waiting patient stands and how long they will likely wait, transfers
//! and the provider's messages, played against the pure rules in simulated time.

use bedside_auth::{KeyId, Role, TenantId};
use bedside_visit::queue::{ProviderView, current_consultation, line_up, standings};
use bedside_visit::{
    Actor, AuditKind, Change, ConnId, ConsentText, Credential, Input, JoinRequest, Notice, Output,
    ParticipantId, Presence, ProviderId, Refusal, Standing, Visit, VisitId, VisitQueue,
    VisitRecord, VisitStatus, WaitModel,
};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, 0).unwrap()
}

fn next() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0xc11c_0000_0000_0001);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn provider(p: &str) -> ProviderId {
    ProviderId::new(p).unwrap()
}

fn record(provider_id: Option<&str>, consent: Option<ConsentText>) -> VisitRecord {
    VisitRecord {
        id: VisitId::from_uuid(uuid::Uuid::new_v4()),
        tenant: TenantId::new("clinic-a").unwrap(),
        external_ref: Some(format!("appt-{}", next())),
        status: VisitStatus::Open,
        ended_reason: None,
        created_at: t0(),
        not_before: None,
        expires_at: t0() + TimeDelta::hours(8),
        started_at: None,
        ended_at: None,
        max_participants: 4,
        metadata: None,
        provider: provider_id.map(provider),
        consent,
    }
}

#[derive(Clone, Copy)]
struct Who {
    conn: ConnId,
    id: ParticipantId,
}

struct Sim {
    visit: Visit,
    now: DateTime<Utc>,
}

impl Sim {
    fn new(record: VisitRecord) -> Self {
        Self {
            visit: Visit::new(record, TimeDelta::seconds(30)),
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

    fn join(&mut self, identity: &str, role: Role) -> (Who, Vec<Output>) {
        let conn = ConnId::from_raw(next());
        let out = self.ok(Input::Join(JoinRequest {
            conn,
            identity: identity.into(),
            role,
            name: format!("{identity} name"),
            new_id: ParticipantId::from_bits(next()),
            credential: Credential::token("jti", t0().timestamp()),
        }));
        let id = match notices(&out, conn).first() {
            Some(Notice::Joined { participant_id, .. }) => *participant_id,
            other => panic!("expected joined first, got {other:?}"),
        };
        (Who { conn, id }, out)
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

fn events(out: &[Output]) -> Vec<&'static str> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.kind.as_str()),
            _ => None,
        })
        .collect()
}

fn audits(out: &[Output]) -> Vec<(AuditKind, Option<String>)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Audit(e) => Some((e.kind, e.detail.clone())),
            _ => None,
        })
        .collect()
}

fn queue_part(out: &[Output]) -> Option<&VisitQueue> {
    out.iter().rev().find_map(|o| match o {
        Output::Queue(q) => Some(q),
        _ => None,
    })
}

fn lobby_of(out: &[Output], doctor: ConnId) -> Option<Vec<ParticipantId>> {
    notices(out, doctor)
        .into_iter()
        .rev()
        .find_map(|n| match n {
            Notice::Lobby { waiting } => Some(waiting.iter().map(|w| w.participant_id).collect()),
            _ => None,
        })
}

const TERMS: &str = "I agree to be seen by video.\nMy data stays with the clinic.";

#[test]
fn a_patient_is_in_nobodys_waiting_room_until_they_consent() {
    let consent = ConsentText::new("2026-11", TERMS).unwrap();
    let mut sim = Sim::new(record(Some("dr-lee"), Some(consent.clone())));
    let (doc, _) = sim.join("dr-other", Role::Doctor);

    let (pt, out) = sim.join("pt-1", Role::Patient);
    match &notices(&out, pt.conn)[..] {
        [
            Notice::Joined { .. },
            Notice::ConsentRequired { version, text },
        ] => {
            assert_eq!(&**version, "2026-11");
            assert_eq!(&**text, TERMS);
        }
        other => panic!("expected joined, consent_required: {other:?}"),
    }
    assert!(notices(&out, doc.conn).is_empty(), "the doctor sees no one");
    assert!(!events(&out).contains(&"participant.waiting"));
    assert!(
        queue_part(&out).is_none_or(|q| q.knocks.is_empty()),
        "not in the provider's queue"
    );
    // Unseen, so not admittable either.
    let (r, _) = sim.step(Input::Admit {
        conn: doc.conn,
        target: pt.id,
    });
    assert_eq!(r, Err(Refusal::UnknownParticipant));

    // The wrong version records nothing.
    let (r, out) = sim.step(Input::Consent {
        conn: pt.conn,
        version: "2026-10".into(),
    });
    assert_eq!(r, Err(Refusal::WrongConsentVersion));
    assert!(audits(&out).is_empty() && events(&out).is_empty());

    sim.now += TimeDelta::seconds(40);
    let out = sim.ok(Input::Consent {
        conn: pt.conn,
        version: "2026-11".into(),
    });
    assert_eq!(
        audits(&out),
        [(AuditKind::Consented, Some(consent.audit_detail()))]
    );
    assert_eq!(
        events(&out),
        ["participant.consented", "participant.waiting"]
    );
    let consented = out
        .iter()
        .find_map(|o| match o {
            Output::Event(e) if e.kind.as_str() == "participant.consented" => Some(e.data()),
            _ => None,
        })
        .unwrap();
    assert_eq!(consented["version"], "2026-11");
    assert_eq!(consented["sha256"], consent.sha256());
    assert!(matches!(notices(&out, pt.conn)[..], [Notice::Waiting(_)]));
    assert_eq!(lobby_of(&out, doc.conn), Some(vec![pt.id]));
    let q = queue_part(&out).expect("the queue changed");
    assert_eq!(q.knocks.len(), 1);
    assert_eq!(q.knocks[0].since, sim.now, "the knock is the consent");
    assert_eq!(
        q.knocks[0].consent.as_ref().map(|c| c.version.as_str()),
        Some("2026-11")
    );
    // The consent is stored with the participant, so it survives a restart.
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Persist(Change::Participant(p)) if p.consent.is_some()
    )));

    // Once is enough; doctors are never asked.
    let (r, _) = sim.step(Input::Consent {
        conn: pt.conn,
        version: "2026-11".into(),
    });
    assert_eq!(r, Err(Refusal::ConsentNotRequired));
    let (r, _) = sim.step(Input::Consent {
        conn: doc.conn,
        version: "2026-11".into(),
    });
    assert_eq!(r, Err(Refusal::ConsentNotRequired));
}

#[test]
fn a_patient_who_refuses_never_knocks() {
    let consent = ConsentText::new("v1", TERMS).unwrap();
    let mut sim = Sim::new(record(None, Some(consent)));
    let (doc, _) = sim.join("dr-1", Role::Doctor);
    let (pt, _) = sim.join("pt-1", Role::Patient);
    let out = sim.ok(Input::Leave { conn: pt.conn });
    assert!(!events(&out).contains(&"participant.waiting"));
    assert!(!events(&out).contains(&"participant.consented"));
    assert!(notices(&out, doc.conn).iter().all(|n| match n {
        Notice::Lobby { waiting } => waiting.is_empty(),
        _ => true,
    }));
    // Without a consent text nobody is asked.
    let mut plain = Sim::new(record(None, None));
    let (p, out) = plain.join("pt-2", Role::Patient);
    assert!(matches!(
        notices(&out, p.conn)[..],
        [Notice::Joined { .. }, Notice::Waiting(_)]
    ));
    assert!(events(&out).contains(&"participant.waiting"));
}

#[test]
fn a_visit_reports_its_part_of_the_queue_when_it_changes() {
    let mut sim = Sim::new(record(Some("dr-lee"), None));
    let (pt, out) = sim.join("pt-1", Role::Patient);
    let q = queue_part(&out).expect("a knock changes the queue");
    assert_eq!(q.provider, Some(provider("dr-lee")));
    assert_eq!(q.knocks[0].participant_id, pt.id);
    assert_eq!(q.busy_since, None);

    // A doctor who is not the provider does not make the provider busy.
    let (other, out) = sim.join("dr-locum", Role::Doctor);
    assert!(queue_part(&out).is_none(), "nothing changed for the queue");
    sim.ok(Input::Leave { conn: other.conn });

    sim.now += TimeDelta::minutes(1);
    let (lee, out) = sim.join("dr-lee", Role::Doctor);
    assert_eq!(queue_part(&out).unwrap().busy_since, Some(sim.now));
    let out = sim.ok(Input::Admit {
        conn: lee.conn,
        target: pt.id,
    });
    let q = queue_part(&out).unwrap();
    assert!(q.knocks.is_empty() && q.busy_since.is_some());
    // A chat changes no queue.
    let out = sim.ok(Input::Chat {
        conn: lee.conn,
        text: "hello".into(),
    });
    assert!(queue_part(&out).is_none());
    sim.now += TimeDelta::minutes(12);
    let out = sim.ok(Input::End {
        by: Actor::Conn(lee.conn),
    });
    assert!(
        queue_part(&out).unwrap().is_empty(),
        "an ended visit adds nothing"
    );
    // The provider's 12 minutes here join their history.
    let consultation = out.iter().find_map(|o| match o {
        Output::Persist(Change::Consultation {
            provider,
            started_at,
            ended_at,
        }) => Some((provider.as_str(), *ended_at - *started_at)),
        _ => None,
    });
    assert_eq!(consultation, Some(("dr-lee", TimeDelta::minutes(12))));

    // A visit without a provider has no part in any queue.
    let mut plain = Sim::new(record(None, None));
    let (_, out) = plain.join("pt-9", Role::Patient);
    assert!(queue_part(&out).is_none());
}

#[test]
fn a_transfer_moves_the_visit_not_its_people() {
    let mut sim = Sim::new(record(Some("dr-lee"), None));
    let (pt, _) = sim.join("pt-1", Role::Patient);
    let api = Actor::Api(KeyId::new("k1").unwrap());
    let out = sim.ok(Input::Transfer {
        by: api.clone(),
        provider: provider("dr-kim"),
    });
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Persist(Change::Provider { provider: p }) if p.as_str() == "dr-kim"
    )));
    match &audits(&out)[..] {
        [(AuditKind::Transferred, Some(previous))] => assert_eq!(previous, "dr-lee"),
        other => panic!("expected one transferred row: {other:?}"),
    }
    assert_eq!(events(&out), ["visit.transferred"]);
    let q = queue_part(&out).unwrap();
    assert_eq!(q.provider, Some(provider("dr-kim")));
    assert_eq!(
        q.knocks[0].participant_id, pt.id,
        "still waiting, same knock"
    );
    assert_eq!(q.knocks[0].since, t0());
    assert!(notices(&out, pt.conn).is_empty(), "no new check-in");

    // A waiting patient cannot transfer; an ended visit cannot be transferred.
    let (r, _) = sim.step(Input::Transfer {
        by: Actor::Conn(pt.conn),
        provider: provider("dr-x"),
    });
    assert_eq!(r, Err(Refusal::Forbidden));
    sim.ok(Input::End { by: api.clone() });
    let (r, out) = sim.step(Input::Transfer {
        by: api,
        provider: provider("dr-x"),
    });
    assert_eq!(r, Err(Refusal::VisitEnded));
    assert!(audits(&out).is_empty());
}

#[test]
fn standings_reach_the_waiting_room_only_when_they_change() {
    let mut sim = Sim::new(record(Some("dr-lee"), None));
    let (pt, _) = sim.join("pt-1", Role::Patient);
    let (doc, _) = sim.join("dr-locum", Role::Doctor);
    let view = ProviderView {
        name: Some("Dr Lee".into()),
        presence: Presence::Available,
    };
    let standing = Standing {
        position: Some(2),
        expected_wait_secs: Some(600),
        provider: Some(view.clone()),
    };
    let feed = |standing: &Standing| Input::Standings {
        provider: Some(view.clone()),
        standings: vec![(pt.id, standing.clone()), (doc.id, standing.clone())],
    };
    let out = sim.ok(feed(&standing));
    match &notices(&out, pt.conn)[..] {
        [Notice::Waiting(s)] => assert_eq!(s, &standing),
        other => panic!("expected one waiting frame: {other:?}"),
    }
    assert!(
        notices(&out, doc.conn).is_empty(),
        "only the waiting hear it"
    );
    assert!(notices(&sim.ok(feed(&standing)), pt.conn).is_empty());
    let closer = Standing {
        position: Some(1),
        ..standing
    };
    assert_eq!(notices(&sim.ok(feed(&closer)), pt.conn).len(), 1);
}

#[test]
fn provider_messages_reach_the_waiting_room_only() {
    let consent = ConsentText::new("v1", TERMS).unwrap();
    let mut sim = Sim::new(record(Some("dr-lee"), Some(consent)));
    let (doc, _) = sim.join("dr-lee", Role::Doctor);
    let (unconsented, _) = sim.join("pt-1", Role::Patient);
    let (pt, _) = sim.join("pt-2", Role::Patient);
    sim.ok(Input::Consent {
        conn: pt.conn,
        version: "v1".into(),
    });
    let out = sim.ok(Input::ProviderMessage {
        text: "  Running ten minutes late, sorry.  ".into(),
    });
    match &notices(&out, pt.conn)[..] {
        [Notice::ProviderMessage { text, at }] => {
            assert_eq!(&**text, "Running ten minutes late, sorry.");
            assert_eq!(*at, sim.now);
        }
        other => panic!("expected one provider_message: {other:?}"),
    }
    assert!(notices(&out, doc.conn).is_empty());
    assert!(notices(&out, unconsented.conn).is_empty());
    for bad in [String::new(), " ".into(), "x".repeat(1001)] {
        let (r, out) = sim.step(Input::ProviderMessage { text: bad });
        assert_eq!(r, Err(Refusal::InvalidText));
        assert!(out.iter().all(|o| !matches!(o, Output::Send { .. })));
    }
}

/// A provider's morning: three patients in three visits, the provider in a fourth
/// consultation; positions across visits, waits from the provider's own history.
#[test]
fn a_providers_morning_in_simulated_time() {
    let mut visits: Vec<Sim> = (0..4)
        .map(|_| Sim::new(record(Some("dr-lee"), None)))
        .collect();
    let mut parts: Vec<VisitQueue> = Vec::new();
    // What the desk does: keep each visit's latest part.
    let report = |out: &[Output], parts: &mut Vec<VisitQueue>| {
        if let Some(q) = queue_part(out) {
            parts.retain(|p| p.visit != q.visit);
            parts.push(q.clone());
        }
    };
    // 09:00 the provider starts the first consultation (patient already there).
    let (first_pt, out) = visits[0].join("pt-0", Role::Patient);
    report(&out, &mut parts);
    let (lee, out) = visits[0].join("dr-lee", Role::Doctor);
    report(&out, &mut parts);
    let out = visits[0].ok(Input::Admit {
        conn: lee.conn,
        target: first_pt.id,
    });
    report(&out, &mut parts);
    // Patients knock at 09:02, 09:01 and 09:03 in visits 1, 2 and 3.
    let mut who = Vec::new();
    for (v, minute) in [(1usize, 2i64), (2, 1), (3, 3)] {
        visits[v].now = t0() + TimeDelta::minutes(minute);
        let (p, out) = visits[v].join(&format!("pt-{v}"), Role::Patient);
        report(&out, &mut parts);
        who.push((v, p));
    }
    let queue = line_up(&parts);
    let order: Vec<ParticipantId> = queue.iter().map(|e| e.participant.participant_id).collect();
    assert_eq!(order, [who[1].1.id, who[0].1.id, who[2].1.id]);
    assert_eq!(
        queue.iter().map(|e| e.position).collect::<Vec<_>>(),
        [1, 2, 3]
    );

    // Their recent consultations ran 12, 8, 10 and 30 minutes: typically 11 (the median;
    // the 30 does not drag it as a mean would).
    let history = [12, 8, 10, 30].map(TimeDelta::minutes);
    let model = WaitModel {
        default: None,
        prior_weight: 3,
        history: 20,
    };
    let view = ProviderView {
        name: Some("Dr Lee".into()),
        presence: Presence::Busy,
    };
    // At 09:05 the current consultation has run 5 minutes: about 6 left.
    let now = t0() + TimeDelta::minutes(5);
    let current = current_consultation(&parts, now);
    assert_eq!(current, Some(TimeDelta::minutes(5)));
    let s = standings(&queue, &model, &history, current, Some(&view));
    let waits: Vec<Option<u64>> = s.iter().map(|(_, _, st)| st.expected_wait_secs).collect();
    assert_eq!(waits, [Some(6 * 60), Some(17 * 60), Some(28 * 60)]);

    // Fed back, each visit tells its own patient.
    for (v, p) in &who {
        let mine: Vec<_> = s
            .iter()
            .filter(|(visit, _, _)| *visit == visits[*v].visit.record().id)
            .map(|(_, id, st)| (*id, st.clone()))
            .collect();
        let out = visits[*v].ok(Input::Standings {
            provider: Some(view.clone()),
            standings: mine,
        });
        match &notices(&out, p.conn)[..] {
            [Notice::Waiting(st)] => {
                assert_eq!(
                    st.provider.as_ref().map(|v| v.presence),
                    Some(Presence::Busy)
                );
                assert!(st.position.is_some());
            }
            other => panic!("expected a waiting frame: {other:?}"),
        }
    }

    // At 09:20 the consultation overran: nothing is left of it, never less than nothing.
    let late = t0() + TimeDelta::minutes(20);
    let s = standings(
        &queue,
        &model,
        &history,
        current_consultation(&parts, late),
        Some(&view),
    );
    assert_eq!(s[0].2.expected_wait_secs, Some(0));
    assert_eq!(s[2].2.expected_wait_secs, Some(22 * 60));

    // A provider with no history and no default gets no estimate; a default alone stands in.
    let s = standings(&queue, &model, &[], None, Some(&view));
    assert!(s.iter().all(|(_, _, st)| st.expected_wait_secs.is_none()));
    let with_default = WaitModel {
        default: Some(TimeDelta::minutes(15)),
        ..model
    };
    let s = standings(&queue, &with_default, &[], None, Some(&view));
    assert_eq!(s[1].2.expected_wait_secs, Some(15 * 60));
    // One short consultation is shrunk toward the default: (1·5 + 3·15) / 4 = 12.5 min.
    let s = standings(
        &queue,
        &with_default,
        &[TimeDelta::minutes(5)],
        None,
        Some(&view),
    );
    assert_eq!(s[1].2.expected_wait_secs, Some(13 * 60));
    // Many consultations outweigh it.
    let many = [TimeDelta::minutes(5); 30];
    let s = standings(&queue, &with_default, &many, None, Some(&view));
    assert_eq!(
        s[1].2.expected_wait_secs,
        Some(7 * 60),
        "(20·5 + 3·15) / 23 = 6.3 min"
    );
}

fn invites(out: &[Output]) -> Vec<&bedside_visit::Invite> {
    out.iter()
        .filter_map(|o| match o {
            Output::Invite(i) => Some(i),
            _ => None,
        })
        .collect()
}

#[test]
fn an_admitted_doctor_gets_a_guest_link_nobody_else_does() {
    let mut sim = Sim::new(record(Some("dr-who"), None));
    let (doctor, _) = sim.join("doc-1", Role::Doctor);
    let (patient, _) = sim.join("pat-1", Role::Patient);
    sim.now += TimeDelta::minutes(5);
    let out = sim.ok(Input::Invite {
        conn: doctor.conn,
        role: "guest".into(),
        name: "  Ana, interpreter ".into(),
    });
    let minted = invites(&out);
    assert_eq!(minted.len(), 1);
    assert_eq!(minted[0].conn, doctor.conn);
    assert_eq!(minted[0].by, doctor.id);
    assert_eq!(minted[0].name, "Ana, interpreter");
    assert_eq!(
        minted[0].expires_at,
        sim.now + bedside_visit::invite::INVITE_TTL
    );
    // Nobody is told anything and nothing changes: the guest is not in the visit until
    // they join with the link, and then they wait like anyone.
    assert!(notices(&out, patient.conn).is_empty());
    assert!(events(&out).is_empty());

    // A waiting patient, or a bad role or name, gets no link.
    let cases = [
        (patient.conn, "guest", "Ana", Refusal::Forbidden),
        (doctor.conn, "doctor", "Ana", Refusal::InvalidRole),
        (doctor.conn, "patient", "Ana", Refusal::InvalidRole),
        (doctor.conn, "guest", "", Refusal::InvalidName),
        (doctor.conn, "guest", "A\nB", Refusal::InvalidName),
        (doctor.conn, "guest", &"x".repeat(101), Refusal::InvalidName),
    ];
    for (conn, role, name, refusal) in cases {
        let (r, out) = sim.step(Input::Invite {
            conn,
            role: role.into(),
            name: name.into(),
        });
        assert_eq!(r, Err(refusal), "{role} {name:?}");
        assert!(invites(&out).is_empty());
    }
    // Admitted, the patient is still no doctor.
    sim.ok(Input::Admit {
        conn: doctor.conn,
        target: patient.id,
    });
    let (r, _) = sim.step(Input::Invite {
        conn: patient.conn,
        role: "guest".into(),
        name: "Ana".into(),
    });
    assert_eq!(r, Err(Refusal::Forbidden));
}

#[test]
fn a_guest_link_ends_with_its_visit_and_an_ended_visit_gives_none() {
    let mut sim = Sim::new(record(None, None));
    let (doctor, _) = sim.join("doc-1", Role::Doctor);
    // Half an hour before the visit's end: the link lives half an hour, not two hours.
    sim.now = t0() + TimeDelta::hours(8) - TimeDelta::minutes(30);
    let out = sim.ok(Input::Invite {
        conn: doctor.conn,
        role: "guest".into(),
        name: "Ana".into(),
    });
    assert_eq!(invites(&out)[0].expires_at, t0() + TimeDelta::hours(8));
    // Past the visit's end: ended, whatever the doctor's connection still thinks.
    sim.now = t0() + TimeDelta::hours(8) + TimeDelta::seconds(1);
    let (r, out) = sim.step(Input::Invite {
        conn: doctor.conn,
        role: "guest".into(),
        name: "Ana".into(),
    });
    assert_eq!(r, Err(Refusal::VisitEnded));
    assert!(invites(&out).is_empty());
}
