//! Webhooks against a real HTTP receiver on loopback: every event of a visit arrives signed,
//! in per-visit sequence order with no gaps; a receiver that is down, then up, gets every
//! event (by id, exactly the ones `GET /v1/events` lists); a `kill -9` in the middle loses
//! nothing; a dead receiver of one tenant does not hold up another tenant or signaling.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bedside_tests::{CLINIC_A, CLINIC_B, Client, Pair, STEP, TestServer};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const SECRET_A: &str = "whsec_clinic_a_0123456789";
const SECRET_B: &str = "whsec_clinic_b_0123456789";

/// Fast retries, so "down for a while" fits in a test.
const FAST: [(&str, &str); 3] = [
    ("BEDSIDE_WEBHOOK_DELIVERY__RETRY_BASE_MS", "100"),
    ("BEDSIDE_WEBHOOK_DELIVERY__RETRY_MAX_SECS", "1"),
    ("BEDSIDE_WEBHOOK_DELIVERY__POLL_MS", "50"),
];

/// What the receiver does with a delivery.
const ACCEPT: u8 = 0;
const FAIL: u8 = 1;
/// Never answers: the connection stays open until the sender gives up.
const HANG: u8 = 2;
/// Accepts while `budget` lasts, then fails.
const LIMITED: u8 = 3;

/// One delivery as the receiver got it.
#[derive(Debug, Clone)]
struct Delivery {
    body: String,
    header: String,
    /// The Standard Webhooks headers: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    standard: BTreeMap<&'static str, String>,
    event: Value,
    signature_ok: bool,
}

#[derive(Clone)]
struct Shared {
    secret: &'static str,
    mode: Arc<AtomicU8>,
    budget: Arc<AtomicUsize>,
    got: Arc<Mutex<Vec<Delivery>>>,
    /// When each delivery attempt reached the receiver, whatever it then did.
    attempts: Arc<Mutex<Vec<Instant>>>,
}

/// A pseudo-random port offset, different in each test process and call.
fn rand_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) as u16
}

/// A webhook receiver on a loopback port that verifies signatures and records deliveries.
/// It can refuse connections (not listening), fail (503), hang, or accept.
struct Receiver {
    addr: SocketAddr,
    shared: Shared,
    running: Option<CancellationToken>,
}

impl Receiver {
    /// A receiver that is not listening yet: deliveries get "connection refused".
    ///
    /// Its port is below the ephemeral range (32768 and up on Linux): Bedside's own attempts
    /// to connect to a port in that range, with nothing listening, can be given that very
    /// port as their source and connect to themselves (a TCP self-connect), which keeps the
    /// port taken and the receiver from ever listening on it.
    async fn down(secret: &'static str) -> Self {
        let addr = loop {
            let port = 10_000 + rand_port() % 20_000;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            if let Ok(probe) = TcpListener::bind(addr).await {
                drop(probe);
                break addr;
            }
        };
        Self {
            addr,
            shared: Shared {
                secret,
                mode: Arc::new(AtomicU8::new(ACCEPT)),
                budget: Arc::default(),
                got: Arc::default(),
                attempts: Arc::default(),
            },
            running: None,
        }
    }

    async fn up(secret: &'static str) -> Self {
        let mut r = Self::down(secret).await;
        r.start().await;
        r
    }

    /// Listens on the receiver's port. The port was free when `down` picked it, but
    /// anything may take it meanwhile (an outgoing connection's local port, say): retried
    /// briefly, with SO_REUSEADDR so connections of a previous run in TIME_WAIT do not count.
    async fn start(&mut self) {
        let mut tries = 0;
        let listener = loop {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.set_reuseaddr(true).expect("SO_REUSEADDR");
            match socket.bind(self.addr).and_then(|()| socket.listen(1024)) {
                Ok(listener) => break listener,
                Err(e) if tries < 50 => {
                    tries += 1;
                    eprintln!("rebinding {}: {e}; retrying", self.addr);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("rebind {}: {e}", self.addr),
            }
        };
        let stop = CancellationToken::new();
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(self.shared.clone());
        let until = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { until.cancelled().await })
                .await
                .expect("receiver");
        });
        self.running = Some(stop);
    }

    /// Accepts the next `n` deliveries, then fails.
    fn accept_only(&self, n: usize) {
        self.shared.budget.store(n, Ordering::SeqCst);
        self.set(LIMITED);
    }

    fn set(&self, mode: u8) {
        self.shared.mode.store(mode, Ordering::SeqCst);
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.shared.got.lock().expect("lock").clone()
    }

    /// Waits until the ids in `ids` have all arrived.
    async fn wait_for(&self, ids: &HashSet<String>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got: HashSet<String> = self.deliveries().iter().map(id_of).collect();
            if ids.is_subset(&got) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still missing {:?}",
                ids.difference(&got).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    shared.attempts.lock().expect("lock").push(Instant::now());
    match shared.mode.load(Ordering::SeqCst) {
        FAIL => return StatusCode::SERVICE_UNAVAILABLE,
        HANG => std::future::pending::<()>().await,
        LIMITED => {
            let spent = shared
                .budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            if spent.is_err() {
                return StatusCode::SERVICE_UNAVAILABLE;
            }
        }
        _ => {}
    }
    let body = String::from_utf8(body.to_vec()).expect("UTF-8 body");
    let header = headers
        .get("bedside-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let event: Value = serde_json::from_str(&body).expect("JSON body");
    let standard = ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .into_iter()
        .filter_map(|name| {
            let value = headers.get(name)?.to_str().ok()?;
            Some((name, value.to_owned()))
        })
        .collect();
    let signature_ok = verify(shared.secret, &header, &body)
        && headers
            .get("bedside-event-id")
            .and_then(|v| v.to_str().ok())
            == event["id"].as_str();
    shared.got.lock().expect("lock").push(Delivery {
        body,
        header,
        standard,
        event,
        signature_ok,
    });
    StatusCode::NO_CONTENT
}

/// The receiver's side of the older scheme in docs/webhooks.md, written independently of the
/// server's code: `t=UNIX,v1=HEX[,v1=HEX]`, HMAC-SHA256 of `UNIX.BODY` under the secret's
/// text, any `v1` matching, timestamp within 5 minutes.
fn verify(secret: &str, header: &str, body: &str) -> bool {
    let mut t = None;
    let mut v1 = Vec::new();
    for (key, value) in header.split(',').filter_map(|p| p.split_once('=')) {
        match key {
            "t" => t = Some(value),
            "v1" => v1.push(value),
            _ => {}
        }
    }
    let Some(t) = t else {
        return false;
    };
    let Ok(t_secs) = t.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - t_secs).abs() > 300 {
        return false;
    }
    v1.iter().any(|v1| {
        let Ok(expected) = decode_hex(v1) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(format!("{t}.{body}").as_bytes());
        mac.verify_slice(&expected).is_ok()
    })
}

fn decode_hex(s: &str) -> Result<Vec<u8>, ()> {
    if !s.len().is_multiple_of(2) {
        return Err(());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| ()))
        .collect()
}

fn id_of(d: &Delivery) -> String {
    d.event["id"].as_str().expect("id").to_owned()
}

fn hooks(entries: &[(&str, &str, &Receiver)]) -> String {
    entries
        .iter()
        .map(|(tenant, secret, r)| format!("{tenant} {} {secret}", r.url()))
        .collect::<Vec<_>>()
        .join(",")
}

async fn start_server(webhooks: &str) -> TestServer {
    let mut env = vec![("BEDSIDE_WEBHOOKS", webhooks)];
    env.extend(FAST);
    TestServer::start_with(&env).await
}

/// Every event of the tenant, from `GET /v1/events`, page by page.
async fn listed(api: &bedside_tests::Api) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = api
            .call(
                Method::GET,
                &format!("/v1/events?after={after}&limit=7"),
                None,
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{page}");
        let events = page["events"].as_array().expect("events").clone();
        if events.is_empty() {
            assert!(page["next_after"].is_null());
            return all;
        }
        after = page["next_after"].as_i64().expect("next_after").to_string();
        all.extend(events);
    }
}

/// A whole visit with one of each event kind; returns its id.
async fn eventful_visit(server: &TestServer) -> String {
    let api = server.api(CLINIC_A);
    let mut pair = Pair::admitted(server, &api).await;
    let intruder = api.mint(&pair.visit, "guest", "guest-9", "Guest").await;
    let (mut guest, _) = Client::join(server, &intruder).await;
    guest.expect("waiting").await;
    pair.doctor.until("lobby").await;
    pair.doctor
        .send(json!({"type": "deny", "participant_id": guest.participant_id}))
        .await;
    guest.closed().await;
    pair.patient.send(json!({"type": "leave"})).await;
    pair.doctor.until("participant_left").await;
    pair.doctor.send(json!({"type": "end_visit"})).await;
    pair.doctor.until("visit_ended").await;
    pair.visit
}

#[tokio::test]
async fn every_event_of_a_visit_arrives_signed_and_in_order() {
    let a = Receiver::up(SECRET_A).await;
    let b = Receiver::up(SECRET_B).await;
    let server = start_server(&hooks(&[
        ("clinic-a", SECRET_A, &a),
        ("clinic-b", SECRET_B, &b),
    ]))
    .await;
    let visit = eventful_visit(&server).await;

    let listed = listed(&server.api(CLINIC_A)).await;
    let ids: HashSet<String> = listed
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), listed.len(), "ids are unique");
    a.wait_for(&ids).await;
    let got = a.deliveries();
    assert!(got.iter().all(|d| d.signature_ok), "{got:#?}");
    assert_eq!(
        got.len(),
        listed.len(),
        "each event once while the receiver is up"
    );

    // Delivered in the order listed; per visit 1, 2, 3... with no gap.
    let types: Vec<&str> = got
        .iter()
        .map(|d| d.event["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, expected_types());
    for (i, d) in got.iter().enumerate() {
        assert_eq!(d.event["visit_id"], visit.as_str());
        assert_eq!(d.event["sequence"], i as i64 + 1);
        assert_eq!(d.event["id"], listed[i]["id"]);
        assert_eq!(d.event["sequence"], listed[i]["sequence"]);
        assert_eq!(d.event["data"], listed[i]["data"]);
        assert!(d.event["created_at"].as_str().unwrap().ends_with('Z'));
    }
    let left: Vec<&Value> = got
        .iter()
        .filter(|d| d.event["type"] == "participant.left")
        .map(|d| &d.event["data"])
        .collect();
    assert_eq!(left[0]["reason"], "left");
    assert_eq!(left[0]["role"], "patient");
    assert_eq!(left[0]["identity"], "pt-1");
    assert_eq!(left[1]["reason"], "visit_ended");
    assert_eq!(left[1]["role"], "doctor");
    let ended = &got.last().unwrap().event["data"];
    assert_eq!(ended["reason"], "ended_by_doctor");
    assert!(ended["duration_seconds"].as_i64().unwrap() >= 0);
    // Pseudonymous: the display names never leave in a webhook.
    for d in &got {
        for name in ["Dr One", "Pat One", "Guest"] {
            assert!(!d.body.contains(name), "{}", d.body);
        }
    }

    // The other tenant hears nothing of it.
    assert!(b.deliveries().is_empty());
    let (_, b_list) = server
        .api(CLINIC_B)
        .call(Method::GET, "/v1/events", None)
        .await;
    assert_eq!(b_list["events"], json!([]));

    // The Python example in docs/ agrees with the signature, and refuses a tampered body.
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/examples/verify_webhook.py"
    );
    for (body, ok) in [
        (got[0].body.clone(), true),
        (got[0].body.replace("visit", "visiT"), false),
    ] {
        let file = dir.path().join("body.json");
        std::fs::write(&file, body).unwrap();
        let status = std::process::Command::new("python3")
            .arg(script)
            .args(["check", SECRET_A, &got[0].header])
            .arg(&file)
            .status()
            .expect("python3 runs");
        assert_eq!(status.success(), ok, "python verify of {:?}", got[0].header);
    }
}

/// A secret in the Standard Webhooks form: `whsec_` and base64 of 32 bytes.
const STANDARD_SECRET: &str = "whsec_BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSY=";
/// The secret it replaces, in the older free form: used as its own bytes.
const PREVIOUS_SECRET: &str = "clinic-a-old-webhook-secret-42";

/// Where the official verifiers are installed (scripts/test-prerequisites).
fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// The verdicts of an official Standard Webhooks package (`python` or `node`) on `jobs`,
/// each `{secret, raw, headers, body}`: run as a clinic's receiver would run it.
fn official_verdicts(language: &str, jobs: &Value) -> Vec<bool> {
    use std::io::Write;
    let (program, script) = match language {
        "python" => (
            std::env::var_os("BEDSIDE_TEST_PYTHON")
                .map_or_else(|| repo("target/test-venv/bin/python3"), Into::into),
            repo("tests/webhooks/verify_standard.py"),
        ),
        _ => ("node".into(), repo("tests/webhooks/verify_standard.mjs")),
    };
    assert!(
        language != "python" || program.exists(),
        "{} not found: run ./scripts/test-prerequisites (it installs tests/requirements.txt there)",
        program.display()
    );
    assert!(
        language != "node" || repo("tests/webhooks/node_modules/standardwebhooks").exists(),
        "the npm package standardwebhooks is not installed: run ./scripts/test-prerequisites"
    );
    let mut child = std::process::Command::new(&program)
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(jobs.to_string().as_bytes())
        .expect("write jobs");
    let out = child.wait_with_output().expect("verifier runs");
    assert!(out.status.success(), "{language} verifier failed");
    serde_json::from_slice(&out.stdout).expect("verdicts")
}

fn job(secret: &str, raw: bool, d: &Delivery, body: &str) -> Value {
    json!({"secret": secret, "raw": raw, "headers": d.standard, "body": body})
}

#[tokio::test]
async fn official_standard_webhooks_libraries_verify_real_deliveries_during_a_rotation() {
    let a = Receiver::up(STANDARD_SECRET).await;
    let server = start_server(&format!(
        "clinic-a {} {STANDARD_SECRET} {PREVIOUS_SECRET}",
        a.url()
    ))
    .await;
    eventful_visit(&server).await;
    let listed = listed(&server.api(CLINIC_A)).await;
    let ids: HashSet<String> = listed
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    a.wait_for(&ids).await;
    let got = a.deliveries();

    for d in &got {
        assert_eq!(
            d.standard["webhook-id"],
            id_of(d),
            "webhook-id is the event id"
        );
        let t: i64 = d.standard["webhook-timestamp"].parse().expect("seconds");
        assert!((chrono::Utc::now().timestamp() - t).abs() < 300);
        let signatures: Vec<&str> = d.standard["webhook-signature"].split(' ').collect();
        assert_eq!(
            signatures.len(),
            2,
            "one signature per secret while rotating"
        );
        assert!(signatures.iter().all(|s| s.starts_with("v1,")));
        // The older header signs with both secrets too.
        assert!(d.signature_ok, "Bedside-Signature under the new secret");
        assert!(
            verify(PREVIOUS_SECRET, &d.header, &d.body),
            "Bedside-Signature under the previous secret"
        );
    }

    // A receiver holding the new secret (standard form) and one still holding the previous
    // secret (raw bytes) both verify every delivery with the official packages; a tampered
    // body, or a secret that signed nothing, is refused.
    let mut jobs = Vec::new();
    let mut expected = Vec::new();
    for d in &got {
        jobs.push(job(STANDARD_SECRET, false, d, &d.body));
        jobs.push(job(PREVIOUS_SECRET, true, d, &d.body));
        expected.extend([true, true]);
    }
    let tampered = got[0].body.replace("visit", "visiT");
    jobs.push(job(STANDARD_SECRET, false, &got[0], &tampered));
    jobs.push(job(PREVIOUS_SECRET, true, &got[0], &tampered));
    jobs.push(job(
        "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        false,
        &got[0],
        &got[0].body,
    ));
    expected.extend([false, false, false]);
    let jobs = Value::Array(jobs);
    assert_eq!(official_verdicts("python", &jobs), expected, "Python");
    assert_eq!(official_verdicts("node", &jobs), expected, "Node");
}

#[tokio::test]
async fn after_an_attempt_that_times_out_the_next_waits_out_the_backoff() {
    // The receiver accepts each delivery and never answers: every attempt takes the whole
    // timeout (2 s). The backoff after the first failure is 1-1.5 s, counted from when the
    // attempt ended.
    let a = Receiver::up(SECRET_A).await;
    a.set(HANG);
    let hooks = hooks(&[("clinic-a", SECRET_A, &a)]);
    let server = TestServer::start_with(&[
        ("BEDSIDE_WEBHOOKS", hooks.as_str()),
        ("BEDSIDE_WEBHOOK_DELIVERY__TIMEOUT_SECS", "2"),
        ("BEDSIDE_WEBHOOK_DELIVERY__RETRY_BASE_MS", "1000"),
        ("BEDSIDE_WEBHOOK_DELIVERY__RETRY_MAX_SECS", "1"),
        ("BEDSIDE_WEBHOOK_DELIVERY__POLL_MS", "50"),
    ])
    .await;
    server.api(CLINIC_A).visit().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let attempts = loop {
        let attempts = a.shared.attempts.lock().expect("lock").clone();
        if attempts.len() >= 2 {
            break attempts;
        }
        assert!(Instant::now() < deadline, "{} attempts", attempts.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let gap = attempts[1] - attempts[0];
    assert!(
        gap >= Duration::from_millis(2900),
        "the second attempt started {gap:?} after the first: the timeout (2 s) and the backoff (at least 1 s) were not both waited out"
    );
    assert!(gap < Duration::from_millis(4500), "{gap:?}");
}

fn expected_types() -> Vec<&'static str> {
    vec![
        "visit.created",
        "participant.joined",   // doctor
        "participant.waiting",  // patient
        "participant.admitted", // patient
        "participant.joined",   // patient
        "visit.started",
        "participant.waiting", // guest
        "participant.denied",  // guest
        "participant.left",    // patient, left
        "participant.left",    // doctor, visit_ended
        "visit.ended",
    ]
}

#[tokio::test]
async fn a_receiver_down_for_a_while_then_up_gets_every_event_by_id() {
    let mut a = Receiver::down(SECRET_A).await;
    let server = start_server(&hooks(&[("clinic-a", SECRET_A, &a)])).await;
    let api = server.api(CLINIC_A);
    for _ in 0..3 {
        eventful_visit(&server).await;
    }
    // Refused, then failing with 503: the server keeps trying.
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.set(FAIL);
    a.start().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(a.deliveries().is_empty());
    let retries = metric(&server, "bedside_webhook_attempts_total{outcome=\"retry\"}").await;
    assert!(retries >= 2.0, "retried {retries} times");

    a.set(ACCEPT);
    let listed = listed(&api).await;
    assert_eq!(listed.len(), 33);
    let ids: HashSet<String> = listed
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    a.wait_for(&ids).await;
    assert_received_exactly(&a, &listed);
}

/// Every listed event arrived, nothing else did, any repeat is the same event byte for
/// byte, and each visit's events came in sequence order.
fn assert_received_exactly(r: &Receiver, listed: &[Value]) {
    let got = r.deliveries();
    assert!(got.iter().all(|d| d.signature_ok));
    let mut first: HashMap<String, &Delivery> = HashMap::new();
    for d in &got {
        if let Some(earlier) = first.get(&id_of(d)) {
            assert_eq!(earlier.event, d.event, "a repeat is the same event");
        } else {
            first.insert(id_of(d), d);
        }
    }
    let expected: HashSet<String> = listed
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let received: HashSet<String> = first.keys().cloned().collect();
    assert_eq!(received, expected);
    // Per visit, first arrivals in sequence order 1, 2, 3... with no gap.
    let mut next: BTreeMap<String, i64> = BTreeMap::new();
    let mut seen = HashSet::new();
    for d in &got {
        if !seen.insert(id_of(d)) {
            continue;
        }
        let seq = next
            .entry(d.event["visit_id"].as_str().unwrap().to_owned())
            .or_insert(1);
        assert_eq!(d.event["sequence"].as_i64(), Some(*seq), "{}", d.body);
        *seq += 1;
    }
    for e in listed {
        let d = first[e["id"].as_str().unwrap()];
        assert_eq!(d.event["sequence"], e["sequence"]);
        assert_eq!(d.event["type"], e["type"]);
        assert_eq!(d.event["data"], e["data"]);
    }
}

#[tokio::test]
async fn kill_9_in_the_middle_loses_nothing() {
    let a = Receiver::up(SECRET_A).await;
    a.set(FAIL);
    let mut server = start_server(&hooks(&[("clinic-a", SECRET_A, &a)])).await;
    let api = server.api(CLINIC_A);
    eventful_visit(&server).await;
    // A visit still running at the kill: its events so far are durable too.
    let Pair { visit: live, .. } = Pair::admitted(&server, &api).await;
    let before = listed(&api).await;
    assert_eq!(before.len(), 11 + 6);

    // Some delivered, the rest not, then the process dies without a goodbye.
    a.accept_only(5);
    let some: HashSet<String> = before[..5]
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    a.wait_for(&some).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill9().await;
    assert_eq!(a.deliveries().len(), 5);

    a.set(ACCEPT);
    let server = server.restart().await;
    let api = server.api(CLINIC_A);
    // The live visit's participants are gone after the crash; end it so its events close.
    let (status, _) = api
        .call(Method::POST, &format!("/v1/visits/{live}/end"), None)
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let after = listed(&api).await;
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "nothing recorded before the kill changed"
    );
    assert!(after.len() > before.len());
    let ids: HashSet<String> = after
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    a.wait_for(&ids).await;
    assert_received_exactly(&a, &after);
}

#[tokio::test]
async fn a_dead_receiver_delays_neither_signaling_nor_another_tenant() {
    let a = Receiver::up(SECRET_A).await;
    a.set(HANG);
    let b = Receiver::up(SECRET_B).await;
    let server = start_server(&hooks(&[
        ("clinic-a", SECRET_A, &a),
        ("clinic-b", SECRET_B, &b),
    ]))
    .await;
    // Clinic A's receiver takes every delivery and never answers.
    eventful_visit(&server).await;

    // Clinic B's visit runs at full speed and its events arrive at once.
    let api_b = server.api(CLINIC_B);
    let started = Instant::now();
    let mut pair = Pair::admitted(&server, &api_b).await;
    pair.doctor.send(json!({"type": "end_visit"})).await;
    pair.doctor.until("visit_ended").await;
    let signaling = started.elapsed();
    let listed_b = listed(&api_b).await;
    let ids: HashSet<String> = listed_b
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    b.wait_for(&ids).await;
    let delivered = started.elapsed();
    assert!(
        signaling < Duration::from_secs(2),
        "signaling took {signaling:?}"
    );
    assert!(
        delivered < Duration::from_secs(3),
        "B's webhooks took {delivered:?}"
    );
    assert_received_exactly(&b, &listed_b);
    assert!(a.deliveries().is_empty());
    assert!(delivered < STEP);
}

async fn metric(server: &TestServer, name: &str) -> f64 {
    bedside_tests::sample(&server.metrics().await, name).unwrap_or(0.0)
}

#[tokio::test]
async fn the_events_api_pages_by_sequence_or_id_within_the_tenant() {
    // No webhook at all: the API alone is enough to reconcile.
    let server = TestServer::start().await;
    let visit = eventful_visit(&server).await;
    let api = server.api(CLINIC_A);
    let all = listed(&api).await;
    assert_eq!(all.len(), 11);
    assert!(all.iter().all(|e| e["visit_id"] == visit.as_str()));
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    let fourth = all[3]["id"].as_str().unwrap();
    for after in [fourth.to_owned(), all[3]["seq"].to_string()] {
        let (status, page) = api
            .call(
                Method::GET,
                &format!("/v1/events?after={after}&limit=2"),
                None,
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK);
        assert_eq!(page["events"][0]["id"], all[4]["id"]);
        assert_eq!(page["events"].as_array().unwrap().len(), 2);
        assert_eq!(page["next_after"], all[5]["seq"]);
    }

    // Another tenant cannot page from, or even learn of, clinic A's events.
    let b = server.api(CLINIC_B);
    let (status, body) = b
        .call(Method::GET, &format!("/v1/events?after={fourth}"), None)
        .await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "event_not_found");
    let (_, page) = b.call(Method::GET, "/v1/events?after=0", None).await;
    assert_eq!(page["events"], json!([]));

    for bad in ["limit=0", "limit=1001", "limit=x"] {
        let (status, body) = api
            .call(Method::GET, &format!("/v1/events?{bad}"), None)
            .await;
        assert_eq!(
            status,
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {body}"
        );
        assert!(body["error"]["code"].is_string());
    }
}
