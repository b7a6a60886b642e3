//! `baseline-relay`: runs the baseline relay on a loopback address for benchmarks.

use clap::Parser;

#[derive(Parser)]
#[command(about = "Minimal WebSocket relay: the baseline Bedside is benchmarked against")]
struct Args {
    /// Loopback address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: std::net::SocketAddr,
}

// One thread, as the relay is written for (crates/loadtest/src/baseline.rs says why).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.listen.ip().is_loopback(),
        "the baseline listens on loopback only"
    );
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("baseline listening on ws://{}", listener.local_addr()?);
    tokio::task::LocalSet::new()
        .run_until(bedside_loadtest::baseline::serve(listener))
        .await?;
    Ok(())
}
