//! NAT traversal against the real binary: the TURN credentials in `joined`.
//!
//! - A real coturn (Debian's `coturn`, started here on loopback with `use-auth-secret`)
//!   takes the credential from a real `joined` frame for a TURN Allocate, and refuses an
//!   expired one and forged ones (wrong secret, altered username).
//! - Bedside's embedded TURN server does the same, holds each participant to its
//!   allocation quota, and refuses permissions to private addresses by default.
//! - Two real WebRTC peers (the `webrtc` crate), relay-only, connect through the embedded
//!   server with the credentials of their own `joined` frames and exchange data; the
//!   selected candidate pair on both sides is relay/relay, so host candidates cannot have
//!   carried it.
//!
//! The Allocate requests are written here with the `stun` crate, so each refusal's exact
//! error code is visible (coturn's `turnutils_uclient` reports failures only in its log).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bedside_loadtest::peer::{self, IcePolicy};
use bedside_loadtest::target::Target;
use bedside_tests::{CLINIC_A, Client, TestServer};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use stun::agent::TransactionId;
use stun::attributes::{
    ATTR_NONCE, ATTR_REALM, ATTR_REQUESTED_TRANSPORT, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS,
    ATTR_XOR_RELAYED_ADDRESS,
};
use stun::error_code::ErrorCodeAttribute;
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    BINDING_REQUEST, CLASS_ERROR_RESPONSE, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter,
    METHOD_ALLOCATE, METHOD_CREATE_PERMISSION, Message, MessageType, Setter,
};
use stun::textattrs::TextAttribute;
use stun::xoraddr::XorMappedAddress;
use tokio::net::UdpSocket;
use tokio::process::{Child, Command};

const COTURN_SECRET: &str = "coturn-shared-secret-0123456789";
const EMBEDDED_SECRET: &str = "embedded-turn-secret-0123456789";

/// `base64(HMAC-SHA1(secret, username))`, written out here independently of Bedside.
fn password(secret: &str, username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// REQUESTED-TRANSPORT: UDP.
struct Udp;

impl Setter for Udp {
    fn add_to(&self, m: &mut Message) -> Result<(), stun::Error> {
        m.add(ATTR_REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
        Ok(())
    }
}

/// A minimal TURN client on its own UDP socket: enough to allocate and ask permissions.
struct Probe {
    socket: UdpSocket,
    server: SocketAddr,
    /// Realm and nonce from the server's 401, once it sent one.
    challenge: Option<(String, String)>,
}

impl Probe {
    async fn new(server: SocketAddr) -> Self {
        Self {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
            challenge: None,
        }
    }

    /// Sends `setters` as a request and returns the answer to it (retransmitting, as UDP
    /// asks for).
    async fn request(&self, setters: Vec<Box<dyn Setter>>) -> Message {
        let mut all: Vec<Box<dyn Setter>> = vec![Box::new(TransactionId::new())];
        all.extend(setters);
        let mut m = Message::new();
        m.build(&all).unwrap();
        let mut buf = vec![0u8; 1500];
        for _ in 0..20 {
            self.socket.send_to(&m.raw, self.server).await.unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_millis(250);
            while let Ok(Ok((n, _))) =
                tokio::time::timeout_at(deadline, self.socket.recv_from(&mut buf)).await
            {
                let mut answer = Message::new();
                if answer.unmarshal_binary(&buf[..n]).is_ok()
                    && answer.transaction_id == m.transaction_id
                {
                    return answer;
                }
            }
        }
        panic!("no answer from the TURN server at {}", self.server);
    }

    /// An authenticated request: the long-term credential mechanism, with the realm and
    /// nonce of the server's last challenge (fetched first if there is none).
    async fn authenticated(
        &mut self,
        typ: MessageType,
        attrs: impl Fn() -> Vec<Box<dyn Setter>>,
        username: &str,
        password: &str,
    ) -> Result<Message, u16> {
        for _ in 0..3 {
            let Some((realm, nonce)) = self.challenge.clone() else {
                let mut setters: Vec<Box<dyn Setter>> = vec![Box::new(typ)];
                setters.extend(attrs());
                let answer = self.request(setters).await;
                self.learn(&answer)?;
                continue;
            };
            let mut setters: Vec<Box<dyn Setter>> = vec![Box::new(typ)];
            setters.extend(attrs());
            setters.push(Box::new(TextAttribute::new(ATTR_USERNAME, username.into())));
            setters.push(Box::new(TextAttribute::new(ATTR_REALM, realm.clone())));
            setters.push(Box::new(TextAttribute::new(ATTR_NONCE, nonce)));
            setters.push(Box::new(MessageIntegrity::new_long_term_integrity(
                username.into(),
                realm,
                password.into(),
            )));
            setters.push(Box::new(FINGERPRINT));
            let answer = self.request(setters).await;
            if answer.typ.class == CLASS_SUCCESS_RESPONSE {
                return Ok(answer);
            }
            let code = error_code(&answer);
            // A stale nonce (438) is retried with the new one, as clients do.
            if code != 438 {
                return Err(code);
            }
            self.learn(&answer)?;
        }
        Err(438)
    }

    /// Takes the realm and nonce from a challenge; any other answer is its error code.
    fn learn(&mut self, answer: &Message) -> Result<(), u16> {
        let realm = TextAttribute::get_from_as(answer, ATTR_REALM);
        let nonce = TextAttribute::get_from_as(answer, ATTR_NONCE);
        match (error_code(answer), realm, nonce) {
            (401 | 438, Ok(realm), Ok(nonce)) => {
                self.challenge = Some((realm.text, nonce.text));
                Ok(())
            }
            (code, ..) => Err(code),
        }
    }

    /// Allocates a relay; the relayed address, or the error code.
    async fn allocate(&mut self, username: &str, password: &str) -> Result<SocketAddr, u16> {
        let answer = self
            .authenticated(
                MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST),
                || vec![Box::new(Udp)],
                username,
                password,
            )
            .await?;
        let mut relayed = XorMappedAddress::default();
        relayed
            .get_from_as(&answer, ATTR_XOR_RELAYED_ADDRESS)
            .unwrap();
        Ok(SocketAddr::new(relayed.ip, relayed.port))
    }

    /// Asks for a permission towards `peer` on the allocation.
    async fn permit(
        &mut self,
        peer: SocketAddr,
        username: &str,
        password: &str,
    ) -> Result<(), u16> {
        self.authenticated(
            MessageType::new(METHOD_CREATE_PERMISSION, CLASS_REQUEST),
            || vec![Box::new(PeerAddress(peer))],
            username,
            password,
        )
        .await
        .map(|_| ())
    }
}

/// XOR-PEER-ADDRESS. Added after the transaction id, which it is encoded with.
struct PeerAddress(SocketAddr);

impl Setter for PeerAddress {
    fn add_to(&self, m: &mut Message) -> Result<(), stun::Error> {
        XorMappedAddress {
            ip: self.0.ip(),
            port: self.0.port(),
        }
        .add_to_as(m, ATTR_XOR_PEER_ADDRESS)
    }
}

fn error_code(m: &Message) -> u16 {
    assert_eq!(
        m.typ.class, CLASS_ERROR_RESPONSE,
        "expected an error, got {m}"
    );
    let mut code = ErrorCodeAttribute::default();
    code.get_from(m).unwrap();
    code.code.0
}

/// A UDP and TCP port free on 127.0.0.1 (coturn listens on both).
fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// coturn on loopback with `use-auth-secret`, in its own temp dir; killed when dropped.
struct Coturn {
    addr: SocketAddr,
    _child: Child,
    dir: tempfile::TempDir,
}

impl Coturn {
    async fn start() -> Self {
        let bin = "/usr/sbin/turnserver";
        let bin = if Path::new(bin).exists() {
            bin
        } else {
            "/usr/bin/turnserver"
        };
        assert!(
            Path::new(bin).exists(),
            "coturn's turnserver is not installed: apt-get install coturn (.ci/run does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        let config = format!(
            "listening-ip=127.0.0.1\nrelay-ip=127.0.0.1\nlistening-port={port}\n\
             realm=bedside.test\nuse-auth-secret\nstatic-auth-secret={COTURN_SECRET}\n\
             no-tls\nno-dtls\nno-cli\nno-rfc5780\nallow-loopback-peers\nfingerprint\n\
             userdb={d}/turndb\npidfile={d}/turnserver.pid\nlog-file={d}/turn.log\nsimple-log\n"
        );
        let conf = dir.path().join("turnserver.conf");
        std::fs::write(&conf, config).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start turnserver");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let coturn = Coturn {
            addr,
            _child: child,
            dir,
        };
        coturn.ready().await;
        coturn
    }

    /// Waits until coturn answers a STUN Binding request.
    async fn ready(&self) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut m = Message::new();
        m.build(&[Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)])
            .unwrap();
        let mut buf = [0u8; 1500];
        for _ in 0..100 {
            socket.send_to(&m.raw, self.addr).await.unwrap();
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(100), socket.recv_from(&mut buf)).await
            {
                return;
            }
        }
        panic!("coturn did not start; its log:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("turn.log")).unwrap_or_default()
    }
}

/// Joins a fresh visit as a doctor; returns the `joined` frame and the visit.
async fn joined(server: &TestServer) -> (Value, Value) {
    let api = server.api(CLINIC_A);
    let visit = api.create_visit(json!({})).await;
    let id = visit["id"].as_str().unwrap();
    let token = api.mint(id, "doctor", "dr-turn", "Dr Turn").await;
    let (_client, joined) = Client::join(server, &token).await;
    (joined, visit)
}

/// The entry of `ice_servers` with credentials: its URLs, username and password.
fn turn_entry(joined: &Value) -> (Vec<String>, String, String) {
    let entry = joined["ice_servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s.get("username").is_some())
        .unwrap_or_else(|| panic!("no TURN server with credentials in {joined}"));
    (
        serde_json::from_value(entry["urls"].clone()).unwrap(),
        entry["username"].as_str().unwrap().to_owned(),
        entry["credential"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn coturn_accepts_minted_credentials_and_refuses_expired_and_forged_ones() {
    let coturn = Coturn::start().await;
    let turn_url = format!("turn:{}?transport=udp", coturn.addr);
    let stun_url = format!("stun:{}", coturn.addr);
    let server = TestServer::start_with(&[
        ("BEDSIDE_TURN__SECRET", COTURN_SECRET),
        ("BEDSIDE_TURN__URLS", &turn_url),
        ("BEDSIDE_STUN_URLS", &stun_url),
    ])
    .await;
    let (joined, visit) = joined(&server).await;

    // `joined` carries the STUN server as is, and the TURN server with this participant's
    // own credential: `expiry:subject.issued`, valid until the visit ends.
    assert!(
        joined["ice_servers"]
            .as_array()
            .unwrap()
            .contains(&json!({"urls": [stun_url]})),
        "{joined}"
    );
    let (urls, username, credential) = turn_entry(&joined);
    assert_eq!(urls, [turn_url]);
    let expires_at = chrono::DateTime::parse_from_rfc3339(visit["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(expiry, expires_at.to_string());
    assert!(
        user.starts_with("s_"),
        "a pseudonym of the visit and identity: {username}"
    );
    assert!(!username.contains("dr-turn"));
    assert_eq!(credential, password(COTURN_SECRET, &username));
    // Nothing secret in the server's output.
    assert!(!server.logs().contains(COTURN_SECRET));
    assert!(!server.logs().contains(&credential));

    // coturn takes it.
    let mut probe = Probe::new(coturn.addr).await;
    let relayed = probe
        .allocate(&username, &credential)
        .await
        .unwrap_or_else(|code| {
            panic!(
                "coturn refused the minted credential: {code}\n{}",
                coturn.log()
            )
        });
    assert_eq!(relayed.ip(), Ipv4Addr::LOCALHOST);

    // Expired: signed with the right secret, but its time is past.
    let participant = joined["participant_id"].as_str().unwrap();
    let expired = format!("{}:{participant}", unix_now() - 60);
    let refused = Probe::new(coturn.addr)
        .await
        .allocate(&expired, &password(COTURN_SECRET, &expired))
        .await;
    assert_eq!(refused, Err(401), "expired credential");

    // Forged: the right form, the wrong secret.
    let forged = format!("{}:{participant}", unix_now() + 3600);
    let refused = Probe::new(coturn.addr)
        .await
        .allocate(&forged, &password("not-the-shared-secret-at-all", &forged))
        .await;
    assert_eq!(refused, Err(401), "credential signed with another secret");

    // Forged: a real credential with its expiry pushed out.
    let (_, id) = username.split_once(':').unwrap();
    let stretched = format!("{}:{id}", expires_at + 86_400);
    let refused = Probe::new(coturn.addr)
        .await
        .allocate(&stretched, &credential)
        .await;
    assert_eq!(refused, Err(401), "username altered after minting");
}

/// Starts Bedside with its embedded TURN server on a free loopback port.
async fn with_embedded_turn(extra: &[(&str, &str)]) -> (TestServer, SocketAddr) {
    let mut env = vec![
        ("BEDSIDE_TURN__EMBEDDED", "true"),
        ("BEDSIDE_TURN__SECRET", EMBEDDED_SECRET),
        ("BEDSIDE_TURN__LISTEN", "127.0.0.1:0"),
        ("BEDSIDE_TURN__REALM", "clinic.test"),
    ];
    env.extend_from_slice(extra);
    let server = TestServer::start_with(&env).await;
    let (joined, _) = joined(&server).await;
    let (urls, ..) = turn_entry(&joined);
    let addr = urls[0]
        .strip_prefix("turn:")
        .and_then(|u| u.strip_suffix("?transport=udp"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected TURN URL {urls:?}"));
    (server, addr)
}

#[tokio::test]
async fn the_embedded_server_checks_credentials_quotas_and_peer_addresses() {
    let (server, turn) =
        with_embedded_turn(&[("BEDSIDE_TURN__MAX_ALLOCATIONS_PER_USER", "2")]).await;
    assert!(server.logs().contains("embedded TURN server listening"));
    let (joined, _) = joined(&server).await;
    let (urls, username, credential) = turn_entry(&joined);
    assert_eq!(urls, [format!("turn:{turn}?transport=udp")]);
    // It serves STUN too, and `joined` says so.
    assert!(
        joined["ice_servers"]
            .as_array()
            .unwrap()
            .contains(&json!({"urls": [format!("stun:{turn}")]})),
        "{joined}"
    );

    // The minted credential allocates; two allocations per participant, not three.
    let mut first = Probe::new(turn).await;
    let relayed = first.allocate(&username, &credential).await.unwrap();
    assert_eq!(relayed.ip(), Ipv4Addr::LOCALHOST);
    let mut second = Probe::new(turn).await;
    second.allocate(&username, &credential).await.unwrap();
    let mut third = Probe::new(turn).await;
    assert_eq!(third.allocate(&username, &credential).await, Err(486));
    // Another participant has a quota of its own.
    let (other, _) = joined_other(&server).await;
    let (_, other_user, other_pass) = turn_entry(&other);
    third.allocate(&other_user, &other_pass).await.unwrap();

    // Private peers are refused by default; a public address is allowed (a permission
    // sends nothing to the peer).
    assert_eq!(
        first
            .permit("127.0.0.1:9".parse().unwrap(), &username, &credential)
            .await,
        Err(403)
    );
    assert_eq!(
        first
            .permit("192.168.1.20:5000".parse().unwrap(), &username, &credential)
            .await,
        Err(403)
    );
    first
        .permit("81.2.69.160:5000".parse().unwrap(), &username, &credential)
        .await
        .unwrap();

    // Expired and forged credentials are refused (the `turn` crate answers 400 or 401).
    let participant = joined["participant_id"].as_str().unwrap();
    let expired = format!("{}:{participant}", unix_now() - 60);
    let refused = Probe::new(turn)
        .await
        .allocate(&expired, &password(EMBEDDED_SECRET, &expired))
        .await;
    assert!(matches!(refused, Err(400 | 401)), "{refused:?}");
    let forged = format!("{}:{participant}", unix_now() + 3600);
    let refused = Probe::new(turn)
        .await
        .allocate(&forged, &password("not-the-shared-secret-at-all", &forged))
        .await;
    assert!(matches!(refused, Err(400 | 401)), "{refused:?}");
    assert!(!server.logs().contains(EMBEDDED_SECRET));
}

/// A second participant (a patient) in a fresh visit.
async fn joined_other(server: &TestServer) -> (Value, Value) {
    let api = server.api(CLINIC_A);
    let visit = api.create_visit(json!({})).await;
    let id = visit["id"].as_str().unwrap();
    let token = api.mint(id, "patient", "pt-turn", "Pat Turn").await;
    let (_client, joined) = Client::join(server, &token).await;
    (joined, visit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_peers_connect_through_the_embedded_turn_server() {
    // Everything here is on loopback, so the relay must be allowed to reach private
    // addresses (the peers' relayed addresses are 127.0.0.1 too).
    let (server, turn) = with_embedded_turn(&[("BEDSIDE_TURN__ALLOW_PRIVATE_PEERS", "true")]).await;
    let target = Target::bedside(&server.base, &format!("{}:{}", CLINIC_A.0, CLINIC_A.1)).unwrap();
    let report = peer::one_visit_with(&target, IcePolicy::RelayOnly)
        .await
        .expect("relay-only peers connected and exchanged data");
    assert!(report.timings.connected <= report.timings.data);

    // Each peer used a credential of its own (the patient's from `admitted`: the call's).
    let users: Vec<String> = report.joined.iter().map(|j| turn_entry(j).1).collect();
    for user in &users {
        assert!(
            expiry_of(user) > unix_now() + 300,
            "the call's credential: {user}"
        );
    }
    assert_ne!(users[0], users[1]);

    // Both sides selected relay/relay on this TURN server: the data went through it.
    for pair in &report.selected {
        assert_eq!(
            pair.local,
            webrtc::peer_connection::RTCIceCandidateType::Relay,
            "{pair:?}"
        );
        assert_eq!(
            pair.remote,
            webrtc::peer_connection::RTCIceCandidateType::Relay,
            "{pair:?}"
        );
        assert!(pair.local_address.starts_with("127.0.0.1:"), "{pair:?}");
        assert_ne!(pair.local_address, turn.to_string());
    }
}

/// The expiry (unix seconds) a minted TURN username states.
fn expiry_of(username: &str) -> i64 {
    username.split_once(':').unwrap().0.parse().unwrap()
}

/// A visit with an admitted doctor, on a server with the embedded TURN server and a quota
/// of `quota` allocations; returns the server, the TURN address, the visit and the doctor.
async fn visit_with_doctor(quota: &str) -> (TestServer, SocketAddr, String, Client) {
    let (server, turn) =
        with_embedded_turn(&[("BEDSIDE_TURN__MAX_ALLOCATIONS_PER_USER", quota)]).await;
    let api = server.api(CLINIC_A);
    let visit = api.visit().await;
    let (mut doctor, joined) =
        Client::join(&server, &api.mint(&visit, "doctor", "dr-1", "Dr").await).await;
    // A doctor is admitted on join: `joined` carries the call's credential already.
    let (_, username, _) = turn_entry(&joined);
    assert!(expiry_of(&username) > unix_now() + 3600, "{username}");
    doctor.expect("admitted").await;
    doctor.expect("lobby").await;
    (server, turn, visit, doctor)
}

/// docs/nat-traversal.md: a waiting participant gets STUN and a probe credential that lives
/// five minutes at most (in `joined` and in each `waiting`); the call's credential comes
/// with `admitted`.
#[tokio::test]
async fn turn_credentials_for_the_call_only_after_admission() {
    let (server, turn, visit, mut doctor) = visit_with_doctor("3").await;
    let api = server.api(CLINIC_A);
    let (mut patient, joined) =
        Client::join(&server, &api.mint(&visit, "patient", "pt-1", "Pat").await).await;
    let waiting = patient.expect("waiting").await;
    for frame in [&joined, &waiting] {
        let (_, username, _) = turn_entry(frame);
        assert!(
            expiry_of(&username) <= unix_now() + 300,
            "a probe credential only: {frame}"
        );
        assert!(
            frame["ice_servers"]
                .as_array()
                .unwrap()
                .contains(&json!({"urls": [format!("stun:{turn}")]})),
            "{frame}"
        );
    }
    // The probe does allocate (the pre-call check needs a relay candidate).
    let (_, probe_user, probe_pass) = turn_entry(&waiting);
    Probe::new(turn)
        .await
        .allocate(&probe_user, &probe_pass)
        .await
        .unwrap();
    doctor.expect("lobby").await;
    doctor
        .send(json!({"type": "admit", "participant_id": patient.participant_id}))
        .await;
    let admitted = patient.expect("admitted").await;
    let (urls, username, credential) = turn_entry(&admitted);
    assert_eq!(urls, [format!("turn:{turn}?transport=udp")]);
    assert!(expiry_of(&username) > unix_now() + 3600, "{admitted}");
    Probe::new(turn)
        .await
        .allocate(&username, &credential)
        .await
        .unwrap();
}

/// The quota counts per visit and identity: rejoining, which mints new credentials, does
/// not multiply it.
#[tokio::test]
async fn rejoining_does_not_multiply_the_allocation_quota() {
    let (server, turn, visit, mut doctor) = visit_with_doctor("2").await;
    let api = server.api(CLINIC_A);
    let link = api.mint(&visit, "patient", "pt-1", "Pat").await;
    let mut held = Vec::new();
    let mut refused = None;
    for _ in 0..3 {
        let (mut patient, _) = Client::join(&server, &link).await;
        let waiting = patient.expect("waiting").await;
        let (_, username, credential) = turn_entry(&waiting);
        let mut probe = Probe::new(turn).await;
        match probe.allocate(&username, &credential).await {
            Ok(_) => held.push(probe),
            Err(code) => {
                refused = Some(code);
                break;
            }
        }
        doctor.until("lobby").await;
    }
    assert_eq!((held.len(), refused), (2, Some(486)));
}

/// A denied identity's credentials, issued before the denial, allocate nothing more.
#[tokio::test]
async fn the_embedded_server_refuses_a_denied_identitys_credentials() {
    let (server, turn, visit, mut doctor) = visit_with_doctor("3").await;
    let api = server.api(CLINIC_A);
    let (mut patient, _) =
        Client::join(&server, &api.mint(&visit, "patient", "pt-1", "Pat").await).await;
    let waiting = patient.expect("waiting").await;
    let (_, username, credential) = turn_entry(&waiting);
    doctor.expect("lobby").await;
    // Wait out the second it was issued in: the block must be later than the credential.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    doctor
        .send(json!({"type": "deny", "participant_id": patient.participant_id}))
        .await;
    patient.expect("denied").await;
    doctor.expect("lobby").await;
    // The denial is stored a moment after it is told.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = Probe::new(turn)
            .await
            .allocate(&username, &credential)
            .await;
        if got == Err(403) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still allocates: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 13 (optional part): a removal closes the relays the removed identity already
/// holds on the embedded server, not just its next Allocate. With a quota of one, the new
/// link the clinic mints afterwards can allocate only once the old relay is gone.
#[tokio::test]
async fn a_removal_closes_the_relays_the_identity_already_holds() {
    let (server, turn, visit, mut doctor) = visit_with_doctor("1").await;
    let api = server.api(CLINIC_A);
    let (mut patient, _) =
        Client::join(&server, &api.mint(&visit, "patient", "pt-1", "Pat").await).await;
    patient.expect("waiting").await;
    doctor.expect("lobby").await;
    doctor
        .send(json!({"type": "admit", "participant_id": patient.participant_id}))
        .await;
    let admitted = patient.expect("admitted").await;
    let (_, username, credential) = turn_entry(&admitted);
    let mut relay = Probe::new(turn).await;
    relay.allocate(&username, &credential).await.unwrap();
    // Wait out the second it was issued in: the block must be later than the credential.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/visits/{visit}/participants/pt-1"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(patient.closed().await, 4003);

    // Let back in with a new link: its probe credential is the same person's, so the quota
    // of one is free only once the old relay was closed.
    let (mut back, _) =
        Client::join(&server, &api.mint(&visit, "patient", "pt-1", "Pat").await).await;
    let waiting = back.expect("waiting").await;
    let (_, probe_user, probe_pass) = turn_entry(&waiting);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = Probe::new(turn)
            .await
            .allocate(&probe_user, &probe_pass)
            .await;
        if got.is_ok() {
            break;
        }
        assert_eq!(got, Err(486), "only the quota may refuse it");
        assert!(
            std::time::Instant::now() < deadline,
            "the revoked identity's relay was never closed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        server
            .logs()
            .contains("TURN relays of a revoked identity closed")
    );
}
