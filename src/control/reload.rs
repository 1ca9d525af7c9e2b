//! What a reload changes: the fields that need a restart (kept as they run, and named in
//! the result), stable upstream node ids for the new server list, the rules' stable slots
//! (`RuleSet::renumber`; tiers keep their numbers in `validate::load_for_reload`), and
//! the sections that did change. Pure: no I/O, no messages (the control state sends the snapshot).
//!
//! Owns: [`ReloadReport`], [`NodeIds`], [`prepare`]. Must not touch: cores, files.

use std::collections::VecDeque;
use std::fmt::Debug;

use serde::Serialize;

use crate::config::{Config, LimitsConfig};
use crate::stats::NODE_SLOTS;

/// A field whose new value needs a restart: the running value stays.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Refused {
    pub field: &'static str,
    pub running: String,
    pub file: String,
}

/// The result of one reload, returned by `POST /reload` and shown in `/config`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ReloadReport {
    pub version: u64,
    /// Sections whose new values are now in force.
    pub applied: Vec<&'static str>,
    /// Upstream servers added / removed (draining) by this reload.
    pub upstreams_added: Vec<String>,
    pub upstreams_removed: Vec<String>,
    /// Fields changed in the file that need a restart: NOT applied.
    pub needs_restart: Vec<Refused>,
    /// Cores that had not taken the new snapshot when the reload answered (they keep the
    /// old one until they do; empty when every core runs the new config).
    pub cores_behind: Vec<usize>,
}

/// Stable node ids (`UpstreamServer::id`): a server that stays keeps its id; a new one
/// gets a never-used id while there are some below `stats::NODE_SLOTS` (each with its own
/// stats slot), then the id released longest ago.
#[derive(Debug)]
pub struct NodeIds {
    next: u32,
    released: VecDeque<u16>,
}

impl NodeIds {
    /// The allocator for a config as loaded at start (ids 0..n).
    pub fn new(cfg: &Config) -> NodeIds {
        NodeIds {
            next: cfg.upstream.servers.len() as u32,
            released: VecDeque::new(),
        }
    }

    fn fresh(&mut self, taken: &[u16]) -> Option<u16> {
        if self.next < NODE_SLOTS as u32 {
            self.next += 1;
            return Some((self.next - 1) as u16);
        }
        if let Some(i) = self.released.iter().position(|id| !taken.contains(id)) {
            return self.released.remove(i);
        }
        (self.next <= u32::from(u16::MAX)).then(|| {
            self.next += 1;
            (self.next - 1) as u16
        })
    }

    /// Gives `new`'s servers their ids (from `old` for servers that stay). Err: no id is
    /// left (65,536 servers added since start).
    pub fn assign(&mut self, old: &Config, new: &mut Config) -> Result<(), String> {
        let same = |a: &crate::config::UpstreamServer, b: &crate::config::UpstreamServer| {
            a.name == b.name && a.addr == b.addr
        };
        let mut taken: Vec<u16> = Vec::new();
        for s in new.upstream.servers.iter_mut() {
            if let Some(o) = old.upstream.servers.iter().find(|o| same(o, s)) {
                s.id = o.id;
                taken.push(o.id);
            }
        }
        for s in new.upstream.servers.iter_mut() {
            if !old.upstream.servers.iter().any(|o| same(o, s)) {
                s.id = self
                    .fresh(&taken)
                    .ok_or("no upstream node id left: restart tollgate")?;
                taken.push(s.id);
            }
        }
        for o in &old.upstream.servers {
            if !taken.contains(&o.id) {
                self.released.push_back(o.id);
            }
        }
        Ok(())
    }
}

/// Keeps `old`'s value of a restart-only field in `new`, noting the change.
fn keep<T: Debug + Clone>(out: &mut Vec<Refused>, field: &'static str, old: &T, new: &mut T) {
    let (running, file) = (format!("{old:?}"), format!("{new:?}"));
    if running != file {
        out.push(Refused {
            field,
            running,
            file,
        });
        *new = old.clone();
    }
}

/// The fields a running process cannot change (listeners, threads, files opened at start,
/// the upstream TLS connector): their new values are refused and the running ones kept.
fn restart_only(old: &Config, new: &mut Config) -> Vec<Refused> {
    let mut r = Vec::new();
    keep(&mut r, "workers", &old.workers, &mut new.workers);
    keep(
        &mut r,
        "pin_workers",
        &old.pin_workers,
        &mut new.pin_workers,
    );
    keep(&mut r, "listen", &old.listen, &mut new.listen);
    let tls_listen = |c: &Config| c.tls.as_ref().map(|t| t.listen.clone());
    let (was, mut now) = (tls_listen(old), tls_listen(new));
    keep(&mut r, "tls.listen", &was, &mut now);
    if let (Some(t), Some(l)) = (new.tls.as_mut(), now) {
        t.listen = l;
    } else if was.is_none() != new.tls.is_none() {
        new.tls = old.tls.clone();
    }
    keep(
        &mut r,
        "admin.listen",
        &old.admin.listen,
        &mut new.admin.listen,
    );
    keep(&mut r, "access_log", &old.access_log, &mut new.access_log);
    keep(&mut r, "cluster", &old.cluster, &mut new.cluster);
    keep(
        &mut r,
        "upstream.tls",
        &old.upstream.tls,
        &mut new.upstream.tls,
    );
    r
}

/// Limits in a form that compares (the keys map sorted, the version left out).
fn limits_text(l: &LimitsConfig) -> String {
    let mut keys: Vec<_> = l.keys.iter().collect();
    keys.sort();
    format!(
        "{:?}{keys:?}{}{}{:?}{}{}{}{}/{}{:?}{:?}{}{:?}{:?}",
        l.tiers,
        l.default_tier,
        l.anonymous_tier,
        l.unlisted_keys,
        l.enforce,
        l.deny_status,
        l.max_key_len,
        l.table_cap,
        l.ipv6_prefix,
        l.headers,
        l.expect_denied,
        l.refund_on_auth_failure,
        l.penalty,
        l.verify.as_ref().map(|v| &v.secrets_file),
    )
}

/// The sections of `new` that differ from `old` (after the restart-only fields were kept).
fn changed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut up_old = old.upstream.clone();
    up_old.servers = new.upstream.servers.clone();
    let d = |a: &dyn Debug, b: &dyn Debug| format!("{a:?}") != format!("{b:?}");
    let checks: [(&'static str, bool); 9] = [
        (
            "limits",
            limits_text(&old.limits) != limits_text(&new.limits),
        ),
        (
            "rules",
            d(
                &(&old.rules.rules, &old.rules.domains),
                &(&new.rules.rules, &new.rules.domains),
            ),
        ),
        (
            "upstream.servers",
            d(&old.upstream.servers, &new.upstream.servers),
        ),
        ("upstream", d(&up_old, &new.upstream)),
        ("http", d(&old.http, &new.http)),
        ("admin", d(&old.admin, &new.admin)),
        ("tls", d(&old.tls, &new.tls)),
        (
            "shutdown",
            d(
                &(old.shutdown_grace, old.shutdown_delay),
                &(new.shutdown_grace, new.shutdown_delay),
            ),
        ),
        (
            "reload_poll_interval",
            old.reload_poll_interval != new.reload_poll_interval,
        ),
    ];
    checks.into_iter().filter(|c| c.1).map(|c| c.0).collect()
}

/// Turns a freshly loaded `new` into the snapshot to run (restart-only fields kept, node
/// ids assigned, version bumped) and says what it changes.
pub fn prepare(old: &Config, new: &mut Config, ids: &mut NodeIds) -> Result<ReloadReport, String> {
    new.limits.version = old.limits.version + 1;
    std::sync::Arc::make_mut(&mut new.rules).renumber(&old.rules);
    let needs_restart = restart_only(old, new);
    ids.assign(old, new)?;
    let names =
        |c: &Config| -> Vec<String> { c.upstream.servers.iter().map(|s| s.name.clone()).collect() };
    let (was, now) = (names(old), names(new));
    Ok(ReloadReport {
        version: new.limits.version,
        applied: changed(old, new),
        upstreams_added: now.iter().filter(|n| !was.contains(n)).cloned().collect(),
        upstreams_removed: was.iter().filter(|n| !now.contains(n)).cloned().collect(),
        needs_restart,
        cores_behind: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(extra: &str, servers: &[u16]) -> Config {
        let workers = if extra.contains("workers") {
            ""
        } else {
            "workers = 2\n"
        };
        let mut t = format!("{workers}listen = [\"127.0.0.1:8080\"]\n{extra}\n");
        for p in servers {
            t.push_str(&format!("[[upstream.servers]]\naddr = \"127.0.0.1:{p}\"\n"));
        }
        crate::config::validate::load_str(&t, Path::new("t.toml")).unwrap()
    }

    fn ids(c: &Config) -> Vec<(u16, u16)> {
        c.upstream
            .servers
            .iter()
            .map(|s| (s.addr.port(), s.id))
            .collect()
    }

    #[test]
    fn restart_fields_are_refused_by_name_and_kept() {
        let old = cfg("", &[9001]);
        let mut new = cfg("workers = 4\npin_workers = false", &[9001]);
        new.listen = vec!["127.0.0.1:9999".parse().unwrap()];
        let mut a = NodeIds::new(&old);
        let r = prepare(&old, &mut new, &mut a).unwrap();
        let fields: Vec<_> = r.needs_restart.iter().map(|f| f.field).collect();
        assert_eq!(fields, ["workers", "pin_workers", "listen"]);
        assert_eq!(r.needs_restart[0].file, "4");
        assert_eq!(
            (new.workers, new.listen.clone()),
            (old.workers, old.listen.clone())
        );
        assert!(
            r.applied.is_empty(),
            "nothing else changed: {:?}",
            r.applied
        );
        assert_eq!(new.limits.version, old.limits.version + 1);
    }

    #[test]
    fn applied_sections_are_named() {
        let old = cfg("", &[9001]);
        let mut new = cfg(
            "[upstream]\npool_max_idle = 3\n[admin]\ntoken = \"t\"",
            &[9001, 9002],
        );
        let r = prepare(&old, &mut new, &mut NodeIds::new(&old)).unwrap();
        assert_eq!(r.applied, ["upstream.servers", "upstream", "admin"]);
        assert_eq!(r.upstreams_added, ["127.0.0.1:9002"]);
        assert!(r.needs_restart.is_empty());
    }

    /// A reload that changes only how IPv6 clients are grouped reports `limits` applied
    /// (nothing changed is never reported, nothing applied is never left out).
    #[test]
    fn an_ipv6_prefix_change_is_applied_as_limits() {
        let old = cfg("", &[9001]);
        let mut new = cfg("[limits]\nipv6_prefix = 56", &[9001]);
        let r = prepare(&old, &mut new, &mut NodeIds::new(&old)).unwrap();
        assert_eq!(r.applied, ["limits"]);
        assert_eq!(new.limits.ipv6_prefix, 56);
    }

    /// A reload that changes only `[[rules]]` or `virtual_host_domains` reports `rules`
    /// applied (it reported nothing); an unchanged file, nothing.
    #[test]
    fn a_rules_change_is_reported_as_rules() {
        let rule = "[[rules]]\nname = \"r\"\nper_minute = 5\n";
        let old = cfg(rule, &[9001]);
        let mut new = cfg(&rule.replace('5', "6"), &[9001]);
        let r = prepare(&old, &mut new, &mut NodeIds::new(&old)).unwrap();
        assert_eq!(r.applied, ["rules"]);
        let mut domains = cfg(
            &format!("virtual_host_domains = [\"s3.example\"]\n{rule}"),
            &[9001],
        );
        let r = prepare(&old, &mut domains, &mut NodeIds::new(&old)).unwrap();
        assert_eq!(r.applied, ["rules"]);
        let mut same = cfg(rule, &[9001]);
        let r = prepare(&old, &mut same, &mut NodeIds::new(&old)).unwrap();
        assert!(r.applied.is_empty(), "{:?}", r.applied);
    }

    /// Ids never change meaning: a server that stays keeps its id, a removed one's id is
    /// not given to the next server while fresh ids remain.
    #[test]
    fn node_ids_are_stable_across_reloads() {
        let v1 = cfg("", &[9001, 9002]);
        let mut a = NodeIds::new(&v1);
        assert_eq!(ids(&v1), [(9001, 0), (9002, 1)]);
        let mut v2 = cfg("", &[9002, 9003]);
        prepare(&v1, &mut v2, &mut a).unwrap();
        assert_eq!(ids(&v2), [(9002, 1), (9003, 2)]);
        let mut v3 = cfg("", &[9001, 9002, 9003]);
        prepare(&v2, &mut v3, &mut a).unwrap();
        assert_eq!(
            ids(&v3),
            [(9001, 3), (9002, 1), (9003, 2)],
            "9001 is new again"
        );
    }

    #[test]
    fn released_ids_are_reused_only_when_fresh_ones_run_out() {
        let v1 = cfg("", &[9001]);
        let mut a = NodeIds::new(&v1);
        a.next = NODE_SLOTS as u32 - 1;
        let mut v2 = cfg("", &[9002]);
        prepare(&v1, &mut v2, &mut a).unwrap();
        assert_eq!(ids(&v2), [(9002, NODE_SLOTS as u16 - 1)]);
        let mut v3 = cfg("", &[9003]);
        prepare(&v2, &mut v3, &mut a).unwrap();
        assert_eq!(ids(&v3), [(9003, 0)], "the oldest released id");
    }
}
