//! The offered load, as pure functions of time: rate profiles (constant, ramp/hold stages),
//! per-key arrival schedules (uniform with a random phase, or Poisson) and the per-request
//! choice of S3 operation class ([`Op`]), bucket, object and body size. Deterministic from a
//! seed so the expectation simulator can replay exactly what the engine sends; and the loop
//! [`Mode`] (open: these schedules; closed: back-to-back). Owns no I/O and no clock.

use serde::{Deserialize, Serialize};

/// Open loop (scheduled arrivals per key) or closed loop (saturation: send as fast as answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Open,
    Closed,
}

/// How one key's requests are spread over several targets (`targets` in a scenario).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Spread {
    /// Request n of a key goes to target n mod N.
    #[default]
    RoundRobin,
    /// Each request to a target drawn uniformly (seeded per key: reproducible).
    Random,
}

/// Which target each request of one key goes to, in order.
#[derive(Clone, Debug)]
pub struct TargetChooser {
    n: u64,
    spread: Spread,
    next: u64,
    rng: Rng,
}

impl TargetChooser {
    pub fn new(n: usize, spread: Spread, seed: u64) -> TargetChooser {
        TargetChooser {
            n: n.max(1) as u64,
            spread,
            next: seed,
            rng: Rng::new(seed ^ 0x07A2_6E75),
        }
    }

    /// The target of the key's next request.
    pub fn next_target(&mut self) -> u16 {
        let t = match self.spread {
            Spread::RoundRobin => self.next % self.n,
            Spread::Random => self.rng.next_u64() % self.n,
        };
        self.next = self.next.wrapping_add(1);
        t as u16
    }
}

/// SplitMix64: small, fast, deterministic (reproducible across versions, unlike library RNGs).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        if n <= 1 {
            0
        } else {
            ((self.next_u64() as u128 * n as u128) >> 64) as u64
        }
    }

    /// Exponential with mean 1.
    pub fn exp1(&mut self) -> f64 {
        -(1.0 - self.next_f64()).ln()
    }
}

/// Mixes several numbers into one seed.
pub fn mix_seed(parts: &[u64]) -> u64 {
    let mut r = Rng::new(0x0123_4567_89AB_CDEF);
    let mut acc = 0u64;
    for p in parts {
        r.0 ^= p.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        acc ^= r.next_u64();
    }
    acc
}

/// One linear piece of a rate profile: the rate goes from `r0` to `r1` req/s over `len` seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    pub start: f64,
    pub len: f64,
    pub r0: f64,
    pub r1: f64,
}

impl Segment {
    fn count(&self) -> f64 {
        (self.r0 + self.r1) * 0.5 * self.len
    }

    /// Expected arrivals in the first `tau` seconds of the segment.
    fn cum(&self, tau: f64) -> f64 {
        let a = if self.len > 0.0 {
            (self.r1 - self.r0) / (2.0 * self.len)
        } else {
            0.0
        };
        self.r0 * tau + a * tau * tau
    }

    /// Offset `tau` at which `y` arrivals have accumulated (0 ≤ y ≤ count()).
    fn inverse(&self, y: f64) -> f64 {
        let a = if self.len > 0.0 {
            (self.r1 - self.r0) / (2.0 * self.len)
        } else {
            0.0
        };
        let b = self.r0;
        let tau = if a.abs() < 1e-12 {
            y / b
        } else {
            let disc = (b * b + 4.0 * a * y).max(0.0);
            2.0 * y / (b + disc.sqrt())
        };
        tau.clamp(0.0, self.len)
    }
}

/// One step of a staged profile.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Stage {
    /// Linear change from the current rate to `to` over `secs`.
    Ramp { secs: f64, to: f64 },
    /// Keep `rate` (or the current rate when `None`) for `secs`.
    Hold { secs: f64, rate: Option<f64> },
}

/// Offered rate (req/s) as a piecewise-linear function of time since the run start.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub segments: Vec<Segment>,
    pub end: f64,
}

impl Profile {
    pub fn constant(rate: f64, secs: f64) -> Self {
        Self::staged(rate, &[], secs)
    }

    /// Starts at `initial` req/s, follows `stages`, then holds the last rate until `total` seconds.
    /// Stages beyond `total` are cut off.
    pub fn staged(initial: f64, stages: &[Stage], total: f64) -> Self {
        let mut segments = Vec::new();
        let mut t = 0.0;
        let mut rate = initial;
        let mut push = |t: &mut f64, len: f64, r0: f64, r1: f64| {
            let len = len.min(total - *t).max(0.0);
            if len > 0.0 {
                // Cut a ramp proportionally when truncated.
                segments.push(Segment {
                    start: *t,
                    len,
                    r0,
                    r1,
                });
                *t += len;
            }
        };
        for s in stages {
            match *s {
                Stage::Ramp { secs, to } => {
                    let len = secs.min(total - t).max(0.0);
                    let r1 = if secs > 0.0 {
                        rate + (to - rate) * (len / secs)
                    } else {
                        to
                    };
                    push(&mut t, len, rate, r1);
                    rate = to;
                }
                Stage::Hold { secs, rate: r } => {
                    if let Some(r) = r {
                        rate = r;
                    }
                    push(&mut t, secs, rate, rate);
                }
            }
        }
        if t < total {
            let rest = total - t;
            push(&mut t, rest, rate, rate);
        }
        Profile {
            segments,
            end: total,
        }
    }

    /// Expected number of arrivals in [0, t].
    pub fn cum(&self, t: f64) -> f64 {
        let mut acc = 0.0;
        for s in &self.segments {
            if t >= s.start + s.len {
                acc += s.count();
            } else {
                if t > s.start {
                    acc += s.cum(t - s.start);
                }
                break;
            }
        }
        acc
    }

    pub fn total(&self) -> f64 {
        self.segments.iter().map(Segment::count).sum()
    }

    /// Rate at time t.
    pub fn rate_at(&self, t: f64) -> f64 {
        for s in &self.segments {
            if t < s.start + s.len {
                return s.r0 + (s.r1 - s.r0) * ((t - s.start) / s.len);
            }
        }
        0.0
    }

    pub fn max_rate(&self) -> f64 {
        self.segments
            .iter()
            .map(|s| s.r0.max(s.r1))
            .fold(0.0, f64::max)
    }
}

/// How arrivals are placed on the profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Evenly spaced (in cumulative-rate space) with a random phase per key.
    #[default]
    Uniform,
    /// A Poisson process with the profile as its intensity.
    Poisson,
}

/// Iterator of intended send times (ns since run start) for one key.
#[derive(Clone, Debug)]
pub struct Schedule {
    profile: std::sync::Arc<Profile>,
    arrival: Arrival,
    rng: Rng,
    next_x: f64,
    seg: usize,
    seg_base: f64,
}

impl Schedule {
    pub fn new(profile: std::sync::Arc<Profile>, arrival: Arrival, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let next_x = match arrival {
            Arrival::Uniform => rng.next_f64(),
            Arrival::Poisson => rng.exp1(),
        };
        Schedule {
            profile,
            arrival,
            rng,
            next_x,
            seg: 0,
            seg_base: 0.0,
        }
    }
}

impl Iterator for Schedule {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        let x = self.next_x;
        loop {
            let s = self.profile.segments.get(self.seg)?;
            let c = s.count();
            if x < self.seg_base + c {
                let t = s.start + s.inverse(x - self.seg_base);
                self.next_x += match self.arrival {
                    Arrival::Uniform => 1.0,
                    Arrival::Poisson => self.rng.exp1(),
                };
                return Some((t * 1e9) as u64);
            }
            self.seg_base += c;
            self.seg += 1;
        }
    }
}

/// S3 operation class: what a request does, as a rule's `match.ops` sees it (method + path +
/// query). `Get`, `Put`, `Head` and `Delete` act on one object; `List` is `GET /bucket?list-type=2`,
/// `Multipart` `POST /bucket/object?uploads`, `Other` a bucket sub-resource (`GET /bucket?acl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
pub enum Op {
    Get,
    Put,
    Head,
    Delete,
    List,
    Multipart,
    Other,
}

/// The HTTP methods a scenario tier can limit, in [`Op::method_index`] order.
pub const LIMITED_METHODS: [&str; 4] = ["GET", "PUT", "HEAD", "DELETE"];

impl Op {
    pub const ALL: [Op; 7] = [
        Op::Get,
        Op::Put,
        Op::Head,
        Op::Delete,
        Op::List,
        Op::Multipart,
        Op::Other,
    ];
    pub const COUNT: usize = Op::ALL.len();

    pub fn method(self) -> &'static str {
        match self {
            Op::Get | Op::List | Op::Other => "GET",
            Op::Put => "PUT",
            Op::Head => "HEAD",
            Op::Delete => "DELETE",
            Op::Multipart => "POST",
        }
    }

    /// The class name (`get_object put_object head delete list multipart other`), as in
    /// tollgate's `match.ops`.
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get_object",
            Op::Put => "put_object",
            Op::Head => "head",
            Op::Delete => "delete",
            Op::List => "list",
            Op::Multipart => "multipart",
            Op::Other => "other",
        }
    }

    /// Position in [`Op::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Position of the op's method in [`LIMITED_METHODS`] (None for POST: a scenario tier
    /// never limits it).
    pub fn method_index(self) -> Option<usize> {
        LIMITED_METHODS.iter().position(|m| *m == self.method())
    }

    /// The object op of an HTTP method name (GET PUT HEAD DELETE, any case).
    pub fn from_method(s: &str) -> Option<Op> {
        Op::ALL[..4]
            .iter()
            .copied()
            .find(|o| o.method().eq_ignore_ascii_case(s))
    }

    /// A class name, or one of the four method names (`GET` = `get_object`, …).
    pub fn parse(s: &str) -> Option<Op> {
        Op::ALL
            .into_iter()
            .find(|o| o.name() == s)
            .or_else(|| Op::from_method(s))
    }

    /// Whether the request names an object (false: a bucket-level request).
    pub fn has_object(self) -> bool {
        !matches!(self, Op::List | Op::Other)
    }
}

/// One choice of a mix: an op class on a bucket (an index into the scenario's bucket list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MixEntry {
    pub op: Op,
    pub bucket: u16,
    pub weight: u32,
}

/// Weighted choice of (op class, bucket) plus object and body-size choice.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    /// The choices, with cumulative weights in `cum_weights`.
    pub entries: Vec<MixEntry>,
    pub cum_weights: Vec<u32>,
    pub objects: u32,
    pub put_sizes: Vec<u64>,
}

impl Mix {
    /// The four object ops (weights in GET PUT HEAD DELETE order) on bucket 0.
    pub fn new(weights: [u32; 4], objects: u32, put_sizes: Vec<u64>) -> Self {
        let entries = Op::ALL[..4]
            .iter()
            .zip(weights)
            .map(|(&op, weight)| MixEntry {
                op,
                bucket: 0,
                weight,
            })
            .collect();
        Self::from_entries(entries, objects, put_sizes)
    }

    /// Any (op, bucket) choices; entries of weight 0 are never picked.
    pub fn from_entries(entries: Vec<MixEntry>, objects: u32, put_sizes: Vec<u64>) -> Self {
        let entries: Vec<MixEntry> = entries.into_iter().filter(|e| e.weight > 0).collect();
        let cum_weights = entries
            .iter()
            .scan(0u32, |acc, e| {
                *acc += e.weight;
                Some(*acc)
            })
            .collect();
        Mix {
            entries,
            cum_weights,
            objects: objects.max(1),
            put_sizes: if put_sizes.is_empty() {
                vec![0]
            } else {
                put_sizes
            },
        }
    }

    /// Every bucket index the mix can pick, sorted, without repeats.
    pub fn buckets(&self) -> Vec<u16> {
        let mut b: Vec<u16> = self.entries.iter().map(|e| e.bucket).collect();
        b.sort_unstable();
        b.dedup();
        b
    }

    pub fn pick(&self, rng: &mut Rng) -> Pick {
        let total = self.cum_weights.last().copied().unwrap_or(0).max(1);
        let r = rng.below(total as u64) as u32;
        let e = self
            .cum_weights
            .iter()
            .position(|&c| r < c)
            .and_then(|i| self.entries.get(i))
            .copied()
            .unwrap_or(MixEntry {
                op: Op::Get,
                bucket: 0,
                weight: 0,
            });
        let obj = rng.below(self.objects as u64) as u32;
        let size_idx = rng.below(self.put_sizes.len() as u64) as u16;
        Pick {
            op: e.op,
            bucket: e.bucket,
            obj,
            size_idx,
        }
    }
}

/// What one request does: op class, bucket (index), object and body size (index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    pub op: Op,
    pub bucket: u16,
    pub obj: u32,
    pub size_idx: u16,
}

/// One planned request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Planned {
    pub at_ns: u64,
    pub op: Op,
    pub bucket: u16,
    pub obj: u32,
    pub size_idx: u16,
}

/// Everything one key will send: schedule plus op choice, each with its own RNG stream.
#[derive(Clone, Debug)]
pub struct KeyPlan {
    schedule: Schedule,
    mix: std::sync::Arc<Mix>,
    rng: Rng,
}

impl KeyPlan {
    pub fn new(
        profile: std::sync::Arc<Profile>,
        arrival: Arrival,
        mix: std::sync::Arc<Mix>,
        seed: u64,
    ) -> Self {
        KeyPlan {
            schedule: Schedule::new(profile, arrival, seed),
            mix,
            rng: Rng::new(seed.rotate_left(17) ^ 0xA5A5_A5A5),
        }
    }
}

impl Iterator for KeyPlan {
    type Item = Planned;

    fn next(&mut self) -> Option<Planned> {
        let at_ns = self.schedule.next()?;
        let p = self.mix.pick(&mut self.rng);
        Some(Planned {
            at_ns,
            op: p.op,
            bucket: p.bucket,
            obj: p.obj,
            size_idx: p.size_idx,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_round_robin_or_random() {
        let mut rr = TargetChooser::new(3, Spread::RoundRobin, 7);
        let got: Vec<u16> = (0..6).map(|_| rr.next_target()).collect();
        assert_eq!(got, [1, 2, 0, 1, 2, 0]);
        let mut rnd = TargetChooser::new(2, Spread::Random, 7);
        let ones = (0..10_000).filter(|_| rnd.next_target() == 1).count();
        assert!((4_500..5_500).contains(&ones), "{ones}");
        let mut again = TargetChooser::new(2, Spread::Random, 7);
        let mut rnd = TargetChooser::new(2, Spread::Random, 7);
        assert!(
            (0..100).all(|_| again.next_target() == rnd.next_target()),
            "seeded"
        );
        assert_eq!(TargetChooser::new(1, Spread::Random, 3).next_target(), 0);
    }
    use std::sync::Arc;

    #[test]
    fn uniform_constant_rate_is_exact_and_evenly_spaced() {
        let p = Arc::new(Profile::constant(60.0, 10.0));
        let times: Vec<u64> = Schedule::new(p, Arrival::Uniform, 7).collect();
        assert_eq!(times.len(), 600);
        for w in times.windows(2) {
            let gap = w[1] - w[0];
            assert!((16_666_000..=16_667_500).contains(&gap), "gap {gap}");
        }
        assert!(times[0] < 16_666_667);
        assert!(*times.last().unwrap() < 10_000_000_000);
    }

    #[test]
    fn phase_differs_by_seed() {
        let p = Arc::new(Profile::constant(10.0, 1.0));
        let a: Vec<u64> = Schedule::new(p.clone(), Arrival::Uniform, 1).collect();
        let b: Vec<u64> = Schedule::new(p, Arrival::Uniform, 2).collect();
        assert_ne!(a[0], b[0]);
    }

    #[test]
    fn poisson_count_close_to_mean() {
        let p = Arc::new(Profile::constant(1000.0, 20.0));
        let n = Schedule::new(p, Arrival::Poisson, 3).count() as f64;
        // mean 20000, sd ~141
        assert!((n - 20000.0).abs() < 600.0, "n {n}");
    }

    #[test]
    fn ramp_and_hold() {
        let stages = [
            Stage::Ramp {
                secs: 10.0,
                to: 100.0,
            },
            Stage::Hold {
                secs: 5.0,
                rate: None,
            },
            Stage::Hold {
                secs: 5.0,
                rate: Some(10.0),
            },
        ];
        let p = Profile::staged(0.0, &stages, 30.0);
        // 0..10 ramp: 500, 10..15: 500, 15..20: 50, 20..30 hold 10: 100
        assert!((p.total() - 1150.0).abs() < 1e-9);
        assert!((p.cum(10.0) - 500.0).abs() < 1e-9);
        assert!((p.cum(5.0) - 125.0).abs() < 1e-9);
        assert_eq!(p.rate_at(5.0), 50.0);
        let times: Vec<u64> = Schedule::new(Arc::new(p.clone()), Arrival::Uniform, 9).collect();
        assert_eq!(times.len(), 1150);
        let in_first_5 = times.iter().filter(|&&t| t < 5_000_000_000).count();
        assert!((124..=126).contains(&in_first_5), "{in_first_5}");
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        // Truncated ramp.
        let q = Profile::staged(0.0, &stages[..1], 5.0);
        assert!((q.total() - 125.0).abs() < 1e-9);
    }

    #[test]
    fn mix_weights_respected() {
        let mix = Arc::new(Mix::new([70, 30, 0, 0], 10, vec![1, 2]));
        let p = Arc::new(Profile::constant(1000.0, 10.0));
        let plan: Vec<Planned> = KeyPlan::new(p, Arrival::Uniform, mix, 5).collect();
        let puts = plan.iter().filter(|r| r.op == Op::Put).count() as f64;
        assert!((puts / plan.len() as f64 - 0.3).abs() < 0.02);
        assert!(plan.iter().all(|r| r.obj < 10 && r.size_idx < 2));
        assert!(!plan.iter().any(|r| r.op == Op::Head));
        assert!(plan.iter().all(|r| r.bucket == 0));
    }

    #[test]
    fn joint_mix_picks_classes_and_buckets_by_weight() {
        let e = |op, bucket, weight| MixEntry { op, bucket, weight };
        let mix = Mix::from_entries(
            vec![
                e(Op::List, 1, 1),
                e(Op::Get, 0, 3),
                e(Op::Other, 1, 0),
                e(Op::Multipart, 2, 1),
            ],
            5,
            vec![],
        );
        assert_eq!(mix.entries.len(), 3, "weight 0 dropped");
        assert_eq!(mix.buckets(), [0, 1, 2]);
        let mut rng = Rng::new(11);
        let picks: Vec<Pick> = (0..20_000).map(|_| mix.pick(&mut rng)).collect();
        let share =
            |op, b| picks.iter().filter(|p| p.op == op && p.bucket == b).count() as f64 / 20_000.0;
        assert!((share(Op::Get, 0) - 0.6).abs() < 0.02);
        assert!((share(Op::List, 1) - 0.2).abs() < 0.02);
        assert!((share(Op::Multipart, 2) - 0.2).abs() < 0.02);
        assert_eq!(share(Op::Other, 1), 0.0);
    }

    #[test]
    fn op_names_methods_and_parsing() {
        for op in Op::ALL {
            assert_eq!(Op::parse(op.name()), Some(op));
            assert_eq!(Op::ALL[op.index()], op);
        }
        assert_eq!(Op::parse("GET"), Some(Op::Get));
        assert_eq!(Op::parse("delete"), Some(Op::Delete), "class name");
        assert_eq!(Op::from_method("post"), None, "POST is no object op");
        assert_eq!(Op::parse("list-objects"), None);
        assert_eq!(Op::List.method_index(), Some(0), "a LIST is a GET");
        assert_eq!(Op::Multipart.method_index(), None);
        assert!(!Op::List.has_object() && Op::Multipart.has_object());
    }
}
