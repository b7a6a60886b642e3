//! Floods against the real binary: per-address socket caps and join rates, connections that
//! never finish their handshake, running out of file descriptors, and visit creation per
//! API key. Each limit answers clearly (HTTP 429 with Retry-After, or a refused connection)
//! and existing visits carry on.

use bedside_loadtest::client::Ws;
use bedside_tests::{CLINIC_A, CLINIC_B, Client, Pair, STEP, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// An upgrade request over raw HTTP, so the 429 and its headers can be read.
async fn upgrade_status(server: &TestServer) -> (u16, String) {
    let resp = bedside_loadtest::http::client()
        .get(format!("{}/ws", server.base))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, retry)
}

#[tokio::test]
async fn one_address_holds_a_bounded_number_of_sockets() {
    let server = TestServer::start_with(&[("BEDSIDE_WS__MAX_PER_IP", "3")]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Client::connect(&server).await);
    }
    assert_eq!(
        Client::connect_url(&server.ws_url(), None).await.err(),
        Some(StatusCode::TOO_MANY_REQUESTS)
    );
    // Another address has its own share.
    let other: IpAddr = [127, 0, 0, 2].into();
    let ws = Ws::connect(&server.ws_url(), other)
        .await
        .expect("another address connects");
    // A closed socket gives its slot back.
    held.pop().unwrap().close().await;
    let deadline = Instant::now() + STEP;
    while Client::connect_url(&server.ws_url(), None).await.is_err() {
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ws.close().await;
}

#[tokio::test]
async fn join_attempts_per_address_are_rate_limited_with_a_retry_hint() {
    let server = TestServer::start_with(&[
        ("BEDSIDE_WS__JOINS_PER_IP_PER_SECOND", "2"),
        ("BEDSIDE_WS__JOIN_BURST_PER_IP", "4"),
    ])
    .await;
    let mut statuses = Vec::new();
    let started = Instant::now();
    for _ in 0..10 {
        statuses.push(upgrade_status(&server).await);
    }
    // The burst, plus what the rate refilled while the attempts ran: none when they take
    // under half a second, one or more on a machine slow enough to take longer.
    let refilled = (started.elapsed().as_secs_f64() * 2.0) as usize;
    let limited: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    let through = statuses.iter().filter(|(s, _)| *s == 101).count();
    assert_eq!(limited.len() + through, 10, "{statuses:?}");
    assert!(
        limited.iter().all(|(_, retry)| !retry.is_empty()),
        "429s carry Retry-After: {statuses:?}"
    );
    assert!(
        (4..=4 + refilled).contains(&through),
        "the burst gets through, then {refilled} refilled: {statuses:?}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(upgrade_status(&server).await.0, 101, "the rate refills");
}

#[tokio::test]
async fn connections_that_never_send_a_request_are_closed() {
    let server = TestServer::start_with(&[("BEDSIDE_HANDSHAKE_TIMEOUT_SECS", "5")]).await;
    let api = server.api(CLINIC_A);
    let mut pair = Pair::admitted(&server, &api).await;
    let before = open_fds(server.pid());

    // Hundreds of sockets that connect and say nothing, and a few that stop half-way.
    let mut silent = Vec::new();
    for _ in 0..500 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    for _ in 0..20 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        silent.push(s);
    }
    let deadline = Instant::now() + STEP;
    while open_fds(server.pid()) < before + 400 {
        assert!(
            Instant::now() < deadline,
            "the server never accepted the sockets"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Meanwhile the visit relays as usual.
    pair.doctor.send(json!({"type": "signal", "to": pair.patient.participant_id, "data": {"during": "flood"}})).await;
    assert_eq!(
        pair.patient.expect("signal").await["data"],
        json!({"during": "flood"})
    );

    let started = Instant::now();
    while open_fds(server.pid()) > before + 10 {
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "idle sockets were not closed: {} open",
            open_fds(server.pid())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "closed after the handshake timeout, not at once"
    );
    pair.patient.alive().await;
    drop(silent);
}

#[tokio::test]
async fn out_of_file_descriptors_refuses_new_connections_and_recovers() {
    let server = TestServer::start_with(&[("ULIMIT_NOFILE", "80")]).await;
    let api = server.api(CLINIC_A);
    let visit = api.visit().await;
    let mut pair = Pair::admitted(&server, &api).await;

    // Fill the server's descriptors with sockets until it refuses.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..200 {
        let t = Instant::now();
        match tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(server.ws_url()),
        )
        .await
        {
            Ok(Ok((ws, _))) => held.push(ws),
            // Refused: reset, closed, or answered with an error status.
            Ok(Err(_)) => refused += 1,
            Err(_) => panic!("a connection hung instead of being refused"),
        }
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "refusal took {:?}",
            t.elapsed()
        );
        if refused >= 5 {
            break;
        }
    }
    assert!(
        refused >= 5,
        "the server never ran out (held {})",
        held.len()
    );
    // Existing visits continue.
    pair.doctor
        .send(json!({"type": "signal", "to": pair.patient.participant_id, "data": {"n": 1}}))
        .await;
    assert_eq!(pair.patient.expect("signal").await["data"], json!({"n": 1}));

    // Free some descriptors: new connections are accepted again and can join.
    held.truncate(held.len().saturating_sub(10));
    let deadline = Instant::now() + STEP;
    let token = api.mint(&visit, "doctor", "dr-after", "Dr After").await;
    loop {
        if let Ok(Ok((ws, _))) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(server.ws_url()),
        )
        .await
        {
            let mut c = Client::from_stream(ws);
            c.send(json!({"type": "join", "token": token})).await;
            c.expect("joined").await;
            break;
        }
        assert!(Instant::now() < deadline, "accepting never resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pair.patient.alive().await;
}

#[tokio::test]
async fn visit_creation_is_rate_limited_per_api_key() {
    let server = TestServer::start_with(&[
        ("BEDSIDE_API__VISITS_PER_MINUTE", "60"),
        ("BEDSIDE_API__VISIT_BURST", "5"),
    ])
    .await;
    let a = server.api(CLINIC_A);
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(a.call(Method::POST, "/v1/visits", Some(json!({}))).await);
    }
    let created = statuses
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 5, "{statuses:?}");
    let (status, body) = statuses.last().unwrap();
    assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "rate_limited");
    // Another key is not held up by the first one's burst.
    let (status, _) = server
        .api(CLINIC_B)
        .call(Method::POST, "/v1/visits", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // And reads are not limited.
    let (status, _) = a.call(Method::GET, "/v1/visits", None).await;
    assert_eq!(status, StatusCode::OK);
}

/// Opens a socket claiming (through `X-Forwarded-For`) to come from `client`; the HTTP
/// status of a refusal.
async fn connect_as(server: &TestServer, client: &str) -> Result<Client, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = server.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("x-forwarded-for", client.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(Client::from_stream(ws)),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn behind_a_trusted_load_balancer_each_client_has_its_own_share() {
    // Every connection of the test comes from 127.0.0.1, like every connection through a
    // load balancer comes from the balancer.
    let behind = TestServer::start_with(&[
        ("BEDSIDE_WS__MAX_PER_IP", "1"),
        ("BEDSIDE_TRUSTED_PROXIES", "127.0.0.0/8"),
    ])
    .await;
    let _a = connect_as(&behind, "198.51.100.1")
        .await
        .expect("first client");
    assert_eq!(connect_as(&behind, "198.51.100.1").await.err(), Some(429));
    let _b = connect_as(&behind, "198.51.100.2")
        .await
        .expect("another client");
    // A forged entry left of the proxy's own does not buy a new share.
    assert_eq!(
        connect_as(&behind, "203.0.113.9, 198.51.100.2").await.err(),
        Some(429)
    );

    // Without trusted proxies the header is the client's word, and ignored.
    let direct = TestServer::start_with(&[("BEDSIDE_WS__MAX_PER_IP", "1")]).await;
    let _c = connect_as(&direct, "198.51.100.1")
        .await
        .expect("first socket");
    assert_eq!(connect_as(&direct, "198.51.100.3").await.err(), Some(429));
}

/// One IPv6 subscriber holds a whole /64: per-address limits count it as one address, or
/// each client would have 2^64 shares.
#[tokio::test]
async fn ipv6_clients_share_one_limit_per_64() {
    let behind = TestServer::start_with(&[
        ("BEDSIDE_WS__MAX_PER_IP", "2"),
        ("BEDSIDE_TRUSTED_PROXIES", "127.0.0.0/8"),
    ])
    .await;
    let _a = connect_as(&behind, "2001:db8:5:6::1").await.expect("first");
    let _b = connect_as(&behind, "2001:db8:5:6:aaaa::2")
        .await
        .expect("second");
    assert_eq!(
        connect_as(&behind, "2001:db8:5:6:ffff:ffff:ffff:fffe")
            .await
            .err(),
        Some(429),
        "the same /64"
    );
    let _c = connect_as(&behind, "2001:db8:5:7::1")
        .await
        .expect("another /64 has its own share");
}
