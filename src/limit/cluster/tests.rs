//! The algorithm on a virtual clock: N simulated instances, each a [`Shard`] (one core:
//! a key's count is exact within an instance whatever its core count) and a [`Tracker`]
//! and [`Link`] (its sync thread), sharing one [`MemStore`]. Each millisecond: store calls
//! due are applied and answered after their round trip, cores flush every `F`, sync
//! threads tick every `T` (each with its own phase), requests arrive on their schedule.

use super::*;
use crate::limit::{Shard, WindowConfig};
use proptest::prelude::*;

const KEY: &[u8] = b"AKIACLUSTER000000001";

fn tier(s: u32, ws: u32, b: u32, wb: u32) -> TierLimits {
    TierLimits::new(
        WindowConfig {
            length_ms: ws,
            limit: s,
        },
        WindowConfig {
            length_ms: wb,
            limit: b,
        },
    )
}

/// One instance: a shard, its sync thread's state and the script call under way.
struct Inst {
    id: String,
    shard: Shard,
    tracker: Tracker,
    link: Link,
    /// Tick phase (ms) and requests per second of the key offered here, from `start`.
    phase: u64,
    rate: u64,
    start: u64,
    /// (applied at, answered at, batch, reply): the call under way.
    call: Option<(u64, u64, Batch, Option<Reply>)>,
    admitted: Vec<u64>,
}

struct Sim {
    lim: TierLimits,
    coarse: Coarse,
    flush: u64,
    tick: u64,
    rtt: u64,
    store: MemStore,
    /// Store answers nothing while `down` holds (a stopped Redis).
    down: Option<(u64, u64)>,
    insts: Vec<Inst>,
}

impl Sim {
    fn new(lim: TierLimits, tick: u64, rtt: u64, insts: &[(u64, u64, u64)], mode: Mode) -> Sim {
        let insts = insts
            .iter()
            .enumerate()
            .map(|(i, &(phase, rate, start))| {
                let mut shard = Shard::new(1000);
                shard.set_mode(mode);
                Inst {
                    id: format!("i{i}"),
                    shard,
                    tracker: Tracker::default(),
                    link: Link::new(Policy::LocalShare),
                    phase,
                    rate,
                    start,
                    call: None,
                    admitted: Vec::new(),
                }
            })
            .collect();
        Sim {
            coarse: Coarse::of(&lim),
            lim,
            flush: FLUSH_MS,
            tick,
            rtt,
            store: MemStore::default(),
            down: None,
            insts,
        }
    }

    fn step(&mut self, t: u64) {
        let alive_ttl = 10 * self.tick;
        let down = self.down.is_some_and(|(a, b)| (a..b).contains(&t));
        for x in &mut self.insts {
            if x.shard.mode() == Mode::Alone {
                continue;
            }
            if t % self.flush == 0 {
                let (tr, c) = (&mut x.tracker, self.coarse);
                x.shard.take_pending(|s, tier, n| {
                    tr.add(s, tier, 0, c, t, n);
                    true
                });
            }
            if t % self.tick == x.phase && x.call.is_none() {
                let batch = x.tracker.batch(t);
                x.call = Some((t + self.rtt / 2, t + self.rtt.max(1), batch, None));
            }
            if let Some((apply, _, batch, reply)) = &mut x.call
                && *apply == t
                && !down
            {
                *reply = Some(self.store.eval(&x.id, alive_ttl, batch));
            }
            if x.call.as_ref().is_some_and(|c| c.1 == t) {
                let (_, _, batch, reply) = x.call.take().unwrap();
                let changed = match reply {
                    Some(r) => {
                        for n in x.tracker.confirm(&batch, &r) {
                            assert!(
                                x.shard
                                    .set_others(&n.subject, n.tier, &self.lim, n.others, t)
                            );
                        }
                        x.link.answered(r.alive)
                    }
                    None => {
                        x.tracker.failed();
                        x.link.failed()
                    }
                };
                if let Some(m) = changed {
                    x.shard.set_mode(m);
                }
            }
        }
        for x in &mut self.insts {
            if t < x.start {
                continue;
            }
            // Uniform arrivals at `rate` per second, offset by the instance's phase.
            let k = t - x.start + x.phase;
            let n = (k + 1) * x.rate / 1000 - k * x.rate / 1000;
            for _ in 0..n {
                if x.shard.check(KEY, 0, &self.lim, t).admitted {
                    x.admitted.push(t);
                }
            }
        }
    }

    fn run(&mut self, from: u64, to: u64) {
        for t in from..to {
            self.step(t);
        }
    }

    /// Longest store delay `D` of the bound.
    fn d(&self) -> u64 {
        self.flush + 2 * self.tick + 2 * self.rtt.max(1)
    }
}

/// Most entries of sorted `ts` in any `(t - span, t]`.
fn max_in(ts: &[u64], span: u64) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..ts.len() {
        while ts[lo] + span <= ts[hi] {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// (most admitted in any trailing window, bound) for window `i`: the limit plus
/// `(N - 1) · A(D)`, `A(D)` the most one instance admitted in any `D` ms; the bound is
/// capped at `N · L`.
fn measured(sim: &Sim, i: usize) -> (usize, usize) {
    let mut all: Vec<u64> = sim.insts.iter().flat_map(|x| x.admitted.clone()).collect();
    all.sort_unstable();
    let (w, l) = if i == 0 {
        (sim.lim.sustained().length_ms, sim.lim.sustained().limit)
    } else {
        (sim.lim.burst().length_ms, sim.lim.burst().limit)
    };
    let n = sim.insts.len();
    let a = sim
        .insts
        .iter()
        .map(|x| max_in(&x.admitted, sim.d()))
        .max()
        .unwrap_or(0);
    let bound = (l as usize + (n - 1) * a).min(n * l as usize);
    (max_in(&all, w as u64), bound)
}

fn assert_bound(sim: &Sim, what: &str) -> [usize; 2] {
    let mut out = [0; 2];
    for (i, o) in out.iter_mut().enumerate() {
        let (got, bound) = measured(sim, i);
        println!("{what}: window {i}: most admitted {got}, bound {bound}");
        assert!(got <= bound, "{what}: window {i}: {got} > bound {bound}");
        *o = got;
    }
    out
}

#[test]
fn two_and_three_instances_at_three_times_the_limit() {
    let premium = tier(1000, 60_000, 50, 1000);
    for n in [2u64, 3] {
        // One key offered 150/s (3x its 50/s), spread evenly, ticks out of phase.
        let insts: Vec<_> = (0..n).map(|i| (i * 37 % 100, 150 / n, 0)).collect();
        let mut sim = Sim::new(premium.clone(), 100, 2, &insts, Mode::Synced);
        sim.run(0, 30_000);
        let [_, burst] = assert_bound(&sim, &format!("{n} instances"));
        assert!(burst >= 50, "the limit is reached");
        // The same traffic without the cluster: each instance enforces the whole limit.
        let mut alone = Sim::new(premium.clone(), 100, 2, &insts, Mode::Alone);
        alone.run(0, 30_000);
        let (got, _) = measured(&alone, 1);
        println!("{n} instances alone: most admitted in a second {got}");
        assert_eq!(got, 50 * n as usize, "N instances alone: N x the limit");
        let (bound_alone, bound) = (got, measured(&sim, 1).1);
        assert!(bound < bound_alone, "the bound is a real improvement");
    }
}

#[test]
fn a_late_instance_sees_nothing_at_first_and_is_still_within_the_bound() {
    // Instance 0 uses the key alone for 5 s, instance 1 starts with a burst later.
    let lim = tier(1000, 60_000, 100, 1000);
    let mut sim = Sim::new(lim, 100, 4, &[(0, 90, 0), (63, 400, 5_250)], Mode::Synced);
    sim.run(0, 12_000);
    let [sust, burst] = assert_bound(&sim, "late instance");
    assert!(burst > 100, "the blind start over-admits a little: {burst}");
    assert!(sust <= 1000 + (sim.d() as usize * 400).div_ceil(1000) + 1);
}

#[test]
fn denied_requests_never_reach_the_store_and_idle_keys_are_not_synced() {
    let lim = tier(100, 60_000, 10, 1000);
    let mut sim = Sim::new(lim, 100, 2, &[(0, 1000, 0), (50, 0, 0)], Mode::Synced);
    sim.run(0, 2_000);
    let admitted = sim.insts[0].admitted.len() as i64;
    // Everything the store holds for the key is what was admitted: the denied 1,900
    // requests are nowhere.
    let reply = sim.store.eval(
        "probe",
        1000,
        &Batch {
            now: 1999,
            keys: vec![BatchKey {
                subject: KEY.into(),
                coarse: sim.coarse,
                counts: [vec![], vec![]],
            }],
        },
    );
    assert_eq!(reply.others[0][0] as i64, admitted);
    assert!(admitted < 30, "{admitted}");
    // Instance 1 never saw the key: it never reads it.
    assert!(sim.insts[1].tracker.is_empty());
    // After the sustained window (and one sub-bucket) instance 0 forgets it too.
    sim.insts[0].rate = 0;
    sim.run(2_000, 70_000);
    assert!(sim.insts[0].tracker.is_empty(), "idle keys are not synced");
}

#[test]
fn store_failure_applies_the_policy_within_three_ticks_and_replays_the_deltas() {
    let lim = tier(1000, 60_000, 60, 1000);
    let mut sim = Sim::new(lim, 100, 2, &[(0, 100, 0), (50, 100, 0)], Mode::Synced);
    sim.down = Some((3_000, 6_000));
    sim.run(0, 3_000);
    assert_eq!(sim.insts[0].link.alive, 2);
    sim.run(3_000, 3_300);
    for x in &sim.insts {
        assert_eq!(x.shard.mode(), Mode::LocalShare { alive: 2 }, "{}", x.id);
    }
    sim.run(3_300, 6_000);
    // Each instance enforced 30 of the 60 per second while the store was away.
    for x in &sim.insts {
        let during: Vec<u64> = x
            .admitted
            .iter()
            .copied()
            .filter(|&t| (3_400..6_000).contains(&t))
            .collect();
        assert!(
            max_in(&during, 1000) <= 30,
            "{}: {}",
            x.id,
            max_in(&during, 1000)
        );
        assert!(x.tracker.pending() > 0, "deltas kept");
    }
    sim.run(6_000, 6_400);
    for x in &sim.insts {
        assert_eq!(x.shard.mode(), Mode::Synced);
        assert_eq!(x.tracker.pending(), 0, "deltas replayed");
    }
    // The store holds every admission of the last minute again.
    let total: usize = sim.insts.iter().map(|x| x.admitted.len()).sum();
    let reply = sim.store.eval(
        "probe",
        10_000,
        &Batch {
            now: 6_400,
            keys: vec![BatchKey {
                subject: KEY.into(),
                coarse: sim.coarse,
                counts: [vec![], vec![]],
            }],
        },
    );
    assert_eq!(reply.others[0][0] as usize, total);
    sim.run(6_400, 20_000);
    assert_bound(&sim, "after recovery");
}

#[test]
fn a_store_restarted_empty_is_rebuilt_from_the_next_ticks() {
    let lim = tier(1000, 60_000, 50, 1000);
    let mut sim = Sim::new(lim, 100, 2, &[(0, 75, 0), (50, 75, 0)], Mode::Synced);
    sim.run(0, 5_000);
    sim.store.flush_all();
    sim.run(5_000, 7_000);
    // Within the burst window the view is rebuilt from the pushes after the restart.
    let (got, bound) = measured(&sim, 1);
    println!("restart: most admitted in a second {got}, bound {bound}");
    let late: Vec<u64> = sim
        .insts
        .iter()
        .flat_map(|x| x.admitted.iter().copied().filter(|&t| t >= 6_000))
        .collect();
    let mut late = late;
    late.sort_unstable();
    assert!(max_in(&late, 1000) <= bound, "rebuilt after one window");
    for x in &sim.insts {
        assert_eq!(x.shard.mode(), Mode::Synced);
    }
}

#[test]
fn modes_count_shares_of_the_limit() {
    let lim = tier(1000, 60_000, 50, 1000);
    assert_eq!(others_for(Mode::Synced, [7, 3], &lim), [7, 3]);
    assert_eq!(others_for(Mode::Alone, [7, 3], &lim), [0, 0]);
    assert_eq!(others_for(Mode::Open, [7, 3], &lim), [0, 0]);
    assert_eq!(others_for(Mode::Closed, [7, 3], &lim), [1000, 50]);
    // L / alive for this instance: 333 / 16 of 1000 / 50 with three alive.
    assert_eq!(
        others_for(Mode::LocalShare { alive: 3 }, [0, 0], &lim),
        [667, 34]
    );
    let mut link = Link::new(Policy::Closed);
    assert_eq!(link.failed(), None, "one failed tick is not enough");
    assert_eq!(link.failed(), Some(Mode::Closed));
    assert_eq!(link.failed(), None);
    assert_eq!(link.answered(2), Some(Mode::Synced));
}

#[test]
fn coarse_sub_buckets_nest_and_cover_the_window() {
    let c = Coarse::of(&tier(1000, 60_000, 50, 1000));
    assert_eq!(c.g, [5000, 100]);
    assert_eq!(c.live(1, 10_999), 100..=109);
    assert_eq!(c.live(1, 11_000), 100..=110);
    assert_eq!(c.live(0, 64_999), 1..=12);
    let odd = Coarse::of(&tier(7, 7_777, 3, 333));
    assert_eq!(
        odd.g[0] % odd.g[1],
        0,
        "burst width divides the sustained one"
    );
    assert!(odd.live(0, 100_000).count() as u64 * odd.g[0] >= 7_777);
}

#[test]
fn the_shard_hands_over_pending_admissions_across_removals() {
    let lim = tier(100, 60_000, 10, 1000);
    let mut sh = Shard::new(3);
    sh.set_mode(Mode::Synced);
    for (i, k) in [b"a", b"b", b"c"].iter().enumerate() {
        for _ in 0..=i {
            assert!(sh.check(*k, 0, &lim, 10).admitted);
        }
    }
    assert_eq!(sh.pending_keys(), 3);
    // "a" is removed before its admission was handed over: it is kept as an orphan,
    // and "c" (moved into its slot) is still pending.
    assert!(sh.remove(b"a"));
    let mut got = Vec::new();
    sh.take_pending(|s, tier, n| {
        got.push((s.to_vec(), tier, n));
        true
    });
    got.sort();
    assert_eq!(
        got,
        vec![
            (b"a".to_vec(), 0, 1),
            (b"b".to_vec(), 0, 2),
            (b"c".to_vec(), 0, 3)
        ]
    );
    assert_eq!(sh.pending_keys(), 0);
    // A full ring keeps the rest for later.
    assert!(sh.check(b"b", 0, &lim, 11).admitted);
    assert!(sh.check(b"c", 0, &lim, 11).admitted);
    assert_eq!(sh.take_pending(|_, _, _| false), 0);
    assert_eq!(sh.pending_keys(), 2);
    // The others' view counts: 8 others in the burst window leave room for 10 - 8 - 2 = 0.
    assert!(sh.set_others(b"b", 0, &lim, [8, 8], 12));
    assert!(!sh.check(b"b", 0, &lim, 12).admitted);
    assert_eq!(
        sh.snapshot(b"b", 12, |_| Some(&lim)).unwrap().others,
        [8, 8]
    );
    // A key only the others use is tracked, and not idle while they do.
    assert!(sh.set_others(b"d", 0, &lim, [5, 5], 12) || sh.len() == 3);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The bound on random instance counts, rates, phases, starts, round trips, tick
    /// lengths and limits.
    #[test]
    fn simulated_instances_stay_within_the_bound(
        insts in prop::collection::vec((0u64..100, 1u64..300, 0u64..3000), 2..5),
        tick in prop_oneof![Just(100u64), 20u64..250],
        rtt in 0u64..20,
        lim in (5u32..400, 1u32..60).prop_map(|(s, b)| tier(s.max(b), 20_000, b, 1000)),
    ) {
        let insts: Vec<_> = insts.into_iter().map(|(p, r, s)| (p % tick, r, s)).collect();
        let mut sim = Sim::new(lim, tick, rtt, &insts, Mode::Synced);
        sim.run(0, 12_000);
        for i in 0..2 {
            let (got, bound) = measured(&sim, i);
            prop_assert!(got <= bound, "window {}: {} > {}", i, got, bound);
        }
    }
}
