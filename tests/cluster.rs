//! Several nodes as one service: three `bedside` processes on one PostgreSQL database and
//! one Redis, with HAProxy in front running `deploy/haproxy.cfg` (tests/src/cluster.rs).
//! A visit runs on one node at a time; participants connect anywhere; a node may die, be
//! paused, or drain, and Redis may restart, without a visit being lost or acted on twice.

use bedside_loadtest::scenario::isolation;
use bedside_loadtest::target::{Sources, Target};
use bedside_tests::cluster::Cluster;
use bedside_tests::serde_json::{Value, json};
use bedside_tests::{CLINIC_A, Client, STEP};
use std::time::{Duration, Instant};

/// A visit whose doctor is connected to node `doctor_at` and patient to node `patient_at`,
/// the patient admitted, and everyone told so.
async fn pair_told(c: &Cluster, doctor_at: usize, patient_at: usize) -> (String, Client, Client) {
    let api = c.nodes[0].api(CLINIC_A);
    let visit = api.visit().await;
    let doctor_token = api.mint(&visit, "doctor", "dr-1", "Dr One").await;
    let patient_token = api.mint(&visit, "patient", "pt-1", "Pat One").await;
    let (mut doctor, _) = Client::join_url(&c.nodes[doctor_at].ws_url(), &doctor_token).await;
    doctor.expect("admitted").await;
    doctor.expect("lobby").await;
    let (mut patient, _) = Client::join_url(&c.nodes[patient_at].ws_url(), &patient_token).await;
    patient.expect("waiting").await;
    let lobby = doctor.expect("lobby").await;
    assert_eq!(
        lobby["waiting"][0]["participant_id"],
        patient.participant_id.as_str()
    );
    doctor
        .send(json!({"type": "admit", "participant_id": patient.participant_id}))
        .await;
    patient.expect("admitted").await;
    doctor.until("participant_joined").await;
    (visit, doctor, patient)
}

/// [`pair_told`], once the admission is also stored. (In a cluster it is stored before
/// anyone is told; this also makes sure of it from outside.)
async fn pair_across(c: &Cluster, doctor_at: usize, patient_at: usize) -> (String, Client, Client) {
    let (visit, doctor, patient) = pair_told(c, doctor_at, patient_at).await;
    let deadline = Instant::now() + STEP;
    let stored = format!(
        "SELECT COUNT(*) FROM participants WHERE visit_id = '{visit}' AND state = 'admitted'"
    );
    while c.nodes[0]
        .sql_text(&format!("SELECT CAST(({stored}) AS TEXT)"))
        .await
        .as_deref()
        != Some("2")
    {
        assert!(Instant::now() < deadline, "the admission was never stored");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (visit, doctor, patient)
}

/// `from` signals `to` a nonce, which arrives from the right sender.
async fn signal(from: &mut Client, to: &mut Client, nonce: &str) {
    from.send(json!({"type": "signal", "to": to.participant_id, "data": {"nonce": nonce}}))
        .await;
    let got = to.until("signal").await;
    assert_eq!(got["from"], from.participant_id.as_str());
    assert_eq!(got["data"]["nonce"], nonce);
}

async fn status(url: &str) -> u16 {
    match bedside_loadtest::http::client().get(url).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Over TLS to Redis (`rediss://`), as it should be wherever Redis is not on a private
/// link: names, SDP and chat cross it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doctor_on_one_node_and_a_patient_on_another_go_through_a_whole_visit() {
    let c = Cluster::start_tls(&[]).await;
    let (visit, mut doctor, mut patient) = pair_across(&c, 0, 1).await;
    assert_eq!(
        c.owner_of(&visit).await,
        Some(0),
        "the first to join claims it"
    );

    signal(&mut doctor, &mut patient, "offer-1").await;
    signal(&mut patient, &mut doctor, "answer-1").await;
    patient
        .send(json!({"type": "chat", "text": "Hello doctor"}))
        .await;
    assert_eq!(doctor.until("chat").await["text"], "Hello doctor");
    assert_eq!(
        patient.until("chat").await["from"],
        patient.participant_id.as_str()
    );
    // A refusal by the owner reaches the participant on the other node.
    patient
        .send(json!({"type": "admit", "participant_id": doctor.participant_id}))
        .await;
    assert_eq!(patient.until("error").await["code"], "forbidden");

    // The API on a third node sees who is in the visit, and ends it through the owner.
    let api3 = c.nodes[2].api(CLINIC_A);
    let seen = api3.get_visit(&visit).await;
    let mut ids: Vec<&str> = seen["connected"]
        .as_array()
        .expect("connected participants")
        .iter()
        .filter_map(|p| p["participant_id"].as_str())
        .collect();
    ids.sort_unstable();
    let mut expected = vec![
        doctor.participant_id.as_str(),
        patient.participant_id.as_str(),
    ];
    expected.sort_unstable();
    assert_eq!(ids, expected, "{seen}");
    let (code, ended) = api3
        .call(
            reqwest::Method::POST,
            &format!("/v1/visits/{visit}/end"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{ended}");
    assert_eq!(ended["status"], "ended");
    assert_eq!(doctor.until("visit_ended").await["reason"], "ended_by_api");
    assert_eq!(patient.until("visit_ended").await["reason"], "ended_by_api");
    let after = c.nodes[1].api(CLINIC_A).get_visit(&visit).await;
    assert_eq!(after["status"], "ended");
    assert_eq!(after["ended_reason"], "ended_by_api");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_owner_mid_visit_loses_nothing_and_signaling_is_back_within_5_s() {
    let mut c = Cluster::start(&[]).await;
    let (visit, mut doctor, mut patient) = pair_across(&c, 0, 1).await;
    signal(&mut doctor, &mut patient, "before").await;
    assert_eq!(c.owner_of(&visit).await, Some(0));

    c.nodes[0].kill9().await;
    let killed = Instant::now();
    let lb = c.lb.ws_url();
    // The doctor's socket dies with the node; the patient's node notices the owner is
    // gone and sends the patient away. Both come back through the load balancer.
    assert_eq!(doctor.closed().await, 1006);
    let (doctor, patient) = tokio::join!(Client::resume(&lb, &doctor), async {
        assert_eq!(patient.closed().await, 1001);
        Client::resume(&lb, &patient).await
    });
    let (mut doctor, mut patient) = (doctor, patient);
    signal(&mut doctor, &mut patient, "after-1").await;
    signal(&mut patient, &mut doctor, "after-2").await;
    let recovered = killed.elapsed();
    eprintln!(
        "owner killed: signaling back after {} ms (new owner node{})",
        recovered.as_millis(),
        c.owner_of(&visit).await.map_or(0, |i| i + 1)
    );
    assert!(
        recovered < Duration::from_secs(5),
        "signaling took {recovered:?} to come back"
    );
    let owner = c.owner_of(&visit).await.expect("owned");
    assert_ne!(owner, 0);
    let seen = c.nodes[owner].api(CLINIC_A).get_visit(&visit).await;
    assert_eq!(seen["status"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_patient_was_told_survives_the_owner_dying_the_next_instant() {
    for _ in 0..3 {
        let mut c = Cluster::start(&[]).await;
        // The patient hears "admitted" on node 2, relayed from the owner on node 1, which
        // dies the moment the patient has heard it.
        let (visit, doctor, mut patient) = pair_told(&c, 0, 1).await;
        c.nodes[0].kill9().await;
        drop(doctor);
        assert_eq!(patient.closed().await, 1001);
        // Admitted again, with no doctor there to do it: the admission was stored.
        let _back = Client::resume(&c.lb.ws_url(), &patient).await;
        let seen = c.nodes[1].api(CLINIC_A).get_visit(&visit).await;
        assert_eq!(seen["waiting"], json!([]), "{seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_cannot_act_on_a_visit_another_node_took_over() {
    let c = Cluster::start(&[]).await;
    let (visit, mut doctor, mut patient) = pair_across(&c, 0, 1).await;
    assert_eq!(c.owner_of(&visit).await, Some(0));

    // Node 1 is frozen (a long pause, or a partition): its lease lapses, the patient's node
    // sends the patient away, and the patient resumes on node 3, which takes the visit.
    c.nodes[0].pause().await;
    assert_eq!(patient.closed().await, 1001);
    let mut patient = Client::resume(&c.nodes[2].ws_url(), &patient).await;
    assert_eq!(c.owner_of(&visit).await, Some(2));

    // The doctor, still connected to the frozen node, ends the visit; the frame waits in
    // the socket until the node wakes up, believing it still runs the visit.
    doctor.send(json!({"type": "end_visit"})).await;
    c.nodes[0].resume().await;
    let mut seen = Vec::new();
    let code = loop {
        match tokio::time::timeout(STEP, doctor.recv_text()).await {
            Ok(text) => seen.push(text),
            Err(_) => panic!("the old owner neither answered nor closed: {seen:?}"),
        }
        if seen
            .last()
            .is_some_and(|t| t.contains("\"type\":\"error\""))
        {
            break doctor.closed().await;
        }
    };
    assert!(
        seen.iter().all(|t| !t.contains("visit_ended")),
        "the old owner acted: {seen:?}"
    );
    assert_eq!(code, 1001, "the old owner sends its clients to the new one");
    patient.silent(Duration::from_secs(1)).await;
    let api = c.nodes[1].api(CLINIC_A);
    assert_eq!(api.get_visit(&visit).await["status"], "active");
    let epoch = c.nodes[1]
        .sql_text(&format!(
            "SELECT CAST(epoch AS TEXT) FROM visits WHERE id = '{visit}'"
        ))
        .await;
    assert_eq!(epoch.as_deref(), Some("2"), "taken over once");

    // The doctor comes back through the node that was frozen; it now forwards to node 3.
    let mut doctor = Client::resume(&c.nodes[0].ws_url(), &doctor).await;
    signal(&mut doctor, &mut patient, "after-pause").await;
    signal(&mut patient, &mut doctor, "after-pause-2").await;
    assert_eq!(c.owner_of(&visit).await, Some(2));
}

/// A busy machine: the owner's lease renewal comes late (here the node is frozen for longer
/// than it trusts a renewal, two thirds of the 3 s lease, and wakes up to a Redis that is
/// still stalled, so its renewal takes a while more), and it may not act on the visit until
/// a renewal confirms it still owns it. Frames that arrive meanwhile wait for that renewal
/// instead of being refused: signaling gets slower, in order, and drops nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_arrive_while_a_renewal_is_late_wait_for_it_instead_of_being_refused() {
    let c = Cluster::start(&[]).await;
    let (visit, mut doctor, mut patient) = pair_across(&c, 0, 0).await;
    assert_eq!(c.owner_of(&visit).await, Some(0));
    c.nodes[0].pause().await;
    c.redis.pause().await;
    for i in 0..5 {
        doctor
            .send(json!({"type": "signal", "to": patient.participant_id, "data": {"nonce": format!("late-{i}")}}))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(2250)).await;
    c.nodes[0].resume().await;
    // The node reads the frames at once; its renewal waits for Redis.
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.redis.resume().await;
    for i in 0..5 {
        // Bounded: the server's pings would otherwise keep a wait for a lost signal going.
        let got = tokio::time::timeout(STEP, patient.until("signal"))
            .await
            .expect("a signal sent while the renewal was late never arrived");
        assert_eq!(got["data"]["nonce"], format!("late-{i}"));
        assert_eq!(got["from"], doctor.participant_id.as_str());
    }
    // No `unavailable` (nor any other error) for the frames that waited.
    let quiet = Instant::now() + Duration::from_millis(500);
    while let Ok(text) = tokio::time::timeout_at(quiet.into(), doctor.recv_text()).await {
        assert!(!text.contains("\"type\":\"error\""), "refused: {text}");
    }
    signal(&mut patient, &mut doctor, "after").await;
    assert_eq!(c.owner_of(&visit).await, Some(0), "still the owner");
    assert!(
        c.nodes[0].logs().contains("a lease renewal came late"),
        "the late renewal is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nonce_reaches_its_own_peer_across_1000_visits_spread_over_three_nodes() {
    let c = Cluster::start(&[]).await;
    let started = Instant::now();
    let target =
        Target::bedside(&c.lb.base(), &format!("{}:{}", CLINIC_A.0, CLINIC_A.1)).expect("target");
    let outcome = isolation::run(
        target,
        isolation::Options {
            visits: 1000,
            rounds: 10,
            per_second: 20,
            sources: Sources::new(8),
            server_pid: None,
        },
    )
    .await
    .expect("isolation run");
    eprintln!("{}", outcome.report.table());
    eprintln!(
        "isolation over 3 nodes took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for (i, node) in c.nodes.iter().enumerate() {
        let logs = node.logs();
        let count = |needle: &str| logs.matches(needle).count();
        eprintln!(
            "DIAG node{}: no-sign-of-life {}, slow-reader {}, nothing-heard {}, node-gone {}, lapsed {}, renew-failed {}, redis-unavailable {}, renewal-late {}, WARN {}",
            i + 1,
            count("no sign of life"),
            count("outbound queue full"),
            count("nothing heard from redis"),
            count("node is gone"),
            count("liveness had lapsed"),
            count("renewing leases failed"),
            count("redis unavailable"),
            count("lease renewal came late"),
            count("WARN"),
        );
        for line in logs.lines().filter(|l| l.contains("WARN")).take(15) {
            eprintln!("  {line}");
        }
    }
    let t = outcome.tally;
    assert_eq!(outcome.pairs, 1000);
    assert_eq!(t.sent, 1000 * 2 * 10);
    assert_eq!(t.delivered, t.sent, "{t:?}");
    assert_eq!(
        (t.lost, t.duplicated, t.misdelivered, t.out_of_order),
        (0, 0, 0, 0),
        "{t:?}"
    );
    assert!(outcome.failures().is_empty(), "{:?}", outcome.failures());
    // Every node served participants, and relayed for visits other nodes ran.
    for node in &c.nodes {
        let logs = node.logs();
        assert!(logs.contains("joined"), "a node took no participant");
        assert!(logs.contains("took visit over"), "a node ran no visit");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_loses_no_visit() {
    let mut c = Cluster::start(&[]).await;
    let (visit, mut doctor, mut patient) = pair_across(&c, 0, 1).await;
    let (local, mut d3, mut p3) = pair_across(&c, 2, 2).await;

    c.redis.kill().await;
    let lost = Instant::now();
    let readyz = format!("{}/readyz", c.nodes[2].base);
    while status(&readyz).await != 503 {
        assert!(
            lost.elapsed() < STEP,
            "readiness did not notice redis was gone"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "redis gone: not ready after {} ms",
        lost.elapsed().as_millis()
    );
    assert_eq!(status(&format!("{}/healthz", c.nodes[2].base)).await, 200);
    // A visit running wholly on one node goes on meanwhile, for longer than a lease lasts:
    // with Redis gone, nobody can take it over.
    let mut i = 0;
    while lost.elapsed() < Duration::from_secs(7) {
        signal(&mut d3, &mut p3, &format!("outage-{i}")).await;
        signal(&mut p3, &mut d3, &format!("outage-back-{i}")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        i += 1;
    }

    c.redis.run().await;
    let back = Instant::now();
    for node in &c.nodes {
        let readyz = format!("{}/readyz", node.base);
        while status(&readyz).await != 200 {
            assert!(back.elapsed() < STEP, "a node stayed unready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!(
        "redis back: all ready after {} ms",
        back.elapsed().as_millis()
    );
    signal(&mut d3, &mut p3, "after").await;

    // Cross-node messages may have been lost while Redis was down: the patient, seated
    // on another node than the visit's, was sent away, and resumes without a new admission.
    assert_eq!(patient.closed().await, 1001);
    let mut patient = Client::resume(&c.lb.ws_url(), &patient).await;
    signal(&mut doctor, &mut patient, "after-restart").await;
    signal(&mut patient, &mut doctor, "after-restart-2").await;
    for v in [&visit, &local] {
        let seen = c.nodes[1].api(CLINIC_A).get_visit(v).await;
        assert_eq!(seen["status"], "active");
        let admitted: Vec<&Value> = seen["connected"]
            .as_array()
            .expect("connected participants")
            .iter()
            .map(|p| &p["state"])
            .collect();
        assert_eq!(admitted, [&json!("admitted"), &json!("admitted")], "{seen}");
        assert_eq!(seen["waiting"], json!([]), "{seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_sends_its_clients_elsewhere_spread_out_and_without_readmission() {
    // The delay outlasts a lease (3 s): a draining node keeps its visits until it is done.
    let mut c = Cluster::start(&[
        ("BEDSIDE_DRAIN__DELAY_MS", "4000"),
        ("BEDSIDE_DRAIN__JITTER_MS", "1500"),
    ])
    .await;
    let mut pairs = Vec::new();
    for _ in 0..3 {
        pairs.push(pair_across(&c, 0, 0).await);
    }
    // One visit run by the draining node has its patient on another node.
    pairs.push(pair_across(&c, 0, 1).await);
    // In flight as the node is told to stop: still delivered.
    for (i, (_, doctor, patient)) in pairs.iter_mut().enumerate() {
        doctor
            .send(json!({"type": "signal", "to": patient.participant_id, "data": {"nonce": i}}))
            .await;
    }
    let mut node = c.nodes.remove(0);
    let readyz = format!("{}/readyz", node.base);
    let term = Instant::now();
    let stopping = tokio::spawn(async move { node.terminate().await });
    // Readiness goes first, so the load balancer stops sending clients there.
    while status(&readyz).await != 503 {
        assert!(
            term.elapsed() < Duration::from_secs(1),
            "still ready while draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lb = c.lb.ws_url();
    for (i, (_, _, patient)) in pairs.iter_mut().enumerate() {
        assert_eq!(patient.until("signal").await["data"]["nonce"], i);
    }
    // Past the lease's length, the draining node still runs the visit and still hears from
    // the other node.
    tokio::time::sleep_until((term + Duration::from_millis(3500)).into()).await;
    let (_, doctor, patient) = pairs.last_mut().expect("cross-node pair");
    signal(patient, doctor, "while-draining").await;
    // Each client watches for its 1001 on its own, so each close is timed as it arrives.
    let mut watching = Vec::new();
    for (_, doctor, patient) in pairs {
        for mut client in [doctor, patient] {
            watching.push(tokio::spawn(async move {
                let code = client.closed().await;
                (client, code, term.elapsed())
            }));
        }
    }
    let mut clients = Vec::new();
    let mut closes = Vec::new();
    for watch in watching {
        let (client, code, at) = watch.await.expect("join");
        assert_eq!(code, 1001);
        clients.push(client);
        closes.push(at);
    }
    assert!(stopping.await.expect("join").success(), "exits 0");
    closes.sort();
    let (first, last) = (closes[0], closes[closes.len() - 1]);
    eprintln!("drain: first 1001 after {first:?}, last after {last:?}");
    assert!(
        first >= Duration::from_millis(4000),
        "sent away before the delay: {first:?}"
    );
    assert!(
        last - first >= Duration::from_millis(500),
        "not spread over the window: {closes:?}"
    );
    for pair in clients.chunks(2) {
        let mut doctor = Client::resume(&lb, &pair[0]).await;
        let mut patient = Client::resume(&lb, &pair[1]).await;
        signal(&mut doctor, &mut patient, "moved").await;
        signal(&mut patient, &mut doctor, "moved-back").await;
    }
}

/// Sends `join` with `frame` to `url` until a node answers it with an `error` other than
/// `unavailable` (a dead owner's lease must lapse first, and until then a join may also be
/// closed without one); that error's code and the close code that followed it.
async fn answered_refusal(url: &str, frame: Value) -> (String, u16) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let deadline = Instant::now() + STEP;
    loop {
        assert!(Instant::now() < deadline, "never answered {frame}");
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        ws.send(Message::text(frame.to_string()))
            .await
            .expect("send");
        let mut code = None;
        let close = loop {
            match tokio::time::timeout(STEP, ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = bedside_tests::serde_json::from_str(&t).expect("json");
                    assert_eq!(v["type"], "error", "{v}");
                    code = v["code"].as_str().map(str::to_owned);
                }
                Ok(Some(Ok(Message::Close(f)))) => break f.map_or(1005, |f| u16::from(f.code)),
                Ok(Some(Ok(_))) => {}
                _ => break 1006,
            }
        };
        match code {
            Some(code) if code != "unavailable" => return (code, close),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// docs/security.md, "Revocation": a removal written on the owner holds on every node, and
/// after the owner dies and another takes the visit over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_holds_on_every_node_and_after_a_takeover() {
    let mut c = Cluster::start(&[]).await;
    let api = c.nodes[1].api(CLINIC_A);
    let (visit, mut doctor, mut patient) = pair_across(&c, 0, 1).await;
    assert_eq!(c.owner_of(&visit).await, Some(0));
    // The patient's original link, minted again here so the test holds it: the identity's
    // links minted before the removal all go.
    let link = api.mint(&visit, "patient", "pt-1", "Pat One").await;
    doctor
        .send(json!({"type": "remove", "participant_id": patient.participant_id}))
        .await;
    assert_eq!(patient.expect("denied").await["reason"], "removed");
    assert_eq!(patient.closed().await, 4003);
    let revoked = ("access_revoked".to_owned(), 4003);
    let join = json!({"type": "join", "token": link});
    let resume = json!({"type": "join", "resume_token": patient.resume_token});
    for node in &c.nodes {
        assert_eq!(
            answered_refusal(&node.ws_url(), join.clone()).await,
            revoked
        );
        assert_eq!(
            answered_refusal(&node.ws_url(), resume.clone()).await,
            revoked
        );
    }
    // The owner dies; whoever takes the visit over loads the block with it.
    c.nodes[0].kill9().await;
    for node in &c.nodes[1..] {
        assert_eq!(
            answered_refusal(&node.ws_url(), join.clone()).await,
            revoked
        );
        assert_eq!(
            answered_refusal(&node.ws_url(), resume.clone()).await,
            revoked
        );
    }
    assert_ne!(c.owner_of(&visit).await, Some(0));
    // A link minted now, on another node, lets them back.
    let again = c.nodes[2]
        .api(CLINIC_A)
        .mint(&visit, "patient", "pt-1", "Pat One")
        .await;
    let (mut back, _) = Client::join_url(&c.nodes[1].ws_url(), &again).await;
    back.expect("waiting").await;
}

/// The doctor's socket is on one node, the visit runs on another: the owner mints the
/// guest link (every node holds the same keys), records it in the visit's chain, and the
/// link reaches the doctor through their node; the guest, on a third node, still waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doctor_on_a_forwarding_node_gets_a_guest_link_from_the_owner() {
    let c = Cluster::start(&[]).await;
    let (visit, mut doctor, _patient) = pair_across(&c, 1, 0).await;
    assert_eq!(
        c.owner_of(&visit).await,
        Some(1),
        "the doctor's node owns it"
    );
    // Now the doctor's socket on node 0 (forwarding to node 1).
    let api = c.nodes[0].api(CLINIC_A);
    let token = api.mint(&visit, "doctor", "dr-2", "Dr Two").await;
    let (mut doctor2, _) = Client::join_url(&c.nodes[0].ws_url(), &token).await;
    doctor2.until("admitted").await;
    doctor2
        .send(json!({"type": "invite", "role": "guest", "name": "Ana"}))
        .await;
    let link = doctor2.until("invite_link").await;
    let guest_token = link["token"].as_str().expect("token");
    assert!(link["join_url"].as_str().unwrap().ends_with(guest_token));
    doctor2
        .send(json!({"type": "invite", "role": "doctor", "name": "Ana"}))
        .await;
    assert_eq!(doctor2.until("error").await["code"], "invalid_role");

    let (mut guest, _) = Client::join_url(&c.nodes[2].ws_url(), guest_token).await;
    guest.expect("waiting").await;
    // The doctor's lobby (earlier ones may still be on the way) shows the guest waiting.
    loop {
        let lobby = doctor.until("lobby").await;
        let waiting = lobby["waiting"].as_array().unwrap();
        if waiting
            .iter()
            .any(|w| w["participant_id"] == guest.participant_id.as_str())
        {
            break;
        }
    }
    let claims = bedside_tests::claims_of(guest_token);
    let events = c.nodes[2].api(CLINIC_A).events(&visit).await;
    let invited: Vec<&Value> = events.iter().filter(|e| e["kind"] == "invited").collect();
    assert_eq!(invited.len(), 1, "{events:?}");
    assert_eq!(invited[0]["actor"], doctor2.participant_id.as_str());
    assert_eq!(invited[0]["detail"], claims["jti"]);
    let (status, verified) = c.nodes[2]
        .api(CLINIC_A)
        .call(
            reqwest::Method::GET,
            &format!("/v1/visits/{visit}/events/verify"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(verified["intact"], true, "{verified}");
}

/// What one connection got for a `join`: every text frame up to `admitted` (or up to the
/// close), the close code and reason if it was closed, and how long the answer took.
struct Answer {
    /// Kept open: a connection dropped now would add a (true) `dropped` to the trail.
    _ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    frames: Vec<Value>,
    close: Option<(u16, String)>,
    took: Duration,
}

/// Sends `join` with `frame` on one new connection to `url`, without retrying: a client
/// that had to reconnect would show here as a close.
async fn one_join(url: &str, frame: Value) -> Answer {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let started = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("send");
    let mut frames = Vec::new();
    let close = loop {
        match tokio::time::timeout(STEP, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = bedside_tests::serde_json::from_str(&t).expect("json");
                let done = v["type"] == "admitted";
                frames.push(v);
                if done {
                    break None;
                }
            }
            Ok(Some(Ok(Message::Close(f)))) => {
                break Some(f.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                }));
            }
            Ok(Some(Ok(_))) => {}
            Ok(_) => break Some((1006, String::new())),
            Err(_) => panic!("no answer to {frame} within {STEP:?}: {frames:?}"),
        }
    };
    Answer {
        _ws: ws,
        frames,
        close,
        took: started.elapsed(),
    }
}

/// The kinds of the audit trail's rows about `participant`, in order.
fn trail_of(events: &[Value], participant: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["participant_id"] == participant)
        .filter_map(|e| e["kind"].as_str().map(str::to_owned))
        .collect()
}

/// Issue 13, item 9 (docs/operations.md, "When a node dies"): a client resuming on a
/// surviving node while the dead owner's liveness has not lapsed yet is held, and answered
/// with `joined` once a survivor has taken the visit over: no close, no second attempt.
/// The participant seated with the dead owner through another node is sent on with a
/// close that says what happened (1001, the visit runs on another node), not "server
/// restarting". And the audit trail holds exactly the joins that were answered.
///
/// Before the fix, the node that noticed the owner's death closed the waiting join's
/// connection (a bare 1001 queued ahead of its `joined`) about half the time, so three
/// rounds catch it nearly always.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_on_a_survivor_during_a_takeover_is_answered_with_joined_and_audited_once() {
    for round in 0..3 {
        let mut c = Cluster::start(&[]).await;
        let (visit, doctor, mut patient) = pair_across(&c, 0, 1).await;
        assert_eq!(c.owner_of(&visit).await, Some(0));
        c.nodes[0].kill9().await;
        // The doctor's socket died with the node; the doctor resumes at once on node 2,
        // where the patient is seated with the dead owner.
        let resume = json!({"type": "join", "resume_token": doctor.resume_token});
        let survivor = c.nodes[1].ws_url();
        let (answer, patient_close) =
            tokio::join!(one_join(&survivor, resume), patient.close_frame());
        eprintln!(
            "round {round}: resume answered after {} ms: {:?}",
            answer.took.as_millis(),
            answer.frames.iter().map(|f| &f["type"]).collect::<Vec<_>>()
        );
        assert_eq!(
            answer.close, None,
            "closed instead of joined: {:?}",
            answer.frames
        );
        assert_eq!(answer.frames[0]["type"], "joined", "{:?}", answer.frames);
        assert_eq!(
            answer.frames[0]["participant_id"],
            doctor.participant_id.as_str()
        );
        // Held no longer than the documented deadline: twice the lease (3 s) and a second.
        assert!(answer.took < Duration::from_secs(7), "{:?}", answer.took);
        assert_eq!(
            patient_close,
            (1001, "the visit runs on another node; reconnect".to_owned())
        );
        let _patient = Client::resume(&c.lb.ws_url(), &patient).await;

        // Each participant: `joined` once, then one `rejoined` for the one resume each
        // got `joined` for. No `dropped` for a join nobody saw.
        let events = c.nodes[2].api(CLINIC_A).events(&visit).await;
        let joins = |p: &str| -> Vec<String> {
            trail_of(&events, p)
                .into_iter()
                .filter(|k| ["joined", "rejoined", "replaced", "dropped"].contains(&k.as_str()))
                .collect()
        };
        assert_eq!(
            joins(&doctor.participant_id),
            ["joined", "rejoined"],
            "{events:?}"
        );
        assert_eq!(
            joins(&patient.participant_id),
            ["joined", "rejoined"],
            "{events:?}"
        );
        assert_ne!(c.owner_of(&visit).await, Some(0));
    }
}

/// Issue 13, item 9, the other branch: when no node can serve a join within the documented
/// deadline (twice the lease and a second: 7 s with the 3 s lease), the client is told
/// why (`error {code: "unavailable"}`) and then closed with 1013 "try again later", which
/// is true (the server is not restarting) and which clients retry at once. Here the
/// visit's lease names a node that Redis says is alive but that never answers (a hung
/// owner, played through redis-cli); once its liveness goes, the next join is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_no_node_can_serve_in_time_is_told_why_then_closed_with_try_again_later() {
    let c = Cluster::start(&[]).await;
    let api = c.nodes[0].api(CLINIC_A);
    let visit = api.visit().await;
    let link = api.mint(&visit, "patient", "pt-1", "Pat One").await;
    c.redis
        .cli(&["SET", "bedside:alive:ghost", "1", "PX", "30000"])
        .await;
    c.redis
        .cli(&["SET", &format!("bedside:lease:{visit}"), "ghost"])
        .await;
    let join = json!({"type": "join", "token": link});
    let answer = one_join(&c.nodes[1].ws_url(), join.clone()).await;
    eprintln!("refused after {} ms", answer.took.as_millis());
    let types: Vec<&Value> = answer.frames.iter().map(|f| &f["type"]).collect();
    assert_eq!(types, [&json!("error")], "{:?}", answer.frames);
    assert_eq!(answer.frames[0]["code"], "unavailable");
    assert_eq!(answer.close, Some((1013, "join refused".to_owned())));
    assert!(
        answer.took >= Duration::from_millis(6900) && answer.took < Duration::from_secs(9),
        "held {:?}, not the deadline",
        answer.took
    );
    let events = api.events(&visit).await;
    assert!(
        events.iter().all(|e| e["kind"] != "joined"),
        "a join nobody was answered for: {events:?}"
    );
    // The hung owner is gone: a node takes the visit over, and the same link is served.
    c.redis.cli(&["DEL", "bedside:alive:ghost"]).await;
    let (mut patient, _) = Client::join_url(&c.nodes[2].ws_url(), &link).await;
    patient.expect("waiting").await;
}

/// Issue 14 item 4 across nodes: a single-use link used on one node is refused on every
/// other (their joins go to the visit's owner, which knows), and after the owner dies
/// (the next owner loads the used links with the visit); the resume token still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_use_link_used_on_one_node_is_refused_on_the_others_and_after_a_takeover() {
    let mut c = Cluster::start(&[]).await;
    let api = c.nodes[1].api(CLINIC_A);
    let visit = api.visit().await;
    let doctor_link = api.mint(&visit, "doctor", "dr-1", "Dr One").await;
    let (status, minted) = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/visits/{visit}/tokens"),
            Some(json!({"role": "patient", "identity": "pt-1", "single_use": true})),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    let link = minted["token"].as_str().expect("token").to_owned();
    let (mut doctor, _) = Client::join_url(&c.nodes[0].ws_url(), &doctor_link).await;
    doctor.expect("admitted").await;
    assert_eq!(c.owner_of(&visit).await, Some(0));
    let (mut patient, _) = Client::join_url(&c.nodes[1].ws_url(), &link).await;
    patient.expect("waiting").await;
    let used = ("token_used".to_owned(), 4001);
    let join = json!({"type": "join", "token": link});
    for node in &c.nodes {
        assert_eq!(answered_refusal(&node.ws_url(), join.clone()).await, used);
    }
    doctor.until("lobby").await;
    doctor
        .send(json!({"type": "admit", "participant_id": patient.participant_id}))
        .await;
    patient.expect("admitted").await;
    assert_eq!(
        answered_refusal(&c.nodes[2].ws_url(), join.clone()).await,
        used
    );

    c.nodes[0].kill9().await;
    assert_eq!(patient.closed().await, 1001);
    let _back = Client::resume(&c.nodes[2].ws_url(), &patient).await;
    assert_ne!(c.owner_of(&visit).await, Some(0));
    for node in &c.nodes[1..] {
        assert_eq!(answered_refusal(&node.ws_url(), join.clone()).await, used);
    }
}

/// Skips frames until a `waiting` frame that satisfies `pred` (within [`STEP`]: standings
/// are sent again as they change, so a wrong one must not keep the test waiting forever).
async fn waiting_until(c: &mut Client, pred: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let found = tokio::time::timeout(STEP, async {
        loop {
            let v = c.until("waiting").await;
            if pred(&v) {
                return v;
            }
            last = v;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no such waiting frame; the last was {last}"))
}

/// Skips `queue` frames until one whose entries satisfy `pred` (within [`STEP`]).
async fn queue_where(c: &mut Client, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut last = Value::Null;
    let found = tokio::time::timeout(STEP, async {
        loop {
            let q = c.until("queue").await;
            let entries = q["entries"].as_array().expect("entries").clone();
            if pred(&entries) {
                return entries;
            }
            last = q;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no such queue frame; the last was {last}"))
}

/// The visits of a queue's entries, in order.
fn visits_of(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["visit_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `GET /v1/providers/{provider}/queue` on `node` until its visits are `expected`.
async fn rest_queue(c: &Cluster, node: usize, provider: &str, expected: &[String]) -> Vec<Value> {
    let api = c.nodes[node].api(CLINIC_A);
    let deadline = Instant::now() + STEP;
    loop {
        let (status, body) = api
            .call(
                reqwest::Method::GET,
                &format!("/v1/providers/{provider}/queue"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let entries = body["entries"].as_array().expect("entries").clone();
        if visits_of(&entries) == expected {
            return entries;
        }
        assert!(
            Instant::now() < deadline,
            "node{} shows {body}, not {expected:?}",
            node + 1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn provider_token(api: &bedside_tests::Api, provider: &str, name: &str) -> String {
    let (status, body) = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/providers/{provider}/tokens"),
            Some(json!({"name": name})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().expect("token").to_owned()
}

/// Issue 14: a provider's queue across nodes. Three patients wait in three visits, each run
/// by another node; the provider's dashboard, the REST API and each patient's standing
/// agree on one queue wherever they are; presence and messages cross the nodes; a second
/// dashboard elsewhere replaces the first; a node's death takes its entries out, and its
/// visits' takeover brings them back once, in their place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_queue_spans_visits_run_by_different_nodes() {
    let mut c = Cluster::start(&[("BEDSIDE_CLINIC__DEFAULT_CONSULTATION_SECS", "600")]).await;
    let api = c.nodes[0].api(CLINIC_A);
    let mut visits = Vec::new();
    let mut patients = Vec::new();
    for n in 0..3 {
        let v = api
            .create_visit(json!({"provider": "dr-lee", "external_ref": format!("appt-{n}")}))
            .await;
        let id = v["id"].as_str().expect("id").to_owned();
        let token = api
            .mint(&id, "patient", &format!("pt-{n}"), &format!("Patient {n}"))
            .await;
        // Joining node n first, the patient makes node n run the visit.
        let (mut p, _) = Client::join_url(&c.nodes[n].ws_url(), &token).await;
        let standing = waiting_until(&mut p, |v| v["position"] == n as u64 + 1).await;
        // Each visit ahead, whichever node runs it, counts one typical consultation.
        assert_eq!(standing["expected_wait_secs"], 600 * n as u64, "{standing}");
        assert_eq!(c.owner_of(&id).await, Some(n));
        visits.push(id);
        patients.push(p);
    }
    // Patient 2's pre-call check, on node 3, shows on a dashboard on node 1.
    patients[2]
        .send(json!({"type": "precheck", "camera": true, "microphone": true, "network": "direct"}))
        .await;

    let lee = provider_token(&api, "dr-lee", "Dr Lee").await;
    let (mut desk, _) = Client::join_url(&c.nodes[0].ws_url(), &lee).await;
    let entries = queue_where(&mut desk, |e| {
        e.len() == 3 && e[2]["precheck"]["network"] == "direct"
    })
    .await;
    assert_eq!(visits_of(&entries), visits, "knock order across nodes");
    for (n, entry) in entries.iter().enumerate() {
        assert_eq!(entry["position"], n as u64 + 1);
        assert_eq!(entry["external_ref"], format!("appt-{n}"));
        assert_eq!(entry["participant"]["name"], format!("Patient {n}"));
        assert_eq!(
            entry["participant"]["participant_id"],
            patients[n].participant_id.as_str()
        );
    }
    for node in 0..3 {
        let rest = rest_queue(&c, node, "dr-lee", &visits).await;
        assert_eq!(rest[2]["precheck"]["network"], "direct");
        assert_eq!(
            rest.iter()
                .map(|e| e["position"].clone())
                .collect::<Vec<_>>(),
            [json!(1), json!(2), json!(3)]
        );
    }
    // Another clinic's dr-lee has nobody waiting, on any node.
    let (status, other) = c.nodes[2]
        .api(bedside_tests::CLINIC_B)
        .call(reqwest::Method::GET, "/v1/providers/dr-lee/queue", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(other["entries"], json!([]));

    // Presence chosen on node 1 reaches the waiting rooms on every node, with the name.
    desk.send(json!({"type": "presence", "status": "away"}))
        .await;
    for p in &mut patients {
        let w = waiting_until(p, |v| v["provider"]["presence"] == "away").await;
        assert_eq!(w["provider"]["name"], "Dr Lee");
    }
    desk.send(json!({"type": "presence", "status": "available"}))
        .await;
    for p in &mut patients {
        waiting_until(p, |v| v["provider"]["presence"] == "available").await;
    }

    // Messages to every visit, and to one run by another node.
    desk.send(json!({"type": "notify", "text": "Running ten minutes late."}))
        .await;
    for p in &mut patients {
        let m = p.until("provider_message").await;
        assert_eq!(m["text"], "Running ten minutes late.");
    }
    desk.send(json!({"type": "notify", "visit_id": visits[2], "text": "You are next."}))
        .await;
    assert_eq!(
        patients[2].until("provider_message").await["text"],
        "You are next."
    );
    for p in &mut patients[..2] {
        // Their standings may still be re-sent meanwhile; the message is not.
        let heard = tokio::time::timeout(Duration::from_millis(500), p.until("provider_message"));
        assert!(
            heard.await.is_err(),
            "a message for visit 3 reached another visit"
        );
    }

    // A second dashboard on node 2 replaces the first, on node 1.
    let (mut desk2, _) = Client::join_url(&c.nodes[1].ws_url(), &lee).await;
    assert_eq!(desk.closed().await, 4009);
    let entries = queue_where(&mut desk2, |e| e.len() == 3).await;
    assert_eq!(visits_of(&entries), visits);
    // The new dashboard sets the presence patients see (the replaced one's departure does
    // not count).
    desk2
        .send(json!({"type": "presence", "status": "away"}))
        .await;
    waiting_until(&mut patients[0], |v| v["provider"]["presence"] == "away").await;

    // "See patient" from the dashboard on node 2: the visit runs on node 1. Patients whose
    // visits run on nodes 2 and 3 move up and see the provider busy.
    desk2
        .send(json!({"type": "take", "visit_id": visits[0]}))
        .await;
    let taken = desk2.until("visit_token").await;
    let (mut doctor, _) = Client::join_url(
        &c.nodes[1].ws_url(),
        taken["token"].as_str().expect("token"),
    )
    .await;
    doctor.expect("admitted").await;
    doctor
        .send(json!({"type": "admit", "participant_id": patients[0].participant_id}))
        .await;
    patients[0].until("admitted").await;
    for (n, p) in patients.iter_mut().enumerate().skip(1) {
        waiting_until(p, |v| {
            v["position"] == n as u64 && v["provider"]["presence"] == "busy"
        })
        .await;
    }
    let waiting = visits[1..].to_vec();
    queue_where(&mut desk2, |e| visits_of(e) == waiting).await;

    // Node 3 dies with its visit (and patient 2): its entry goes, everywhere...
    c.nodes[2].kill9().await;
    assert_eq!(patients[2].closed().await, 1006);
    let one = vec![visits[1].clone()];
    queue_where(&mut desk2, |e| visits_of(e) == one).await;
    rest_queue(&c, 0, "dr-lee", &one).await;
    // ...and comes back once, in its place, when the patient's resumption has another
    // node take the visit over.
    let deadline = Instant::now() + STEP;
    let mut back = loop {
        let resume = json!({"type": "join", "resume_token": patients[2].resume_token});
        match Client::try_join(&c.lb.ws_url(), resume).await {
            Ok((back, joined)) => {
                assert_eq!(
                    joined["participant_id"],
                    patients[2].participant_id.as_str()
                );
                break back;
            }
            Err(why) => {
                assert!(Instant::now() < deadline, "could not rejoin: {why}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    waiting_until(&mut back, |v| v["position"] == 2).await;
    let owner = c.owner_of(&visits[2]).await.expect("taken over");
    assert_ne!(owner, 2);
    let entries = queue_where(&mut desk2, |e| e.len() == 2).await;
    assert_eq!(visits_of(&entries), waiting, "not duplicated, same place");
    for node in 0..2 {
        rest_queue(&c, node, "dr-lee", &waiting).await;
    }
    // Redis holds one entry per visit (the first: the provider is in it), none of them
    // the dead node's.
    // Redis holds one entry per visit, none of them the dead node's.
    let stored = c.redis.hash("bedside:queue:clinic-a:dr-lee").await;
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert!(
        stored.iter().all(|(_, v)| !v.contains("\"node\":\"node3")),
        "{stored:?}"
    );
}
