//! `bedside-loadtest`: scripted load against a running bedside (or the baseline relay).
//! Every run is bounded in time and count and targets loopback only.

use anyhow::{Context, bail};
use bedside_loadtest::report::Report;
use bedside_loadtest::scenario::{churn, idle, isolation, join_storm, reconnect_storm, visits};
use bedside_loadtest::target::{Sources, Target};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "bedside-loadtest",
    about = "Load for Bedside over its real protocol, loopback only"
)]
struct Cli {
    /// Print the report as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Loopback source addresses to spread connections over (127.0.0.1 .. 127.0.0.N).
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=64))]
    sources: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct TargetArgs {
    /// Bedside's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Bedside API key, id:secret (join tokens are minted with it locally).
    #[arg(long, env = "BEDSIDE_LOADTEST_KEY", default_value = "")]
    key: String,
    /// Load the baseline relay at this URL instead of Bedside.
    #[arg(long, conflicts_with = "peerjs")]
    baseline: Option<String>,
    /// Load PeerJS's signaling server at this URL instead of Bedside (visits and idle;
    /// `node crates/loadtest/peerjs/server.mjs` starts one).
    #[arg(long)]
    peerjs: Option<String>,
    /// Another node of the same cluster: each visit's patient connects there while its
    /// doctor connects to --url, so every signal is relayed across nodes.
    #[arg(long, conflicts_with_all = ["baseline", "peerjs"])]
    patient_url: Option<String>,
    /// The server's pid, to report its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Bedside: participants do not name their visit in the `/ws` URL (the SDK does), so
    /// the server places each connection on its least busy thread.
    #[arg(long, conflicts_with_all = ["baseline", "peerjs"])]
    no_visit_hint: bool,
}

impl TargetArgs {
    fn target(&self) -> anyhow::Result<Target> {
        if let Some(url) = &self.peerjs {
            return Target::peerjs(url);
        }
        match &self.baseline {
            Some(url) => Target::baseline(url),
            None if self.key.is_empty() => bail!("--key id:secret is required for Bedside"),
            None => {
                let mut target = Target::bedside(&self.url, &self.key)?;
                if self.no_visit_hint {
                    target = target.without_visit_hint();
                }
                match &self.patient_url {
                    Some(url) => target.with_patient_url(url),
                    None => Ok(target),
                }
            }
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Concurrent visits: set up like real ones, then closed-loop round trips of signals.
    Visits {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        visits: u64,
        /// Measured seconds (after warm-up).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=600))]
        duration: u64,
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=60))]
        warmup: u64,
        /// Size of each relayed signal frame in bytes.
        #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u64).range(150..=60_000))]
        signal_bytes: u64,
        /// Signals each pair keeps in flight.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
        window: u64,
        /// Each side waits this long before answering a signal (0: at once, full load): a
        /// load below saturation, at most visits x window / think messages a second.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
        think_ms: u64,
        /// Size of the offer and answer SDP in bytes.
        #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u64).range(200..=60_000))]
        sdp_bytes: u64,
        /// ICE candidates each side trickles.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(0..=100))]
        candidates: u64,
        /// How many visits are real WebRTC peers (ICE + DTLS over loopback, data channel).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=200))]
        webrtc: u64,
        /// Every participant also sends a call-quality `stats` frame this often, in seconds
        /// (0: never), as the web client does every 5 s; Bedside only.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=600))]
        stats_every: u64,
        /// Beside the visits, this many patients wait in one provider's queue with the
        /// provider's dashboard open (0: none); Bedside only.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1000))]
        queue_patients: u64,
        /// How often the queue changes (the longest waiting patient leaves, a new one
        /// knocks), in milliseconds.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=60_000))]
        queue_every_ms: u64,
    },
    /// Participants arrive at a target rate for a duration.
    JoinStorm {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=5000))]
        rate: u32,
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
        duration: u64,
        /// During the storm, this many patients wait in one provider's queue with the
        /// provider's dashboard open (0: none).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1000))]
        queue_patients: u64,
        /// How often the queue changes during the storm, in milliseconds.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=60_000))]
        queue_every_ms: u64,
    },
    /// Every connection drops at once and comes back with its resume token.
    ReconnectStorm {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=9_000))]
        visits: u64,
        /// Each client waits a random time up to this before coming back.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
        jitter_ms: u64,
        /// Instead of dropping the clients, wait for the server to go away (kill -9 it and
        /// start it again on the same address and database): half the patients admitted,
        /// half waiting, all must come back to the same place within --jitter-ms of the
        /// server answering /readyz.
        #[arg(long)]
        wait_for_restart: bool,
        /// With --wait-for-restart: longest wait for the server to go down, and to come back.
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3_600))]
        restart_timeout: u64,
        /// With --wait-for-restart: come back as soon as the connections drop, not when the
        /// server answers /readyz; connects that fail while it is down are retried.
        #[arg(long, requires = "wait_for_restart")]
        early: bool,
    },
    /// Admitted pairs exchange signals carrying random nonces; every nonce must reach its
    /// own peer exactly once, in order, and nowhere else. Exits non-zero otherwise.
    Isolation {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=9_000))]
        visits: u64,
        /// Signals each side sends.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1_000))]
        rounds: u64,
        /// Signals per second each side sends (the server allows 50/s per connection).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1_000))]
        per_second: u32,
    },
    /// Join/leave cycles (alternately leave and abrupt drop) against a running server;
    /// its memory, open fds and live tasks must come back within --tolerance-pct of where
    /// they were. Needs --server-pid. Exits non-zero otherwise.
    Churn {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        cycles: u64,
        /// Cycles under way at once.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1_000))]
        concurrency: u64,
        /// Visits in the pool (eight places each; one in four without a doctor).
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=5_000))]
        pool: u64,
        /// Cycles run before the first measurement.
        #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(0..=100_000))]
        warmup: u64,
        /// The server's grace period (BEDSIDE_GRACE_SECONDS).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=300))]
        grace_secs: u64,
        /// Largest change allowed between the first and the last measurement, in percent.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
        tolerance_pct: u64,
    },
    /// Holds authenticated connections open; reports the server's memory per connection.
    Idle {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=19_500))]
        connections: u64,
        /// Participants per visit: one doctor, the others admitted (1: the doctor alone,
        /// which keeps the visit live on the server at one connection a visit).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=8))]
        per_visit: u64,
        /// Seconds to hold the connections after measuring.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=600))]
        hold: u64,
        /// With --server-pid: seconds after the first reading (3 s after the last join) to
        /// read the server's memory again, once its allocator has given back what the join
        /// burst freed; that reading is `bytes_per_connection` (0: the first reading is).
        #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(0..=300))]
        settle: u64,
    },
    /// Prints two JSON reports side by side with their ratios (first / second).
    Compare { first: PathBuf, second: PathBuf },
}

/// Lets thousands of sockets be open at once, up to the hard limit.
fn raise_fd_limit() {
    // Without libc: `ulimit -n` in a wrapper is the portable way; report what we have.
    if let Ok(limits) = std::fs::read_to_string("/proc/self/limits")
        && let Some(line) = limits.lines().find(|l| l.starts_with("Max open files"))
    {
        eprintln!("{}", line.split_whitespace().collect::<Vec<_>>().join(" "));
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let sources = Sources::new(cli.sources);
    let report = match cli.command {
        Command::Compare { first, second } => {
            let read = |p: &PathBuf| -> anyhow::Result<Value> {
                Ok(serde_json::from_str(
                    &std::fs::read_to_string(p).with_context(|| p.display().to_string())?,
                )?)
            };
            print!("{}", compare(&read(&first)?, &read(&second)?));
            return Ok(());
        }
        Command::Visits {
            target,
            visits,
            duration,
            warmup,
            signal_bytes,
            window,
            think_ms,
            sdp_bytes,
            candidates,
            webrtc,
            stats_every,
            queue_patients,
            queue_every_ms,
        } => {
            raise_fd_limit();
            let opts = visits::Options {
                visits: visits as usize,
                duration: Duration::from_secs(duration),
                warmup: Duration::from_secs(warmup),
                signal_bytes: signal_bytes as usize,
                window: window as usize,
                think: Duration::from_millis(think_ms),
                sdp_bytes: sdp_bytes as usize,
                candidates: candidates as usize,
                webrtc: webrtc.min(visits) as usize,
                stats_every: (stats_every > 0).then(|| Duration::from_secs(stats_every)),
                queue_patients: queue_patients as usize,
                queue_every: Duration::from_millis(queue_every_ms),
                sources,
                server_pid: target.server_pid,
            };
            visits::run(target.target()?, opts).await?
        }
        Command::JoinStorm {
            target,
            rate,
            duration,
            queue_patients,
            queue_every_ms,
        } => {
            raise_fd_limit();
            let opts = join_storm::Options {
                rate,
                duration: Duration::from_secs(duration),
                sources,
                server_pid: target.server_pid,
                queue_patients: queue_patients as usize,
                queue_every: Duration::from_millis(queue_every_ms),
            };
            join_storm::run(target.target()?, opts).await?
        }
        Command::ReconnectStorm {
            target,
            visits,
            jitter_ms,
            wait_for_restart: false,
            ..
        } => {
            raise_fd_limit();
            let opts = reconnect_storm::Options {
                visits: visits as usize,
                jitter: Duration::from_millis(jitter_ms),
                sources,
            };
            reconnect_storm::run(target.target()?, opts).await?
        }
        Command::ReconnectStorm {
            target,
            visits,
            jitter_ms,
            wait_for_restart: true,
            restart_timeout,
            early,
        } => {
            raise_fd_limit();
            let target = target.target()?;
            let opts = reconnect_storm::RestartOptions {
                visits: visits as usize,
                window: Duration::from_millis(jitter_ms),
                sources,
                restart_timeout: Duration::from_secs(restart_timeout),
                early,
            };
            let prepared = reconnect_storm::prepare(&target, opts).await?;
            // Scripts wait for this line before killing the server.
            eprintln!(
                "ready: {} clients connected; kill -9 the server and start it again on the same address and database",
                prepared.clients()
            );
            let outcome = prepared.comeback(&target).await?;
            output(&outcome.report, cli.json);
            return verdict("restart storm", outcome.failures());
        }
        Command::Isolation {
            target,
            visits,
            rounds,
            per_second,
        } => {
            raise_fd_limit();
            let opts = isolation::Options {
                visits: visits as usize,
                rounds: rounds as usize,
                per_second,
                sources,
                server_pid: target.server_pid,
            };
            let outcome = isolation::run(target.target()?, opts).await?;
            output(&outcome.report, cli.json);
            return verdict("isolation", outcome.failures());
        }
        Command::Churn {
            target,
            cycles,
            concurrency,
            pool,
            warmup,
            grace_secs,
            tolerance_pct,
        } => {
            raise_fd_limit();
            let Some(server_pid) = target.server_pid else {
                bail!("churn needs --server-pid to read the server's memory and descriptors");
            };
            let opts = churn::Options {
                cycles: cycles as usize,
                concurrency: concurrency as usize,
                pool: pool as usize,
                warmup: warmup as usize,
                grace: Duration::from_secs(grace_secs),
                server_pid,
                sources,
                tolerance_pct: tolerance_pct as f64,
            };
            let outcome = churn::run(target.target()?, opts).await?;
            output(&outcome.report, cli.json);
            return verdict("churn", outcome.failures());
        }
        Command::Idle {
            target,
            connections,
            per_visit,
            hold,
            settle,
        } => {
            raise_fd_limit();
            let opts = idle::Options {
                connections: connections as usize,
                per_visit: per_visit as usize,
                sources,
                server_pid: target.server_pid,
                hold: Duration::from_secs(hold),
                settle: Duration::from_secs(settle),
            };
            idle::run(target.target()?, opts).await?
        }
    };
    output(&report, cli.json);
    Ok(())
}

/// A run that did not meet its bar ends the process with an error naming why.
fn verdict(scenario: &str, failures: Vec<String>) -> anyhow::Result<()> {
    if failures.is_empty() {
        return Ok(());
    }
    bail!("{scenario} failed: {}", failures.join("; "))
}

fn output(report: &Report, json: bool) {
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
}

/// Side-by-side figures of two reports of the same scenario, with first/second ratios.
fn compare(a: &Value, b: &Value) -> String {
    let mut rows: Vec<(String, f64, f64)> = Vec::new();
    let num = |v: &Value| v.as_f64();
    if let (Some(la), Some(lb)) = (a["latency"].as_object(), b["latency"].as_object()) {
        for (name, ha) in la {
            if let Some(hb) = lb.get(name) {
                for q in ["p50_ms", "p99_ms"] {
                    if let (Some(x), Some(y)) = (num(&ha[q]), num(&hb[q])) {
                        rows.push((format!("{name} {q}"), x, y));
                    }
                }
            }
        }
    }
    for section in ["rates_per_s", "server"] {
        if let (Some(sa), Some(sb)) = (a[section].as_object(), b[section].as_object()) {
            for (name, x) in sa {
                if let (Some(x), Some(y)) = (num(x), sb.get(name).and_then(num)) {
                    rows.push((
                        format!(
                            "{name}{}",
                            if section == "rates_per_s" {
                                " per s"
                            } else {
                                ""
                            }
                        ),
                        x,
                        y,
                    ));
                }
            }
        }
    }
    let mut out = format!(
        "{:<40} {:>14} {:>14} {:>8}\n",
        "",
        a["target"].as_str().unwrap_or("first"),
        b["target"].as_str().unwrap_or("second"),
        "ratio"
    );
    for (name, x, y) in rows {
        let ratio = if y.abs() > f64::EPSILON {
            format!("{:.2}", x / y)
        } else {
            "-".into()
        };
        out.push_str(&format!("{name:<40} {x:>14.2} {y:>14.2} {ratio:>8}\n"));
    }
    out
}
