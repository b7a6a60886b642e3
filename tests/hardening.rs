//! Hardening under load, CI-sized: isolation of many concurrent visits, no leaks over
//! join/leave churn, and a `kill -9` restart with every client storming back at once.
//! The full-size runs (5,000 visits, 100,000 cycles, 2,000 clients) use the same scenarios
//! from `bedside-loadtest` against a release build; docs/hardening.md has their commands
//! and figures.

use bedside_loadtest::scenario::{churn, isolation, reconnect_storm};
use bedside_loadtest::target::{Sources, Target};
use bedside_tests::{CLINIC_A, Client, Pair, TestServer};
use reqwest::Method;
use std::time::{Duration, Instant};

/// All the load comes from a few loopback addresses, where real clients each have their
/// own: the per-address flood limits are raised so they do not stand in for load.
const ONE_MACHINE: [(&str, &str); 5] = [
    ("BEDSIDE_WS__MAX_PER_IP", "20000"),
    ("BEDSIDE_WS__JOINS_PER_IP_PER_SECOND", "100000"),
    ("BEDSIDE_WS__JOIN_BURST_PER_IP", "100000"),
    ("BEDSIDE_API__VISITS_PER_MINUTE", "1000000"),
    ("BEDSIDE_API__VISIT_BURST", "100000"),
];

fn env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    ONE_MACHINE.iter().chain(extra).copied().collect()
}

fn target(server: &TestServer) -> Target {
    Target::bedside(&server.base, &format!("{}:{}", CLINIC_A.0, CLINIC_A.1)).expect("target")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nonce_reaches_its_own_peer_once_in_order_across_300_visits() {
    let server = TestServer::start_with(&env(&[])).await;
    let started = Instant::now();
    let outcome = isolation::run(
        target(&server),
        isolation::Options {
            visits: 300,
            rounds: 20,
            // Under the default per-connection limit (50/s), which stays in force.
            per_second: 20,
            sources: Sources::new(8),
            server_pid: Some(server.pid()),
        },
    )
    .await
    .expect("isolation run");
    eprintln!("{}", outcome.report.table());
    eprintln!("isolation took {:.1} s", started.elapsed().as_secs_f64());
    let t = outcome.tally;
    assert_eq!(outcome.pairs, 300);
    assert_eq!(t.sent, 300 * 2 * 20);
    assert_eq!(t.delivered, t.sent, "{t:?}");
    assert_eq!(
        (t.lost, t.duplicated, t.misdelivered, t.out_of_order),
        (0, 0, 0, 0),
        "{t:?}"
    );
    assert!(outcome.failures().is_empty(), "{:?}", outcome.failures());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_churn_leaves_no_descriptors_or_tasks_behind() {
    // A short grace period: drops expire within the test, and the cycles are not held up
    // waiting for places (the length of the grace period does not change what is freed).
    let server = TestServer::start_with(&env(&[("BEDSIDE_GRACE_SECONDS", "2")])).await;
    let started = Instant::now();
    let outcome = churn::run(
        target(&server),
        churn::Options {
            cycles: 3000,
            concurrency: 16,
            pool: 128,
            warmup: 1500,
            grace: Duration::from_secs(2),
            server_pid: server.pid(),
            sources: Sources::new(8),
            tolerance_pct: 5.0,
        },
    )
    .await
    .expect("churn run");
    eprintln!("{}", outcome.report.table());
    eprintln!("churn took {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(outcome.cycles, 3000);
    let counts = &outcome.report.stats.counts;
    assert_eq!(counts.get("cycles ended with a drop"), Some(&1500));
    assert_eq!(counts.get("cycles ended with leave"), Some(&1500));
    assert!(
        outcome.report.stats.errors.is_empty(),
        "{:?}",
        outcome.report.stats.errors
    );
    // Each of these would grow by the hundreds with a leak per dropped participant.
    let [rss, fds, tasks] = outcome.figures();
    for f in [fds, tasks] {
        assert!(
            f.change_pct().abs() <= 5.0,
            "{} went from {} to {} (peak {})",
            f.name,
            f.before,
            f.after,
            f.peak
        );
        assert!(
            f.peak > f.before,
            "{}: the load did not show in the figures",
            f.name
        );
    }
    // Resident memory is reported, and held only to a gross-leak bar: from a fresh start
    // it climbs to a plateau over the first tens of thousands of cycles (allocator arenas,
    // SQLite's page cache), so a short run cannot tell a small leak from that climb. The
    // release runs in docs/hardening.md hold it to 5% once on the plateau. What a leaked
    // participant or visit would keep alive shows in the visits still in memory, below.
    assert!(
        rss.change_pct().abs() <= 50.0,
        "resident memory went from {:.1} MiB to {:.1} MiB",
        rss.before,
        rss.after
    );
    // Nobody is left in the visits but the doctors.
    assert_eq!(outcome.before.live_visits, 96, "the doctors' visits");
    assert_eq!(outcome.after.live_visits, outcome.before.live_visits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_a_storm_of_clients_gets_back_in_place_within_a_second() {
    let mut server = TestServer::start_with(&env(&[])).await;
    let visits = 200;
    let prepared = reconnect_storm::prepare(
        &target(&server),
        reconnect_storm::RestartOptions {
            visits,
            window: Duration::from_secs(1),
            sources: Sources::new(8),
            restart_timeout: Duration::from_secs(30),
            early: false,
        },
    )
    .await
    .expect("set up");
    assert_eq!(prepared.clients(), 2 * visits);

    server.kill9().await;
    let server = server.restart().await;
    let outcome = prepared.comeback(&target(&server)).await.expect("comeback");
    eprintln!("{}", outcome.report.table());
    assert!(outcome.failures().is_empty(), "{:?}", outcome.failures());
    assert_eq!(outcome.back, 2 * visits);
    assert_eq!(outcome.states_kept, 2 * visits);
    assert_eq!(
        (outcome.visits_intact, outcome.trails_intact),
        (visits, visits)
    );
    assert_eq!(outcome.errors, 0);
    let counts = &outcome.report.stats.counts;
    assert_eq!(
        counts.get("back admitted (kept)"),
        Some(&(3 * visits as u64 / 2))
    );
    assert_eq!(
        counts.get("back waiting (kept)"),
        Some(&(visits as u64 / 2))
    );
    // Everyone starts within the one-second window. A debug build needs more time to load
    // each visit from the database (1.2 to 2.3 s seen, the latter beside a release build);
    // the release figure (about 1.0 s for 2,000 clients) is in docs/hardening.md.
    let all_back = outcome.all_back.expect("all back");
    assert!(
        all_back < Duration::from_secs(5),
        "all back after {all_back:?}"
    );
    eprintln!(
        "all {} clients back {:.2} s after the window opened; {} retries",
        outcome.back,
        all_back.as_secs_f64(),
        outcome.retries
    );

    // Seen from the API too: every visit is still there, active.
    let api = server.api(CLINIC_A);
    let (mut listed, mut cursor) = (0, None::<String>);
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/visits?limit=200&cursor={c}"),
            None => "/v1/visits?limit=200".to_owned(),
        };
        let (_, page) = api.call(Method::GET, &path, None).await;
        for v in page["visits"].as_array().expect("visits") {
            assert_eq!(v["status"], "active", "{v}");
            listed += 1;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(listed, visits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_come_back_while_the_server_is_down_retry_and_get_back_in_place() {
    // The same address across the restart, as in production, so clients can knock early.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = TestServer::start_with(&env(&[("BEDSIDE_LISTEN", &listen)])).await;
    let visits = 100;
    let prepared = reconnect_storm::prepare(
        &target(&server),
        reconnect_storm::RestartOptions {
            visits,
            window: Duration::from_secs(1),
            sources: Sources::new(8),
            restart_timeout: Duration::from_secs(30),
            // Everyone starts coming back the moment the connection drops.
            early: true,
        },
    )
    .await
    .expect("set up");
    let target = target(&server);
    let storm = tokio::spawn(async move { prepared.comeback(&target).await });
    server.kill9().await;
    // Down for a moment: whoever knocks now finds nothing listening.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _server = server.restart().await;
    let outcome = storm.await.expect("storm task").expect("comeback");
    eprintln!("{}", outcome.report.table());
    assert!(outcome.failures().is_empty(), "{:?}", outcome.failures());
    assert_eq!(outcome.states_kept, 2 * visits);
    assert_eq!(outcome.errors, 0);
    // Refused connects were retried with backoff, and are counted as retries only.
    assert!(
        outcome.retries > 0,
        "nobody knocked while the server was down"
    );
}

/// docs/protocol.md: after a restart, admissions hold for one grace period *from the restart*.
/// A participant coming back later than that starts in the waiting room again, even if
/// nobody touched the visit since the restart.
#[tokio::test]
async fn an_admission_does_not_outlive_the_grace_period_after_a_restart() {
    let mut server = TestServer::start_with(&[("BEDSIDE_GRACE_SECONDS", "2")]).await;
    let api = server.api(CLINIC_A);
    let pair = Pair::admitted(&server, &api).await;
    let patient_id = pair.patient.participant_id.clone();
    let resume = pair.patient.resume_token.clone();
    // On disk before the kill.
    api.events(&pair.visit).await;
    server.kill9().await;
    let server = server.restart().await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    // The place is gone, and the resume token with it (it names that place).
    let mut back = Client::connect(&server).await;
    back.send(bedside_tests::serde_json::json!({"type": "join", "resume_token": resume}))
        .await;
    let refused = back.expect("error").await;
    assert_eq!(refused["code"], "invalid_token", "{refused}");
    assert_eq!(back.closed().await, 4001);

    // With a link as well, the patient knocks again: waiting, not admitted.
    let link = server
        .api(CLINIC_A)
        .mint(&pair.visit, "patient", "pt-1", "Pat One")
        .await;
    let mut back = Client::connect(&server).await;
    back.send(
        bedside_tests::serde_json::json!({"type": "join", "token": link, "resume_token": resume}),
    )
    .await;
    let joined = back.expect("joined").await;
    let placed = back.recv().await;
    assert_eq!(
        placed["type"], "waiting",
        "came back as {} ({}) four seconds after a restart with a two-second grace period",
        joined["participant_id"], patient_id
    );
}
