//! Hostile input against the real binary: frames a browser would never send, written
//! byte by byte after a hand-made WebSocket handshake (a real client library masks every
//! frame and refuses to send broken ones).
//!
//! Every rejection is asserted as a protocol `error` frame (the connection stays open) or
//! a documented close code (docs/protocol.md): 1002 for protocol violations, 1007 for text
//! that is not UTF-8, 1009 for frames over 64 KiB. After each, the server is still
//! healthy and other visits still relay. permessage-deflate is never negotiated, so a
//! compressed frame (a deflate bomb here) is a protocol violation, never inflated.

use bedside_tests::{CLINIC_A, Client, Pair, STEP, TestServer, forge_token};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::tungstenite::Message;

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

/// What a frame's first header byte and masking say.
#[derive(Clone, Copy)]
struct Head {
    fin: bool,
    rsv: u8,
    opcode: u8,
    masked: bool,
}

impl Head {
    fn of(opcode: u8) -> Self {
        Self {
            fin: true,
            rsv: 0,
            opcode,
            masked: true,
        }
    }
}

/// A frame as it goes on the wire. Client frames are masked unless `head` says otherwise.
fn frame(head: Head, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(u8::from(head.fin) << 7) | (head.rsv << 4) | head.opcode];
    let mask_bit = if head.masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if head.masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A WebSocket client with nothing between the test and the TCP stream.
struct Raw {
    rx: Reader,
    tx: OwnedWriteHalf,
    /// The upgrade response's status line and headers.
    response: String,
    participant_id: String,
}

/// The server's side of a raw connection, parsed into frames.
struct Reader {
    stream: OwnedReadHalf,
    /// Bytes read but not yet parsed into frames.
    buf: Vec<u8>,
}

impl Raw {
    /// Opens `/ws` with a hand-written upgrade request carrying `extra` header lines.
    async fn connect(server: &TestServer, extra: &str) -> Self {
        let stream = TcpStream::connect(server.addr).await.expect("connect");
        let (stream, mut tx) = stream.into_split();
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n",
            server.addr
        );
        tx.write_all(request.as_bytes())
            .await
            .expect("upgrade request");
        let mut rx = Reader {
            stream,
            buf: Vec::new(),
        };
        let end = loop {
            if let Some(i) = rx.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(rx.fill().await, "connection closed during the handshake");
        };
        let response = String::from_utf8_lossy(&rx.buf[..end]).into_owned();
        rx.buf.drain(..end);
        let raw = Raw {
            rx,
            tx,
            response,
            participant_id: String::new(),
        };
        assert!(
            raw.response.starts_with("HTTP/1.1 101"),
            "upgrade refused: {}",
            raw.response
        );
        raw
    }

    /// Connects and joins with `token`; returns the client and the frame after `joined`.
    async fn join(server: &TestServer, token: &str) -> (Self, Value) {
        let mut raw = Self::connect(server, "").await;
        raw.text(&json!({"type": "join", "token": token}).to_string())
            .await;
        let joined = raw.rx.expect("joined").await;
        raw.participant_id = joined["participant_id"]
            .as_str()
            .expect("participant_id")
            .to_owned();
        let next = raw.rx.recv().await;
        (raw, next)
    }

    async fn send(&mut self, bytes: &[u8]) {
        // The server may already have closed: what it answered is what the test checks.
        let _ = self.tx.write_all(bytes).await;
    }

    async fn text(&mut self, text: &str) {
        self.send(&frame(Head::of(TEXT), text.as_bytes())).await;
    }

    async fn expect(&mut self, kind: &str) -> Value {
        self.rx.expect(kind).await
    }

    async fn closed(&mut self) -> u16 {
        self.rx.closed().await
    }

    /// Writes `bytes` while reading what the server answers, for frames big enough that
    /// the server answers before they are all written; returns the close code.
    async fn closed_while_sending(&mut self, bytes: &[u8]) -> u16 {
        let (_, code) = tokio::join!(self.tx.write_all(bytes), self.rx.closed());
        code
    }
}

impl Reader {
    /// Reads more bytes; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(STEP, self.stream.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("the server sent nothing for {STEP:?}"),
        }
    }

    /// The next whole frame from the server (opcode, payload); None at the end of the
    /// stream.
    async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((head, len)) = parse_head(&self.buf)
                && self.buf.len() >= head + len
            {
                let opcode = self.buf[0] & 0x0f;
                assert_eq!(self.buf[1] & 0x80, 0, "the server masked a frame");
                let payload = self.buf[head..head + len].to_vec();
                self.buf.drain(..head + len);
                return Some((opcode, payload));
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next text frame as JSON.
    async fn recv(&mut self) -> Value {
        loop {
            match self.next().await {
                Some((TEXT, payload)) => return serde_json::from_slice(&payload).expect("JSON"),
                Some((PING | 0xA, _)) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    async fn expect(&mut self, kind: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], kind, "expected {kind}, got {v}");
        v
    }

    /// Reads until the server's close frame; its code, or 1006 if the stream just ended.
    /// Text frames before it (an `error`) are skipped.
    async fn closed(&mut self) -> u16 {
        loop {
            match self.next().await {
                Some((CLOSE, payload)) if payload.len() >= 2 => {
                    return u16::from_be_bytes([payload[0], payload[1]]);
                }
                Some((CLOSE, _)) => return 1005,
                Some(_) => continue,
                None => return 1006,
            }
        }
    }
}

/// Header length and payload length of the frame at the start of `buf`, once known.
fn parse_head(buf: &[u8]) -> Option<(usize, usize)> {
    let len7 = usize::from(*buf.get(1)? & 0x7f);
    match len7 {
        126 => Some((
            4,
            usize::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
        )),
        127 => Some((
            10,
            usize::try_from(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)).ok()?,
        )),
        n => Some((2, n)),
    }
}

/// A raw DEFLATE stream (RFC 1951, fixed Huffman codes) of about `wire_len` bytes that
/// inflates to about 160 times that: one zero byte, then back-references of length 258
/// at distance 1, 13 bits each. 48 KiB of it inflates to 7.8 MB (checked once with
/// Python's `zlib.decompressobj(-15)`).
fn deflate_bomb(wire_len: usize) -> Vec<u8> {
    let mut bits: Vec<bool> = Vec::with_capacity(wire_len * 8);
    // Header fields go least significant bit first; Huffman codes most significant first.
    let field = |bits: &mut Vec<bool>, value: u32, n: u32| {
        bits.extend((0..n).map(|i| value >> i & 1 == 1));
    };
    let code = |bits: &mut Vec<bool>, value: u32, n: u32| {
        bits.extend((0..n).rev().map(|i| value >> i & 1 == 1));
    };
    field(&mut bits, 1, 1); // BFINAL
    field(&mut bits, 1, 2); // BTYPE = fixed Huffman
    code(&mut bits, 0x30, 8); // literal 0x00
    while (bits.len() + 13 + 7).div_ceil(8) < wire_len {
        code(&mut bits, 0b1100_0101, 8); // length code 285: 258 bytes
        code(&mut bits, 0, 5); // distance code 0: 1 byte back
    }
    code(&mut bits, 0, 7); // end of block
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (i, bit) in bits.into_iter().enumerate() {
        out[i / 8] |= u8::from(bit) << (i % 8);
    }
    out
}

async fn healthy(server: &TestServer) {
    let health = reqwest::get(format!("{}/healthz", server.base))
        .await
        .expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);
}

/// A neighbouring visit still relays both ways.
async fn still_relays(pair: &mut Pair) {
    pair.doctor
        .send(json!({"type": "signal", "to": pair.patient.participant_id, "data": {"sdp": "v=0"}}))
        .await;
    assert_eq!(pair.patient.expect("signal").await["data"]["sdp"], "v=0");
    pair.patient
        .send(json!({"type": "chat", "text": "still here"}))
        .await;
    assert_eq!(pair.patient.expect("chat").await["text"], "still here");
    assert_eq!(pair.doctor.expect("chat").await["text"], "still here");
}

/// A doctor in a fresh visit, and a patient joined over a raw connection and admitted.
async fn doctor_and_raw_patient(server: &TestServer, name: &str) -> (Client, Raw) {
    let api = server.api(CLINIC_A);
    let visit = api.visit().await;
    let (mut doctor, _) = Client::join(server, &api.mint(&visit, "doctor", "dr", "Dr").await).await;
    doctor.expect("admitted").await;
    doctor.expect("lobby").await;
    let token = api.mint(&visit, "patient", "pt", name).await;
    let (mut patient, waiting) = Raw::join(server, &token).await;
    assert_eq!(waiting["type"], "waiting");
    doctor.expect("lobby").await;
    doctor
        .send(json!({"type": "admit", "participant_id": patient.participant_id}))
        .await;
    patient.expect("admitted").await;
    doctor.expect("participant_joined").await;
    doctor.expect("lobby").await;
    (doctor, patient)
}

#[tokio::test]
async fn text_that_is_not_utf8_closes_with_1007() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let mut bystanders = Pair::admitted(&server, &api).await;

    // Before joining: a lone continuation byte and a truncated sequence.
    for bad in [
        &b"{\"type\":\"ping\",\"x\":\"\x80\"}"[..],
        b"\xff\xfe",
        b"\xe2\x82",
    ] {
        let mut raw = Raw::connect(&server, "").await;
        raw.send(&frame(Head::of(TEXT), bad)).await;
        assert_eq!(raw.closed().await, 1007, "{bad:?}");
    }

    // Joined and admitted: the visit sees a drop, not a crash.
    let (mut doctor, mut patient) = doctor_and_raw_patient(&server, "Pat").await;
    patient.send(&frame(Head::of(TEXT), b"\xc3\x28")).await;
    assert_eq!(patient.closed().await, 1007);
    let update = doctor.expect("participant_updated").await;
    assert_eq!(update["participant"]["connected"], false);
    doctor.alive().await;

    // Split across fragments: a character cut in two is fine, bytes that are never UTF-8
    // are not.
    let mut raw = Raw::connect(&server, "").await;
    let ping = "{\"type\":\"ping\",\"x\":\"é\"}".as_bytes();
    let cut = ping.len() - 3; // inside the two bytes of é
    let first = Head {
        fin: false,
        ..Head::of(TEXT)
    };
    raw.send(&frame(first, &ping[..cut])).await;
    raw.send(&frame(Head::of(CONTINUATION), &ping[cut..])).await;
    raw.expect("pong").await;
    raw.send(&frame(first, b"{\"type\":\"ping\",\"x\":\""))
        .await;
    raw.send(&frame(Head::of(CONTINUATION), b"\xed\xa0\x80\"}"))
        .await; // an encoded surrogate
    assert_eq!(raw.closed().await, 1007);

    still_relays(&mut bystanders).await;
    healthy(&server).await;
}

#[tokio::test]
async fn a_binary_frame_gets_an_error_and_the_connection_stays_open() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);

    // Before joining.
    let mut client = Client::connect(&server).await;
    client
        .send_message(Message::binary(&b"{\"type\":\"ping\"}"[..]))
        .await
        .expect("send");
    let error = client.expect("error").await;
    assert_eq!(error["code"], "binary_not_supported");
    client.alive().await;

    // Joined: nothing reaches the peer, and both carry on.
    let mut pair = Pair::admitted(&server, &api).await;
    pair.patient
        .send_message(Message::binary(vec![0u8, 159, 146, 150]))
        .await
        .expect("send");
    assert_eq!(
        pair.patient.expect("error").await["code"],
        "binary_not_supported"
    );
    pair.doctor.silent(Duration::from_millis(200)).await;
    still_relays(&mut pair).await;
}

#[tokio::test]
async fn json_nested_ten_thousand_deep_gets_an_error_and_the_connection_stays_open() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let mut pair = Pair::admitted(&server, &api).await;
    let arrays = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    for deep in [arrays, objects] {
        pair.patient
            .send_text(&format!(
                r#"{{"type":"signal","to":"{}","data":{deep}}}"#,
                pair.doctor.participant_id
            ))
            .await;
        let error = pair.patient.expect("error").await;
        assert!(
            matches!(
                error["code"].as_str(),
                Some("invalid_message" | "invalid_json")
            ),
            "{error}"
        );
        // As a whole frame, and in a chat's text.
        pair.patient.send_text(&deep).await;
        assert_eq!(pair.patient.expect("error").await["type"], "error");
        pair.patient
            .send_text(&format!(r#"{{"type":"chat","text":{deep}}}"#))
            .await;
        assert_eq!(pair.patient.expect("error").await["code"], "invalid_json");
    }
    // Nothing was relayed; the pair still talks.
    pair.doctor.silent(Duration::from_millis(200)).await;
    still_relays(&mut pair).await;
    healthy(&server).await;
}

#[tokio::test]
async fn a_one_mib_sdp_closes_with_1009_and_nobody_else_notices() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let mut bystanders = Pair::admitted(&server, &api).await;
    let (mut doctor, mut patient) = doctor_and_raw_patient(&server, "Pat").await;

    let sdp = "a".repeat(1024 * 1024);
    let signal = json!({"type": "signal", "to": doctor.participant_id, "data": {"type": "offer", "sdp": sdp}});
    let bytes = frame(Head::of(TEXT), signal.to_string().as_bytes());
    // The server answers after the frame's header; the rest of the megabyte is written
    // meanwhile and may well be refused by then.
    let code = patient.closed_while_sending(&bytes).await;
    assert_eq!(code, 1009, "a one-MiB frame");

    // The doctor hears of a drop, never the payload.
    let update = doctor.expect("participant_updated").await;
    assert_eq!(update["participant"]["connected"], false);
    doctor.silent(Duration::from_millis(200)).await;
    healthy(&server).await;
    still_relays(&mut bystanders).await;
}

#[tokio::test]
async fn control_characters_in_a_display_name_forge_no_log_line() {
    // Debug level: the most the server ever logs.
    let server = TestServer::start_with(&[("RUST_LOG", "debug")]).await;
    let api = server.api(CLINIC_A);
    let visit = api.visit().await;
    let (mut doctor, _) =
        Client::join(&server, &api.mint(&visit, "doctor", "dr", "Dr").await).await;
    doctor.expect("admitted").await;
    doctor.expect("lobby").await;

    // An integrator holding its secret can put anything in `name`.
    let name = "Mallory-MARKER\nINFO bedside: FORGED-MARKER admin joined\r\n\u{1b}[31mred\u{7}\u{0}\u{85}\u{9b}end\t";
    let now = chrono::Utc::now().timestamp();
    let token = forge_token(
        CLINIC_A.1,
        CLINIC_A.0,
        &json!({"iss": CLINIC_A.0, "sub": "pt-evil", "visit": visit, "role": "patient",
                "name": name, "iat": now, "nbf": now, "exp": now + 600, "jti": "j-evil"}),
    );
    let shown: String = name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let shown = shown.trim();

    let (mut patient, _) = Client::join(&server, &token).await;
    patient.expect("waiting").await;
    let lobby = doctor.expect("lobby").await;
    assert_eq!(lobby["waiting"][0]["name"], shown);
    doctor
        .send(json!({"type": "admit", "participant_id": patient.participant_id}))
        .await;
    patient.expect("admitted").await;
    let joined = doctor.expect("participant_joined").await;
    let seen = joined["participant"]["name"].as_str().expect("name");
    assert_eq!(seen, shown);
    assert!(!seen.chars().any(char::is_control), "{seen:?}");

    // Newlines in refused input too: a frame type, a token's header.
    patient
        .send_text(r#"{"type":"x\nINFO bedside: FORGED-MARKER frame"}"#)
        .await;
    assert_eq!(patient.expect("error").await["code"], "unknown_type");
    let mut bad = Client::connect(&server).await;
    bad.send(json!({"type": "join", "token": forge_token(
        CLINIC_A.1, "clinic-a\nINFO bedside: FORGED-MARKER kid", &json!({"sub": "x"}))}))
        .await;
    assert_eq!(bad.closed().await, 4001);
    patient.send(json!({"type": "leave"})).await;
    assert_eq!(patient.closed().await, 1000);
    doctor.until("participant_left").await;

    let logs = server.logs();
    assert!(
        !logs.contains("Mallory-MARKER"),
        "the display name reached the logs"
    );
    for line in logs.lines() {
        assert!(
            !line.contains("FORGED-MARKER"),
            "injected text reached the logs: {line:?}"
        );
    }
}

#[tokio::test]
async fn permessage_deflate_is_not_negotiated_and_a_compressed_frame_closes_with_1002() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let mut bystanders = Pair::admitted(&server, &api).await;

    // Offered the extension, the server upgrades without it.
    let raw = Raw::connect(
        &server,
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    )
    .await;
    assert!(
        !raw.response
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "extension negotiated: {}",
        raw.response
    );

    // So RSV1 (what a compressed frame carries) is a protocol violation: a deflate bomb,
    // 48 KiB on the wire and 7.8 MB inflated, is refused without being inflated.
    let bomb = deflate_bomb(48 * 1024);
    let (mut doctor, mut patient) = doctor_and_raw_patient(&server, "Pat").await;
    let compressed = Head {
        rsv: 0b100,
        ..Head::of(TEXT)
    };
    patient.send(&frame(compressed, &bomb)).await;
    assert_eq!(patient.closed().await, 1002);
    let update = doctor.expect("participant_updated").await;
    assert_eq!(update["participant"]["connected"], false);

    // Before joining, and as a tiny compressed ping.
    let mut raw = Raw::connect(&server, "Sec-WebSocket-Extensions: permessage-deflate\r\n").await;
    raw.send(&frame(compressed, &[0xab, 0xae, 0x04, 0x00]))
        .await;
    assert_eq!(raw.closed().await, 1002);

    doctor.alive().await;
    still_relays(&mut bystanders).await;
    healthy(&server).await;
}

#[tokio::test]
async fn frames_that_break_the_websocket_protocol_close_with_1002() {
    let server = TestServer::start().await;
    let api = server.api(CLINIC_A);
    let mut bystanders = Pair::admitted(&server, &api).await;
    let ping = br#"{"type":"ping"}"#;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "unmasked",
            frame(
                Head {
                    masked: false,
                    ..Head::of(TEXT)
                },
                ping,
            ),
        ),
        ("reserved data opcode 0x3", frame(Head::of(0x3), ping)),
        ("reserved control opcode 0xB", frame(Head::of(0xB), b"")),
        (
            "RSV2 and RSV3",
            frame(
                Head {
                    rsv: 0b011,
                    ..Head::of(TEXT)
                },
                ping,
            ),
        ),
        (
            "a continuation with nothing to continue",
            frame(Head::of(CONTINUATION), ping),
        ),
        (
            "a fragmented ping",
            frame(
                Head {
                    fin: false,
                    ..Head::of(PING)
                },
                b"",
            ),
        ),
        ("a ping over 125 bytes", frame(Head::of(PING), &[0u8; 126])),
        (
            "a new message inside a fragmented one",
            [
                frame(
                    Head {
                        fin: false,
                        ..Head::of(TEXT)
                    },
                    b"{",
                ),
                frame(Head::of(BINARY), b"x"),
            ]
            .concat(),
        ),
    ];
    for (what, bytes) in &cases {
        // Before joining, and joined in a visit.
        let mut raw = Raw::connect(&server, "").await;
        raw.send(bytes).await;
        assert_eq!(raw.closed().await, 1002, "{what}, before joining");

        let (mut doctor, mut patient) = doctor_and_raw_patient(&server, "Pat").await;
        patient.send(bytes).await;
        assert_eq!(patient.closed().await, 1002, "{what}, joined");
        let update = doctor.expect("participant_updated").await;
        assert_eq!(update["participant"]["connected"], false, "{what}");
        doctor.alive().await;
    }
    still_relays(&mut bystanders).await;
    healthy(&server).await;

    // A well-formed raw client is served as usual: the violations above are the frames'.
    let mut raw = Raw::connect(&server, "").await;
    raw.text(std::str::from_utf8(ping).expect("text")).await;
    raw.expect("pong").await;
    let mut client = Client::connect(&server).await;
    client.alive().await;
}
