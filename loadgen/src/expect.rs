//! What the spec's semantics say should happen, and whether the target kept its promise.
//! [`simulate`] replays an intended schedule through the exact sliding-window rule (admitted iff,
//! after admitting, every trailing window holds ≤ limit; denials are not counted).
//! [`accuracy`] finds the most admissions of one identity in any trailing window from the
//! measured (send, response) intervals. Owns the limit being checked ([`Window`]) and one key's
//! expected outcome ([`KeyExpect`]). Pure functions over timestamps; no I/O.

use serde::Serialize;
use std::collections::VecDeque;

/// One sliding window of a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    pub limit: u32,
    pub window_ns: u64,
}

/// Expected outcome of one key's measured-phase requests under the exact semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct KeyExpect {
    pub offered: u64,
    pub admitted: u64,
    pub denied: u64,
}

/// Exact sliding-window admission over sorted request times (ns). Returns one flag per request.
pub fn simulate(times: &[u64], windows: &[Window]) -> Vec<bool> {
    let mut admitted: Vec<VecDeque<u64>> = windows.iter().map(|_| VecDeque::new()).collect();
    let mut out = Vec::with_capacity(times.len());
    for &t in times {
        for (w, q) in windows.iter().zip(admitted.iter_mut()) {
            // Window (t - W, t]: drop admissions at or before t - W.
            while q.front().is_some_and(|&a| a + w.window_ns <= t) {
                q.pop_front();
            }
        }
        let ok = windows
            .iter()
            .zip(&admitted)
            .all(|(w, q)| q.len() < w.limit as usize);
        if ok {
            for q in admitted.iter_mut() {
                q.push_back(t);
            }
        }
        out.push(ok);
    }
    out
}

/// Accuracy of one window for one identity.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowCheck {
    pub limit: u32,
    pub window_ms: f64,
    /// Most admissions in any trailing window, placing each at its response time.
    pub max_by_response: u32,
    /// Most admissions that certainly fell inside one trailing window: requests sent after the
    /// window opened and answered before it closed (the limiter decided between the two).
    pub max_certain: u32,
    /// `max_certain <= limit`.
    pub pass: bool,
}

/// Accuracy check of one identity.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Accuracy {
    pub identity: String,
    pub admitted: u64,
    /// Longest send→response time of an admitted request (the tolerance of response-time placement).
    pub tolerance_ms: f64,
    pub windows: Vec<WindowCheck>,
    pub pass: bool,
}

/// Fenwick tree of counts.
struct Fenwick(Vec<i64>);

impl Fenwick {
    fn add(&mut self, mut i: usize, v: i64) {
        i += 1;
        while i < self.0.len() {
            self.0[i] += v;
            i += i & i.wrapping_neg();
        }
    }
    /// Sum of [0, i).
    fn prefix(&self, mut i: usize) -> i64 {
        let mut s = 0;
        while i > 0 {
            s += self.0[i];
            i -= i & i.wrapping_neg();
        }
        s
    }
}

/// Most points of `recv` in any interval (t - w, t].
fn max_in_window(recv_sorted: &[u64], w: u64) -> u32 {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..recv_sorted.len() {
        let t = recv_sorted[hi];
        while recv_sorted[lo] + w <= t {
            lo += 1;
        }
        best = best.max(hi + 1 - lo);
    }
    best as u32
}

/// Most intervals [send, recv] that lie inside one (t - w, t].
fn max_certain(iv: &[(u64, u64)], w: u64) -> u32 {
    // iv sorted by recv.
    let mut sends: Vec<u64> = iv.iter().map(|x| x.0).collect();
    sends.sort_unstable();
    let rank = |s: u64, sends: &[u64]| sends.partition_point(|&x| x < s);
    let mut fw = Fenwick(vec![0; sends.len() + 1]);
    let mut best = 0i64;
    let (mut lo, mut hi) = (0usize, 0usize);
    let mut in_set = 0i64;
    // Rank of each interval's send, with duplicates spread so each gets its own slot.
    let mut used = vec![0usize; sends.len()];
    let mut slot = vec![0usize; iv.len()];
    for (i, x) in iv.iter().enumerate() {
        let r = rank(x.0, &sends);
        slot[i] = r + used[r];
        used[r] += 1;
    }
    while hi < iv.len() {
        let t = iv[hi].1;
        while hi < iv.len() && iv[hi].1 == t {
            fw.add(slot[hi], 1);
            in_set += 1;
            hi += 1;
        }
        while iv[lo].1 + w <= t {
            fw.add(slot[lo], -1);
            in_set -= 1;
            lo += 1;
        }
        // Count with send > t - w among the set.
        let cut = t.saturating_sub(w);
        let not_after = if t >= w {
            sends.partition_point(|&x| x <= cut)
        } else {
            0
        };
        let c = in_set - fw.prefix(not_after);
        best = best.max(c);
    }
    best as u32
}

/// Checks one identity's admitted (send_ns, recv_ns) intervals against its windows.
pub fn accuracy(identity: &str, admitted: &[(u64, u64)], windows: &[Window]) -> Accuracy {
    let mut iv = admitted.to_vec();
    iv.sort_unstable_by_key(|x| (x.1, x.0));
    let recv: Vec<u64> = iv.iter().map(|x| x.1).collect();
    let tol = iv
        .iter()
        .map(|x| x.1.saturating_sub(x.0))
        .max()
        .unwrap_or(0);
    let checks: Vec<WindowCheck> = windows
        .iter()
        .map(|w| {
            let by_resp = if iv.is_empty() {
                0
            } else {
                max_in_window(&recv, w.window_ns)
            };
            let certain = if iv.is_empty() {
                0
            } else {
                max_certain(&iv, w.window_ns)
            };
            WindowCheck {
                limit: w.limit,
                window_ms: w.window_ns as f64 / 1e6,
                max_by_response: by_resp,
                max_certain: certain,
                pass: certain <= w.limit,
            }
        })
        .collect();
    Accuracy {
        identity: identity.into(),
        admitted: iv.len() as u64,
        tolerance_ms: tol as f64 / 1e6,
        pass: checks.iter().all(|c| c.pass),
        windows: checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(limit: u32, ms: u64) -> Window {
        Window {
            limit,
            window_ns: ms * 1_000_000,
        }
    }

    #[test]
    fn constant_overload_admits_the_limit_per_window() {
        // 60/s for 10 s against 50/s: exactly 50 per second admitted in steady state.
        let times: Vec<u64> = (0..600).map(|k| k * 1_000_000_000 / 60 + 1).collect();
        let adm = simulate(&times, &[w(1000, 60_000), w(50, 1000)]);
        let n = adm.iter().filter(|&&a| a).count();
        assert_eq!(n, 500);
        // Every trailing second holds ≤ 50 admissions.
        let at: Vec<u64> = times
            .iter()
            .zip(&adm)
            .filter(|x| *x.1)
            .map(|x| *x.0)
            .collect();
        assert_eq!(max_in_window(&at, 1_000_000_000), 50);
    }

    #[test]
    fn denials_are_not_counted() {
        // limit 2 per 1s; requests at 0, .1, .2 (denied), 1.05 (admitted since 0 left).
        let ms = |x: u64| x * 1_000_000;
        let adm = simulate(
            &[ms(0), ms(100), ms(200), ms(1000), ms(1050)],
            &[w(2, 1000)],
        );
        assert_eq!(adm, vec![true, true, false, true, false]);
        // The 1000 ms request: the admission at 0 is exactly at t - W, so it has left.
    }

    #[test]
    fn sustained_window_binds() {
        // 10 per 60 s, 1/s offered for 120 s: 10 in the first minute, 10 in the second.
        let times: Vec<u64> = (0..120).map(|k| k * 1_000_000_000).collect();
        let adm = simulate(&times, &[w(10, 60_000), w(5, 1000)]);
        let first: usize = adm[..60].iter().filter(|&&a| a).count();
        let second: usize = adm[60..].iter().filter(|&&a| a).count();
        assert_eq!((first, second), (10, 10));
    }

    #[test]
    fn accuracy_passes_and_fails() {
        let win = [w(5, 1000)];
        // 5 per second, each answered in 1 ms: passes.
        let good: Vec<(u64, u64)> = (0..50)
            .map(|k| (k * 200_000_000, k * 200_000_000 + 1_000_000))
            .collect();
        let a = accuracy("k", &good, &win);
        assert!(a.pass, "{a:?}");
        assert_eq!(a.windows[0].max_certain, 5);
        assert_eq!(a.windows[0].max_by_response, 5);
        // 6 inside 500 ms: a certain violation.
        let mut bad = good.clone();
        bad.push((100_000_000, 101_000_000));
        let a = accuracy("k", &bad, &win);
        assert!(!a.pass);
        assert_eq!(a.windows[0].max_certain, 6);
        // Slow responses blur placement: 6 admissions by response time, but with a 1050 ms
        // service time on one, it can't be proven that all 6 fell in one window.
        let mut blurred = good.clone();
        blurred.push((0, 1_050_000_000));
        let blurred: Vec<_> = blurred
            .into_iter()
            .filter(|x| x.1 < 1_100_000_000)
            .collect();
        let a = accuracy("k", &blurred, &win);
        assert!(a.windows[0].max_by_response >= 6);
        assert_eq!(a.windows[0].max_certain, 5);
        assert!(a.pass);
        assert!((a.tolerance_ms - 1050.0).abs() < 1e-9);
    }

    #[test]
    fn certain_count_matches_brute_force() {
        let mut rng = crate::plan::Rng::new(42);
        for _ in 0..50 {
            let n = 1 + rng.below(60) as usize;
            let iv: Vec<(u64, u64)> = (0..n)
                .map(|_| {
                    let s = rng.below(5000);
                    (s, s + rng.below(800))
                })
                .collect();
            let wl = 1 + rng.below(2000);
            let brute = iv
                .iter()
                .map(|&(_, t)| iv.iter().filter(|&&(s, r)| r <= t && s + wl > t).count())
                .max()
                .unwrap() as u32;
            let a = accuracy(
                "x",
                &iv,
                &[Window {
                    limit: 0,
                    window_ns: wl,
                }],
            );
            assert_eq!(a.windows[0].max_certain, brute, "{iv:?} w={wl}");
        }
    }
}
