//! Built-in TLS: with `BEDSIDE_TLS_CERT` and `BEDSIDE_TLS_KEY` set (a self-signed
//! certificate made here), the REST API answers over `https://` with HSTS and security
//! headers, a whole visit runs over `wss://`, and plain HTTP to the port gets nothing.

use bedside_tests::{CLINIC_A, TestServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

struct Tls {
    _dir: tempfile::TempDir,
    server: TestServer,
    connector: TlsConnector,
}

impl Tls {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let server = TestServer::start_with(&[
            ("BEDSIDE_TLS_CERT", cert.to_str().unwrap()),
            ("BEDSIDE_TLS_KEY", key.to_str().unwrap()),
        ])
        .await;
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(certified.cert.der().to_vec()))
            .unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self {
            _dir: dir,
            server,
            connector: TlsConnector::from(Arc::new(config)),
        }
    }

    async fn tls(&self) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.server.addr).await.unwrap();
        let name = ServerName::IpAddress(self.server.addr.ip().into());
        self.connector
            .connect(name, tcp)
            .await
            .expect("TLS handshake with the self-signed certificate")
    }

    /// One HTTPS request; returns status, the raw head, and the JSON body.
    async fn https(&self, method: &str, path: &str, body: Option<Value>) -> (u16, String, Value) {
        use base64::Engine;
        let mut stream = self.tls().await;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", CLINIC_A.0, CLINIC_A.1));
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (
            status,
            head.to_ascii_lowercase(),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }

    async fn wss(&self) -> WebSocketStream<TlsStream<TcpStream>> {
        let url = format!("wss://{}/ws", self.server.addr);
        let (ws, _) = tokio_tungstenite::client_async(url, self.tls().await)
            .await
            .expect("wss handshake");
        ws
    }
}

async fn frame(ws: &mut WebSocketStream<TlsStream<TcpStream>>, kind: &str) -> Value {
    loop {
        let msg = tokio::time::timeout(bedside_tests::STEP, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(text) = msg {
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            if v["type"] == kind {
                return v;
            }
        }
    }
}

#[tokio::test]
async fn a_visit_runs_over_https_and_wss() {
    let tls = Tls::start().await;
    assert!(
        tls.server
            .logs()
            .contains(&format!("bedside listening on https://{}", tls.server.addr))
    );

    let (status, head, body) = tls.https("GET", "/healthz", None).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    assert!(
        head.contains("strict-transport-security: max-age=31536000; includesubdomains"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");

    let (status, _, visit) = tls.https("POST", "/v1/visits", Some(json!({}))).await;
    assert_eq!(status, 201);
    let id = visit["id"].as_str().unwrap();
    let mint = |role: &'static str, identity: &'static str| {
        let tls = &tls;
        async move {
            let (status, _, t) = tls
                .https(
                    "POST",
                    &format!("/v1/visits/{id}/tokens"),
                    Some(json!({"role": role, "identity": identity})),
                )
                .await;
            assert_eq!(status, 201);
            assert!(
                t["join_url"].as_str().unwrap().starts_with("https://"),
                "{t}"
            );
            t["token"].as_str().unwrap().to_owned()
        }
    };
    let (doctor_token, patient_token) = (mint("doctor", "dr").await, mint("patient", "pt").await);

    let mut doctor = tls.wss().await;
    doctor
        .send(Message::text(
            json!({"type": "join", "token": doctor_token}).to_string(),
        ))
        .await
        .unwrap();
    frame(&mut doctor, "admitted").await;
    let mut patient = tls.wss().await;
    patient
        .send(Message::text(
            json!({"type": "join", "token": patient_token}).to_string(),
        ))
        .await
        .unwrap();
    let joined = frame(&mut patient, "joined").await;
    let pid = joined["participant_id"].as_str().unwrap().to_owned();
    frame(&mut patient, "waiting").await;
    doctor
        .send(Message::text(
            json!({"type": "admit", "participant_id": pid}).to_string(),
        ))
        .await
        .unwrap();
    frame(&mut patient, "admitted").await;
    doctor
        .send(Message::text(
            json!({"type": "signal", "to": pid, "data": {"over": "wss"}}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(
        frame(&mut patient, "signal").await["data"],
        json!({"over": "wss"})
    );
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_answer() {
    let tls = Tls::start().await;
    let mut tcp = TcpStream::connect(tls.server.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(bedside_tests::STEP, tcp.read_to_end(&mut buf))
        .await
        .expect("closed in time");
    assert!(
        read.is_err() || !String::from_utf8_lossy(&buf).contains("200 OK"),
        "plain HTTP was served"
    );
    // And the server still serves TLS clients.
    assert_eq!(tls.https("GET", "/healthz", None).await.0, 200);
}
