//! The human page of the admin API (`GET /`, also `/stats?human`): health, tiers with a
//! per-second chart of admitted and denied requests (inline SVG, drawn here from the
//! watchdog's history), the busiest and most denied keys, upstream nodes. Plain HTML that
//! refreshes itself every 2 s; no script, no external assets.
//!
//! Owns: the page. Must not touch: the data path (reads the same documents as the API).

use std::fmt::Write as _;

use serde_json::Value;

use super::admin::keys;
use super::{ControlState, lock};

/// Wall-clock Unix ms.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// HTML-escapes `s`.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const CHART_W: usize = 360;
const CHART_H: usize = 60;

/// An SVG chart of two series (admitted green, denied red), one point per second.
pub fn chart(admitted: &[u64], denied: &[u64]) -> String {
    let max = admitted
        .iter()
        .chain(denied)
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    let n = admitted.len().max(2);
    let line = |v: &[u64], color: &str| {
        let pts: Vec<String> = v
            .iter()
            .enumerate()
            .map(|(i, &y)| {
                let x = i * CHART_W / (n - 1);
                let y = CHART_H - (y as usize * CHART_H / max as usize);
                format!("{x},{y}")
            })
            .collect();
        format!(
            "<polyline fill=none stroke={color} stroke-width=1.5 points=\"{}\"/>",
            pts.join(" ")
        )
    };
    format!(
        "<svg width={CHART_W} height={} viewBox=\"0 -2 {CHART_W} {}\" role=img>\
         <title>admitted (green) and denied (red) per second, peak {max}/s</title>\
         <rect width={CHART_W} height={CHART_H} fill=#f6f6f6/>{}{}\
         <text x=2 y=10 font-size=10>{max}/s</text></svg>",
        CHART_H + 4,
        CHART_H + 4,
        line(admitted, "#2a2"),
        line(denied, "#c22"),
    )
}

fn tiers_section(st: &ControlState, h: &mut String) {
    let cfg = st.current();
    let history = lock(&st.watch).history.clone();
    h.push_str("<h2>Tiers (last 2 minutes, per second)</h2><table><tr><th>tier</th><th>limits</th><th>admitted/s</th><th>denied/s</th><th>chart</th></tr>");
    for (i, t) in cfg.limits.live_tiers() {
        let series = |f: fn(&(u64, u64)) -> u64| -> Vec<u64> {
            history
                .iter()
                .map(|s| s.per_tier.get(i).map_or(0, f))
                .collect()
        };
        let (a, d) = (series(|x| x.0), series(|x| x.1));
        let _ = write!(
            h,
            "<tr><th>{}</th><td>{}/min {}/s</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&t.name),
            t.sustained.limit,
            t.burst.limit,
            a.last().copied().unwrap_or(0),
            d.last().copied().unwrap_or(0),
            chart(&a, &d)
        );
    }
    h.push_str("</table>");
}

fn keys_section(st: &ControlState, h: &mut String) {
    let doc = keys::top_doc(st, 10);
    let name = |e: &Value| {
        let s = &e["subject"];
        s["key"]
            .as_str()
            .or(s["addr"].as_str())
            .unwrap_or("?")
            .to_string()
    };
    h.push_str("<h2>Busiest keys</h2><table><tr><th>key</th><th>tier</th><th>last minute</th><th>last second</th><th>retry after ms</th></tr>");
    for e in doc["busiest"].as_array().into_iter().flatten() {
        let _ = write!(
            h,
            "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&name(e)),
            esc(e["tier"].as_str().unwrap_or("")),
            e["sustained_count"],
            e["burst_count"],
            e["retry_after_ms"]
        );
    }
    h.push_str(
        "</table><h2>Most denied</h2><table><tr><th>key</th><th>tier</th><th>denied</th></tr>",
    );
    for e in doc["most_denied"].as_array().into_iter().flatten() {
        let _ = write!(
            h,
            "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
            esc(&name(e)),
            esc(e["tier"].as_str().unwrap_or("")),
            e["denied"]
        );
    }
    h.push_str("</table>");
}

/// The whole page.
pub fn render(st: &ControlState) -> String {
    let (healthy, ready, doc) = super::health::verdict(st);
    let mut h = String::from(
        "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=2>\
         <title>tollgate</title><style>body{font-family:sans-serif;margin:2em}\
         td,th{padding:2px 10px;text-align:right}th{text-align:left}\
         .ok{color:#2a2}.bad{color:#c22}</style><h1>tollgate</h1>",
    );
    let _ = write!(
        h,
        "<p>health <b class={}>{}</b> · ready {} · uptime {}s · config v{} · {} workers</p>",
        if healthy { "ok" } else { "bad" },
        doc["status"].as_str().unwrap_or("?"),
        ready,
        st.started.elapsed().as_secs(),
        st.current().limits.version,
        st.stats.len()
    );
    for r in doc["reasons"].as_array().into_iter().flatten() {
        let _ = write!(h, "<p class=bad>{}</p>", esc(r.as_str().unwrap_or("")));
    }
    tiers_section(st, &mut h);
    keys_section(st, &mut h);
    h.push_str("<h2>Upstreams</h2><table><tr><th>node</th><th>state</th><th>in flight</th><th>idle pooled</th><th>last check</th></tr>");
    for n in super::health::nodes_json(st) {
        let _ = write!(
            h,
            "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(n["node"].as_str().unwrap_or("")),
            esc(n["state"].as_str().unwrap_or("")),
            n["in_flight"],
            n["pool_idle"],
            esc(n["last_check"].as_str().unwrap_or(""))
        );
    }
    h.push_str("</table><h2>All figures</h2><pre>");
    let stats = serde_json::to_string_pretty(&super::metrics::stats_json(st)).unwrap_or_default();
    h.push_str(&esc(&stats));
    h.push_str("</pre>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_scales_to_the_peak_and_escapes_nothing_it_draws() {
        let c = chart(&[0, 5, 10], &[0, 0, 5]);
        assert!(c.starts_with("<svg"), "{c}");
        assert!(c.contains("points=\"0,60 180,30 360,0\""), "admitted: {c}");
        assert!(c.contains("points=\"0,60 180,60 360,30\""), "denied: {c}");
        assert!(c.contains("peak 10/s"));
        assert!(chart(&[], &[]).contains("<svg"), "no history yet");
        assert_eq!(esc("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }
}
