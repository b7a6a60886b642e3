//! How long one lease renewal holds Redis, by the number of visits a node holds: the
//! renewal before (one script doing a GET and a PEXPIRE per visit, as until December
//! 2026) against the one in `src/lease.rs` (one SET for the node's liveness), and the
//! look a node takes at its leases after its liveness lapsed (in slices).
//!
//! Redis-side time, from `INFO commandstats` (what every other client waits behind), on
//! a scratch Redis that `scripts/bench-leases` starts on loopback:
//!
//!     scripts/bench-leases            # or: cargo run --release -p bedside-cluster
//!                                     #   --example lease_cost -- redis://127.0.0.1:PORT

use bedside_cluster::lease::lua;
use redis::aio::MultiplexedConnection;

/// The renewal as it was: liveness, then each lease in turn.
const RENEW_BEFORE: &str = r"
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
local lost, retaken = {}, {}
for i = 2, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  elseif not v then
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
    table.insert(retaken, i - 1)
  else
    table.insert(lost, i - 1)
  end
end
return {lost, retaken}";

const NODE: &str = "bench-node";
const TTL_MS: u64 = 3000;
const ROUNDS: u64 = 20;
/// As `RECHECK_SLICE` in src/lease.rs.
const SLICE: usize = 500;

#[tokio::main(flavor = "current_thread")]
async fn main() -> redis::RedisResult<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let client = redis::Client::open(url.as_str())?;
    let host = client.get_connection_info().addr().to_string();
    assert!(
        host.contains("127.0.0.1") || host.contains("localhost"),
        "a scratch Redis on loopback only: this flushes it ({host})"
    );
    let mut con = client.get_multiplexed_async_connection().await?;
    println!(
        "| leases | before: µs per renewal | after: µs per renewal | after a lapse: µs per slice (max), slices |"
    );
    println!("| ---: | ---: | ---: | ---: |");
    for n in [1_000usize, 10_000, 50_000] {
        let visits: Vec<String> = (0..n)
            .map(|i| format!("00000000-0000-4000-8000-{i:012}"))
            .collect();
        let before = before(&mut con, &visits).await?;
        let after = after(&mut con).await?;
        let (slice_max, slices) = lapse(&mut con, &visits).await?;
        println!("| {n} | {before:.0} | {after:.1} | {slice_max:.0}, {slices} |");
    }
    redis::cmd("FLUSHDB").query_async::<()>(&mut con).await
}

async fn fill(con: &mut MultiplexedConnection, visits: &[String]) -> redis::RedisResult<()> {
    redis::cmd("FLUSHDB").query_async::<()>(con).await?;
    for chunk in visits.chunks(1000) {
        let mut pipe = redis::pipe();
        for v in chunk {
            pipe.set(format!("bedside:lease:{v}"), NODE).ignore();
        }
        pipe.query_async::<()>(con).await?;
    }
    Ok(())
}

/// Microseconds Redis spent per script call since the last reset.
async fn per_call(con: &mut MultiplexedConnection) -> redis::RedisResult<(f64, f64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await?;
    let (mut calls, mut usec) = (0f64, 0f64);
    for line in info.lines().filter(|l| l.starts_with("cmdstat_eval")) {
        for field in line.split(':').nth(1).unwrap_or_default().split(',') {
            match field.split_once('=') {
                Some(("calls", v)) => calls += v.parse::<f64>().unwrap_or(0.0),
                Some(("usec", v)) => usec += v.parse::<f64>().unwrap_or(0.0),
                _ => {}
            }
        }
    }
    Ok((usec / calls.max(1.0), calls))
}

/// Loads a script, so that the measured calls find it (no NOSCRIPT round first).
async fn load(con: &mut MultiplexedConnection, code: &str) -> redis::RedisResult<redis::Script> {
    redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(code)
        .query_async::<String>(con)
        .await?;
    Ok(redis::Script::new(code))
}

async fn reset(con: &mut MultiplexedConnection) -> redis::RedisResult<()> {
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(con)
        .await
}

async fn before(con: &mut MultiplexedConnection, visits: &[String]) -> redis::RedisResult<f64> {
    fill(con, visits).await?;
    let script = load(con, RENEW_BEFORE).await?;
    reset(con).await?;
    for _ in 0..ROUNDS {
        let mut call = script.key(format!("bedside:alive:{NODE}"));
        for v in visits {
            call.key(format!("bedside:lease:{v}"));
        }
        call.arg(NODE)
            .arg(TTL_MS)
            .invoke_async::<(Vec<usize>, Vec<usize>)>(con)
            .await?;
    }
    Ok(per_call(con).await?.0)
}

async fn after(con: &mut MultiplexedConnection) -> redis::RedisResult<f64> {
    let script = load(con, lua::RENEW).await?;
    reset(con).await?;
    for _ in 0..ROUNDS {
        script
            .key(format!("bedside:alive:{NODE}"))
            .key("bedside:nodes")
            .arg(TTL_MS)
            .arg(NODE)
            .invoke_async::<i64>(con)
            .await?;
    }
    Ok(per_call(con).await?.0)
}

/// After a lapse: every lease looked at, a slice per call. The slowest call is what
/// other clients may wait behind.
async fn lapse(
    con: &mut MultiplexedConnection,
    visits: &[String],
) -> redis::RedisResult<(f64, usize)> {
    fill(con, visits).await?;
    let script = load(con, lua::RECHECK).await?;
    let mut slowest = 0f64;
    let mut slices = 0;
    for slice in visits.chunks(SLICE) {
        reset(con).await?;
        let mut call = script.key(format!("bedside:held:{NODE}"));
        call.arg(NODE);
        for v in slice {
            call.key(format!("bedside:lease:{v}")).arg(v);
        }
        call.invoke_async::<(Vec<usize>, Vec<usize>)>(con).await?;
        slowest = slowest.max(per_call(con).await?.0);
        slices += 1;
    }
    Ok((slowest, slices))
}
