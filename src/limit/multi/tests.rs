//! The protocol against a model: random rule sets (each a counter with its own windows,
//! cost, in-flight limit), random requests charging some of them, counters spread over
//! simulated cores; sequentially against the model "admitted iff every charge alone would
//! be, and a denial changes no counter", and concurrently (requests interleaved at every
//! await, undos delayed) against the hard guarantees.

use super::*;
use crate::limit::WindowConfig;
use proptest::prelude::*;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// One simulated rule: its windows, cost and in-flight limit (0 = none).
#[derive(Clone, Debug)]
struct SimRule {
    rate: Option<TierLimits>,
    cost: u32,
    max_in_flight: u32,
}

impl SimRule {
    fn limiting(&self) -> bool {
        self.rate.is_some() || self.max_in_flight > 0
    }

    fn limits(&self, tier: u16) -> ChargeLimits<'_> {
        ChargeLimits {
            rate: self.rate.as_ref(),
            tier,
            max_in_flight: self.max_in_flight,
            bytes: None,
        }
    }
}

struct Core {
    shard: Shard,
    flows: FlowTable,
}

/// Everything the simulated cores share: the counters, the clock, delayed undos, and what
/// each charge took and gave back.
/// Per (rule, subject): (time, cost, token) of one unit counted and not undone.
type Unit = (usize, Vec<u8>, u64, u32, Option<RefundToken>);

struct World {
    cores: Vec<Core>,
    rules: Vec<SimRule>,
    now: u64,
    /// (due step, core, rule, subject, verdict) undos on their way to their owner.
    undos: VecDeque<(u64, usize, usize, Vec<u8>, Verdict)>,
    step: u64,
    takes: u64,
    undone: u64,
    /// Per (rule, subject): (time, cost) of every unit counted and not undone.
    log: Vec<Unit>,
}

impl World {
    fn new(cores: usize, rules: Vec<SimRule>) -> World {
        World {
            cores: (0..cores)
                .map(|_| Core {
                    shard: Shard::new(10_000),
                    flows: FlowTable::new(10_000),
                })
                .collect(),
            rules,
            now: 1_000_000,
            undos: VecDeque::new(),
            step: 0,
            takes: 0,
            undone: 0,
            log: Vec::new(),
        }
    }

    fn take(&mut self, core: usize, rule: usize, subject: &[u8]) -> Verdict {
        let r = &self.rules[rule];
        let c = &mut self.cores[core];
        let v = take(
            &mut c.shard,
            &mut c.flows,
            subject,
            &r.limits(rule as u16),
            r.cost,
            self.now,
        );
        if v.admitted() && r.limiting() {
            self.takes += 1;
            self.log
                .push((rule, subject.to_vec(), self.now, r.cost, v.decision.token));
        }
        v
    }

    fn undo(&mut self, core: usize, rule: usize, subject: &[u8], v: &Verdict) {
        let r = &self.rules[rule];
        if !r.limiting() {
            return;
        }
        let c = &mut self.cores[core];
        undo(
            &mut c.shard,
            &mut c.flows,
            subject,
            r.max_in_flight > 0,
            r.cost,
            v.decision.token,
            self.now,
        );
        self.undone += 1;
        let tok = v.decision.token;
        if let Some(p) = self
            .log
            .iter()
            .position(|e| e.0 == rule && e.1 == subject && e.4 == tok)
        {
            self.log.remove(p);
        }
    }

    fn peek(&self, core: usize, rule: usize, subject: &[u8]) -> Option<Verdict> {
        let r = &self.rules[rule];
        let c = &self.cores[core];
        peek(
            &c.shard,
            &c.flows,
            subject,
            &r.limits(rule as u16),
            r.cost,
            self.now,
        )
    }

    /// Applies the undos that are due.
    fn deliver(&mut self) {
        while let Some(u) = self.undos.front() {
            if u.0 > self.step {
                break;
            }
            let (_, core, rule, subject, v) =
                self.undos.pop_front().unwrap_or_else(|| unreachable!());
            self.undo(core, rule, &subject, &v);
        }
    }

    /// What every counter holds (counts, in flight), to compare before and after.
    fn state(&self, universe: &[(usize, usize, Vec<u8>)]) -> Vec<(u32, u32, u32)> {
        universe
            .iter()
            .map(|(core, rule, subject)| {
                let c = &self.cores[*core];
                let counts = self.rules[*rule]
                    .rate
                    .as_ref()
                    .and_then(|l| c.shard.peek(subject, l, self.now));
                let counts = counts.map_or((0, 0), |d| (d.sustained_count, d.burst_count));
                (counts.0, counts.1, c.flows.get(subject, self.now).0)
            })
            .collect()
    }
}

/// One request of the simulation: its charges (rule, subject, owner) and origin core.
#[derive(Clone, Debug)]
struct Req {
    origin: usize,
    charges: Vec<(usize, Vec<u8>, usize)>,
    /// Answers yield this many times before they come (0: at once).
    delay: u32,
}

struct Sim<'a> {
    w: Rc<RefCell<World>>,
    req: &'a Req,
    /// Per charge: the undo delay (steps) when it goes back.
    undo_delay: u64,
}

/// Yields `n` times, then is ready.
struct Yield(u32);
impl Future for Yield {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 == 0 {
            Poll::Ready(())
        } else {
            self.0 -= 1;
            Poll::Pending
        }
    }
}

impl Cores for Sim<'_> {
    fn is_local(&self, i: usize) -> bool {
        self.req.charges[i].2 == self.req.origin
    }
    fn peek_local(&self, i: usize) -> Option<Verdict> {
        let (rule, s, core) = &self.req.charges[i];
        self.w.borrow().peek(*core, *rule, s)
    }
    fn take_local(&mut self, i: usize) -> Verdict {
        let (rule, s, core) = &self.req.charges[i];
        self.w.borrow_mut().take(*core, *rule, s)
    }
    fn undo_local(&mut self, i: usize, v: &Verdict) {
        let (rule, s, core) = &self.req.charges[i];
        self.w.borrow_mut().undo(*core, *rule, s, v);
    }
    fn ask(&mut self, _: usize) {}
    fn answer(&mut self, i: usize) -> impl Future<Output = Verdict> {
        let (rule, s, core) = self.req.charges[i].clone();
        let w = self.w.clone();
        let delay = self.req.delay;
        async move {
            Yield(delay).await;
            w.borrow_mut().take(core, rule, &s)
        }
    }
    fn undo_remote(&mut self, i: usize, v: &Verdict) {
        let (rule, s, core) = self.req.charges[i].clone();
        let mut w = self.w.borrow_mut();
        let due = w.step + self.undo_delay;
        w.undos.push_back((due, core, rule, s, *v));
    }
}

/// Runs `fut` to completion with nothing else scheduled.
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn rule_strategy() -> impl Strategy<Value = SimRule> {
    let w = |ms, l| WindowConfig {
        length_ms: ms,
        limit: l,
    };
    let rate = prop_oneof![
        1 => Just(None),
        4 => (1u32..12, 50u32..3000, 1u32..6, 1u32..400)
            .prop_map(move |(ls, ws, lb, wb)| Some(TierLimits::new(w(ws, ls), w(wb, lb)))),
    ];
    (rate, 1u32..4, prop_oneof![3 => Just(0u32), 1 => 1u32..3]).prop_map(|(rate, cost, inf)| {
        SimRule {
            rate,
            cost,
            max_in_flight: inf,
        }
    })
}

/// Requests over `rules` rules, 3 subjects, `cores` cores: each charges a random subset of
/// the rules (at most one charge per rule), owner = a fixed function of (rule, subject).
fn reqs_strategy(rules: usize, cores: usize) -> impl Strategy<Value = Vec<(u64, Req)>> {
    let req = (
        0..cores,
        prop::collection::vec((0..rules, 0u8..3), 1..5),
        0u32..3,
    )
        .prop_map(move |(origin, picks, delay)| {
            let mut charges: Vec<(usize, Vec<u8>, usize)> = Vec::new();
            for (rule, s) in picks {
                if charges.iter().any(|c| c.0 == rule) {
                    continue;
                }
                let subject = vec![b'r', rule as u8, b's', s];
                let owner = (rule * 7 + s as usize * 3) % cores;
                charges.push((rule, subject, owner));
            }
            Req {
                origin,
                charges,
                delay,
            }
        });
    prop::collection::vec((0u64..40, req), 1..120)
}

/// The owner core of rule `r`'s subject `s` (what `reqs_strategy` picks, for 3 cores,
/// folded onto `cores`).
fn owner(r: usize, s: u8, cores: usize) -> usize {
    ((r * 7 + s as usize * 3) % 3) % cores
}

/// `reqs` (drawn for 5 rules and 3 cores) for `rules` rules and `cores` cores.
fn fit(reqs: Vec<(u64, Req)>, rules: usize, cores: usize) -> Vec<(u64, Req)> {
    reqs.into_iter()
        .map(|(g, mut r)| {
            r.origin %= cores;
            r.charges.retain(|c| c.0 < rules);
            for c in &mut r.charges {
                c.2 %= cores;
            }
            (g, r)
        })
        .filter(|(_, r)| !r.charges.is_empty())
        .collect()
}

/// Units of `rule`/`subject` admitted and not undone in `(t - span, t]`.
fn units(log: &[Unit], rule: usize, s: &[u8], t: u64, span: u64) -> u64 {
    log.iter()
        .filter(|e| e.0 == rule && e.1 == s && e.2 <= t && e.2 + span > t)
        .map(|e| u64::from(e.3))
        .sum()
}

fn check_no_over_admission(w: &World) -> Result<(), TestCaseError> {
    for (rule, s, t, _, _) in &w.log {
        let Some(l) = &w.rules[*rule].rate else {
            continue;
        };
        for win in [l.sustained(), l.burst()] {
            let u = units(&w.log, *rule, s, *t, u64::from(win.length_ms.max(1)));
            prop_assert!(
                u <= u64::from(win.limit),
                "rule {} over {:?}: {} at {}",
                rule,
                win,
                u,
                t
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// One request at a time: the decision is the model's (every charge alone would admit),
    /// a denial changes no counter on any core, an admission counts every charge.
    #[test]
    fn a_denial_charges_no_other_rule(
        rules in prop::collection::vec(rule_strategy(), 1..6),
        cores in 1usize..4,
        reqs in reqs_strategy(5, 3),
    ) {
        let n = rules.len();
        let reqs = fit(reqs, n, cores);
        let universe: Vec<(usize, usize, Vec<u8>)> = (0..n)
            .flat_map(|r| (0u8..3).map(move |s| (owner(r, s, cores), r, vec![b'r', r as u8, b's', s])))
            .collect();
        let w = Rc::new(RefCell::new(World::new(cores, rules)));
        let mut held: Vec<(usize, usize, Vec<u8>)> = Vec::new();
        for (gap, req) in &reqs {
            w.borrow_mut().now += gap;
            // Some in-flight requests end before the next one.
            if gap % 3 == 0 && let Some((core, rule, s)) = held.pop() {
                let now = w.borrow().now;
                w.borrow_mut().cores[core].flows.release(&s, now);
                let _ = rule;
            }
            let model = req.charges.iter().all(|(r, s, core)| w.borrow().peek(*core, *r, s).is_none());
            let before = w.borrow().state(&universe);
            let mut sim = Sim { w: w.clone(), req, undo_delay: 0 };
            let mut out = Vec::new();
            let got = block_on(decide(&mut sim, req.charges.len(), &mut out));
            w.borrow_mut().deliver();
            prop_assert_eq!(got.is_ok(), model, "decision differs from the model for {:?}", req);
            let after = w.borrow().state(&universe);
            if got.is_err() {
                prop_assert_eq!(before, after, "a denial changed a counter");
                let i = got.unwrap_err();
                prop_assert!(!out[i].admitted());
            } else {
                for (r, s, core) in &req.charges {
                    if w.borrow().rules[*r].max_in_flight > 0 {
                        held.push((*core, *r, s.clone()));
                    }
                }
                let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
                let limiting = req.charges.iter().filter(|(r, _, _)| {
                    let rule = &w.borrow().rules[*r];
                    rule.rate.is_some() || rule.max_in_flight > 0
                }).count();
                prop_assert_eq!(changed, limiting, "every limiting charge counted once");
            }
        }
        let wb = w.borrow();
        check_no_over_admission(&wb)?;
        prop_assert_eq!(wb.takes - wb.undone, wb.log.len() as u64);
    }

    /// Many requests at once, interleaved at every await and with undos that arrive late:
    /// no window ever holds more than its limit of the units not undone, no in-flight count
    /// passes its limit, every reservation of a denied request is undone and none of an
    /// admitted one.
    #[test]
    fn interleaved_requests_never_over_admit(
        rules in prop::collection::vec(rule_strategy(), 1..5),
        cores in 2usize..4,
        reqs in reqs_strategy(4, 3),
        order in prop::collection::vec(any::<u16>(), 64),
        undo_delay in 0u64..4,
    ) {
        let n = rules.len();
        let reqs = fit(reqs, n, cores);
        let w = Rc::new(RefCell::new(World::new(cores, rules)));
        type Results = Rc<RefCell<Vec<Option<(bool, u64, u64)>>>>;
        let results: Results = Rc::new(RefCell::new(vec![None; reqs.len()]));
        let mut tasks: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> = Vec::new();
        for (k, (_, req)) in reqs.iter().enumerate() {
            let (w2, res) = (w.clone(), results.clone());
            tasks.push(Box::pin(async move {
                let mut sim = Sim { w: w2.clone(), req, undo_delay };
                let mut out = Vec::new();
                let before = (w2.borrow().takes, w2.borrow().undone);
                let got = decide(&mut sim, req.charges.len(), &mut out).await;
                res.borrow_mut()[k] = Some((got.is_ok(), before.0, before.1));
                if let Ok(()) = got {
                    // An admitted request's in-flight slots end some steps later.
                    Yield((k % 4) as u32).await;
                    for (r, s, core) in &req.charges {
                        let mut wb = w2.borrow_mut();
                        if wb.rules[*r].max_in_flight > 0 {
                            let now = wb.now;
                            wb.cores[*core].flows.release(s, now);
                        }
                    }
                }
            }));
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut live: Vec<usize> = (0..tasks.len()).collect();
        let mut started = 0usize;
        let mut turn = 0usize;
        while !live.is_empty() {
            // Start the next request when its gap is over (or at random), poll one at random.
            if started < reqs.len() && (turn % 3 == 0) {
                w.borrow_mut().now += reqs[started].0;
                started += 1;
            }
            let pick = order[turn % order.len()] as usize % live.len().min(started.max(1));
            let k = live[pick];
            if k < started && tasks[k].as_mut().poll(&mut cx).is_ready() {
                live.remove(pick);
            }
            {
                let mut wb = w.borrow_mut();
                wb.step += 1;
                wb.deliver();
                for c in 0..wb.cores.len() {
                    for (_, rule, s) in (0..wb.rules.len()).flat_map(|r| (0u8..3).map(move |s| (0, r, vec![b'r', r as u8, b's', s]))) {
                        let max = wb.rules[rule].max_in_flight;
                        if max > 0 {
                            let now = wb.now;
                            prop_assert!(wb.cores[c].flows.get(&s, now).0 <= max, "in flight over {}", max);
                        }
                    }
                }
            }
            turn += 1;
            if started < reqs.len() && live.iter().all(|&k| k >= started) {
                w.borrow_mut().now += reqs[started].0;
                started += 1;
            }
        }
        drop(tasks);
        {
            let mut wb = w.borrow_mut();
            wb.step = u64::MAX;
            wb.deliver();
        }
        let wb = w.borrow();
        check_no_over_admission(&wb)?;
        prop_assert_eq!(wb.takes - wb.undone, wb.log.len() as u64);
        // Every unit left in the log belongs to an admitted request's charge.
        let admitted: u64 = results.borrow().iter().zip(&reqs).filter(|(r, _)| r.is_some_and(|r| r.0)).map(|(_, (_, q))| q.charges.iter().filter(|c| wb.rules[c.0].rate.is_some() || wb.rules[c.0].max_in_flight > 0).count() as u64).sum();
        prop_assert_eq!(wb.log.len() as u64, admitted, "denied requests left charges");
        prop_assert!(results.borrow().iter().all(Option::is_some));
    }
}

#[test]
fn one_core_denial_by_the_last_charge_counts_nothing() {
    let w = |ms, l| WindowConfig {
        length_ms: ms,
        limit: l,
    };
    let open = SimRule {
        rate: Some(TierLimits::new(w(60_000, 100), w(1000, 10))),
        cost: 1,
        max_in_flight: 2,
    };
    let tight = SimRule {
        rate: Some(TierLimits::new(w(60_000, 1), w(1000, 1))),
        cost: 1,
        max_in_flight: 0,
    };
    let world = Rc::new(RefCell::new(World::new(1, vec![open, tight])));
    let req = Req {
        origin: 0,
        charges: vec![(0, b"a".to_vec(), 0), (1, b"b".to_vec(), 0)],
        delay: 0,
    };
    let mut out = Vec::new();
    let mut sim = Sim {
        w: world.clone(),
        req: &req,
        undo_delay: 0,
    };
    assert_eq!(block_on(decide(&mut sim, 2, &mut out)), Ok(()));
    assert_eq!(block_on(decide(&mut sim, 2, &mut out)), Err(1));
    assert_eq!(out[1].kind, DenyKind::Rate);
    let wb = world.borrow();
    let d = wb.cores[0]
        .shard
        .peek(b"a", wb.rules[0].rate.as_ref().unwrap(), wb.now)
        .unwrap();
    assert_eq!(
        d.sustained_count, 1,
        "the open rule counted the admitted request only"
    );
    assert_eq!(wb.cores[0].flows.get(b"a", wb.now).0, 1);
    assert_eq!(
        (wb.takes, wb.undone),
        (2, 0),
        "nothing was taken, so nothing undone"
    );
}

#[test]
fn a_remote_denial_undoes_the_other_reservations() {
    let w = |ms, l| WindowConfig {
        length_ms: ms,
        limit: l,
    };
    let rule = |l| SimRule {
        rate: Some(TierLimits::new(w(60_000, l), w(1000, l))),
        cost: 2,
        max_in_flight: 0,
    };
    let world = Rc::new(RefCell::new(World::new(3, vec![rule(10), rule(3)])));
    // Charge 0 on core 1 admits, charge 1 on core 2 admits once (2 of 3 units), then denies.
    let req = Req {
        origin: 0,
        charges: vec![(0, b"a".to_vec(), 1), (1, b"b".to_vec(), 2)],
        delay: 1,
    };
    let mut out = Vec::new();
    let mut sim = Sim {
        w: world.clone(),
        req: &req,
        undo_delay: 0,
    };
    assert_eq!(block_on(decide(&mut sim, 2, &mut out)), Ok(()));
    assert_eq!(block_on(decide(&mut sim, 2, &mut out)), Err(1));
    world.borrow_mut().deliver();
    let wb = world.borrow();
    assert_eq!(
        (wb.takes, wb.undone),
        (3, 1),
        "core 1's reservation went back"
    );
    let d = wb.cores[1]
        .shard
        .peek(b"a", wb.rules[0].rate.as_ref().unwrap(), wb.now)
        .unwrap();
    assert_eq!(d.sustained_count, 2, "one request of cost 2 counted");
}
