//! Why: the window check runs once per limited request on the owner core; this
//! measures its admitted and denied paths against a naive exact sliding log (a
//! `VecDeque` of admission times per window, the obvious correct baseline whose memory
//! grows with the limit: 1000 + 50 timestamps per premium key vs 48 bytes).
//!
//! Run: `cargo bench --bench window -- --warm-up-time 1 --measurement-time 3`.
//! Record the machine (CPU model, cores, kernel, rustc) beside any figure you keep.

use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate::config::WindowConfig;
use tollgate::limit::{TierLimits, WindowState};

fn premium() -> TierLimits {
    TierLimits::new(
        WindowConfig {
            length_ms: 60_000,
            limit: 1000,
        },
        WindowConfig {
            length_ms: 1000,
            limit: 50,
        },
    )
}

/// The exact semantics, naively: one log of admission times per window.
struct SlidingLog {
    w: [u64; 2],
    l: [usize; 2],
    log: [VecDeque<u64>; 2],
}

impl SlidingLog {
    fn new() -> SlidingLog {
        SlidingLog {
            w: [60_000, 1000],
            l: [1000, 50],
            log: [VecDeque::with_capacity(1000), VecDeque::with_capacity(50)],
        }
    }
    fn check(&mut self, t: u64) -> bool {
        for i in 0..2 {
            while self.log[i].front().is_some_and(|&f| f + self.w[i] <= t) {
                self.log[i].pop_front();
            }
        }
        let ok = (0..2).all(|i| self.log[i].len() < self.l[i]);
        if ok {
            self.log[0].push_back(t);
            self.log[1].push_back(t);
        }
        ok
    }
}

fn bench(c: &mut Criterion) {
    let lim = premium();
    let mut g = c.benchmark_group("window");

    // Admitted: 10 req/s (every 100 ms), below both limits; every check advances the
    // clock, so bucket expiry runs as in production.
    g.bench_function("check_admitted", |b| {
        let mut st = WindowState::default();
        let mut t = 1_000_000u64;
        b.iter(|| {
            t += 100;
            let d = st.check(&lim, black_box(t));
            debug_assert!(d.admitted);
            black_box(d)
        })
    });
    g.bench_function("sliding_log_admitted", |b| {
        let mut st = SlidingLog::new();
        let mut t = 1_000_000u64;
        b.iter(|| {
            t += 100;
            black_box(st.check(black_box(t)))
        })
    });

    // Denied: the burst window is full; the clock stands still (a client hammering),
    // so each check computes retry-after and reset from the ring (O(buckets)).
    g.bench_function("check_denied", |b| {
        let mut st = WindowState::default();
        let t = 2_000_000u64;
        for k in 0..50 {
            assert!(st.check(&lim, t + k).admitted);
        }
        assert!(!st.check(&lim, t + 60).admitted);
        b.iter(|| {
            let d = st.check(&lim, black_box(t + 60));
            debug_assert!(!d.admitted);
            black_box(d)
        })
    });
    // Denied by the sustained window (longer ring walk for retry-after).
    g.bench_function("check_denied_sustained", |b| {
        let mut st = WindowState::default();
        let mut t = 3_000_000u64;
        for _ in 0..1000 {
            assert!(st.check(&lim, t).admitted);
            t += 40;
        }
        assert!(!st.check(&lim, t).admitted);
        b.iter(|| black_box(st.check(&lim, black_box(t))))
    });
    g.bench_function("sliding_log_denied", |b| {
        let mut st = SlidingLog::new();
        let t = 2_000_000u64;
        for k in 0..50 {
            assert!(st.check(t + k));
        }
        b.iter(|| black_box(st.check(black_box(t + 60))))
    });
    g.bench_function("peek", |b| {
        let mut st = WindowState::default();
        for k in 0..30 {
            st.check(&lim, 4_000_000 + k * 100);
        }
        b.iter(|| black_box(st.peek(&lim, black_box(4_003_500))))
    });
    g.bench_function("tier_limits_new", |b| {
        let s = WindowConfig {
            length_ms: 60_000,
            limit: 1000,
        };
        let w = WindowConfig {
            length_ms: 1000,
            limit: 50,
        };
        b.iter(|| black_box(TierLimits::new(black_box(s), black_box(w))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
