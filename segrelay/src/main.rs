//! `segrelay --to HOST:PORT [--listen ADDR] [--mode whole|bytes|random|mtu] [--seed N]
//! [--max-piece N] [--max-delay-ms N]`: runs one relay until killed. Prints exactly one line,
//! `listening on ADDR`, to stdout (flushed) once it accepts connections; the mode and seed
//! go to stderr so a run can be replayed.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use segrelay::{Cut, DEFAULT_MAX_DELAY, DEFAULT_MAX_PIECE, Relay};

const USAGE: &str = "usage: segrelay --to HOST:PORT [--listen 127.0.0.1:0] \
[--mode whole|bytes|random|mtu] [--seed N] [--max-piece N] [--max-delay-ms N]";

struct Args {
    to: SocketAddr,
    listen: SocketAddr,
    cut: Cut,
}

fn resolve(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("{s}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s}: no address"))
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: not a number: {v:?}"))
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut to, mut listen, mut mode) = (None, "127.0.0.1:0".to_string(), "whole".to_string());
    let mut seed: Option<u64> = None;
    let (mut max_piece, mut max_delay) = (DEFAULT_MAX_PIECE, DEFAULT_MAX_DELAY);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_string());
        }
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--to" => to = Some(resolve(&v)?),
            "--listen" => listen = v,
            "--mode" => mode = v,
            "--seed" => seed = Some(number(&flag, &v)?),
            "--max-piece" => max_piece = number(&flag, &v)?,
            "--max-delay-ms" => max_delay = Duration::from_millis(number(&flag, &v)?),
            _ => return Err(format!("unknown argument {flag:?}\n{USAGE}")),
        }
    }
    let to = to.ok_or_else(|| format!("--to is required\n{USAGE}"))?;
    let cut = match Cut::from_spec(&mode, seed.unwrap_or_else(clock_seed))? {
        Cut::Random { seed, .. } => Cut::Random {
            seed,
            max_piece: max_piece.max(1),
            max_delay,
        },
        other => other,
    };
    Ok(Args {
        to,
        listen: resolve(&listen)?,
        cut,
    })
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id())
}

fn main() {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("segrelay: {e}");
            std::process::exit(2);
        }
    };
    let relay = match Relay::start_on(args.listen, args.to, args.cut) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("segrelay: listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    eprintln!("segrelay: {:?} -> {}", args.cut, args.to);
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on {}", relay.addr());
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}
