//! What `tollgate check` prints for a valid config: listeners, upstreams with health checks,
//! limits, tiers with their windows, methods and key counts, admin, TLS certificates, access log,
//! cluster.
//!
//! Owns: the summary text. Must not touch: validation (it reads a `Config` already valid).

use super::file;
use super::{Balance, Config, Method, MethodSet, StoreFailure, UnlistedKeys};
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

fn methods_str(m: MethodSet) -> String {
    let v: Vec<&str> = Method::ALL
        .iter()
        .filter(|x| m.contains(**x))
        .map(|x| x.as_str())
        .collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(",")
    }
}

/// A sorted status list as ranges: `[200, 201, 202, 404]` → "200-202,404".
pub fn status_ranges(s: &[u16]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let start = s[i];
        let mut end = start;
        while i + 1 < s.len() && s[i + 1] == end + 1 {
            i += 1;
            end = s[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

fn addrs_str(a: &[SocketAddr]) -> String {
    if a.is_empty() {
        "none".to_string()
    } else {
        a.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

struct Dur(Duration);
impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&file::format_duration(self.0))
    }
}

/// What `tollgate check` prints: listeners, upstreams, tiers with limits, methods and key
/// counts, admin, TLS certificates.
pub fn summary(cfg: &Config) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "config: {}", cfg.source.display());
    let _ = writeln!(
        s,
        "workers: {}{}",
        cfg.workers,
        if cfg.pin_workers { " (pinned)" } else { "" }
    );
    listeners(&mut s, cfg);
    admin(&mut s, cfg);
    upstream(&mut s, cfg);
    limits(&mut s, cfg);
    rules(&mut s, cfg);
    access_log(&mut s, cfg);
    cluster(&mut s, cfg);
    s
}

/// `[[rules]]` in evaluation order, each with what it matches and does.
fn rules(s: &mut String, cfg: &Config) {
    let set = &cfg.rules;
    if set.is_empty() {
        let _ = writeln!(s, "rules: none (each request counts against its tier only)");
        return;
    }
    let _ = writeln!(s, "rules: {}, tested in this order:", set.rules.len());
    for (i, r) in set.rules.iter().enumerate() {
        let line = super::explain::describe_rule(r, &cfg.limits.tiers);
        let _ = writeln!(s, "  {}. {line}", i + 1);
    }
    if !set.domains.is_empty() {
        let _ = writeln!(s, "  virtual-host buckets under: {}", set.domains.join(" "));
    }
}

fn cluster(s: &mut String, cfg: &Config) {
    let Some(c) = &cfg.cluster else {
        let _ = writeln!(s, "cluster: off (this instance limits on its own)");
        return;
    };
    let policy = match c.on_store_failure {
        StoreFailure::LocalShare => "local_share",
        StoreFailure::Open => "open",
        StoreFailure::Closed => "closed",
    };
    let _ = writeln!(
        s,
        "cluster: {} as {:?}, sync every {}, on store failure {policy} (timeouts: connect {}, read {}, write {})",
        c.redacted_url(),
        c.instance_id,
        Dur(c.sync_interval),
        Dur(c.connect_timeout),
        Dur(c.read_timeout),
        Dur(c.write_timeout)
    );
}

fn listeners(s: &mut String, cfg: &Config) {
    let _ = writeln!(s, "listen (http): {}", addrs_str(&cfg.listen));
    match &cfg.tls {
        None => {
            let _ = writeln!(s, "listen (https): none");
        }
        Some(t) => {
            let _ = writeln!(
                s,
                "listen (https): {} (cert reload poll: {})",
                addrs_str(&t.listen),
                Dur(t.reload_interval)
            );
            for (i, c) in t.certs.iter().enumerate() {
                let names = if c.server_names.is_empty() {
                    "names from certificate".to_string()
                } else {
                    c.server_names.join(", ")
                };
                let _ = writeln!(
                    s,
                    "  cert {}{}: {} key {} ({names})",
                    i,
                    if i == 0 { " [default]" } else { "" },
                    c.cert_file.display(),
                    c.key_file.display()
                );
            }
        }
    }
}

fn admin(s: &mut String, cfg: &Config) {
    match cfg.admin.listen {
        None => {
            let _ = writeln!(s, "admin: off");
        }
        Some(a) => {
            let _ = writeln!(
                s,
                "admin: {a} ({})",
                if cfg.admin.token.is_some() {
                    "bearer token required"
                } else {
                    "no token"
                }
            );
        }
    }
}

fn upstream(s: &mut String, cfg: &Config) {
    let u = &cfg.upstream;
    let _ = writeln!(
        s,
        "upstream: {} server(s), balance {}, connect timeout {}, retries {}{}",
        u.servers.len(),
        match u.balance {
            Balance::RoundRobin => "round_robin",
            Balance::LeastOutstanding => "least_outstanding",
        },
        Dur(u.connect_timeout),
        u.max_retries,
        match &u.tls {
            None => String::new(),
            Some(t) => format!(", TLS (CA {})", t.ca_file.display()),
        }
    );
    for srv in &u.servers {
        let _ = writeln!(s, "  {} -> {}", srv.name, srv.addr);
    }
    let h = &u.health;
    if h.enabled {
        let _ = writeln!(
            s,
            "  health: GET {} every {}, timeout {}, rise {}, fall {}, healthy {}",
            h.path,
            Dur(h.interval),
            Dur(h.timeout),
            h.rise,
            h.fall,
            status_ranges(&h.healthy_statuses)
        );
    } else {
        let _ = writeln!(s, "  health: off");
    }
}

fn limits(s: &mut String, cfg: &Config) {
    let l = &cfg.limits;
    let _ = writeln!(
        s,
        "limits: {}, deny {}, unlisted keys {}, default tier {}, anonymous tier {}, table cap {}/core, max key {} bytes, IPv6 clients per /{}",
        if l.enforce {
            "enforcing"
        } else {
            "shadow mode"
        },
        l.deny_status,
        match l.unlisted_keys {
            UnlistedKeys::PerKey => "per_key",
            UnlistedKeys::PerAddress => "per_address",
        },
        l.tiers[l.default_tier].name,
        l.tiers[l.anonymous_tier].name,
        l.table_cap,
        l.max_key_len,
        l.ipv6_prefix
    );
    match &l.keys_file {
        None => {
            let _ = writeln!(s, "keys file: none");
        }
        Some(k) => {
            let _ = writeln!(s, "keys file: {} ({} keys)", k.display(), l.keys.len());
        }
    }
    let mut per_tier = vec![0usize; l.tiers.len()];
    for &t in l.keys.values() {
        per_tier[t] += 1;
    }
    let _ = writeln!(s, "tiers:");
    for (i, t) in l.live_tiers() {
        let _ = writeln!(
            s,
            "  {:<12} {:>5}/{:<4} {:>5}/{:<5} methods {:<12} {:<8} keys {}",
            t.name,
            t.sustained.limit,
            Dur(Duration::from_millis(t.sustained.length_ms.into())).to_string(),
            t.burst.limit,
            Dur(Duration::from_millis(t.burst.length_ms.into())).to_string(),
            methods_str(t.methods),
            if t.enforce { "enforce" } else { "shadow" },
            per_tier[i]
        );
    }
}

fn access_log(s: &mut String, cfg: &Config) {
    let _ = writeln!(
        s,
        "access log: {}",
        cfg.access_log
            .path
            .as_ref()
            .map_or("off".to_string(), |p| format!(
                "{} (JSON lines; buffer {} bytes per core, flush every {:?}, queue {})",
                p.display(),
                cfg.access_log.buffer_bytes,
                cfg.access_log.flush_interval,
                cfg.access_log.queue
            ))
    );
}

#[cfg(test)]
mod tests {
    use super::summary;
    use crate::config::load;
    use crate::config::testutil::TempDir;

    #[test]
    fn summary_lists_everything() {
        let dir = TempDir::new("summary");
        dir.write("c.pem", "x");
        dir.write("c.key", "x");
        dir.write(
            "keys.toml",
            "[keys]\nA1 = \"gold\"\nA2 = \"gold\"\nB1 = \"lead\"\n",
        );
        let path = dir.write(
            "t.toml",
            "workers = 2\nlisten = [\"127.0.0.1:1\"]\n[admin]\ntoken = \"t\"\n\
             [tls]\nlisten = [\"127.0.0.1:2\"]\n[[tls.certs]]\ncert = \"c.pem\"\nkey = \"c.key\"\n\
             [[upstream.servers]]\naddr = \"127.0.0.1:4\"\n\
             [upstream.health]\nhealthy_statuses = [\"200-299\", \"404\"]\n\
             [limits]\nkeys_file = \"keys.toml\"\ndefault_tier = \"lead\"\nanonymous_tier = \"lead\"\n\
             [tiers.gold]\nper_minute = 1000\nper_second = 50\n\
             [tiers.lead]\nsustained = { limit = 10, window = \"10m\" }\nburst = { limit = 1, window = \"500ms\" }\nmethods = [\"GET\"]\nenforce = false\n\
             [cluster]\nredis_url = \"redis://u:secret@127.0.0.1:6379\"\non_store_failure = \"open\"\n",
        );
        let s = summary(&load(&path).unwrap());
        for want in [
            "workers: 2 (pinned)",
            "listen (http): 127.0.0.1:1",
            "listen (https): 127.0.0.1:2",
            "[default]",
            "admin: 127.0.0.1:8404 (bearer token required)",
            "127.0.0.1:4 -> 127.0.0.1:4",
            "healthy 200-299,404",
            "keys file:",
            "(3 keys)",
            "default tier lead",
            "cluster: redis://***@127.0.0.1:6379 as \"127.0.0.1:1\", sync every 100ms, on store failure open",
        ] {
            assert!(s.contains(want), "missing {want:?} in:\n{s}");
        }
        assert!(!s.contains("secret"), "the password is not printed");
        let gold = s
            .lines()
            .find(|l| l.trim_start().starts_with("gold"))
            .unwrap();
        assert!(
            gold.contains("1000/1m")
                && gold.contains("50/1s")
                && gold.contains("GET,PUT")
                && gold.ends_with("keys 2"),
            "{gold}"
        );
        let lead = s
            .lines()
            .find(|l| l.trim_start().starts_with("lead"))
            .unwrap();
        assert!(
            lead.contains("10/10m")
                && lead.contains("1/500ms")
                && lead.contains("shadow")
                && lead.ends_with("keys 1"),
            "{lead}"
        );
    }
}
