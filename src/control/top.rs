//! `tollgate top`: a live terminal view of a running tollgate, read from its admin API
//! (like varnishstat or htop): decisions per second per tier, the busiest and most denied
//! keys, upstream state. Redraws every interval; `q` quits. Works with the admin token.
//!
//! Owns: the admin API client (one blocking HTTP/1.1 GET per document), the screen
//! ([`render`], pure: tested without a terminal) and the keyboard (raw mode through
//! termios, restored on exit). Must not touch: a running instance's state (reads only).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where and how to reach the admin API.
pub struct Target {
    pub admin: SocketAddr,
    pub token: Option<String>,
}

/// GETs `path` and parses the JSON body (whatever the status: `/health` answers 503 with
/// a document too).
pub fn fetch(t: &Target, path: &str) -> Result<Value, String> {
    let mut s = TcpStream::connect_timeout(&t.admin, Duration::from_secs(2))
        .map_err(|e| format!("{}: {e}", t.admin))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let auth = t
        .token
        .as_ref()
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no response head")?;
    let status = head.split(' ').nth(1).unwrap_or("?");
    if status == "401" {
        return Err("401: missing or wrong admin token (--token or TOLLGATE_ADMIN_TOKEN)".into());
    }
    serde_json::from_str(body).map_err(|e| format!("{path}: status {status}: {e}"))
}

/// One poll of the documents the screen shows.
pub struct Frame {
    pub stats: Value,
    pub keys: Value,
    pub health: Value,
    pub at: Instant,
}

pub fn poll(t: &Target) -> Result<Frame, String> {
    Ok(Frame {
        stats: fetch(t, "/stats")?,
        keys: fetch(t, "/keys?top=10")?,
        health: fetch(t, "/health")?,
        at: Instant::now(),
    })
}

/// (admitted, denied) of a tier in a `/stats` document, all methods.
fn tier_counts(t: &Value) -> (u64, u64) {
    t["methods"].as_object().map_or((0, 0), |m| {
        m.values().fold((0, 0), |(a, d), c| {
            (
                a + c["admitted"].as_u64().unwrap_or(0),
                d + c["denied"].as_u64().unwrap_or(0),
            )
        })
    })
}

fn subject_name(e: &Value) -> String {
    let s = &e["subject"];
    s["key"]
        .as_str()
        .map(str::to_string)
        .or_else(|| s["addr"].as_str().map(|a| format!("addr {a}")))
        .unwrap_or_else(|| "?".into())
}

fn cut(s: &str, w: usize) -> String {
    s.chars().take(w).collect()
}

fn tiers_block(out: &mut Vec<String>, now: &Frame, before: Option<&Frame>) {
    out.push(format!(
        "{:<14}{:>12}{:>10}{:>12}{:>10}",
        "TIER", "ADMITTED/s", "DENIED/s", "ADMITTED", "DENIED"
    ));
    let secs = before.map_or(0.0, |b| now.at.duration_since(b.at).as_secs_f64());
    for (name, t) in now.stats["tiers"].as_object().into_iter().flatten() {
        let (a, d) = tier_counts(t);
        let (pa, pd) = before.map_or((a, d), |b| tier_counts(&b.stats["tiers"][name]));
        let rate = |x: u64, p: u64| {
            if secs > 0.0 {
                format!("{:.1}", x.saturating_sub(p) as f64 / secs)
            } else {
                "-".into()
            }
        };
        out.push(format!(
            "{:<14}{:>12}{:>10}{:>12}{:>10}",
            cut(name, 13),
            rate(a, pa),
            rate(d, pd),
            a,
            d
        ));
    }
}

fn keys_block(out: &mut Vec<String>, keys: &Value, rows: usize) {
    out.push(format!(
        "{:<34}{:<12}{:>9}{:>9}{:>10}",
        "BUSIEST KEYS", "TIER", "MINUTE", "SECOND", "RETRY ms"
    ));
    for e in keys["busiest"].as_array().into_iter().flatten().take(rows) {
        out.push(format!(
            "{:<34}{:<12}{:>9}{:>9}{:>10}",
            cut(&subject_name(e), 33),
            cut(e["tier"].as_str().unwrap_or(""), 11),
            e["sustained_count"].to_string(),
            e["burst_count"].to_string(),
            e["retry_after_ms"].to_string()
        ));
    }
    out.push(String::new());
    out.push(format!(
        "{:<34}{:<12}{:>9}",
        "MOST DENIED", "TIER", "DENIED"
    ));
    for e in keys["most_denied"]
        .as_array()
        .into_iter()
        .flatten()
        .take(rows)
    {
        out.push(format!(
            "{:<34}{:<12}{:>9}",
            cut(&subject_name(e), 33),
            cut(e["tier"].as_str().unwrap_or(""), 11),
            e["denied"].to_string()
        ));
    }
}

/// The screen for `now` (rates against `before`), one string per line.
pub fn render(target: &str, now: &Frame, before: Option<&Frame>, rows: usize) -> Vec<String> {
    let h = &now.health;
    let mut out = vec![format!(
        "tollgate top — {target} — health {} — config v{} — {} workers — up {}s   (q quits)",
        h["status"].as_str().unwrap_or("?"),
        now.stats["config_version"],
        now.stats["workers"],
        now.stats["uptime_s"]
    )];
    for r in h["reasons"].as_array().into_iter().flatten() {
        out.push(format!("  ! {}", r.as_str().unwrap_or("")));
    }
    out.push(String::new());
    tiers_block(&mut out, now, before);
    out.push(String::new());
    keys_block(&mut out, &now.keys, rows);
    out.push(String::new());
    out.push(format!(
        "{:<24}{:<10}{:>10}{:>6}  LAST CHECK",
        "UPSTREAM", "STATE", "IN FLIGHT", "POOL"
    ));
    for n in now.stats["upstream_nodes"].as_array().into_iter().flatten() {
        out.push(format!(
            "{:<24}{:<10}{:>10}{:>6}  {}",
            cut(n["node"].as_str().unwrap_or(""), 23),
            n["state"].as_str().unwrap_or(""),
            n["in_flight"].to_string(),
            n["pool_idle"].to_string(),
            n["last_check"].as_str().unwrap_or("")
        ));
    }
    out
}

/// The terminal in raw mode (no line buffering, no echo, reads return after 0.1 s) while
/// this lives; restored on drop. None when stdin is not a terminal.
struct RawMode {
    fd: i32,
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        use nix::sys::termios::{
            LocalFlags, SetArg, SpecialCharacterIndices, tcgetattr, tcsetattr,
        };
        let fd = std::io::stdin().as_raw_fd();
        let saved = tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        raw.local_flags
            .remove(LocalFlags::ICANON | LocalFlags::ECHO);
        raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 0;
        raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 1;
        tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(self.fd, SetArg::TCSANOW, &self.saved);
    }
}

/// Waits up to `d` for a key; true when it was `q` (or Ctrl-C / Ctrl-D).
fn quit_pressed(raw: &Option<RawMode>, d: Duration) -> bool {
    let Some(_) = raw else {
        std::thread::sleep(d);
        return false;
    };
    let until = Instant::now() + d;
    let mut b = [0u8; 16];
    while Instant::now() < until {
        if let Ok(n) = std::io::stdin().read(&mut b) {
            if b[..n].iter().any(|&c| matches!(c, b'q' | b'Q' | 3 | 4)) {
                return true;
            }
        }
    }
    false
}

/// Runs the view until `q` (or, with `once`, prints one frame and returns).
pub fn run(t: &Target, interval: Duration, once: bool) -> Result<(), String> {
    let name = t.admin.to_string();
    if once {
        let f = poll(t)?;
        println!("{}", render(&name, &f, None, 10).join("\n"));
        return Ok(());
    }
    let raw = RawMode::enter();
    let mut before: Option<Frame> = None;
    loop {
        let screen = match poll(t) {
            Ok(f) => {
                let s = render(&name, &f, before.as_ref(), 10);
                before = Some(f);
                s
            }
            Err(e) => vec![format!("tollgate top — {name} — {e}   (q quits)")],
        };
        let mut o = std::io::stdout().lock();
        let _ = write!(o, "\x1b[H\x1b[2J{}", screen.join("\r\n"));
        let _ = o.flush();
        drop(o);
        if quit_pressed(&raw, interval) {
            let _ = write!(std::io::stdout(), "\r\n");
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_screen_shows_rates_keys_and_upstreams() {
        let stats = |a: u64, d: u64| {
            json!({"config_version": 3, "workers": 2, "uptime_s": 9,
                   "tiers": {"premium": {"methods": {"GET": {"admitted": a, "denied": d}}}},
                   "upstream_nodes": [{"node": "127.0.0.1:9000", "state": "down", "in_flight": 0,
                                       "pool_idle": 1, "last_check": "GET /: status 403"}]})
        };
        let keys = json!({"busiest": [{"subject": {"key": "AKIABUSY"}, "tier": "premium",
                                        "sustained_count": 42, "burst_count": 7, "retry_after_ms": 0}],
                          "most_denied": [{"subject": {"addr": "10.0.0.1"}, "tier": "unknown", "denied": 5}]});
        let health = json!({"status": "unavailable", "reasons": ["no upstream node is usable"]});
        let t0 = Instant::now();
        let before = Frame {
            stats: stats(10, 0),
            keys: keys.clone(),
            health: health.clone(),
            at: t0,
        };
        let now = Frame {
            stats: stats(30, 4),
            keys,
            health,
            at: t0 + Duration::from_secs(2),
        };
        let s = render("a:1", &now, Some(&before), 10).join("\n");
        assert!(s.contains("health unavailable"), "{s}");
        assert!(s.contains("! no upstream node is usable"), "{s}");
        let tier = s.lines().find(|l| l.starts_with("premium")).unwrap();
        assert_eq!(
            tier.split_whitespace().collect::<Vec<_>>(),
            ["premium", "10.0", "2.0", "30", "4"]
        );
        let key = s.lines().find(|l| l.starts_with("AKIABUSY")).unwrap();
        assert_eq!(
            key.split_whitespace().collect::<Vec<_>>(),
            ["AKIABUSY", "premium", "42", "7", "0"]
        );
        assert!(s.contains("addr 10.0.0.1"), "{s}");
        assert!(s.contains("GET /: status 403"), "{s}");
        let first = render("a:1", &now, None, 10).join("\n");
        assert!(
            first
                .lines()
                .any(|l| l.starts_with("premium") && l.contains(" - ")),
            "no rate yet: {first}"
        );
    }
}
