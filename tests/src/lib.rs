//! Test harness: starts the real `bedside` binary on a loopback port with its own database,
//! and drives it with a real HTTP client and real WebSocket clients.
//!
//! The database is a SQLite file in the server's temporary directory, or, with
//! `BEDSIDE_TEST_DATABASE=postgres`, a fresh PostgreSQL database of its own on a cluster the
//! test process starts on loopback (see [`pg`]). A restart keeps the same database either way.
//!
//! The binary is `target/<profile>/bedside` next to the test executable (override with
//! `BEDSIDE_BIN`); `scripts/test` builds it before running the suite.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use serde_json;

pub mod cluster;
pub mod pg;

/// Tenants every test server knows.
pub const CLINIC_A: (&str, &str) = ("clinic-a", "clinic-a-secret-0123456789");
pub const CLINIC_B: (&str, &str) = ("clinic-b", "clinic-b-secret-0123456789");

/// How long a test waits for any one expected frame or response.
pub const STEP: Duration = Duration::from_secs(15);

/// The `bedside` binary under test.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BEDSIDE_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/bedside
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let bin = profile_dir.join("bedside");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p bedside-server` (scripts/test does)",
        bin.display()
    );
    bin
}

/// A running `bedside` process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    dir: Arc<TempDir>,
    env: Vec<(String, String)>,
    child: Child,
    logs: Arc<Mutex<String>>,
    /// The tasks reading the process's stdout and stderr into `logs`.
    collectors: Vec<tokio::task::JoinHandle<()>>,
}

/// Evaluates `$body` with `$pool` open on `$server`'s database, PostgreSQL or SQLite (the
/// two pool types differ, so the body is written once and compiled for each).
macro_rules! on_database {
    ($server:expr, |$pool:ident| $body:expr) => {{
        let url = $server.database_url();
        if $server.on_postgres() {
            let $pool = sqlx::PgPool::connect(&url)
                .await
                .expect("open the database");
            let out = $body;
            $pool.close().await;
            out
        } else {
            let $pool = sqlx::SqlitePool::connect(&url)
                .await
                .expect("open the database");
            let out = $body;
            $pool.close().await;
            out
        }
    }};
}

impl TestServer {
    /// A server with the two test tenants and default settings.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A server with extra `BEDSIDE_*` (or other) environment variables; an empty value
    /// unsets the variable.
    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // Kept in `env`, so a restart opens the same PostgreSQL database.
        if pg::selected() && !env.iter().any(|(k, _)| k == "BEDSIDE_DATABASE_URL") {
            let url = pg::shared().await.create_database().await;
            env.push(("BEDSIDE_DATABASE_URL".into(), url));
        }
        Self::spawn(dir, env).await
    }

    async fn spawn(dir: Arc<TempDir>, env: Vec<(String, String)>) -> Self {
        // `ULIMIT_NOFILE=N` (not a bedside setting) runs the server under a file limit of N.
        let mut cmd = match env.iter().find(|(k, _)| k == "ULIMIT_NOFILE") {
            Some((_, n)) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("BEDSIDE_LISTEN", "127.0.0.1:0")
            .env(
                "BEDSIDE_DATABASE_URL",
                format!("sqlite://{}", dir.path().join("bedside.db").display()),
            )
            .env(
                "BEDSIDE_API_KEYS",
                format!(
                    "{}:{},{}:{}",
                    CLINIC_A.0, CLINIC_A.1, CLINIC_B.0, CLINIC_B.1
                ),
            )
            // Everything in a test comes from 127.0.0.1: per-address flood limits would trip on
            // the suite itself. The tests of those limits set their own values.
            .env("BEDSIDE_WS__MAX_PER_IP", "100000")
            .env("BEDSIDE_WS__JOINS_PER_IP_PER_SECOND", "100000")
            .env("BEDSIDE_WS__JOIN_BURST_PER_IP", "100000")
            .env("BEDSIDE_API__VISITS_PER_MINUTE", "1000000")
            .env("BEDSIDE_API__VISIT_BURST", "100000")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // An empty value removes the variable (e.g. to run without API keys).
        for (k, v) in env.iter().filter(|(k, _)| k != "ULIMIT_NOFILE") {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        let mut child = cmd.spawn().expect("spawn bedside");
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = oneshot::channel();
        let collectors = vec![
            collect(child.stdout.take().expect("stdout"), logs.clone(), Some(tx)),
            collect(child.stderr.take().expect("stderr"), logs.clone(), None),
        ];
        let addr = match tokio::time::timeout(STEP, rx).await {
            Ok(Ok(addr)) => addr,
            _ => panic!(
                "bedside did not start; output:\n{}",
                logs.lock().expect("logs")
            ),
        };
        Self {
            addr,
            base: format!("http://{addr}"),
            dir,
            env,
            child,
            logs,
            collectors,
        }
    }

    /// Waits until everything the exited process printed is in `logs`.
    async fn drain_logs(&mut self) {
        for task in std::mem::take(&mut self.collectors) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Where the SQLite database is, when the server runs on SQLite.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("bedside.db")
    }

    /// The `BEDSIDE_DATABASE_URL` the server runs on.
    pub fn database_url(&self) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == "BEDSIDE_DATABASE_URL")
            .map_or_else(
                || format!("sqlite://{}", self.db_path().display()),
                |(_, v)| v.clone(),
            )
    }

    /// Whether the server runs on PostgreSQL.
    pub fn on_postgres(&self) -> bool {
        self.database_url().starts_with("postgres")
    }

    /// Runs SQL statements straight against the server's database, behind its back (to
    /// tamper with rows, say); the rows affected. Write SQL both databases accept.
    pub async fn sql(&self, statements: &str) -> u64 {
        let statements = sqlx::AssertSqlSafe(statements.to_owned());
        on_database!(self, |pool| sqlx::raw_sql(statements)
            .execute(&pool)
            .await
            .expect("run SQL")
            .rows_affected())
    }

    /// The first column of the first row a query returns, as text (`None` for NULL).
    pub async fn sql_text(&self, query: &str) -> Option<String> {
        let query = sqlx::AssertSqlSafe(query.to_owned());
        on_database!(self, |pool| sqlx::query_scalar(query)
            .fetch_one(&pool)
            .await
            .expect("run SQL"))
    }

    /// The server's `/metrics`, as Prometheus reads it.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Everything the process printed so far (stdout and stderr).
    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").clone()
    }

    pub fn api(&self, tenant: (&str, &str)) -> Api {
        Api::at(&self.base, tenant)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// `kill -9`: no goodbye, no flush.
    pub async fn kill9(&mut self) {
        self.child.kill().await.expect("kill");
    }

    /// SIGSTOP: the process is frozen, its sockets stay open (a stalled or partitioned node).
    pub async fn pause(&self) {
        self.signal("-STOP").await;
    }

    /// SIGCONT after [`TestServer::pause`].
    pub async fn resume(&self) {
        self.signal("-CONT").await;
    }

    async fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.pid().to_string())
            .status()
            .await
            .expect("kill");
        assert!(status.success());
    }

    /// SIGTERM, then waits for the process to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.stop_with("-TERM").await
    }

    /// SIGINT (Ctrl-C), then waits for the process to exit.
    pub async fn interrupt(&mut self) -> ExitStatus {
        self.stop_with("-INT").await
    }

    async fn stop_with(&mut self, signal: &str) -> ExitStatus {
        self.signal(signal).await;
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("exits in time")
            .expect("wait");
        self.drain_logs().await;
        status
    }

    /// A new process on the same database and settings (after `kill9` or `terminate`).
    pub async fn restart(self) -> Self {
        let TestServer {
            dir,
            env,
            mut child,
            ..
        } = self;
        let _ = child.kill().await;
        Self::spawn(dir, env).await
    }
}

fn collect(
    stream: impl AsyncRead + Unpin + Send + 'static,
    logs: Arc<Mutex<String>>,
    mut ready: Option<oneshot::Sender<SocketAddr>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(addr) = line
                .strip_prefix("bedside listening on http://")
                .or_else(|| line.strip_prefix("bedside listening on https://"))
                && let (Some(tx), Ok(addr)) = (ready.take(), addr.trim().parse())
            {
                let _ = tx.send(addr);
            }
            let mut logs = logs.lock().expect("logs");
            logs.push_str(&line);
            logs.push('\n');
        }
    })
}

/// A tenant's REST client.
pub struct Api {
    http: reqwest::Client,
    base: String,
    key: (String, String),
}

impl Api {
    /// A tenant's client for Bedside at `base` (`http://host:port`): a test server, a load
    /// balancer, a container's published port.
    pub fn at(base: &str, tenant: (&str, &str)) -> Self {
        Self {
            http: bedside_loadtest::http::client(),
            base: base.to_owned(),
            key: (tenant.0.into(), tenant.1.into()),
        }
    }

    /// Any request, authenticated as this tenant; returns status and JSON body (or Null).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .basic_auth(&self.key.0, Some(&self.key.1));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = tokio::time::timeout(STEP, req.send())
            .await
            .expect("in time")
            .expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn create_visit(&self, body: Value) -> Value {
        let (status, v) = self.call(Method::POST, "/v1/visits", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v
    }

    /// A visit id with default settings.
    pub async fn visit(&self) -> String {
        self.create_visit(json!({})).await["id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    pub async fn mint(&self, visit: &str, role: &str, identity: &str, name: &str) -> String {
        let (status, v) = self
            .call(
                Method::POST,
                &format!("/v1/visits/{visit}/tokens"),
                Some(json!({"role": role, "identity": identity, "name": name})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v["token"].as_str().expect("token").to_owned()
    }

    pub async fn events(&self, visit: &str) -> Vec<Value> {
        let (status, v) = self
            .call(Method::GET, &format!("/v1/visits/{visit}/events"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["events"].as_array().expect("events").clone()
    }

    pub async fn get_visit(&self, visit: &str) -> Value {
        let (status, v) = self
            .call(Method::GET, &format!("/v1/visits/{visit}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    }
}

/// A join token minted by hand, as an integrator holding its secret would.
pub fn forge_token(secret: &str, kid: &str, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

/// The claims of a JWT, unverified.
pub fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json")
}

/// A WebSocket client speaking the protocol.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Set by [`Client::join`].
    pub participant_id: String,
    pub resume_token: String,
}

impl Client {
    pub async fn connect(server: &TestServer) -> Self {
        Self::connect_url(&server.ws_url(), None)
            .await
            .expect("connect")
    }

    /// Connects, optionally sending an `Origin`; an HTTP refusal comes back as its status.
    pub async fn connect_url(url: &str, origin: Option<&str>) -> Result<Self, StatusCode> {
        let mut req = url.into_client_request().expect("request");
        if let Some(origin) = origin {
            req.headers_mut()
                .insert("origin", origin.parse().expect("origin"));
        }
        match tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
            .await
            .expect("in time")
        {
            Ok((ws, _)) => Ok(Self {
                ws,
                participant_id: String::new(),
                resume_token: String::new(),
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                Err(StatusCode::from_u16(resp.status().as_u16()).expect("status"))
            }
            Err(e) => panic!("connect failed: {e}"),
        }
    }

    /// Wraps an already connected socket.
    pub fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        Self {
            ws,
            participant_id: String::new(),
            resume_token: String::new(),
        }
    }

    /// Connects and joins with `token`; returns the client and its `joined` frame.
    pub async fn join(server: &TestServer, token: &str) -> (Self, Value) {
        Self::join_url(&server.ws_url(), token).await
    }

    /// [`Client::join`] at any `/ws` URL (a load balancer's, say).
    pub async fn join_url(url: &str, token: &str) -> (Self, Value) {
        Self::try_join(url, json!({"type": "join", "token": token}))
            .await
            .unwrap_or_else(|e| panic!("join failed: {e}"))
    }

    /// Connects to `url` and sends `join` (with a join or a resume token); the client and
    /// its `joined` frame, or why not (refused connection, `error` frame, close). Never
    /// panics: recovery tests call it in a loop.
    pub async fn try_join(url: &str, join: Value) -> Result<(Self, Value), String> {
        let attempt = async {
            let (ws, _) = tokio_tungstenite::connect_async(url)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let mut c = Self::from_stream(ws);
            c.ws.send(Message::text(join.to_string()))
                .await
                .map_err(|e| format!("send: {e}"))?;
            loop {
                let msg = c.ws.next().await;
                let text = match msg {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}")),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(format!("receive: {e}")),
                    None => return Err("closed".into()),
                };
                let frame: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                if frame["type"] != "joined" {
                    return Err(format!("got {frame}"));
                }
                c.participant_id = frame["participant_id"].as_str().unwrap_or_default().into();
                c.resume_token = frame["resume_token"].as_str().unwrap_or_default().into();
                return Ok((c, frame));
            }
        };
        tokio::time::timeout(STEP, attempt)
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
    }

    /// Rejoins with `client`'s resume token through `url` until a node takes it (a dead
    /// owner's lease must lapse first, a restarted server must be listening), and checks no
    /// new admission was needed.
    pub async fn resume(url: &str, client: &Client) -> Client {
        let deadline = Instant::now() + STEP;
        loop {
            match Self::try_join(
                url,
                json!({"type": "join", "resume_token": client.resume_token}),
            )
            .await
            {
                Ok((mut again, joined)) => {
                    assert_eq!(joined["participant_id"], client.participant_id.as_str());
                    again.expect("admitted").await;
                    return again;
                }
                Err(why) => {
                    assert!(Instant::now() < deadline, "could not rejoin: {why}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_message(
        &mut self,
        msg: Message,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        self.ws.send(msg).await
    }

    /// The next text frame, raw. Panics on close or timeout.
    pub async fn recv_text(&mut self) -> String {
        loop {
            match tokio::time::timeout(STEP, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return t.as_str().to_owned(),
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    pub async fn recv(&mut self) -> Value {
        serde_json::from_str(&self.recv_text().await).expect("json frame")
    }

    /// The next frame, which must be of type `kind`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["type"], kind, "expected {kind}, got {v}");
        v
    }

    /// Skips frames until one of type `kind`.
    pub async fn until(&mut self, kind: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Reads until the server closes; returns the close code (1006 if it just dropped).
    pub async fn closed(&mut self) -> u16 {
        loop {
            match tokio::time::timeout(STEP, self.ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return frame.map_or(1005, |f| u16::from(f.code));
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_)) | None) => return 1006,
                Err(_) => panic!("the server did not close the connection"),
            }
        }
    }

    /// Reads until the server closes; the close code and its reason (1006 and no reason if
    /// it just dropped).
    pub async fn close_frame(&mut self) -> (u16, String) {
        loop {
            match tokio::time::timeout(STEP, self.ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    });
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_)) | None) => return (1006, String::new()),
                Err(_) => panic!("the server did not close the connection"),
            }
        }
    }

    /// Asserts that nothing arrives for `wait`.
    pub async fn silent(&mut self, wait: Duration) {
        match tokio::time::timeout(wait, self.ws.next()).await {
            Err(_) => {}
            Ok(Some(Ok(Message::Ping(_)))) => {}
            Ok(other) => panic!("expected silence, got {other:?}"),
        }
    }

    /// Still connected and answering: a ping frame gets a pong frame.
    pub async fn alive(&mut self) {
        self.send(json!({"type": "ping"})).await;
        self.until("pong").await;
    }

    /// Drops the TCP connection without a close frame (a network blip).
    pub fn drop_abruptly(self) {
        drop(self.ws);
    }

    /// Sends a close frame, as a browser closing a tab does.
    pub async fn close(mut self) {
        let _ = self
            .ws
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    }
}

/// A visit with a doctor and a patient, the patient admitted.
pub struct Pair {
    pub visit: String,
    pub doctor: Client,
    pub patient: Client,
}

impl Pair {
    pub async fn admitted(server: &TestServer, api: &Api) -> Self {
        Self::admitted_at(&server.ws_url(), api).await
    }

    /// [`Pair::admitted`] at any `/ws` URL, with `api` pointing at the same Bedside.
    pub async fn admitted_at(ws_url: &str, api: &Api) -> Self {
        let visit = api.visit().await;
        let doctor_token = api.mint(&visit, "doctor", "dr-1", "Dr One").await;
        let patient_token = api.mint(&visit, "patient", "pt-1", "Pat One").await;
        let (mut doctor, _) = Client::join_url(ws_url, &doctor_token).await;
        doctor.expect("admitted").await;
        doctor.expect("lobby").await;
        let (mut patient, _) = Client::join_url(ws_url, &patient_token).await;
        patient.expect("waiting").await;
        doctor.expect("lobby").await;
        doctor
            .send(json!({"type": "admit", "participant_id": patient.participant_id}))
            .await;
        patient.expect("admitted").await;
        doctor.expect("participant_joined").await;
        doctor.expect("lobby").await;
        Pair {
            visit,
            doctor,
            patient,
        }
    }
}

/// The value of the first line of `/metrics` text that starts with `series` (a name, with
/// its labels when it has any) and goes on with a number.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}
