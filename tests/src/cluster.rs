//! A Bedside cluster for the tests, all on loopback and started by the test itself: a real
//! Redis (`redis-server`), the test process's PostgreSQL (see [`crate::pg`]) with a fresh
//! database, three `bedside` nodes sharing both, and HAProxy in front of them running the
//! shipped `deploy/haproxy.cfg` (health checks on `/readyz`).

use crate::pg;
use crate::{STEP, TestServer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::process::{Child, Command};

/// A `redis-server` on a free port, in a temporary directory, persisting nothing: a
/// restart comes back empty, the hardest case for the nodes.
pub struct Redis {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// Set when it speaks TLS only: its self-signed certificate (also the CA to trust).
    pub cert: Option<PathBuf>,
}

impl Redis {
    pub async fn start() -> Self {
        let mut redis = Self {
            port: pg::free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            cert: None,
        };
        redis.run().await;
        redis
    }

    /// A Redis that accepts TLS connections only, with a certificate of its own.
    pub async fn start_tls() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
        let (cert, key) = (dir.path().join("redis.crt"), dir.path().join("redis.key"));
        std::fs::write(&cert, certified.cert.pem()).expect("write cert");
        std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
        let mut redis = Self {
            port: pg::free_port(),
            dir,
            child: None,
            cert: Some(cert),
        };
        redis.run().await;
        redis
    }

    pub fn url(&self) -> String {
        let scheme = if self.cert.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `redis-server`'s (or `redis-cli`'s) arguments for where and how it listens.
    fn listen_args(&self, server: bool) -> Vec<String> {
        let port = self.port.to_string();
        match &self.cert {
            None if server => vec!["--port".into(), port],
            None => vec!["-p".into(), port],
            Some(cert) => {
                let cert = cert.display().to_string();
                let key = self.dir.path().join("redis.key").display().to_string();
                if server {
                    vec![
                        "--port".into(),
                        "0".into(),
                        "--tls-port".into(),
                        port,
                        "--tls-cert-file".into(),
                        cert.clone(),
                        "--tls-key-file".into(),
                        key,
                        "--tls-ca-cert-file".into(),
                        cert,
                        "--tls-auth-clients".into(),
                        "no".into(),
                    ]
                } else {
                    vec!["-p".into(), port, "--tls".into(), "--cacert".into(), cert]
                }
            }
        }
    }

    /// Starts (again) on the same port.
    pub async fn run(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(self.listen_args(true))
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server (Debian package redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + STEP;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A key's value, through `redis-cli`.
    pub async fn get(&self, key: &str) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(self.listen_args(false))
            .args(["--raw", "GET", key])
            .output()
            .await
            .expect("redis-cli");
        let value = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (!value.is_empty()).then_some(value)
    }

    /// SIGSTOP: Redis is frozen with its connections open (a stalled Redis); commands wait.
    pub async fn pause(&self) {
        self.signal("-STOP").await;
    }

    /// SIGCONT after [`Redis::pause`].
    pub async fn resume(&self) {
        self.signal("-CONT").await;
    }

    async fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .and_then(|c| c.id())
            .expect("redis running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .await
            .expect("kill");
        assert!(status.success());
    }

    /// Runs a command through `redis-cli` (to play a node the tests do not start); its
    /// output, trimmed.
    pub async fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(self.listen_args(false))
            .arg("--raw")
            .args(args)
            .output()
            .await
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Kills it: everything it held is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }
}

/// HAProxy with `deploy/haproxy.cfg`, in front of `nodes`.
pub struct Haproxy {
    pub addr: SocketAddr,
    _child: Child,
}

impl Haproxy {
    pub async fn start(nodes: &[SocketAddr]) -> Self {
        assert_eq!(nodes.len(), 3, "deploy/haproxy.cfg names three nodes");
        let port = pg::free_port();
        let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy.cfg");
        let mut cmd = Command::new(program("haproxy"));
        cmd.arg("-db")
            .arg("-f")
            .arg(&config)
            .env("BEDSIDE_LB_BIND", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        for (i, node) in nodes.iter().enumerate() {
            cmd.env(format!("BEDSIDE_NODE{}", i + 1), node.to_string());
        }
        let child = cmd.spawn().expect("start haproxy (Debian package haproxy)");
        let lb = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _child: child,
        };
        let http = bedside_loadtest::http::client();
        let deadline = Instant::now() + STEP;
        loop {
            let ready = http.get(format!("{}/readyz", lb.base())).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return lb;
            }
            assert!(Instant::now() < deadline, "haproxy did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

/// `name` from PATH, or from /usr/sbin (where Debian puts haproxy) when PATH lacks it.
fn program(name: &str) -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin").join(name);
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from(name)
    }
}

/// Three nodes on one PostgreSQL database and one Redis, behind HAProxy.
pub struct Cluster {
    pub nodes: Vec<TestServer>,
    pub redis: Redis,
    pub lb: Haproxy,
    pub database_url: String,
}

impl Cluster {
    /// Starts everything; `env` goes to every node on top of the cluster settings.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_on(Redis::start().await, env).await
    }

    /// [`Cluster::start`] with the nodes talking to Redis over TLS.
    pub async fn start_tls(env: &[(&str, &str)]) -> Self {
        Self::start_on(Redis::start_tls().await, env).await
    }

    async fn start_on(redis: Redis, env: &[(&str, &str)]) -> Self {
        let database_url = pg::shared().await.create_database().await;
        let mut nodes = Vec::new();
        for i in 1..=3 {
            let node_id = format!("node{i}");
            let mut node_env = vec![
                ("BEDSIDE_DATABASE_URL", database_url.as_str()),
                ("BEDSIDE_CLUSTER__NODE_ID", node_id.as_str()),
            ];
            let url = redis.url();
            node_env.push(("BEDSIDE_REDIS_URL", url.as_str()));
            let ca = redis.cert.as_ref().map(|c| c.display().to_string());
            if let Some(ca) = &ca {
                node_env.push(("BEDSIDE_REDIS_CA_CERT", ca.as_str()));
            }
            node_env.extend_from_slice(env);
            nodes.push(TestServer::start_with(&node_env).await);
        }
        let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
        let lb = Haproxy::start(&addrs).await;
        Self {
            nodes,
            redis,
            lb,
            database_url,
        }
    }

    /// Which node holds `visit`'s lease (0, 1 or 2), asked of Redis itself: the node the
    /// lease names, if that node is alive.
    pub async fn owner_of(&self, visit: &str) -> Option<usize> {
        let node = self.redis.get(&format!("bedside:lease:{visit}")).await?;
        self.redis.get(&format!("bedside:alive:{node}")).await?;
        let name = node.split('.').next()?;
        name.strip_prefix("node")?
            .parse::<usize>()
            .ok()
            .map(|i| i - 1)
    }
}

impl Redis {
    /// A hash's fields and values, through `redis-cli`.
    pub async fn hash(&self, key: &str) -> Vec<(String, String)> {
        let out = Command::new("redis-cli")
            .args(self.listen_args(false))
            .args(["--raw", "HGETALL", key])
            .output()
            .await
            .expect("redis-cli");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        lines
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_owned(), c[1].to_owned()))
            .collect()
    }
}
