//! loadgen command line: `run` (scenario), `bench` (wrk-style saturation), `check` (validate a
//! scenario and print its expected outcome), `keys` (print a tollgate keys file for a scenario),
//! `prefill` (create the objects a scenario reads).
//! Exit status: 0 ok, 1 an `[[assert]]` failed, 2 usage/config/run error, 3 run invalid
//! (generator send lag p99 above the limit; `--allow-invalid` turns this into 0).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use loadgen::bench::keys::KeyStyle;
use loadgen::bench::{self, BenchOpts};
use loadgen::run::{expectation, run_scenario};
use loadgen::scenario::{Overrides, Scenario};
use loadgen::units::{parse_duration, parse_size};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Open-loop per-key load generator for tollgate and S3 targets"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

fn dur(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// A comma-separated core list, "0" or "0,1". One value (a newtype, not `Vec<usize>`: clap
/// reads `Option<Vec<T>>` as repeated values of `T`, which a list parser does not produce).
#[derive(Clone, Debug, PartialEq)]
struct Cores(Vec<usize>);

fn cores(s: &str) -> Result<Cores, String> {
    s.split(',')
        .map(|x| x.trim().parse().map_err(|_| format!("bad core list {s:?}")))
        .collect::<Result<_, _>>()
        .map(Cores)
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scenario file (open loop per key, or closed loop when the scenario says so).
    Run(RunArgs),
    /// Saturate one URL, wrk-style (closed loop), or offer a fixed rate (--rate, open loop).
    Bench(BenchArgs),
    /// Validate a scenario and print its plan and expected outcome, without sending anything.
    Check {
        scenario: String,
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        #[arg(long)]
        target: Option<String>,
    },
    /// Print a tollgate keys file (`[keys]` table) for a scenario's keys.
    Keys {
        scenario: String,
        /// `tollgate`: a keys file for tollgate; `credentials`: `NAME ACCESS_KEY_ID SECRET` lines
        /// for the signing groups (for `garage key import`, e.g. scripts/garage.sh GARAGE_EXTRA_KEYS).
        #[arg(long, value_enum, default_value_t = KeysFormat::Tollgate)]
        format: KeysFormat,
    },
    /// Create the objects a scenario reads (PUT each once). Point --target at the store itself.
    Prefill {
        scenario: String,
        /// Store URL, overriding the scenario's `target`.
        #[arg(long)]
        target: Option<String>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Scenario TOML file.
    scenario: String,
    /// Target URL, overriding the scenario's `target` / `targets` (http://host:port or
    /// https://…); repeat it for several targets (each key's requests are spread over them).
    #[arg(long)]
    target: Vec<String>,
    /// Measured duration, overriding the scenario's (e.g. "30s"); not scaled.
    #[arg(long, value_parser = dur)]
    duration: Option<Duration>,
    /// Multiply every duration of the scenario (duration, warm-up, stages) by F; rates stay.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Worker threads (one runtime each), overriding the scenario's `threads`.
    #[arg(long)]
    threads: Option<u32>,
    /// Connections per worker thread, overriding `connections_per_core`.
    #[arg(long)]
    connections: Option<u32>,
    /// Write the versioned JSON report here.
    #[arg(long)]
    json: Option<String>,
    /// Write the self-contained HTML report here.
    #[arg(long)]
    html: Option<String>,
    /// No progress lines.
    #[arg(long, short)]
    quiet: bool,
    /// Exit 0 even when the run is marked invalid (send lag too high).
    #[arg(long)]
    allow_invalid: bool,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// URL to request (http://host:port/path or https://…).
    url: String,
    /// Total connections (spread over the threads).
    #[arg(short = 'c', long, default_value_t = 64)]
    connections: usize,
    /// Worker threads (one monoio runtime each).
    #[arg(short = 't', long, default_value_t = 1)]
    threads: usize,
    /// Duration of the run.
    #[arg(short = 'd', long, default_value = "10s", value_parser = dur)]
    duration: Duration,
    /// Requests in flight per connection (HTTP/1.1 pipelining; closed loop only).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Offered rate in requests per second over all connections (open loop, latency from the
    /// intended send time). Without it: closed loop, as fast as the target answers.
    #[arg(long)]
    rate: Option<f64>,
    /// Per-request timeout (fixed rate) / end-of-run grace (closed loop).
    #[arg(long, default_value = "5s", value_parser = dur)]
    timeout: Duration,
    /// HTTP method.
    #[arg(short = 'm', long, default_value = "GET")]
    method: String,
    /// Extra request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Request body size (e.g. "4KiB"), sent with Content-Length.
    #[arg(long, default_value = "0")]
    body: String,
    /// Do not verify the HTTPS certificate.
    #[arg(long, short = 'k')]
    insecure: bool,
    /// PEM CA file to verify the HTTPS certificate with.
    #[arg(long)]
    ca_file: Option<String>,
    /// Pin worker threads to these cores, e.g. "0" or "0,1".
    #[arg(long, value_parser = cores)]
    pin: Option<Cores>,
    /// Rotate SigV4-style `Authorization` headers over N keys (bench/lib.sh `gen_keys` keys,
    /// request by request). 0: no key headers.
    #[arg(long, default_value_t = 0)]
    keys: usize,
    /// Key id format for --keys: `garage` (GK + 24 hex) or `aws` (AKIA + 16 hex).
    #[arg(long, default_value = "garage", value_parser = KeyStyle::parse)]
    key_style: KeyStyle,
    /// Open a new connection for every request (closed loop; connections per second).
    #[arg(long)]
    new_conn: bool,
    /// HTTPS with --new-conn: a full handshake every time (no session resumption).
    #[arg(long)]
    no_tls_resume: bool,
    /// Closed loop: stop after this many requests (or at the end of --duration). With
    /// --keys N and --requests k×N every key is sent exactly k times.
    #[arg(short = 'n', long, default_value_t = 0)]
    requests: u64,
    /// Write the JSON result here.
    #[arg(long)]
    json: Option<String>,
    /// No progress lines.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum KeysFormat {
    Tollgate,
    Credentials,
}

fn main() {
    let code = match real_main() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

fn real_main() -> Result<i32> {
    match Cli::parse().cmd {
        Cmd::Run(a) => run(a),
        Cmd::Bench(a) => bench(a),
        Cmd::Check {
            scenario,
            scale,
            target,
        } => check(&scenario, scale, target),
        Cmd::Prefill { scenario, target } => prefill(&scenario, target),
        Cmd::Keys { scenario, format } => keys(&scenario, format),
    }
}

fn run(a: RunArgs) -> Result<i32> {
    let ov = Overrides {
        target: None,
        targets: a.target,
        duration: a.duration,
        scale: Some(a.scale),
        threads: a.threads,
        connections_per_core: a.connections,
    };
    let sc = Scenario::load(&a.scenario, &ov)?;
    let report = run_scenario(&sc, !a.quiet)?;
    // Files first: a closed stdout must not lose the reports.
    if let Some(p) = a.json {
        std::fs::write(&p, report.to_json()).with_context(|| format!("writing {p}"))?;
    }
    if let Some(p) = a.html {
        std::fs::write(&p, report.to_html()).with_context(|| format!("writing {p}"))?;
    }
    println!("{}", report.to_text());
    Ok(if !report.asserts_pass() {
        1
    } else if !report.valid && !a.allow_invalid {
        3
    } else {
        0
    })
}

fn bench(a: BenchArgs) -> Result<i32> {
    let o = BenchOpts {
        url: a.url,
        connections: a.connections,
        threads: a.threads,
        duration: a.duration,
        pipeline: a.pipeline,
        rate: a.rate,
        timeout: a.timeout,
        method: a.method.to_ascii_uppercase(),
        headers: a.headers,
        body_size: parse_size(&a.body)?,
        insecure: a.insecure,
        ca_file: a.ca_file,
        pin_cores: a.pin.map(|c| c.0).unwrap_or_default(),
        progress: !a.quiet,
        keys: a.keys,
        key_style: a.key_style,
        new_conn: a.new_conn,
        tls_resume: !a.no_tls_resume,
        requests: a.requests,
    };
    let r = bench::run(&o)?;
    print!("{}", r.to_text());
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&r)?)
            .with_context(|| format!("writing {p}"))?;
    }
    Ok(0)
}

fn check(scenario: &str, scale: f64, target: Option<String>) -> Result<i32> {
    let ov = Overrides {
        target: target.or(Some("http://127.0.0.1:1".into())),
        scale: Some(scale),
        ..Default::default()
    };
    let sc = Scenario::load(scenario, &ov)?;
    let exp = expectation(&sc);
    println!(
        "{}: {} keys in {} groups, {:.1}s measured + {:.1}s warm-up, {:?} loop",
        sc.name,
        sc.keys.len(),
        sc.groups.len(),
        sc.duration.as_secs_f64(),
        sc.warmup.as_secs_f64(),
        sc.mode
    );
    println!(
        "{:<28} {:<10} {:<11} {:>9} {:>9} {:>9}",
        "key", "tier", "auth", "offered", "exp.adm", "exp.deny"
    );
    for (k, e) in sc.keys.iter().zip(&exp) {
        let g = &sc.groups[k.group];
        println!(
            "{:<28} {:<10} {:<11} {:>9} {:>9} {:>9}",
            k.id,
            g.tier,
            format!("{:?}", g.auth),
            e.offered,
            e.admitted,
            e.denied
        );
    }
    Ok(0)
}

fn prefill(scenario: &str, target: Option<String>) -> Result<i32> {
    let ov = Overrides {
        target,
        ..Default::default()
    };
    let sc = Scenario::load(scenario, &ov)?;
    let r = loadgen::run::prefill(&sc)?;
    println!(
        "prefill: {} objects written, {} failed",
        r.written, r.failed
    );
    for (p, st) in &r.failures {
        println!(
            "  {p}: {}",
            if *st == 0 {
                "transport error".to_string()
            } else {
                format!("HTTP {st}")
            }
        );
    }
    Ok(if r.failed == 0 { 0 } else { 1 })
}

fn keys(scenario: &str, format: KeysFormat) -> Result<i32> {
    let ov = Overrides {
        target: Some("http://127.0.0.1:1".into()),
        ..Default::default()
    };
    let sc = Scenario::load(scenario, &ov)?;
    match format {
        KeysFormat::Tollgate => print!("{}", sc.keys_file()),
        KeysFormat::Credentials => print!("{}", sc.credentials_file()),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bench_pin_parses_a_core_list() {
        let pins = |args: &[&str]| {
            let cli =
                Cli::try_parse_from([&["loadgen", "bench", "http://127.0.0.1:1/"], args].concat())
                    .unwrap_or_else(|e| panic!("{e}"));
            match cli.cmd {
                Cmd::Bench(a) => a.pin,
                _ => panic!("not bench"),
            }
        };
        assert_eq!(pins(&["--pin", "0"]), Some(Cores(vec![0])));
        assert_eq!(pins(&["--pin", "0, 3"]), Some(Cores(vec![0, 3])));
        assert_eq!(pins(&[]), None);
        let bad = Cli::try_parse_from(["loadgen", "bench", "http://x/", "--pin", "a"]);
        assert!(bad.err().unwrap().to_string().contains("bad core list"));
    }
}
