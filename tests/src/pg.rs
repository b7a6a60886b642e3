//! A real PostgreSQL server for the tests, started by the tests themselves on loopback.
//!
//! [`shared`] starts one cluster per test process, the first time a test asks for it, in a
//! temporary directory on a free port (TCP on 127.0.0.1 only, its socket in that directory,
//! fsync off); every caller then gets a fresh database of its own from [`PgCluster::create_database`],
//! so tests stay isolated and run in parallel. The cluster dies with the test process
//! (`setpriv --pdeathsig`), and a later run removes what it left in the temp directory.
//! [`PgCluster::start`] gives a private cluster a test may stop and start again.
//!
//! `initdb` refuses to run as root, and the tests (and CI) run as root: then the server runs
//! as the `postgres` user (created by Debian's `postgresql` package). The binaries come
//! from `BEDSIDE_PG_BIN` or the newest `/usr/lib/postgresql/*/bin`, else from `PATH`.
//!
//! This file is also compiled into `crates/rooms/tests/storage.rs` (`#[path]`), so it uses
//! nothing beyond std, tokio, sqlx and tempfile.

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Prefix of the temporary directories clusters live in; the pid of the test process
/// follows it, so a later run can tell which ones are left over.
const DIR_PREFIX: &str = "bedside-pg-";

/// Which database the black-box tests run `bedside` on: `BEDSIDE_TEST_DATABASE=postgres`
/// selects PostgreSQL; unset (or `sqlite`) the default, SQLite.
pub fn selected() -> bool {
    match std::env::var("BEDSIDE_TEST_DATABASE") {
        Ok(v) if v.eq_ignore_ascii_case("postgres") || v.eq_ignore_ascii_case("postgresql") => true,
        Ok(v) if v.is_empty() || v.eq_ignore_ascii_case("sqlite") => false,
        Ok(v) => panic!("BEDSIDE_TEST_DATABASE={v:?}: use sqlite or postgres"),
        Err(_) => false,
    }
}

/// The directory holding `initdb`, `postgres` and `pg_ctl`.
fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("BEDSIDE_PG_BIN") {
        return Some(dir.into());
    }
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, dir)| dir)
}

fn program(name: &str) -> PathBuf {
    bin_dir().map_or_else(|| PathBuf::from(name), |dir| dir.join(name))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .is_some_and(|uid| uid.trim() == "0")
}

/// The uid and gid of the `postgres` user.
fn postgres_user() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        assert!(
            out.status.success(),
            "the tests run as root and initdb refuses root, so PostgreSQL must run as the \
             `postgres` user, which does not exist (install Debian's postgresql package)"
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}

/// A command for a PostgreSQL program, run as `postgres` when we are root, and sent
/// SIGINT (fast shutdown) when the thread that spawns it exits.
fn pg_command(name: &str, root: bool) -> Command {
    let mut cmd = Command::new("setpriv");
    if root {
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--reset-env",
        ]);
    }
    cmd.args(["--pdeathsig", "INT", "--"]).arg(program(name));
    cmd
}

/// A free port for a server the tests start, stop and start again on the same port.
///
/// Below Linux's ephemeral range (32768 and up): while such a server is down, clients
/// retrying to connect to a port in that range can be given that very port as their source
/// and connect to themselves (a TCP self-connect), which holds the port and keeps the
/// server from coming back on it. Outside the range no source port can collide.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    for attempt in 0u64.. {
        let seed = RandomState::new().hash_one((std::process::id(), attempt));
        let port = 10_000 + (seed % 20_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
        assert!(attempt < 10_000, "no free port below 30000");
    }
    unreachable!()
}

/// Removes cluster directories of test processes that are gone.
fn sweep_leftovers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A PostgreSQL cluster on 127.0.0.1, started by the test process.
pub struct PgCluster {
    dir: PathBuf,
    /// Removes the directory when a private cluster is dropped.
    _guard: Option<tempfile::TempDir>,
    pub port: u16,
    root: bool,
    /// The server process of a private cluster (the shared one lives on its own thread).
    child: Option<Child>,
}

impl PgCluster {
    /// A new private cluster, initialized and started; stopped and removed on drop.
    pub async fn start() -> Self {
        let mut cluster = tokio::task::spawn_blocking(|| Self::init(false))
            .await
            .expect("initdb");
        cluster.run().await;
        cluster
    }

    /// `initdb` into a new temporary directory. `keep`: the directory outlives this value
    /// (the shared cluster, cleaned up by a later run's sweep).
    fn init(keep: bool) -> Self {
        sweep_leftovers();
        let root = is_root();
        let guard = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .expect("temp dir");
        let dir = guard.path().to_path_buf();
        if root {
            let (uid, gid) = postgres_user();
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the cluster dir");
        }
        let out = pg_command("initdb", root)
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb ({}): {e}", program("initdb").display()));
        assert!(
            out.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let (dir, guard) = if keep {
            (guard.keep(), None)
        } else {
            (dir, Some(guard))
        };
        Self {
            dir,
            _guard: guard,
            port: free_port(),
            root,
            child: None,
        }
    }

    fn server_command(&self) -> Command {
        let mut cmd = pg_command("postgres", self.root);
        cmd.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                // Safe to lose on an OS crash, not on a server crash: with fsync off a commit
                // still reaches the OS before it returns, so an immediate shutdown (as
                // `stop` does) loses nothing. (synchronous_commit=off would: it loses
                // commits still in PostgreSQL's WAL buffers.)
                "-c",
                "fsync=off",
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=32MB",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.join("server.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            );
        cmd
    }

    /// Starts (or restarts) the server of a private cluster and waits until it answers.
    pub async fn run(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.child = Some(self.server_command().spawn().expect("start postgres"));
        self.wait_ready().await;
    }

    /// Stops the server of a private cluster at once: an immediate shutdown (SIGQUIT), no
    /// checkpoint, open connections cut, as an outage would.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // setpriv execs postgres, so the child's pid is the postmaster's.
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        }
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match PgConnection::connect(&self.url("postgres")).await {
                Ok(conn) => {
                    let _ = conn.close().await;
                    return;
                }
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "postgres did not start: {e}\n{}",
                        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// The URL of database `db` on this cluster.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A new, empty database; its URL.
    pub async fn create_database(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "bedside_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to postgres");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create database");
        let _ = conn.close().await;
        self.url(&name)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The test process's shared cluster, started on first use.
pub async fn shared() -> &'static PgCluster {
    static SHARED: tokio::sync::OnceCell<PgCluster> = tokio::sync::OnceCell::const_new();
    SHARED
        .get_or_init(|| async {
            let (tx, rx) = tokio::sync::oneshot::channel();
            // The server is spawned from a thread that lives as long as the server does: its
            // parent-death signal fires when the spawning thread ends, and this one ends only
            // with the process.
            std::thread::Builder::new()
                .name("postgres".into())
                .spawn(move || {
                    let cluster = PgCluster::init(true);
                    let child = cluster.server_command().spawn();
                    let failed = child.is_err();
                    let _ = tx.send(child.map(|_| cluster));
                    if !failed {
                        loop {
                            std::thread::park();
                        }
                    }
                })
                .expect("spawn the postgres thread");
            let cluster = rx.await.expect("postgres thread").expect("start postgres");
            cluster.wait_ready().await;
            cluster
        })
        .await
}
