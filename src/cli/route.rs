//! `fathom route`: the gRPC service over sharded indexes, a thin layer
//! over `fathom_server::route`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use fathom_server::client::Security;
use fathom_server::route::{self, Hedge, RouteOptions};

use super::serve::ServeFlags;

#[derive(clap::Args)]
pub struct Args {
    /// A routed index, as NAME=H:P|H:P,H:P|H:P: shards separated by `,`,
    /// the replicas of one shard by `|` (repeatable). Host names are
    /// resolved again whenever a connection is made.
    #[arg(long = "index", value_name = "NAME=SHARDS")]
    indexes: Vec<String>,
    /// The same as a TOML file: `[[index]] name = "words"
    /// shards = [["h:p", "h:p"], ["h:p", "h:p"]]`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// When a shard call is sent to a second replica: `auto` (the shard's
    /// recent p95, at least 3 ms), `off`, or a duration such as `5ms`.
    #[arg(long, default_value = "auto", value_name = "auto|off|DURATION")]
    hedge_after: String,
    /// The deadline of a call that sets none (`grpc-timeout`).
    #[arg(long, default_value = "2s", value_parser = humantime_duration)]
    default_timeout: Duration,
    /// How long start-up waits for every shard to answer ListIndexes.
    #[arg(long, default_value = "60s", value_parser = humantime_duration)]
    shard_wait: Duration,
    /// How often every replica's health is checked.
    #[arg(long, default_value = "1s", value_parser = humantime_duration)]
    health_interval: Duration,
    /// PEM of the CA of the shard servers' certificates (TLS toward them).
    #[arg(long, value_name = "FILE", help_heading = "Shards")]
    shard_tls_ca: Option<PathBuf>,
    /// A file holding the token sent to the shard servers.
    #[arg(long, value_name = "FILE", help_heading = "Shards")]
    shard_token_file: Option<PathBuf>,
    /// HTTP/2 connections to each replica, taken in turn: a server lets
    /// one connection hold --max-calls-per-connection calls (64) at once.
    #[arg(long, default_value_t = 4, help_heading = "Shards")]
    shard_connections: usize,
    /// Shards placed by kmeans: search the P shards nearest each query
    /// (more while a filter leaves fewer than k hits there) when a call
    /// does not set `probe`; 0 searches every shard.
    #[arg(long, default_value_t = 0, value_name = "P", help_heading = "Shards")]
    probe: usize,
    #[command(flatten)]
    flags: ServeFlags,
}

/// `5ms`, `2s`, `1m`.
fn humantime_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |at| s.split_at(at));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("expected a duration like 5ms or 2s, got {s:?}"))?;
    Ok(match unit {
        "us" | "µs" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (us, ms, s or m)")),
    })
}

fn hedge(s: &str) -> Result<Hedge, String> {
    Ok(match s {
        "auto" => Hedge::Auto {
            floor: Duration::from_millis(3),
        },
        "off" => Hedge::Off,
        d => Hedge::After(humantime_duration(d)?),
    })
}

pub fn run(a: Args) -> Result<ExitCode> {
    super::init_logging();
    let routes = route::config::load(&a.indexes, a.config.as_deref())?;
    let token = match &a.shard_token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading {}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let shard_security = Security::from_files(a.shard_tls_ca.as_deref(), None, None, token)
        .context("the shard servers' TLS and token")?;
    let options = RouteOptions {
        hedge: hedge(&a.hedge_after)
            .map_err(anyhow::Error::msg)
            .context("--hedge-after")?,
        shard_security,
        default_timeout: a.default_timeout,
        learn_timeout: a.shard_wait,
        health_interval: a.health_interval.max(Duration::from_millis(10)),
        connections_per_replica: a.shard_connections.max(1),
        probe: a.probe,
        ..RouteOptions::default()
    };
    let config = a.flags.config()?;
    fathom_server::route_blocking(config, routes, options, |_| {}).context("routing")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_hedges_parse() {
        assert_eq!(humantime_duration("5ms"), Ok(Duration::from_millis(5)));
        assert_eq!(humantime_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(humantime_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(humantime_duration("fast").is_err());
        assert_eq!(hedge("off"), Ok(Hedge::Off));
        assert_eq!(hedge("7ms"), Ok(Hedge::After(Duration::from_millis(7))));
    }
}
