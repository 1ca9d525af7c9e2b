//! The key view of the admin API: `GET /keys/{key}` (what the limiter holds for one key:
//! tier, owner core, both windows' counts as the next check sees them, retry-after, the
//! auth method it was last seen with and the rule that decided its last request), `GET /keys?top=N` (busiest by admissions in the
//! sustained window, and most denied) and `POST /keys/{key}/reset`.
//!
//! Owns: those documents. Table reads go to the owner core as `TableOp` messages, so the
//! counts are the ones the limiter itself uses; a top-N scan is spread over the cores'
//! event-loop turns (`proxy::tasks::top_scan`, bounded work per turn). Must not touch: the
//! data path.

use serde_json::{Value, json};

use crate::config::{Config, UnlistedKeys};
use crate::limit::EntrySnapshot;
use crate::runtime::msg::{DeniedEntry, TableOp, TableReply};
use crate::stats::{AUTH_NAMES, key_hash};

use super::super::ControlState;
use super::{Reply, entry_json, owner, table_ask};

/// What the limiter counts a key under: the key itself, or (unlisted keys counted per
/// client address) nothing of its own.
fn counted_per_key(cfg: &Config, key: &[u8]) -> (usize, bool, bool) {
    let (tier, listed) = cfg.limits.tier_of_key(key);
    let per_key = listed || cfg.limits.unlisted_keys == UnlistedKeys::PerKey;
    (tier, listed, per_key)
}

/// The auth method `key` was last seen with on any core, how long ago (ms), and the rule
/// that decided that request (if one did).
fn last_seen(st: &ControlState, key: &[u8]) -> Option<(&'static str, u64, Option<usize>)> {
    let h = key_hash(key);
    let s = st
        .stats
        .iter()
        .filter_map(|c| c.lookup_seen(h))
        .max_by_key(|s| s.unix_ms)?;
    let now = super::super::page::unix_ms() & ((1 << 40) - 1);
    Some((
        AUTH_NAMES.get(s.auth as usize).copied()?,
        now.saturating_sub(s.unix_ms),
        s.rule,
    ))
}

fn window(length_ms: u32, limit: u32, count: u32) -> Value {
    json!({"length_ms": length_ms, "limit": limit, "count": count,
           "remaining": limit.saturating_sub(count)})
}

/// `GET /keys/{key}`.
pub(super) fn one(st: &ControlState, key: &[u8]) -> Reply {
    let cfg = st.current();
    let (tier, listed, per_key) = counted_per_key(&cfg, key);
    let t = &cfg.limits.tiers[tier];
    let core = owner(st, key);
    let mut v = json!({
        "key": String::from_utf8_lossy(key),
        "tier": t.name,
        "listed": listed,
        "counted": if per_key { "per_key" } else { "per_client_address" },
        "owner_core": core,
        "tracked": false,
        "auth_method_last_seen": null,
        "last_seen_ms_ago": null,
        // The [[rules]] entry that decided its last request (denied, refused, exempted).
        "last_rule": null,
        // With [cluster]: the other instances' admissions of this key as last read, and the
        // global totals the limiter checks (local + others); null on a single instance.
        "cluster": null,
    });
    if let Some((auth, ago, rule)) = last_seen(st, key) {
        v["auth_method_last_seen"] = json!(auth);
        v["last_seen_ms_ago"] = json!(ago);
        v["last_rule"] = json!(
            rule.and_then(|s| cfg.rules.by_slot(s as u16))
                .map(|r| &r.name)
        );
    }
    let entry = if per_key {
        match table_ask(st, core, TableOp::Inspect(key.to_vec())) {
            Some(TableReply::Entries(e)) => e.into_iter().next(),
            Some(_) => None,
            None => return Reply::json(503, &json!({"error": "core did not answer"})),
        }
    } else {
        None
    };
    let e = entry.as_ref();
    let counts = (
        e.map_or(0, |e| e.sustained_count),
        e.map_or(0, |e| e.burst_count),
    );
    v["tracked"] = json!(e.is_some());
    v["windows"] = json!({
        "sustained": window(t.sustained.length_ms, t.sustained.limit, counts.0),
        "burst": window(t.burst.length_ms, t.burst.limit, counts.1),
    });
    if let (Some(_), Some(e)) = (&st.cluster, e) {
        let [os, ob] = e.others;
        v["cluster"] = json!({
            "others": [os, ob],
            "global": {
                "sustained": counts.0.saturating_add(os),
                "burst": counts.1.saturating_add(ob),
            },
        });
    }
    let retry = e.map_or(0, |e| e.retry_after_ms);
    v["retry_after_ms"] = json!(retry);
    v["retry_after_s"] = json!(retry.div_ceil(1000));
    v["would_admit"] = json!(retry == 0);
    Reply::json(200, &v)
}

/// `POST /keys/{key}/reset`: forgets the key's counts on its owner core.
pub(super) fn reset(st: &ControlState, key: &[u8]) -> Reply {
    let core = owner(st, key);
    match table_ask(st, core, TableOp::Remove(key.to_vec())) {
        Some(TableReply::Removed(n)) => Reply::json(
            200,
            &json!({"key": String::from_utf8_lossy(key), "reset": n > 0, "owner_core": core}),
        ),
        _ => Reply::json(503, &json!({"error": "core did not answer"})),
    }
}

/// The busiest subjects of every core, merged, most admissions first.
pub fn busiest(st: &ControlState, n: usize) -> Vec<EntrySnapshot> {
    let mut all: Vec<EntrySnapshot> = Vec::new();
    for core in 0..st.cores.cores() {
        if let Some(TableReply::Entries(e)) = table_ask(st, core, TableOp::Top(n)) {
            all.extend(e);
        }
    }
    all.retain(|e| e.tier != crate::limit::PENALTY_TIER);
    all.sort_by(|a, b| {
        b.sustained_count
            .cmp(&a.sustained_count)
            .then_with(|| a.subject.cmp(&b.subject))
    });
    all.truncate(n);
    all
}

/// The most denied subjects of every core, merged (a subject denied on several cores is
/// summed).
pub fn most_denied(st: &ControlState, n: usize) -> Vec<DeniedEntry> {
    let mut all: Vec<DeniedEntry> = Vec::new();
    for core in 0..st.cores.cores() {
        if let Some(TableReply::Denied(d)) = table_ask(st, core, TableOp::Denied(n)) {
            for e in d {
                match all
                    .iter_mut()
                    .find(|x| x.subject == e.subject && x.tier == e.tier)
                {
                    Some(x) => {
                        x.denied += e.denied;
                        x.last_ms = x.last_ms.max(e.last_ms);
                    }
                    None => all.push(e),
                }
            }
        }
    }
    all.sort_by(|a, b| {
        b.denied
            .cmp(&a.denied)
            .then_with(|| a.subject.cmp(&b.subject))
    });
    all.truncate(n);
    all
}

/// `GET /keys?top=N` (default 10, at most 1000).
pub(super) fn top(st: &ControlState, query: &[u8]) -> Reply {
    let n = super::parse::query_param(query, "top")
        .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(10usize)
        .clamp(1, 1000);
    Reply::json(200, &top_doc(st, n))
}

/// The busiest and most denied `n` subjects. `most_denied` counts a subject's denials since
/// it took one of its core's slots, listed while it was denied within the last minute.
pub fn top_doc(st: &ControlState, n: usize) -> Value {
    let cfg = st.current();
    let busiest: Vec<Value> = busiest(st, n).iter().map(|e| entry_json(e, &cfg)).collect();
    let denied: Vec<Value> = most_denied(st, n)
        .iter()
        .map(|d| {
            let e = EntrySnapshot {
                subject: d.subject.clone(),
                tier: d.tier,
                sustained_count: 0,
                burst_count: 0,
                retry_after_ms: 0,
                others: [0, 0],
                idle: false,
            };
            let mut v = entry_json(&e, &cfg);
            if let Some(o) = v.as_object_mut() {
                o.retain(|k, _| k == "subject" || k == "tier");
            }
            v["denied"] = json!(d.denied);
            v
        })
        .collect();
    json!({"busiest": busiest, "most_denied": denied})
}
