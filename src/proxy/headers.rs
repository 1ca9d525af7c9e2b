//! Response headers added by the proxy: `X-Request-ID`, the rate-limit groups
//! (IETF `RateLimit-Policy`/`RateLimit`, the seed's `X-RateLimit-*`, identity) and the
//! deny-only `Retry-After` / `x-amz-retry-after`.
//!
//! Owns: `Extra`, a fixed-capacity header list over one reusable value buffer, so
//! adding headers allocates nothing in steady state. Must not touch: I/O.

use std::fmt::Write as _;
use std::ops::Range;

use crate::config::{HeaderGroups, TierConfig, WindowConfig};
use crate::limit::Decision;

pub const MAX_EXTRA: usize = 16;

#[derive(Default)]
pub struct Extra {
    vals: String,
    items: Vec<(&'static str, Range<usize>)>,
}

impl Extra {
    pub fn clear(&mut self) {
        self.vals.clear();
        self.items.clear();
    }

    pub fn push(&mut self, name: &'static str, value: &str) {
        let a = self.vals.len();
        self.vals.push_str(value);
        self.items.push((name, a..self.vals.len()));
    }

    pub fn push_fmt(&mut self, name: &'static str, args: std::fmt::Arguments<'_>) {
        let a = self.vals.len();
        let _ = self.vals.write_fmt(args);
        self.items.push((name, a..self.vals.len()));
    }

    /// A header whose value `f` writes (with `put_u64` and `push_str`: no `core::fmt` on the
    /// per-request path).
    pub fn push_with(&mut self, name: &'static str, f: impl FnOnce(&mut String)) {
        let a = self.vals.len();
        f(&mut self.vals);
        self.items.push((name, a..self.vals.len()));
    }

    pub fn push_u64(&mut self, name: &'static str, n: u64) {
        self.push_with(name, |s| put_u64(s, n));
    }

    /// Runs `f` with the headers as `(name, value)` byte pairs (a stack array: no allocation).
    pub fn with_pairs<R>(&self, f: impl FnOnce(&[(&[u8], &[u8])]) -> R) -> R {
        let mut arr: [(&[u8], &[u8]); MAX_EXTRA] = [(b"", b""); MAX_EXTRA];
        let n = self.items.len().min(MAX_EXTRA);
        for (slot, (name, r)) in arr.iter_mut().zip(self.items.iter()) {
            *slot = (name.as_bytes(), &self.vals.as_bytes()[r.clone()]);
        }
        f(&arr[..n])
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.items
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, r)| &self.vals[r.clone()])
    }
}

/// The SlowDown `<Message>` for a tier denied by window `w`.
pub fn deny_message(tier: &str, w: WindowConfig) -> String {
    format!(
        "Rate limit exceeded for tier {tier} ({} requests per {})",
        w.limit,
        window_words(w)
    )
}

/// Appends `n` in decimal (what `write!(s, "{n}")` does, without the formatting machinery).
pub fn put_u64(s: &mut String, n: u64) {
    s.push_str(itoa::Buffer::new().format(n));
}

fn secs(ms: u32) -> u32 {
    ms.div_ceil(1000).max(1)
}

/// "per minute", "per second", "per 10 seconds", "per 2 minutes".
pub fn window_words(w: WindowConfig) -> String {
    let ms = w.length_ms;
    if ms == 60_000 {
        "minute".into()
    } else if ms == 1_000 {
        "second".into()
    } else if ms % 60_000 == 0 {
        format!("{} minutes", ms / 60_000)
    } else if ms % 1_000 == 0 {
        format!("{} seconds", ms / 1_000)
    } else {
        format!("{ms} milliseconds")
    }
}

/// Adds the rate-limit header groups for a decision.
pub fn rate_limit_headers(
    x: &mut Extra,
    groups: &HeaderGroups,
    tier: &TierConfig,
    d: &Decision,
    key: Option<&str>,
    auth_method: &str,
    shadow_deny: bool,
) {
    if groups.ietf {
        x.push_with("RateLimit-Policy", |s| {
            s.push_str("\"sustained\";q=");
            put_u64(s, tier.sustained.limit.into());
            s.push_str(";w=");
            put_u64(s, secs(tier.sustained.length_ms).into());
            s.push_str(", \"burst\";q=");
            put_u64(s, tier.burst.limit.into());
            s.push_str(";w=");
            put_u64(s, secs(tier.burst.length_ms).into());
        });
        let burst = d.burst_binds;
        let (name, r) = if burst {
            ("\"burst\";r=", d.burst_remaining)
        } else {
            ("\"sustained\";r=", d.sustained_remaining)
        };
        let t = if d.admitted {
            d.reset_ms.div_ceil(1000)
        } else {
            d.retry_after_ms.div_ceil(1000).max(1)
        };
        x.push_with("RateLimit", |s| {
            s.push_str(name);
            put_u64(s, r.into());
            s.push_str(";t=");
            put_u64(s, t);
        });
    }
    if groups.legacy {
        x.push("X-RateLimit-Group", &tier.name);
        x.push_u64("X-RateLimit-Limit-Per-Minute", per_minute(tier.sustained));
        x.push_u64("X-RateLimit-Current-Per-Minute", d.sustained_count.into());
    }
    if groups.identity {
        x.push("X-API-Key", key.unwrap_or("anonymous"));
        x.push("X-Auth-Method", auth_method);
    }
    if shadow_deny {
        x.push("X-RateLimit-Shadow", "deny");
    }
}

/// The sustained limit expressed per minute (exact for 60 s windows).
fn per_minute(w: WindowConfig) -> u64 {
    if w.length_ms == 60_000 {
        w.limit as u64
    } else {
        (w.limit as u64 * 60_000).div_ceil(w.length_ms.max(1) as u64)
    }
}

/// Deny-only headers.
pub fn retry_headers(x: &mut Extra, d: &Decision) {
    let ms = d.retry_after_ms.max(1);
    x.push_u64("Retry-After", ms.div_ceil(1000).max(1));
    x.push_u64("x-amz-retry-after", ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_u64_matches_display() {
        for n in [0u64, 1, 9, 10, 99, 100, 65_535, 1_000_000, u64::MAX] {
            let mut s = String::from("x");
            put_u64(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
    }

    #[test]
    fn pairs_follow_pushes() {
        let mut x = Extra::default();
        x.push("A", "1");
        x.push_fmt("B", format_args!("{}", 22));
        x.with_pairs(|p| {
            assert_eq!(p.len(), 2);
            assert_eq!(p[0], (&b"A"[..], &b"1"[..]));
            assert_eq!(p[1], (&b"B"[..], &b"22"[..]));
        });
        x.clear();
        x.with_pairs(|p| assert!(p.is_empty()));
    }

    #[test]
    fn window_words_cover_common_lengths() {
        let w = |ms| WindowConfig {
            length_ms: ms,
            limit: 1,
        };
        assert_eq!(window_words(w(60_000)), "minute");
        assert_eq!(window_words(w(1_000)), "second");
        assert_eq!(window_words(w(10_000)), "10 seconds");
        assert_eq!(window_words(w(120_000)), "2 minutes");
        assert_eq!(window_words(w(250)), "250 milliseconds");
    }
}
