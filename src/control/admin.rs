//! The admin HTTP listener (default 127.0.0.1:8404, optional bearer token), served on
//! control-plane threads with blocking std sockets — never on a data core.
//!
//! Routes: GET / (the human page), GET /health (200 only when every worker is alive and an
//! upstream is usable, else 503 with the reasons), GET /ready (also 503 while starting and
//! from SIGTERM on), GET /live (workers only), GET /stats (JSON; `?human` or
//! `Accept: text/html` for the page), GET /metrics (Prometheus), GET /config (running
//! config, last reload, what needs a restart, cores behind), GET /config/version,
//! GET /keys/{key}, GET /keys?top=N, POST /keys/{key}/reset, GET /table?key=K|addr=IP,
//! GET /table/top?n=N, POST /table/clear[?key=K|addr=IP], POST /reload.
//!
//! Hostile clients: one thread per connection, at most [`MAX_CONNECTIONS`]
//! at once (more get 503 at once), so a slow client delays nobody else; a request head
//! must arrive within [`HEAD_TIMEOUT`] of the accept, with no gap over
//! [`IDLE_TIMEOUT`]; a handler that panics ends only its own connection. Requests
//! whose `Host` is not this listener are refused (DNS rebinding), the token is compared
//! in constant time, and a table subject that does not parse is a 400, never "all".
//! Must not touch: the data path; table operations go to the owner core as messages.

pub mod keys;
mod parse;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::limit::{EntrySnapshot, PENALTY_PREFIX, Router};
use crate::runtime::msg::{ControlMsg, TableOp, TableReply};

use super::ControlState;
use super::metrics;
use parse::{AdminRequest, MAX_HEAD, Parsed};

/// Connections served at once; more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 16;
/// The whole request head must arrive within this time of the accept.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest silence while a head is arriving.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed to write a response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What every connection thread shares.
struct Admin {
    state: Arc<ControlState>,
    /// Extra `Host` values accepted besides this listener's own names.
    allowed_hosts: Vec<String>,
    active: AtomicUsize,
}

/// Binds and serves the admin API on its own threads. Returns the bound address.
pub fn start(state: Arc<ControlState>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    start_with(state, addr, Vec::new())
}

/// [`start`], accepting the `Host` values in `allowed_hosts` too.
pub fn start_with(
    state: Arc<ControlState>,
    addr: SocketAddr,
    allowed_hosts: Vec<String>,
) -> std::io::Result<SocketAddr> {
    let l = TcpListener::bind(addr)?;
    let bound = l.local_addr()?;
    let admin = Arc::new(Admin {
        state,
        allowed_hosts,
        active: AtomicUsize::new(0),
    });
    std::thread::Builder::new()
        .name("tollgate-admin".into())
        .spawn(move || accept_loop(&admin, &l))?;
    Ok(bound)
}

fn accept_loop(admin: &Arc<Admin>, l: &TcpListener) {
    for s in l.incoming() {
        let s = match s {
            Ok(s) => s,
            Err(e) => {
                log::warn!("admin: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let _ = s.set_write_timeout(Some(WRITE_TIMEOUT));
        if admin.active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            admin.active.fetch_sub(1, Ordering::SeqCst);
            let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
            let mut s = s;
            let _ = respond(&mut s, 503, "text/plain", "too many admin connections\n");
            continue;
        }
        let a = admin.clone();
        let spawned = std::thread::Builder::new()
            .name("tollgate-admin-conn".into())
            .spawn(move || {
                let _slot = Slot(&a.active);
                if let Err(e) = serve(&a, s) {
                    log::debug!("admin: {e}");
                }
            });
        if let Err(e) = spawned {
            log::warn!("admin: cannot start a connection thread: {e}");
        }
    }
}

/// Frees a connection slot when its thread ends (also when a handler panics).
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How reading a request head ended without a request.
enum HeadEnd {
    Closed,
    TimedOut,
    Bad,
}

/// Reads one request head within [`HEAD_TIMEOUT`] (no gap over [`IDLE_TIMEOUT`]).
fn read_head(s: &mut TcpStream) -> Result<AdminRequest, HeadEnd> {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut n = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadEnd::TimedOut);
        }
        let _ = s.set_read_timeout(Some(left.min(IDLE_TIMEOUT)));
        match s.read(&mut buf[n..]) {
            Ok(0) => return Err(HeadEnd::Closed),
            Ok(r) => n += r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HeadEnd::TimedOut);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(HeadEnd::Closed),
        }
        match parse::parse_head(&buf[..n]) {
            Parsed::Complete(req) => return Ok(req),
            Parsed::Partial => {}
            Parsed::Bad => return Err(HeadEnd::Bad),
        }
    }
}

/// One response: status, content type, body.
struct Reply {
    status: u16,
    ctype: &'static str,
    body: String,
}

impl Reply {
    fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            ctype: "text/plain",
            body: body.to_string(),
        }
    }
    fn json(status: u16, v: &serde_json::Value) -> Reply {
        Reply {
            status,
            ctype: "application/json",
            body: v.to_string(),
        }
    }
}

fn serve(admin: &Admin, mut s: TcpStream) -> std::io::Result<()> {
    let req = match read_head(&mut s) {
        Ok(r) => r,
        Err(HeadEnd::Closed) => return Ok(()),
        Err(HeadEnd::TimedOut) => {
            return respond(&mut s, 408, "text/plain", "request head timeout\n");
        }
        Err(HeadEnd::Bad) => return respond(&mut s, 400, "text/plain", "bad request\n"),
    };
    let local = s.local_addr()?;
    let mut hosts = admin.state.current().admin.allowed_hosts.clone();
    hosts.extend(admin.allowed_hosts.iter().cloned());
    let r = if !parse::host_allowed(req.host.as_deref(), local, &hosts) {
        Reply::text(403, "Host is not this admin listener\n")
    } else if !token_ok(&admin.state, &req) {
        Reply::text(401, "missing or wrong bearer token\n")
    } else {
        route(admin, &req)
    };
    respond(&mut s, r.status, r.ctype, &r.body)
}

fn token_ok(state: &ControlState, req: &AdminRequest) -> bool {
    match &state.current().admin.token {
        Some(token) => parse::token_matches(req.authorization.as_deref(), token),
        None => true,
    }
}

fn respond(s: &mut TcpStream, status: u16, ctype: &str, body: &str) -> std::io::Result<()> {
    let reason = crate::http::reason_phrase(status);
    write!(
        s,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn route(admin: &Admin, req: &AdminRequest) -> Reply {
    let state = &admin.state;
    if let Some(r) = key_route(state, req) {
        return r;
    }
    match (req.method.as_str(), req.path.as_slice()) {
        ("GET", b"/") => Reply {
            status: 200,
            ctype: "text/html; charset=utf-8",
            body: super::page::render(state),
        },
        ("GET", b"/health") => {
            let (healthy, _, doc) = super::health::verdict(state);
            Reply::json(if healthy { 200 } else { 503 }, &doc)
        }
        ("GET", b"/ready") => {
            let (_, ready, doc) = super::health::verdict(state);
            Reply::json(if ready { 200 } else { 503 }, &doc)
        }
        ("GET", b"/live") => {
            let stuck = super::lock(&state.watch).stuck(Instant::now());
            let doc = json!({"status": if stuck.is_empty() { "ok" } else { "stuck" },
                             "stuck_workers": stuck.iter().map(|s| s.0).collect::<Vec<_>>()});
            Reply::json(if stuck.is_empty() { 200 } else { 503 }, &doc)
        }
        ("GET", b"/config") => config_doc(state),
        ("GET", b"/stats") => stats(state, req),
        ("GET", b"/metrics") => Reply {
            status: 200,
            ctype: "text/plain; version=0.0.4",
            body: metrics::prometheus(state),
        },
        ("GET", b"/config/version") => config_version(state),
        ("POST", b"/reload") => match state.reload("admin") {
            Ok(r) => Reply::json(200, &json!(r)),
            Err(e) => Reply::json(422, &json!({"error": e})),
        },
        ("GET", b"/table") => table_one(state, &req.query),
        ("GET", b"/table/top") => table_top(state, &req.query),
        ("POST", b"/table/clear") => table_clear(state, &req.query),
        _ => Reply::text(404, "not found\n"),
    }
}

/// The `/keys` routes (None: not one of them).
fn key_route(state: &ControlState, req: &AdminRequest) -> Option<Reply> {
    let path = req.path.as_slice();
    if path == b"/keys" {
        return Some(match req.method.as_str() {
            "GET" => keys::top(state, &req.query),
            _ => Reply::text(405, "GET /keys?top=N\n"),
        });
    }
    let rest = path.strip_prefix(b"/keys/")?;
    let (name, reset) = match rest.strip_suffix(b"/reset") {
        Some(k) => (k, true),
        None => (rest, false),
    };
    let key = parse::pct_decode(name);
    if key.is_empty() || key.len() > 255 {
        return Some(Reply::json(
            400,
            &json!({"error": "a key of 1..=255 bytes"}),
        ));
    }
    Some(match (req.method.as_str(), reset) {
        ("GET", false) => keys::one(state, &key),
        ("POST", true) => keys::reset(state, &key),
        _ => Reply::text(405, "GET /keys/{key} or POST /keys/{key}/reset\n"),
    })
}

/// `GET /config`: the running configuration and what the last reload did.
fn config_doc(state: &ControlState) -> Reply {
    let cfg = state.current();
    let last = super::lock(&state.last_reload).clone();
    let needs_restart = last
        .as_ref()
        .map(|r| r.needs_restart.clone())
        .unwrap_or_default();
    Reply::json(
        200,
        &json!({
            "version": cfg.limits.version,
            "source": cfg.source.display().to_string(),
            "last_reload": last,
            "last_reload_error": super::lock(&state.last_reload_error).clone(),
            "needs_restart": needs_restart,
            "cores_behind": state.cores_behind(),
            "upstreams": cfg.upstream.servers.iter().map(|s| json!({"node": s.name, "id": s.id})).collect::<Vec<_>>(),
            "summary": crate::config::validate::summary(&cfg),
        }),
    )
}

fn stats(state: &ControlState, req: &AdminRequest) -> Reply {
    let human = req.query.split(|&b| b == b'&').any(|q| q == b"human");
    if req.accept_html || human {
        return Reply {
            status: 200,
            ctype: "text/html; charset=utf-8",
            body: super::page::render(state),
        };
    }
    Reply {
        status: 200,
        ctype: "application/json",
        body: serde_json::to_string_pretty(&metrics::stats_json(state)).unwrap_or_default(),
    }
}

fn config_version(state: &ControlState) -> Reply {
    let cfg = state.current();
    let last_error = state
        .last_reload_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Reply::json(
        200,
        &json!({
            "version": cfg.limits.version,
            "reloads": state.reloads.load(Ordering::Relaxed),
            "reload_failures": state.reload_failures.load(Ordering::Relaxed),
            "last_reload_error": last_error,
            "source": cfg.source.display().to_string(),
            "keys": cfg.limits.keys.len(),
        }),
    )
}

/// How an address subject's 16 bytes read: an IPv4 address, an IPv6 address, or the IPv6
/// network (`a:b:c:d::/64`) its clients are counted as (`limits.ipv6_prefix`).
fn addr_text(v6: &[u8], v6_prefix: u8) -> String {
    let mut a = [0u8; 16];
    a.copy_from_slice(&v6[..16]);
    let ip = std::net::Ipv6Addr::from(a);
    match ip.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None if v6_prefix < 128 => format!("{ip}/{v6_prefix}"),
        None => ip.to_string(),
    }
}

/// A table entry as the admin API shows it. A `[[rules]]` entry names its rule and what
/// it counts (an address, possibly followed by a route, or a key, bucket, `bucket/key`),
/// with no tier.
fn entry_json(e: &EntrySnapshot, cfg: &crate::config::Config) -> serde_json::Value {
    let limits = &cfg.limits;
    let addr = |s: &[u8]| addr_text(&s[1..], limits.ipv6_prefix);
    let counted = |s: &[u8]| match s.first() {
        Some(&0) if s.len() >= 17 => addr(&s[..17]) + &String::from_utf8_lossy(&s[17..]),
        _ => String::from_utf8_lossy(s).into_owned(),
    };
    let subject = match e.subject.first() {
        Some(&0) if e.subject.len() == 17 => json!({"addr": addr(&e.subject)}),
        Some(&PENALTY_PREFIX) if e.subject.len() == 17 => json!({"penalty": addr(&e.subject)}),
        Some(&crate::rules::RULE_PREFIX) if e.subject.len() >= crate::rules::RULE_HEAD => {
            let rule = cfg.rules.of_tier(e.tier).map(|r| r.name.as_str());
            json!({"rule": rule, "counted": counted(&e.subject[crate::rules::RULE_HEAD..])})
        }
        _ => json!({"key": String::from_utf8_lossy(&e.subject)}),
    };
    let tier = match limits.tiers.get(e.tier as usize) {
        Some(t) => Some(t.name.as_str()),
        None if e.tier == crate::limit::PENALTY_TIER => Some("penalty"),
        None if e.tier >= crate::rules::RULE_TIER_BASE => None,
        None => Some("?"),
    };
    json!({
        "subject": subject,
        "tier": tier,
        "sustained_count": e.sustained_count,
        "burst_count": e.burst_count,
        "others_sustained": e.others[0],
        "others_burst": e.others[1],
        "global_sustained": e.sustained_count.saturating_add(e.others[0]),
        "global_burst": e.burst_count.saturating_add(e.others[1]),
        "retry_after_ms": e.retry_after_ms,
        "idle": e.idle,
    })
}

fn table_ask(state: &ControlState, core: usize, op: TableOp) -> Option<TableReply> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    state
        .cores
        .send(core, ControlMsg::Table(op, tx), Duration::from_secs(1))
        .ok()?;
    rx.recv_timeout(Duration::from_secs(2)).ok()
}

fn owner(state: &ControlState, subject: &[u8]) -> usize {
    Router::new(state.cores.cores(), state.hasher.clone()).owner(subject)
}

fn table_one(state: &ControlState, query: &[u8]) -> Reply {
    let cfg = state.current();
    let subject = match parse::subject_query(query, cfg.limits.ipv6_prefix) {
        Ok(Some(s)) => s,
        Ok(None) => return Reply::text(400, "need ?key=K or ?addr=IP\n"),
        Err(e) => return Reply::json(400, &json!({"error": e})),
    };
    let core = owner(state, &subject);
    match table_ask(state, core, TableOp::Inspect(subject)) {
        Some(TableReply::Entries(e)) if !e.is_empty() => {
            let mut v = entry_json(&e[0], &cfg);
            v["core"] = json!(core);
            Reply::json(200, &v)
        }
        Some(_) => Reply::json(404, &json!({"error": "not tracked"})),
        None => Reply::json(503, &json!({"error": "core did not answer"})),
    }
}

fn table_top(state: &ControlState, query: &[u8]) -> Reply {
    let n = parse::query_param(query, "n")
        .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(10usize)
        .min(10_000);
    let mut all: Vec<EntrySnapshot> = Vec::new();
    for core in 0..state.cores.cores() {
        if let Some(TableReply::Entries(e)) = table_ask(state, core, TableOp::Top(n)) {
            all.extend(e);
        }
    }
    // Penalty entries live on every core: show each address once.
    let mut seen = std::collections::HashSet::new();
    all.retain(|e| e.subject.first() != Some(&PENALTY_PREFIX) || seen.insert(e.subject.clone()));
    all.sort_by_key(|e| std::cmp::Reverse(e.sustained_count));
    all.truncate(n);
    let cfg = state.current();
    let v: Vec<_> = all.iter().map(|e| entry_json(e, &cfg)).collect();
    Reply::json(200, &serde_json::Value::Array(v))
}

fn table_clear(state: &ControlState, query: &[u8]) -> Reply {
    let mut removed = 0;
    match parse::subject_query(query, state.current().limits.ipv6_prefix) {
        Err(e) => return Reply::json(400, &json!({"error": e})),
        Ok(Some(subject)) => {
            let core = owner(state, &subject);
            if let Some(TableReply::Removed(r)) = table_ask(state, core, TableOp::Remove(subject)) {
                removed += r;
            }
        }
        Ok(None) => {
            for core in 0..state.cores.cores() {
                if let Some(TableReply::Removed(r)) = table_ask(state, core, TableOp::Clear) {
                    removed += r;
                }
            }
        }
    }
    Reply::json(200, &json!({"removed": removed}))
}
