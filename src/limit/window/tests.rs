use super::*;
use proptest::prelude::*;
use std::collections::VecDeque;

fn wc(length_ms: u32, limit: u32) -> WindowConfig {
    WindowConfig { length_ms, limit }
}

fn tier(s_lim: u32, s_len: u32, b_lim: u32, b_len: u32) -> TierLimits {
    TierLimits::new(wc(s_len, s_lim), wc(b_len, b_lim))
}

fn premium() -> TierLimits {
    tier(1000, 60_000, 50, 1000)
}

/// Exact sliding log of the semantics: admit iff both trailing counts stay <= L.
struct Exact {
    w: [u64; 2],
    l: [u32; 2],
    log: [VecDeque<u64>; 2],
}

impl Exact {
    fn new(lim: &TierLimits) -> Exact {
        let (s, b) = (lim.sustained(), lim.burst());
        Exact {
            w: [s.length_ms.max(1) as u64, b.length_ms.max(1) as u64],
            l: [s.limit.min(MAX_LIMIT), b.limit.min(MAX_LIMIT)],
            log: [VecDeque::new(), VecDeque::new()],
        }
    }
    fn check(&mut self, t: u64) -> bool {
        for i in 0..2 {
            while let Some(&f) = self.log[i].front() {
                if f + self.w[i] <= t {
                    self.log[i].pop_front();
                } else {
                    break;
                }
            }
        }
        let ok = (0..2).all(|i| (self.log[i].len() as u32) < self.l[i]);
        if ok {
            for i in 0..2 {
                self.log[i].push_back(t);
            }
        }
        ok
    }
}

/// Number of entries of sorted `admitted` in `(t - span, t]`.
fn count_in(admitted: &[u64], t: u64, span: u64) -> usize {
    let lo = admitted.partition_point(|&a| a + span <= t);
    let hi = admitted.partition_point(|&a| a <= t);
    hi - lo
}

/// Max admitted in any trailing window of `span` ending at an admission.
fn max_in_window(admitted: &[u64], span: u64) -> usize {
    admitted
        .iter()
        .map(|&a| count_in(admitted, a, span))
        .max()
        .unwrap_or(0)
}

/// A state of whichever size `lim` needs (tests only: the table keeps wide states in a
/// side slab instead).
enum AnyState {
    N(WindowState),
    W(WideState),
}

impl AnyState {
    fn new(lim: &TierLimits) -> AnyState {
        if lim.is_wide() {
            AnyState::W(WideState::default())
        } else {
            AnyState::N(WindowState::default())
        }
    }
    fn check(&mut self, lim: &TierLimits, now: u64) -> Decision {
        match self {
            AnyState::N(s) => s.check(lim, now),
            AnyState::W(s) => s.check(lim, now),
        }
    }
    fn peek(&self, lim: &TierLimits, now: u64) -> Decision {
        match self {
            AnyState::N(s) => s.peek(lim, now),
            AnyState::W(s) => s.peek(lim, now),
        }
    }
    fn is_idle(&self, lim: &TierLimits, now: u64) -> bool {
        match self {
            AnyState::N(s) => s.is_idle(lim, now),
            AnyState::W(s) => s.is_idle(lim, now),
        }
    }
    fn rebase(&mut self, old: &TierLimits, new: &TierLimits, now: u64) {
        *self = match (&mut *self, new.is_wide()) {
            (AnyState::N(s), false) => AnyState::N(s.rebased::<6>(old, new, now)),
            (AnyState::N(s), true) => AnyState::W(s.rebased::<WIDE_WORDS>(old, new, now)),
            (AnyState::W(s), false) => AnyState::N(s.rebased::<6>(old, new, now)),
            (AnyState::W(s), true) => AnyState::W(s.rebased::<WIDE_WORDS>(old, new, now)),
        };
    }
}

#[test]
fn state_is_48_bytes() {
    assert_eq!(std::mem::size_of::<WindowState>(), 48);
    assert_eq!(std::mem::size_of::<WideState>(), 128);
    assert_eq!(WIDE.state_bits(), 1024);
    assert_eq!(STATE_BITS, 384);
    println!(
        "size_of::<WindowState>() = {} bytes, size_of::<Decision>() = {}, size_of::<TierLimits>() = {}",
        std::mem::size_of::<WindowState>(),
        std::mem::size_of::<Decision>(),
        std::mem::size_of::<TierLimits>()
    );
}

#[test]
fn default_tier_layouts() {
    // (sustained/min, burst/s) → expected (g_s, g_b) and counters.
    let cases = [
        ((1000, 50), (3000, 50), ((21, 8), (21, 6))),
        ((500, 25), (2500, 44), ((25, 7), (24, 5))),
        ((100, 10), (1875, 33), ((33, 5), (32, 4))),
        ((50, 5), (1429, 25), ((43, 4), (41, 3))),
    ];
    for ((s, b), g, layout) in cases {
        let t = tier(s, 60_000, b, 1000);
        let (e0, e1) = t.efficiency();
        println!(
            "{s}/min {b}/s: g = {:?} layout = {:?} efficiency = {:.4} / {:.4}",
            t.bucket_ms(),
            t.layout(),
            e0,
            e1
        );
        assert_eq!(t.bucket_ms(), g, "{s}/{b}");
        assert_eq!(t.layout(), layout, "{s}/{b}");
        assert!(e0 > 0.95 && e1 > 0.95);
        let ((n0, w0), (n1, w1)) = t.layout();
        assert!(n0 * w0 as u64 + n1 * w1 as u64 <= BUCKET_BITS as u64);
    }
}

#[test]
fn fastdiv_edges() {
    for d in [1u64, 2, 3, 7, 50, 1000, 60_000, 65_537, u32::MAX as u64] {
        let f = FastDiv::new(d);
        for n in [0, 1, d - 1, d, d + 1, 2 * d - 1, TIME_MASK, TIME_MASK - 1] {
            assert_eq!(f.div(n), n / d, "{n}/{d}");
        }
    }
}

proptest! {
    #[test]
    fn fastdiv_exact(n in 0u64..=TIME_MASK, d in 1u64..=u32::MAX as u64) {
        prop_assert_eq!(FastDiv::new(d).div(n), n / d);
    }
}

#[test]
fn burst_of_200_in_one_second_admits_exactly_50() {
    let lim = premium();
    let mut st = WindowState::default();
    let t0 = 10_000_000;
    let admitted = (0..200)
        .filter(|k| st.check(&lim, t0 + k * 5).admitted)
        .count();
    assert_eq!(admitted, 50);
    // All 50 are the first 50 (nothing frees up within the second).
    let mut st = WindowState::default();
    for k in 0..200u64 {
        let d = st.check(&lim, t0 + k * 5);
        assert_eq!(d.admitted, k < 50, "request {k}");
        if k < 50 {
            assert_eq!(d.burst_count, k as u32 + 1);
            assert_eq!(d.sustained_count, k as u32 + 1);
        } else {
            assert_eq!(d.burst_remaining, 0);
            assert!(d.retry_after_ms > 0);
        }
    }
}

#[test]
fn retrying_client_is_not_locked_out() {
    // 60/s burst limit; the client retries every 10 ms for 10 s.
    let lim = tier(65_535, 60_000, 60, 1000);
    let (_, g_b) = lim.bucket_ms();
    let mut st = WindowState::default();
    let mut ex = Exact::new(&lim);
    let t0 = 5_000_000u64;
    let mut ours = Vec::new();
    let mut exact = Vec::new();
    for k in 0..1000u64 {
        let t = t0 + k * 10;
        if st.check(&lim, t).admitted {
            ours.push(t);
        }
        if ex.check(t) {
            exact.push(t);
        }
    }
    assert_eq!(exact.len(), 600);
    // Every second the client gets through again within one bucket of the exact time.
    assert!(ours.len() as f64 >= 600.0 * 1000.0 / (1000.0 + g_b as f64) - 60.0);
    // The first admission after the initial burst comes as soon as the first
    // bucket has left the window: <= g_b - 1 ms after the exact sliding log.
    let first_exact = exact[60];
    let first_ours = ours[60];
    assert!(first_ours >= first_exact);
    assert!(
        first_ours - first_exact <= g_b - 1 + 10,
        "{first_ours} vs {first_exact}"
    );
    assert!(max_in_window(&ours, 1000) <= 60);
}

#[test]
fn retry_after_is_exact_for_the_burst_window() {
    let lim = premium();
    let mut st = WindowState::default();
    let t0 = 1_000_000u64;
    for k in 0..50 {
        assert!(st.check(&lim, t0 + k).admitted);
    }
    let d = st.check(&lim, t0 + 100);
    assert!(!d.admitted);
    let at = t0 + 100 + d.retry_after_ms;
    assert!(!st.peek(&lim, at - 1).admitted);
    assert!(st.peek(&lim, at).admitted);
    // The first 50 sit in one 50 ms bucket [t0, t0+49]; it leaves at t0+49+1000.
    let (_, g) = lim.bucket_ms();
    assert_eq!(at, (t0 / g + 1) * g - 1 + 1000);
}

#[test]
fn long_idle_becomes_idle_and_fresh() {
    let lim = premium();
    let mut st = WindowState::default();
    assert!(st.is_idle(&lim, 0));
    for k in 0..40 {
        st.check(&lim, 1000 + k * 30);
    }
    assert!(!st.is_idle(&lim, 2500));
    assert!(!st.is_idle(&lim, 30_000));
    // Sustained window: last admission ~2170 ms, bucket end 2999 + 60 s.
    assert!(!st.is_idle(&lim, 62_998));
    assert!(st.is_idle(&lim, 62_999));
    assert!(st.is_idle(&lim, 10_000_000));
    let d = st.check(&lim, 10_000_000);
    assert!(d.admitted);
    assert_eq!(d.sustained_count, 1);
    assert_eq!(d.burst_count, 1);
}

#[test]
fn the_binding_window_is_the_one_that_decides_the_wait() {
    // 6 per minute, 3 per second.
    let lim = tier(6, 60_000, 3, 1000);
    let mut st = WindowState::default();
    let t0 = 10_000_000;
    for k in 0..3 {
        let d = st.check(&lim, t0 + k);
        assert!(d.admitted && d.burst_binds, "less of the burst quota left");
    }
    // Only the burst window is full: it binds, and the wait is under a second.
    let d = st.check(&lim, t0 + 10);
    assert!(!d.admitted && d.burst_binds, "{d:?}");
    assert!(d.retry_after_ms <= 1000, "{d:?}");
    // Three more a second later: now both windows are full (3 in the last second, 6 in
    // the minute). The minute's wait is the later one, so the minute window binds.
    for k in 0..3 {
        assert!(st.check(&lim, t0 + 1_050 + k).admitted);
    }
    let d = st.check(&lim, t0 + 1_060);
    assert!(!d.admitted, "{d:?}");
    assert_eq!((d.sustained_remaining, d.burst_remaining), (0, 0));
    assert!(!d.burst_binds, "{d:?}");
    assert!(d.retry_after_ms > 50_000, "{d:?}");
}

#[test]
fn limits_up_to_65535_work() {
    let lim = tier(65_535, 60_000, 65_535, 1000);
    assert!(!lim.is_wide());
    let mut st = WindowState::default();
    let mut n = 0;
    for k in 0..70_000u64 {
        if st.check(&lim, 1_000_000 + k / 100).admitted {
            n += 1;
        }
    }
    assert_eq!(n, 65_535);
}

#[test]
fn limits_up_to_a_million_work_in_the_wide_state() {
    let big = tier(1_000_000, 60_000, 1_000_000, 1000);
    assert!(big.is_wide());
    assert_eq!(big.state_bytes(), 128);
    let mut st = WideState::default();
    let n = (0..1_000_010u64)
        .filter(|_| st.check(&big, 5).admitted)
        .count();
    assert_eq!(n, 1_000_000);
    // A larger configured limit is clamped to MAX_LIMIT (conservative).
    let huge = tier(5_000_000, 60_000, 5_000_000, 1000);
    let mut st = WideState::default();
    let n = (0..1_000_010u64)
        .filter(|_| st.check(&huge, 5).admitted)
        .count();
    assert_eq!(n, MAX_LIMIT as usize);
}

#[test]
fn zero_limit_denies_everything() {
    let lim = tier(0, 60_000, 5, 1000);
    let mut st = WindowState::default();
    let d = st.check(&lim, 100);
    assert!(!d.admitted);
    assert!(d.retry_after_ms > 0);
    assert!(st.is_idle(&lim, 100));
}

#[test]
fn denied_requests_touch_nothing() {
    let lim = tier(100, 60_000, 3, 1000);
    let mut st = WindowState::default();
    for k in 0..3 {
        assert!(st.check(&lim, 500 + k).admitted);
    }
    let before = st.clone();
    for k in 0..100 {
        assert!(!st.check(&lim, 503 + k).admitted);
    }
    // Only the internal clock moved; buckets and sums are identical.
    let mut a = before.clone();
    a.prepare(&lim, 602);
    assert_eq!(a, st);
}

/// Drives `lim` over `times` (sorted) and checks the hard guarantee and the bound.
fn drive_and_check(lim: &TierLimits, times: &[u64]) -> Result<Vec<u64>, TestCaseError> {
    drive_and_check_n::<6>(lim, times, true)
}

/// [`drive_and_check`] for a state of `N` words; `full` also checks `peek`,
/// `retry_after` and `reset` at every step (slow for dense runs).
fn drive_and_check_n<const N: usize>(
    lim: &TierLimits,
    times: &[u64],
    full: bool,
) -> Result<Vec<u64>, TestCaseError> {
    let mut st = State::<N>::default();
    let mut admitted: Vec<u64> = Vec::new();
    let (g0, g1) = lim.bucket_ms();
    let w = [
        lim.sustained().length_ms.max(1) as u64,
        lim.burst().length_ms.max(1) as u64,
    ];
    let l = [
        lim.sustained().limit.min(MAX_LIMIT) as usize,
        lim.burst().limit.min(MAX_LIMIT) as usize,
    ];
    let g = [g0, g1];
    for &t in times {
        let p = if full { Some(st.peek(lim, t)) } else { None };
        let d = st.check(lim, t);
        prop_assert!(p.is_none_or(|p| p.admitted == d.admitted));
        if d.admitted {
            admitted.push(t);
            // Counts are upper bounds of the true counts.
            prop_assert!(d.sustained_count as usize >= count_in(&admitted, t, w[0]));
            prop_assert!(d.burst_count as usize >= count_in(&admitted, t, w[1]));
            prop_assert_eq!(d.retry_after_ms, 0);
        } else {
            // (b) bound: some window already had L in (t - (W + g - 1), t].
            let ok = (0..2).any(|i| count_in(&admitted, t, w[i] + g[i] - 1) >= l[i]);
            prop_assert!(ok, "denied at {} beyond the bound", t);
            // retry_after is exact for this state.
            prop_assert!(d.retry_after_ms >= 1);
            if full && d.retry_after_ms < 10_000_000 {
                let at = t + d.retry_after_ms;
                prop_assert!(st.peek(lim, at).admitted, "retry at {} not admitted", at);
                prop_assert!(!st.peek(lim, at - 1).admitted);
            }
        }
        // reset: the binding window is empty at now + reset and not before.
        if full && d.reset_ms > 0 && d.reset_ms < 10_000_000 {
            let later = st.peek(lim, t + d.reset_ms);
            let before = st.peek(lim, t + d.reset_ms - 1);
            let cnt = |x: &Decision, i: usize| {
                if i == 0 {
                    x.sustained_count
                } else {
                    x.burst_count
                }
            };
            let exact = (0..2).any(|i| cnt(&later, i) == 0 && cnt(&before, i) > 0);
            prop_assert!(
                exact,
                "reset {} wrong: {:?} / {:?}",
                d.reset_ms,
                before,
                later
            );
        }
    }
    // (a) hard guarantee, brute force over the admitted list.
    for i in 0..2 {
        prop_assert!(
            max_in_window(&admitted, w[i]) <= l[i],
            "window {} over-admitted",
            i
        );
    }
    Ok(admitted)
}

/// Arrival times: a mix of bursts, steady streams, bucket-edge hits and long gaps.
fn arrivals() -> impl Strategy<Value = Vec<u64>> {
    let gap = prop_oneof![
        4 => Just(0u64),
        4 => 1u64..5,
        4 => 1u64..60,
        2 => 60u64..1500,
        1 => prop::sample::select(vec![49u64, 50, 51, 999, 1000, 1001, 2999, 3000, 3001, 59_999, 60_000, 60_001]),
        1 => 60_000u64..200_000,
    ];
    let run = (gap, 1usize..40, 0u64..3).prop_map(|(g, n, step)| (g, n, step));
    prop::collection::vec(run, 1..40).prop_map(|runs| {
        let mut t = 7_000_000u64;
        let mut out = Vec::new();
        for (g, n, step) in runs {
            t += g;
            for _ in 0..n {
                out.push(t);
                t += step;
            }
        }
        out
    })
}

fn limits_strategy() -> impl Strategy<Value = TierLimits> {
    prop_oneof![
        Just(premium()),
        Just(tier(500, 60_000, 25, 1000)),
        Just(tier(100, 60_000, 10, 1000)),
        Just(tier(50, 60_000, 5, 1000)),
        (1u32..300, 2u32..70_000, 1u32..60, 1u32..2000)
            .prop_map(|(ls, ws, lb, wb)| tier(ls, ws, lb, wb)),
        (1u32..20, 1u32..500, 1u32..20, 1u32..500)
            .prop_map(|(ls, ws, lb, wb)| tier(ls, ws, lb, wb)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn never_over_admits_and_under_admission_is_bounded(
        lim in limits_strategy(),
        times in arrivals(),
    ) {
        drive_and_check(&lim, &times)?;
    }

    #[test]
    fn rebase_is_conservative(
        old in limits_strategy(),
        new in limits_strategy(),
        before in arrivals(),
        after in arrivals(),
        gap in prop_oneof![Just(0u64), 0u64..2000, 0u64..70_000],
    ) {
        // History under `old`, then a reload to `new`; all admissions (before and
        // after) must respect the new limits in every window ending after the
        // reload. The history before obeyed the old limits since time 0.
        let mut st = WindowState::default();
        let mut admitted = Vec::new();
        for &t in &before {
            if st.check(&old, t).admitted {
                admitted.push(t);
            }
        }
        let t_reb = before.last().copied().unwrap_or(0) + gap;
        // A state that is idle at the reload restarts empty, exactly like a key
        // removed by idle expiry: its history is not counted any more.
        if st.is_idle(&old, t_reb) {
            admitted.clear();
        }
        st.rebase(&old, &new, t_reb);
        let shift = t_reb.saturating_sub(after[0]);
        let mut post = Vec::new();
        for &t in &after {
            let t = t + shift;
            if st.check(&new, t).admitted {
                admitted.push(t);
                post.push(t);
            }
        }
        let w = [new.sustained().length_ms.max(1) as u64, new.burst().length_ms.max(1) as u64];
        let l = [new.sustained().limit.min(MAX_LIMIT) as usize, new.burst().limit.min(MAX_LIMIT) as usize];
        for &a in &post {
            for i in 0..2 {
                prop_assert!(count_in(&admitted, a, w[i]) <= l[i],
                    "window {} over the new limit at {}", i, a);
            }
        }
        // And once the taint is gone the state behaves normally again: keep going.
        let end = admitted.last().copied().unwrap_or(t_reb) + 400_000;
        let mut later = Vec::new();
        for k in 0..50 {
            if st.check(&new, end + k * 7).admitted {
                later.push(end + k * 7);
            }
        }
        prop_assert!(!later.is_empty() || l[0] == 0 || l[1] == 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Reloads that change only the limits (same window lengths), several in a row:
    /// every admission respects the limits in force when it was made, counting all
    /// earlier admissions (nothing is untracked, so nothing is assumed).
    #[test]
    fn rebase_chain_is_conservative(
        w in (2u32..70_000, 1u32..2000),
        segs in prop::collection::vec((1u32..300, 1u32..60, arrivals()), 2..5),
    ) {
        let mut st = WindowState::default();
        let mut admitted: Vec<u64> = Vec::new();
        let mut prev: Option<TierLimits> = None;
        let mut t_end = 0u64;
        for (ls, lb, times) in segs {
            let lim = tier(ls, w.0, lb, w.1);
            let shift = t_end.saturating_sub(times[0]);
            if let Some(p) = &prev {
                if st.is_idle(p, t_end) {
                    admitted.clear();
                }
                st.rebase(p, &lim, t_end);
            }
            let l = [ls as usize, lb as usize];
            let wl = [w.0 as u64, w.1 as u64];
            for &t in &times {
                let t = t + shift;
                if st.check(&lim, t).admitted {
                    admitted.push(t);
                    for i in 0..2 {
                        prop_assert!(count_in(&admitted, t, wl[i]) <= l[i],
                            "window {} over {} at {}", i, l[i], t);
                    }
                }
                t_end = t;
            }
            prev = Some(lim);
        }
    }
}

fn any_limits() -> impl Strategy<Value = TierLimits> {
    let w = prop_oneof![
        Just(0u32),
        Just(1),
        1u32..100,
        100u32..100_000,
        Just(u32::MAX)
    ];
    let l = prop_oneof![
        Just(0u32),
        Just(1),
        1u32..100,
        60_000u32..70_000,
        Just(u32::MAX)
    ];
    (w.clone(), l.clone(), w, l).prop_map(|(ws, ls, wb, lb)| tier(ls, ws, lb, wb))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Extreme limits, windows, bursts and reloads: no panic or overflow (debug
    /// builds check arithmetic), and the bit layout always fits.
    #[test]
    fn extreme_inputs_never_panic(
        lims in prop::collection::vec(any_limits(), 1..4),
        ops in prop::collection::vec((0usize..4, 0u64..3, prop_oneof![Just(0u64), 0u64..100, Just(1u64 << 47)], 0u32..1500), 1..30),
    ) {
        for l in &lims {
            let ((n0, w0), (n1, w1)) = l.layout();
            let bits = if l.is_wide() { WIDE.bucket_bits() } else { BUCKET_BITS };
            prop_assert!(n0 * w0 as u64 + n1 * w1 as u64 <= bits as u64);
        }
        let mut st = AnyState::new(&lims[0]);
        let mut cur = 0usize;
        let mut now = 0u64;
        for (li, kind, dt, burst) in ops {
            now = now.saturating_add(dt);
            let next = li % lims.len();
            match kind {
                0 => {
                    for _ in 0..burst {
                        st.check(&lims[cur], now);
                    }
                }
                1 => {
                    st.rebase(&lims[cur], &lims[next], now);
                    cur = next;
                }
                _ => {
                    let d = st.peek(&lims[cur], now);
                    let _ = st.is_idle(&lims[cur], now);
                    prop_assert!(d.admitted || d.retry_after_ms > 0);
                }
            }
        }
    }
}

#[test]
fn rebase_to_same_limits_is_identity() {
    let lim = premium();
    let mut st = WindowState::default();
    for k in 0..30 {
        st.check(&lim, 100 + k * 3);
    }
    let before = st.clone();
    st.rebase(&lim, &premium(), 500);
    assert_eq!(st, before);
}

#[test]
fn rebase_to_lower_limit_keeps_key_blocked() {
    // 1000/min → 100/min with 300 admitted in the last seconds: stays blocked
    // until enough of them leave the window, then resumes.
    let old = premium();
    let new = tier(100, 60_000, 10, 1000);
    let mut st = WindowState::default();
    let mut n = 0;
    for k in 0..600u64 {
        if st.check(&old, 1_000_000 + k * 10).admitted {
            n += 1;
        }
    }
    assert_eq!(n, 300);
    st.rebase(&old, &new, 1_006_000);
    let d = st.check(&new, 1_006_001);
    assert!(!d.admitted);
    assert!(d.sustained_count >= 100);
    assert!(d.retry_after_ms > 50_000, "{d:?}");
    assert!(st.check(&new, 1_006_001 + 70_000).admitted);
}

#[test]
fn rebase_lengthened_window_assumes_old_use() {
    // 10 per 1 s (both windows) → 20 per 10 s: a client that used its quota just
    // now and was active before cannot get 20 more right away.
    let old = tier(10, 1000, 10, 1000);
    let new = tier(20, 10_000, 10, 1000);
    let mut st = WindowState::default();
    let mut adm = Vec::new();
    for k in 0..100u64 {
        let t = 50_000 + k * 100;
        if st.check(&old, t).admitted {
            adm.push(t);
        }
    }
    let now = 60_000;
    st.rebase(&old, &new, now);
    let mut post = 0;
    for k in 0..200u64 {
        let t = now + k * 10;
        if st.check(&new, t).admitted {
            adm.push(t);
            post += 1;
        }
    }
    // ~100 real admissions in the last 10 s: nothing more for a while.
    assert_eq!(post, 0);
    let d = st.peek(&new, now + 2000);
    assert!(d.sustained_count >= 20, "{d:?}");
    assert!(st.check(&new, now + 30_000).admitted);
}

/// Runs both algorithms over `times`; returns (ours, exact) admitted counts.
fn compare(lim: &TierLimits, times: impl Iterator<Item = u64>) -> (usize, usize) {
    compare_n::<6>(lim, times)
}

fn compare_n<const N: usize>(lim: &TierLimits, times: impl Iterator<Item = u64>) -> (usize, usize) {
    let mut st = State::<N>::default();
    let mut ex = Exact::new(lim);
    let (mut a, mut b) = (0, 0);
    let mut ours = Vec::new();
    for t in times {
        if st.check(lim, t).admitted {
            a += 1;
            ours.push(t);
        }
        if ex.check(t) {
            b += 1;
        }
    }
    assert!(
        max_in_window(&ours, lim.sustained().length_ms as u64) <= lim.sustained().limit as usize
    );
    assert!(max_in_window(&ours, lim.burst().length_ms as u64) <= lim.burst().limit as usize);
    (a, b)
}

#[test]
fn seed_burst_scenario_efficiency() {
    // the seed's burst scenario: a premium key at 60 req/s for 120 s.
    let lim = premium();
    let times = (0..7200u64).map(|k| 1_000_000 + k * 1000 / 60);
    let (ours, exact) = compare(&lim, times);
    let ratio = ours as f64 / exact as f64;
    println!("60 req/s for 120 s (premium): ours {ours}, exact {exact}, ratio {ratio:.4}");
    assert!(ratio >= 0.98, "{ours} vs {exact}");
    // Steady overload of the sustained window only (20/s vs 1000/min), 10 minutes.
    let times = (0..12_000u64).map(|k| 3_000_000 + k * 50);
    let (ours, exact) = compare(&lim, times);
    let ratio = ours as f64 / exact as f64;
    println!("20 req/s for 600 s (premium): ours {ours}, exact {exact}, ratio {ratio:.4}");
    let (e0, _) = lim.efficiency();
    assert!(ratio >= e0 - 0.02, "{ours} vs {exact}");
    // Burst-window overload only (60/s vs 50/s, sustained generous).
    let lim2 = tier(65_535, 60_000, 50, 1000);
    let times = (0..6000u64).map(|k| 2_000_000 + k * 1000 / 60);
    let (ours, exact) = compare(&lim2, times);
    let ratio = ours as f64 / exact as f64;
    println!("60 req/s vs 50/s burst for 100 s: ours {ours}, exact {exact}, ratio {ratio:.4}");
    let (_, e1) = lim2.efficiency();
    assert!(ratio >= e1 - 0.02, "{ours} vs {exact}");
}

#[test]
fn clock_going_backwards_is_harmless() {
    let lim = tier(10, 60_000, 5, 1000);
    let mut st = WindowState::default();
    for k in 0..5 {
        assert!(st.check(&lim, 10_000 + k).admitted);
    }
    // A stale timestamp is treated as "no time passed": still blocked.
    assert!(!st.check(&lim, 5).admitted);
    assert!(!st.check(&lim, 10_100).admitted);
}

#[test]
fn density_credit_helps_the_sustained_window() {
    // Premium: groups of 50 admissions every 1100 ms for 20 groups fill the
    // sustained window (1000). The oldest 3 s bucket [t0, t0+3000) holds the
    // groups at t0, t0+1100 and t0+2200 (150).
    let lim = premium();
    let mut st = WindowState::default();
    let mut ex = Exact::new(&lim);
    let t0 = 6_000_000u64; // a multiple of 3000: bucket-aligned
    for s in 0..20u64 {
        for k in 0..50 {
            assert!(st.check(&lim, t0 + s * 1100 + k).admitted);
            assert!(ex.check(t0 + s * 1100 + k));
        }
    }
    assert!(!st.check(&lim, t0 + 59_000).admitted);
    // At t0+61200 the groups of t0 and t0+1100 have left the sustained window: the
    // exact count is 900. A plain ring still counts the whole oldest bucket (1000)
    // and denies until t0+62999; the credit bounds the bucket's part still inside
    // ([t0+1201, t0+2999], 1799 ms) by 50 * ceil(1799/1000) = 100.
    let t = t0 + 61_200;
    let d = st.peek(&lim, t);
    assert!(d.admitted, "{d:?}");
    assert_eq!(d.sustained_count, 1000 - 150 + 100);
    // The burst window then allows 50, as it does for the exact log.
    assert_eq!(
        (0..60).filter(|k| st.check(&lim, t + k).admitted).count(),
        50
    );
    assert_eq!((0..60).filter(|k| ex.check(t + k)).count(), 50);
}

// ---- refund --------------------------------------------------------------------------

#[test]
fn refund_gives_the_slot_back_at_once() {
    let lim = tier(100, 60_000, 3, 1000);
    let mut st = WindowState::default();
    let t0 = 1_000_000;
    let tokens: Vec<RefundToken> = (0..3)
        .map(|k| st.check(&lim, t0 + k).token.expect("admitted: token"))
        .collect();
    let d = st.check(&lim, t0 + 10);
    assert!(!d.admitted && d.token.is_none(), "denials carry no token");
    assert_eq!(tokens[1].at_ms(), t0 + 1);
    assert!(st.refund(&lim, tokens[1], t0 + 11));
    let d = st.check(&lim, t0 + 12);
    assert!(d.admitted, "the refunded slot is free again: {d:?}");
    assert_eq!(d.burst_count, 3);
    assert!(!st.check(&lim, t0 + 13).admitted);
    // Refunding an admission whose bucket left both windows gives nothing back.
    assert!(!st.refund(&lim, tokens[0], t0 + 200_000));
    assert!(Decision::unlimited().token.is_none());
    assert!(!Decision::untracked(5).admitted);
}

#[test]
fn refund_after_a_rebase_gives_nothing_back() {
    // A rebase moves admissions between buckets (taint): which bucket holds the
    // refunded one is unknown, so nothing is taken out (conservative).
    let old = tier(100, 60_000, 3, 1000);
    let new = tier(100, 60_000, 4, 1000);
    let mut st = WindowState::default();
    let tok = st.check(&old, 5000).token.unwrap();
    st.check(&old, 5001);
    st.rebase(&old, &new, 5002);
    let before = st.peek(&new, 5003);
    assert!(!st.refund(&new, tok, 5003));
    assert_eq!(st.peek(&new, 5003), before);
}

#[test]
fn would_admit_agrees_with_peek() {
    let lim = tier(5, 60_000, 2, 1000);
    let mut st = WindowState::default();
    for t in [100, 101, 102, 900, 1500, 2500, 3000, 61_000, 70_000] {
        assert_eq!(st.would_admit(&lim, t), st.peek(&lim, t).admitted, "at {t}");
        st.check(&lim, t);
    }
}

/// One step of a refund history: a request at `gap` ms after the previous step, or a
/// refund of the `pick`-th still-counted admission.
#[derive(Clone, Debug)]
enum Step {
    Check(u64),
    Refund(usize),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        6 => prop_oneof![Just(0u64), 0u64..5, 0u64..100, 0u64..3000, Just(60_000u64)].prop_map(Step::Check),
        2 => any::<usize>().prop_map(Step::Refund),
    ];
    prop::collection::vec(step, 1..400)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Checks and refunds in any order, against the sliding log of the admissions that
    /// were not refunded: every admission leaves at most `L` of them in each trailing
    /// window; a refund whose admission is still inside both windows always succeeds.
    #[test]
    fn refunds_never_over_admit(lim in limits_strategy(), steps in steps()) {
        let mut st = WindowState::default();
        let w = [lim.sustained().length_ms.max(1) as u64, lim.burst().length_ms.max(1) as u64];
        let l = [lim.sustained().limit.min(MAX_LIMIT) as usize, lim.burst().limit.min(MAX_LIMIT) as usize];
        // Counted admissions (sorted by time) with their tokens.
        let mut live: Vec<(u64, RefundToken)> = Vec::new();
        let mut now = 9_000_000u64;
        for step in steps {
            match step {
                Step::Check(gap) => {
                    now += gap;
                    let d = st.check(&lim, now);
                    prop_assert_eq!(d.admitted, d.token.is_some());
                    if let Some(tok) = d.token {
                        prop_assert_eq!(tok.at_ms(), now);
                        live.push((now, tok));
                        let times: Vec<u64> = live.iter().map(|x| x.0).collect();
                        for i in 0..2 {
                            prop_assert!(count_in(&times, now, w[i]) <= l[i],
                                "window {} over {} at {}", i, l[i], now);
                        }
                    }
                }
                Step::Refund(pick) if !live.is_empty() => {
                    let (t, tok) = live.remove(pick % live.len());
                    let given = st.refund(&lim, tok, now);
                    if now < t + w[0].min(w[1]) {
                        prop_assert!(given, "refund of {} at {} refused", t, now);
                    }
                }
                Step::Refund(_) => {}
            }
        }
    }
}

// ---- large limits (the wide state) ----------------------------------------------------

#[test]
fn large_tier_layouts() {
    // (per min, per s) → worst-case efficiency of the wide layout, both windows.
    for (s, b) in [
        (300_000, 10_000),
        (300_000, 300_000),
        (1_000_000, 20_000),
        (1_000_000, 1_000_000),
        (70_000, 50),
    ] {
        let t = tier(s, 60_000, b, 1000);
        let (e0, e1) = t.efficiency();
        println!(
            "{s}/min {b}/s: g = {:?} layout = {:?} efficiency = {:.4} / {:.4}",
            t.bucket_ms(),
            t.layout(),
            e0,
            e1
        );
        assert!(t.is_wide());
        assert!(e0 > 0.95 && e1 > 0.95, "{s}/{b}: {e0} {e1}");
        let ((n0, w0), (n1, w1)) = t.layout();
        assert!(n0 * w0 as u64 + n1 * w1 as u64 <= WIDE.bucket_bits() as u64);
    }
    // The default tiers keep the narrow state.
    assert!(!premium().is_wide());
    assert_eq!(premium().state_bytes(), 48);
}

/// Arrivals dense enough to reach limits in the hundreds of thousands: runs of up to
/// 3,000 requests at one instant, separated by short gaps.
fn dense_arrivals() -> impl Strategy<Value = Vec<u64>> {
    let gap = prop_oneof![4 => 0u64..3, 2 => 3u64..40, 1 => 40u64..400];
    prop::collection::vec((gap, 1usize..3000), 1..400).prop_map(|runs| {
        let mut t = 9_000_000u64;
        let mut out = Vec::new();
        for (g, n) in runs {
            t += g;
            out.extend(std::iter::repeat_n(t, n));
        }
        out
    })
}

fn wide_limits() -> impl Strategy<Value = TierLimits> {
    prop_oneof![
        Just(tier(300_000, 600, 10_000, 10)),
        Just(tier(300_000, 2_000, 300_000, 50)),
        (65_536u32..400_000, 50u32..3_000, 500u32..70_000, 1u32..100)
            .prop_map(|(ls, ws, lb, wb)| tier(ls, ws, lb, wb)),
        (1u32..1000, 50u32..3_000, 65_536u32..200_000, 1u32..100)
            .prop_map(|(ls, ws, lb, wb)| tier(ls, ws, lb, wb)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The hard guarantee and the under-admission bound with limits above 65,535
    /// (short windows so that proptest reaches the limits): brute force against the
    /// admitted list, as for the narrow state.
    #[test]
    fn wide_never_over_admits_and_under_admission_is_bounded(
        lim in wide_limits(),
        times in dense_arrivals(),
    ) {
        prop_assert!(lim.is_wide());
        drive_and_check_n::<WIDE_WORDS>(&lim, &times, false)?;
    }
}

/// A tier of 300,000 per minute is enforced exactly — never more than 300,000
/// in any trailing minute, and a client offering 6,000/s for 75 s gets at least the
/// layout's efficiency of what the exact sliding log admits.
#[test]
fn per_minute_300000_is_exact() {
    let lim = tier(300_000, 60_000, 10_000, 1000);
    // 6 requests per ms: 6,000/s, over the sustained limit's 5,000/s.
    let times: Vec<u64> = (0..450_000u64).map(|k| 4_000_000 + k / 6).collect();
    let (ours, exact) = compare_n::<WIDE_WORDS>(&lim, times.iter().copied());
    let (e0, _) = lim.efficiency();
    let ratio = ours as f64 / exact as f64;
    println!("300000/min at 6000/s for 75 s: ours {ours}, exact {exact}, ratio {ratio:.4}");
    assert!(exact > 300_000, "the test must reach the limit: {exact}");
    assert!(ratio >= e0 - 0.01, "{ours} vs {exact}");
}

#[test]
fn rebase_moves_between_state_sizes() {
    let small = tier(1000, 60_000, 50, 1000);
    let big = tier(300_000, 60_000, 10_000, 1000);
    let mut st = WindowState::default();
    for k in 0..50 {
        assert!(st.check(&small, 1000 + k).admitted);
    }
    // Narrow → wide keeps the 50 admissions: 9,950 more this second, not 10,000.
    let mut wide: WideState = st.rebased(&small, &big, 1100);
    let n = (0..20_000)
        .filter(|_| wide.check(&big, 1100).admitted)
        .count();
    assert_eq!(n, 9_950);
    // Wide → narrow: the 10,000 this second keep the key blocked under the small tier.
    let mut back: WindowState = wide.rebased(&big, &small, 1200);
    assert!(!back.check(&small, 1200).admitted);
    assert!(
        !back.check(&small, 50_000).admitted,
        "the minute still holds them"
    );
}

#[test]
fn extra_admissions_elsewhere_count_against_both_windows() {
    let lim = premium();
    let mut st = WindowState::default();
    // 45 admitted elsewhere in the burst window: 5 more here, then denied.
    let n = (0..20)
        .filter(|_| st.check_with(&lim, 1000, [100, 45]).admitted)
        .count();
    assert_eq!(n, 5);
    let d = st.peek_with(&lim, 1000, [100, 45]);
    assert!(!d.admitted);
    assert_eq!((d.sustained_count, d.burst_count), (105, 50));
    assert_eq!(d.burst_remaining, 0);
    // Others alone at the limit: denied, with a retry hint of one bucket.
    let mut fresh = WindowState::default();
    let d = fresh.check_with(&lim, 1000, [0, 50]);
    assert!(!d.admitted && d.retry_after_ms > 0);
    assert!(fresh.is_idle(&lim, 1000), "nothing recorded");
    // The sustained window binds too.
    let n = (0..20)
        .filter(|_| st.check_with(&lim, 5000, [994, 0]).admitted)
        .count();
    assert_eq!(n, 1, "1000 - 994 - 5 already here");
}

// ---- requests of several units (a rule's `cost`) -----------------------------------------

/// Units admitted in `(t - span, t]` of `log` (time, cost).
fn units_in(log: &[(u64, u32)], t: u64, span: u64) -> u64 {
    log.iter()
        .filter(|&&(a, _)| a <= t && a + span > t)
        .map(|&(_, c)| u64::from(c))
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Requests of random costs, some given back: the units of the requests that were not
    /// given back never exceed the limit in any trailing window; a denial says when a
    /// request of that cost is admitted (exact); `would_admit_cost` agrees with `check_cost`.
    #[test]
    fn costs_never_over_admit_and_refund_whole(
        lim in limits_strategy(),
        reqs in prop::collection::vec((0u64..400, 1u32..6, any::<bool>()), 1..300),
    ) {
        let mut st = WindowState::default();
        let w = [lim.sustained().length_ms.max(1) as u64, lim.burst().length_ms.max(1) as u64];
        let l = [u64::from(lim.sustained().limit), u64::from(lim.burst().limit)];
        let mut log: Vec<(u64, u32)> = Vec::new();
        let mut now = 5_000_000u64;
        for (gap, cost, give_back) in reqs {
            now += gap;
            let would = st.would_admit_cost(&lim, now, cost);
            let d = st.check_cost(&lim, now, [0, 0], cost);
            prop_assert_eq!(would, d.admitted);
            if !d.admitted {
                prop_assert!(d.retry_after_ms >= 1);
                if d.retry_after_ms < 1_000_000 && lim.fits(cost) {
                    let at = now + d.retry_after_ms;
                    prop_assert!(st.would_admit_cost(&lim, at, cost), "retry at {} refused", at);
                    prop_assert!(!st.would_admit_cost(&lim, at - 1, cost));
                }
                continue;
            }
            log.push((now, cost));
            for i in 0..2 {
                prop_assert!(units_in(&log, now, w[i]) <= l[i], "window {} over at {}", i, now);
            }
            if give_back {
                prop_assert!(st.refund_cost(&lim, d.token.unwrap(), now, cost));
                log.pop();
                prop_assert!(st.would_admit_cost(&lim, now, cost), "a refund gives the room back");
            }
        }
    }
}

#[test]
fn a_request_of_cost_five_takes_five_units() {
    let lim = tier(100, 60_000, 10, 1000);
    let mut st = WindowState::default();
    let d = st.check_cost(&lim, 1000, [0, 0], 5);
    assert!(d.admitted);
    assert_eq!((d.sustained_count, d.burst_count), (5, 5));
    assert!(st.check_cost(&lim, 1001, [0, 0], 5).admitted);
    let d = st.check_cost(&lim, 1002, [0, 0], 1);
    assert!(!d.admitted, "10 of 10 units in the second");
    assert_eq!(d.burst_count, 10, "the denial counted nothing");
    assert!(!lim.fits(11) && lim.fits(10));
}
