//! The servers Bedside is compared with (the lean relay, PeerJS's signaling server) carry
//! the `visits` load and hold `idle` connections as the load tool drives them: a comparison
//! in BENCHMARKS.md is only as good as the harness's grip on the other server.
//!
//! PeerJS runs as `node crates/loadtest/peerjs/server.mjs`, with the package its lock file
//! pins (`scripts/test-prerequisites` installs it).

use bedside_loadtest::report::Report;
use bedside_loadtest::scenario::{CONNECT, RELAY, idle, visits};
use bedside_loadtest::target::{Sources, Target};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const VISITS: usize = 6;

fn visits_options() -> visits::Options {
    visits::Options {
        visits: VISITS,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        signal_bytes: 1500,
        window: 1,
        think: Duration::ZERO,
        sdp_bytes: 4000,
        candidates: 8,
        webrtc: 0,
        stats_every: None,
        queue_patients: 0,
        queue_every: Duration::from_millis(200),
        sources: Sources::new(2),
        server_pid: None,
    }
}

/// Every pair was set up and relayed, with nothing refused or lost on the way.
fn assert_relayed(report: &Report) {
    let stats = &report.stats;
    assert!(
        stats.errors.is_empty(),
        "{}: errors {:?}",
        report.target,
        stats.errors
    );
    assert_eq!(
        stats.latencies.get(CONNECT).map(|h| h.len()),
        Some(2 * VISITS as u64),
        "{}: every connection timed to ready",
        report.target
    );
    let relayed = stats.counts.get("messages relayed").copied().unwrap_or(0);
    assert!(
        relayed > 100,
        "{}: {relayed} messages relayed",
        report.target
    );
    let timed = stats.latencies.get(RELAY).map_or(0, |h| h.len());
    assert_eq!(
        timed, relayed,
        "{}: every relayed signal carried its timestamp through",
        report.target
    );
    // One value per visit, each within the run's own range.
    let all = &stats.latencies[RELAY];
    for name in [visits::EACH_VISIT_P50, visits::EACH_VISIT_P99] {
        let each = stats.latencies.get(name);
        assert_eq!(
            each.map(|h| h.len()),
            Some(VISITS as u64),
            "{}: {name} for every visit",
            report.target
        );
        let each = each.expect("checked above");
        assert!(
            each.min() >= all.min() && each.max() <= all.max(),
            "{}: {name} outside the run's range",
            report.target
        );
    }
}

/// PeerJS's server on a port it picks, and its URL; killed when dropped.
async fn peerjs() -> (Child, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("peerjs");
    assert!(
        dir.join("node_modules/peer").is_dir(),
        "PeerJS is not installed in {}: run scripts/test-prerequisites (npm ci there)",
        dir.display()
    );
    let mut child = Command::new("node")
        .arg("server.mjs")
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("reads") {
            if let Some(url) = line.strip_prefix("peerjs listening on ") {
                return url.to_owned();
            }
        }
        panic!("PeerJS exited before listening");
    })
    .await
    .expect("PeerJS listens within 20 s");
    (child, url)
}

/// 20 idle connections, two per visit; memory read from `server_pid` if given.
fn idle_options(server_pid: Option<u32>, settle: Duration) -> idle::Options {
    idle::Options {
        connections: 20,
        per_visit: 2,
        sources: Sources::new(2),
        server_pid,
        hold: Duration::ZERO,
        settle,
    }
}

/// The lean relay in this process, on a thread of its own as the `baseline-relay` binary
/// runs it (one thread).
async fn lean_relay() -> Target {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let url = format!("ws://{}", listener.local_addr().expect("bound"));
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _ = rt.block_on(
            tokio::task::LocalSet::new().run_until(bedside_loadtest::baseline::serve(listener)),
        );
    });
    Target::baseline(&url).expect("loopback")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lean_relay_carries_the_visits_load() {
    let target = lean_relay().await;
    let report = visits::run(target, visits_options()).await.expect("runs");
    assert_relayed(&report);
}

/// The memory figure of record is read once the server has settled, with everyone still
/// held; the first reading, 3 s after the last join, is reported beside it. The relay runs
/// in this process, so this process's resident memory is what is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_memory_is_read_right_after_the_joins_and_again_once_settled() {
    let target = lean_relay().await;
    let started = std::time::Instant::now();
    let report = idle::run(
        target,
        idle_options(Some(std::process::id()), Duration::from_secs(2)),
    )
    .await
    .expect("runs");
    assert!(report.stats.errors.is_empty(), "{:?}", report.stats.errors);
    assert_eq!(report.stats.counts.get("connections held"), Some(&20));
    // The first reading 3 s after the joins, the second 2 s after that.
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for key in [
        "rss_before_mib",
        "rss_first_mib",
        "rss_after_mib",
        "bytes_per_connection_first",
        "bytes_per_connection",
    ] {
        assert!(
            report.server.contains_key(key),
            "{key} in {:?}",
            report.server
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peerjs_carries_the_visits_load_and_holds_idle_connections() {
    let (_server, url) = peerjs().await;
    let target = Target::peerjs(&url).expect("loopback");
    let report = visits::run(target.clone(), visits_options())
        .await
        .expect("runs");
    assert_relayed(&report);

    let report = idle::run(target, idle_options(None, Duration::ZERO))
        .await
        .expect("runs");
    assert!(report.stats.errors.is_empty(), "{:?}", report.stats.errors);
    assert_eq!(report.stats.counts.get("connections held"), Some(&20));
}

#[tokio::test]
async fn a_refusal_by_peerjs_is_reported_with_its_reason() {
    let (_server, url) = peerjs().await;
    let target = Target::peerjs(&url).expect("loopback");
    let wrong_key = target.ws_url("d1").replace("key=peerjs", "key=wrong");
    let mut ws = bedside_loadtest::client::Ws::connect(&wrong_key, Sources::new(1).pick(0))
        .await
        .expect("connects");
    // Not a wait for `OPEN` until the step's timeout: PeerJS's `ERROR` ends it at once.
    let err = tokio::time::timeout(Duration::from_secs(5), ws.until("OPEN"))
        .await
        .expect("answered at once")
        .expect_err("a wrong key is refused");
    assert!(
        err.to_string().contains("Invalid key"),
        "the refusal names its reason: {err}"
    );
}
