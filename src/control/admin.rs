//! The admin HTTP listener (default 127.0.0.1:8404, optional bearer token), served by
//! a control-plane thread with blocking std sockets — never on a data core.
//!
//! Routes: GET /health, GET /stats (JSON; `?human` or `Accept: text/html` for a page),
//! GET /metrics (Prometheus), GET /config/version, GET /table?key=K|addr=IP,
//! GET /table/top?n=N, POST /table/clear[?key=K|addr=IP], POST /reload.
//! Must not touch: the data path; table operations go to the owner core as messages.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use crate::limit::{EntrySnapshot, Router, addr_subject};
use crate::runtime::msg::{ControlMsg, TableOp, TableReply};

use super::ControlState;
use super::metrics;

/// Binds and serves the admin API on its own thread. Returns the bound address.
pub fn start(state: Arc<ControlState>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let l = TcpListener::bind(addr)?;
    let bound = l.local_addr()?;
    std::thread::Builder::new()
        .name("tollgate-admin".into())
        .spawn(move || {
            for s in l.incoming().flatten() {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                if let Err(e) = serve(&state, s) {
                    log::debug!("admin: {e}");
                }
            }
        })?;
    Ok(bound)
}

fn pct_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    out
}

fn query_param(query: &str, name: &str) -> Option<Vec<u8>> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| pct_decode(v))
    })
}

fn respond(s: &mut TcpStream, status: u16, ctype: &str, body: &str) -> std::io::Result<()> {
    let reason = crate::http::reason_phrase(status);
    write!(
        s,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn entry_json(e: &EntrySnapshot, tiers: &[crate::config::TierConfig]) -> serde_json::Value {
    let subject = if e.subject.first() == Some(&0) && e.subject.len() == 17 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&e.subject[1..]);
        let ip = std::net::Ipv6Addr::from(a);
        let ip: IpAddr = ip
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(ip));
        json!({"addr": ip.to_string()})
    } else {
        json!({"key": String::from_utf8_lossy(&e.subject)})
    };
    json!({
        "subject": subject,
        "tier": tiers.get(e.tier as usize).map(|t| t.name.as_str()).unwrap_or("?"),
        "sustained_count": e.sustained_count,
        "burst_count": e.burst_count,
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

fn subject_of(query: &str) -> Option<Vec<u8>> {
    if let Some(k) = query_param(query, "key") {
        return Some(k);
    }
    let a = query_param(query, "addr")?;
    let ip: IpAddr = std::str::from_utf8(&a).ok()?.parse().ok()?;
    Some(addr_subject(ip).to_vec())
}

fn serve(state: &ControlState, mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    let (method, path, query, auth, accept_html) = loop {
        let r = s.read(&mut buf[n..])?;
        if r == 0 {
            return Ok(());
        }
        n += r;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..n]) {
            Ok(httparse::Status::Complete(_)) => {
                let target = req.path.unwrap_or("/").to_string();
                let (p, q) = target.split_once('?').unwrap_or((&target, ""));
                let auth = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                    .map(|h| String::from_utf8_lossy(h.value).to_string());
                let html = req.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("accept")
                        && String::from_utf8_lossy(h.value).contains("text/html")
                });
                break (
                    req.method.unwrap_or("GET").to_string(),
                    p.to_string(),
                    q.to_string(),
                    auth,
                    html,
                );
            }
            Ok(httparse::Status::Partial) if n < buf.len() => continue,
            _ => return respond(&mut s, 400, "text/plain", "bad request\n"),
        }
    };
    let cfg = state.current();
    if let Some(token) = &cfg.admin.token {
        let ok = auth
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| t.trim() == token);
        if !ok {
            return respond(&mut s, 401, "text/plain", "missing or wrong bearer token\n");
        }
    }
    let json_ct = "application/json";
    match (method.as_str(), path.as_str()) {
        ("GET", "/health") => {
            if state.shutting_down.load(Ordering::SeqCst) {
                respond(&mut s, 503, "text/plain", "shutting down\n")
            } else {
                respond(&mut s, 200, "text/plain", "ok\n")
            }
        }
        ("GET", "/stats") => {
            if accept_html || query.split('&').any(|q| q == "human") {
                respond(
                    &mut s,
                    200,
                    "text/html; charset=utf-8",
                    &metrics::stats_html(state),
                )
            } else {
                let body =
                    serde_json::to_string_pretty(&metrics::stats_json(state)).unwrap_or_default();
                respond(&mut s, 200, json_ct, &body)
            }
        }
        ("GET", "/metrics") => respond(
            &mut s,
            200,
            "text/plain; version=0.0.4",
            &metrics::prometheus(state),
        ),
        ("GET", "/config/version") => {
            let body = json!({
                "version": cfg.limits.version,
                "reloads": state.reloads.load(Ordering::Relaxed),
                "reload_failures": state.reload_failures.load(Ordering::Relaxed),
                "last_reload_error": *state.last_reload_error.lock().unwrap_or_else(|e| e.into_inner()),
                "source": cfg.source.display().to_string(),
                "keys": cfg.limits.keys.len(),
            });
            respond(&mut s, 200, json_ct, &body.to_string())
        }
        ("POST", "/reload") => match state.reload("admin") {
            Ok(v) => respond(&mut s, 200, json_ct, &json!({"version": v}).to_string()),
            Err(e) => respond(&mut s, 422, json_ct, &json!({"error": e}).to_string()),
        },
        ("GET", "/table") => {
            let Some(subject) = subject_of(&query) else {
                return respond(&mut s, 400, "text/plain", "need ?key=K or ?addr=IP\n");
            };
            let router = Router::new(state.cores.cores(), state.hasher.clone());
            let core = router.owner(&subject);
            match table_ask(state, core, TableOp::Inspect(subject)) {
                Some(TableReply::Entries(e)) if !e.is_empty() => {
                    let mut v = entry_json(&e[0], &cfg.limits.tiers);
                    v["core"] = json!(core);
                    respond(&mut s, 200, json_ct, &v.to_string())
                }
                Some(_) => respond(&mut s, 404, json_ct, "{\"error\":\"not tracked\"}"),
                None => respond(&mut s, 503, json_ct, "{\"error\":\"core did not answer\"}"),
            }
        }
        ("GET", "/table/top") => {
            let n = query_param(&query, "n")
                .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
                .unwrap_or(10usize)
                .min(10_000);
            let mut all: Vec<EntrySnapshot> = Vec::new();
            for core in 0..state.cores.cores() {
                if let Some(TableReply::Entries(e)) = table_ask(state, core, TableOp::Top(n)) {
                    all.extend(e);
                }
            }
            all.sort_by_key(|e| std::cmp::Reverse(e.sustained_count));
            all.truncate(n);
            let v: Vec<_> = all
                .iter()
                .map(|e| entry_json(e, &cfg.limits.tiers))
                .collect();
            respond(
                &mut s,
                200,
                json_ct,
                &serde_json::Value::Array(v).to_string(),
            )
        }
        ("POST", "/table/clear") => {
            let mut removed = 0;
            if let Some(subject) = subject_of(&query) {
                let router = Router::new(state.cores.cores(), state.hasher.clone());
                let core = router.owner(&subject);
                if let Some(TableReply::Removed(r)) =
                    table_ask(state, core, TableOp::Remove(subject))
                {
                    removed += r;
                }
            } else {
                for core in 0..state.cores.cores() {
                    if let Some(TableReply::Removed(r)) = table_ask(state, core, TableOp::Clear) {
                        removed += r;
                    }
                }
            }
            respond(
                &mut s,
                200,
                json_ct,
                &json!({"removed": removed}).to_string(),
            )
        }
        _ => respond(&mut s, 404, "text/plain", "not found\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_percent_decoded() {
        assert_eq!(query_param("a=1&key=AK%2FB+C", "key").unwrap(), b"AK/B C");
        assert_eq!(query_param("n=5", "n").unwrap(), b"5");
        assert!(query_param("n=5", "key").is_none());
        assert_eq!(pct_decode("%zz%41"), b"%zzA");
    }
}
