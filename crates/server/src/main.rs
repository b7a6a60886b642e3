//! `bedside`: the telehealth signaling server.

use bedside_server::audit_cli::{self, Verdict};
use bedside_server::runtime::{Spread, Threads};
use bedside_server::{Application, Config, telemetry};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// jemalloc for the whole process, SQLite's C code included (the crate's unprefixed
/// `malloc`): with its background thread it gives back, within seconds, the memory a burst of
/// joins used and freed, which glibc keeps between live blocks (BENCHMARKS.md, "Memory per
/// idle authenticated connection"). `MALLOC_CONF` tunes it at run time.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "bedside",
    version,
    about = "Telehealth video-visit signaling server"
)]
struct Cli {
    /// TOML config file; BEDSIDE_* environment variables override it.
    #[arg(long, env = "BEDSIDE_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API, /ws and the web client (the default).
    Serve,
    /// Load and validate the configuration, print it without secrets, and exit.
    CheckConfig,
    /// Create a visit on the running server and print a doctor link and a patient link.
    Demo,
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit trail's hash chain in the configured database: prints each broken
    /// visit and a summary; exits 0 when intact, 1 when a link is broken, 2 on error.
    Verify {
        /// Check only this visit.
        #[arg(long)]
        visit: Option<String>,
        /// Also write the outcome here in the Prometheus text format, for node_exporter's
        /// textfile collector (e.g. /var/lib/prometheus/node-exporter/bedside_audit.prom).
        #[arg(long)]
        metrics_file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // One TLS implementation for the whole process: HTTPS serving, webhook delivery and
    // the demo's API calls (reqwest is built without a bundled provider).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bedside: {e:#}");
            return ExitCode::from(2);
        }
    };
    // Started once the configuration is read: it says how many threads.
    let threads = match Threads::start(config.worker_threads) {
        Ok(threads) => threads,
        Err(e) => {
            eprintln!("bedside: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let spread = threads.spread();
    threads.block_on(run(cli, config, spread))
}

async fn run(cli: Cli, config: Config, threads: Spread) -> ExitCode {
    if let Some(Command::CheckConfig) = cli.command {
        let keys: Vec<_> = config.api_keys.iter().map(|k| k.id.to_string()).collect();
        println!(
            "configuration is valid; listen={} database={} api keys={keys:?}",
            config.listen, config.database
        );
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Demo) = cli.command {
        return match bedside_server::demo::run(config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bedside demo: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Audit {
        command: AuditCommand::Verify {
            visit,
            metrics_file,
        },
    }) = &cli.command
    {
        let mut out = std::io::stdout().lock();
        return match audit_cli::verify(&config, visit.as_deref(), metrics_file.as_deref(), &mut out)
            .await
        {
            Ok(Verdict::Intact) => ExitCode::SUCCESS,
            Ok(Verdict::Broken) => ExitCode::from(1),
            Err(e) => {
                eprintln!("bedside audit verify: {e}");
                ExitCode::from(2)
            }
        };
    }
    let _telemetry = match telemetry::init(config.log_format, config.otlp_endpoint.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("bedside: setting up tracing: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let app = match Application::build(config, threads).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("startup failed: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", app.banner());
    match app.run_until_stopped(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("server failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
