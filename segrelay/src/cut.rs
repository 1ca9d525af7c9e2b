//! How a byte stream is re-cut: the [`Cut`] modes and, for one direction of one connection,
//! the sequence of pieces ([`Cutter`]) — each piece's length and the least gap between its
//! write and the previous piece's. The sequence is a pure function of (mode, seed,
//! connection index, direction): no clock, no I/O. Writing the pieces is `relay`'s job.

use std::time::Duration;

/// Segment size of [`Cut::Mtu`]: a 1,500-byte MTU less IPv4, TCP and timestamp headers.
pub const MTU_SEGMENT: usize = 1448;
/// Gap between [`Cut::Mtu`] segments.
pub const MTU_GAP: Duration = Duration::from_millis(1);
/// Defaults of [`Cut::Random`] when a spec names no parameters.
pub const DEFAULT_MAX_PIECE: usize = 4096;
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_millis(5);

/// A piece boundary gets a delay with probability 1 / `DELAY_ODDS`...
const DELAY_ODDS: u64 = 4;
/// ...while the direction has taken fewer than `DELAY_FREE` delays plus one per
/// `DELAY_CREDIT_BYTES` forwarded. A short exchange (a request head, an answer) is cut and
/// delayed freely; a multi-MB body is still cut everywhere but delayed at most once per
/// 64 KiB (3 MB: at most ~56 delays, ~140 ms at 5 ms max), so it is not slowed to a crawl.
const DELAY_FREE: u64 = 8;
const DELAY_CREDIT_BYTES: u64 = 64 * 1024;

/// How the relay re-cuts each direction of each connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Plain copy: whatever one read returned is written at once (for comparison).
    Whole,
    /// Every byte is its own write.
    Bytes,
    /// Pieces of 1..=`max_piece` bytes, log-uniform (a piece of 1–2 bytes is as likely as
    /// one of 2–4 KiB, so heads are cut often and bodies still move in large pieces); some
    /// boundaries delayed by 0..=`max_delay` (see `DELAY_ODDS` for how often).
    Random {
        seed: u64,
        max_piece: usize,
        max_delay: Duration,
    },
    /// What each read returned, cut into [`MTU_SEGMENT`]-byte segments [`MTU_GAP`] apart,
    /// like a 1,500-byte-MTU path (a sender's write starts a new segment, so a head that fits
    /// one segment stays whole wherever it falls in the stream).
    Mtu,
}

impl Cut {
    /// Parses `whole`, `bytes`, `mtu`, `random` or `random:SEED` (`random` takes
    /// `seed_if_none`), with the default piece size and delay for `random`.
    pub fn from_spec(spec: &str, seed_if_none: u64) -> Result<Cut, String> {
        let (mode, seed) = match spec.split_once(':') {
            Some((m, s)) => {
                let seed = s
                    .parse::<u64>()
                    .map_err(|_| format!("bad seed {s:?} in relay spec {spec:?}"))?;
                (m, Some(seed))
            }
            None => (spec, None),
        };
        match (mode, seed) {
            ("random", s) => Ok(Cut::Random {
                seed: s.unwrap_or(seed_if_none),
                max_piece: DEFAULT_MAX_PIECE,
                max_delay: DEFAULT_MAX_DELAY,
            }),
            ("whole", None) => Ok(Cut::Whole),
            ("bytes", None) => Ok(Cut::Bytes),
            ("mtu", None) => Ok(Cut::Mtu),
            _ => Err(format!(
                "relay spec {spec:?}: expected whole, bytes, mtu, random or random:SEED"
            )),
        }
    }
}

/// Which way the bytes go: `Up` from the accepted client to the target, `Down` back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Up = 0,
    Down = 1,
}

/// One piece: how many bytes, and the least time between the previous piece's write and
/// this one's (zero for the first piece of a direction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub len: usize,
    pub gap: Duration,
}

/// The piece sequence of one direction of one connection.
pub struct Cutter {
    cut: Cut,
    rng: SplitMix64,
    /// Stream offset where the next piece starts.
    offset: u64,
    delays: u64,
}

impl Cutter {
    pub fn new(cut: Cut, conn: u64, dir: Dir) -> Cutter {
        let seed = match cut {
            Cut::Random { seed, .. } => seed,
            _ => 0,
        };
        let stream = conn.wrapping_mul(2).wrapping_add(dir as u64);
        let rng = SplitMix64::new(seed ^ SplitMix64::new(stream).next_u64());
        Cutter {
            cut,
            rng,
            offset: 0,
            delays: 0,
        }
    }

    /// Whether pieces restart at each read of the source (a read's first piece starts
    /// there, with no gap) instead of at fixed stream offsets.
    pub fn restarts_per_read(&self) -> bool {
        matches!(self.cut, Cut::Mtu)
    }

    /// The next piece of the stream.
    pub fn next_piece(&mut self) -> Piece {
        let first = self.offset == 0;
        let piece = match self.cut {
            Cut::Whole => Piece {
                len: usize::MAX,
                gap: Duration::ZERO,
            },
            Cut::Bytes => Piece {
                len: 1,
                gap: Duration::ZERO,
            },
            Cut::Mtu => Piece {
                len: MTU_SEGMENT,
                gap: if first { Duration::ZERO } else { MTU_GAP },
            },
            Cut::Random {
                max_piece,
                max_delay,
                ..
            } => {
                let len = self.log_uniform(max_piece.max(1));
                let gap = if first {
                    Duration::ZERO
                } else {
                    self.maybe_delay(max_delay)
                };
                Piece { len, gap }
            }
        };
        self.offset = self.offset.saturating_add(piece.len as u64);
        piece
    }

    /// 1..=max, with each power-of-two class [2^b, 2^(b+1)) equally likely.
    fn log_uniform(&mut self, max: usize) -> usize {
        let classes = u64::from(usize::BITS - max.leading_zeros());
        let b = self.rng.below(classes);
        let lo = 1u64 << b;
        let hi = ((lo << 1) - 1).min(max as u64);
        (lo + self.rng.below(hi - lo + 1)) as usize
    }

    fn maybe_delay(&mut self, max_delay: Duration) -> Duration {
        let credit = DELAY_FREE + self.offset / DELAY_CREDIT_BYTES;
        if self.rng.below(DELAY_ODDS) != 0 || self.delays >= credit {
            return Duration::ZERO;
        }
        self.delays += 1;
        let max_us = max_delay.as_micros().min(u128::from(u64::MAX - 1)) as u64;
        Duration::from_micros(self.rng.below(max_us + 1))
    }
}

/// splitmix64 (Steele, Lea, Flood 2014): a tiny seeded generator, plenty for cut points.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0), by rejection so small ranges are not biased.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(seed: u64) -> Cut {
        Cut::Random {
            seed,
            max_piece: 4096,
            max_delay: Duration::from_millis(5),
        }
    }

    fn pieces(cut: Cut, conn: u64, dir: Dir, n: usize) -> Vec<Piece> {
        let mut c = Cutter::new(cut, conn, dir);
        (0..n).map(|_| c.next_piece()).collect()
    }

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // First outputs for seed 1234567 of the reference C implementation.
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
        assert_eq!(r.next_u64(), 9817491932198370423);
    }

    #[test]
    fn same_seed_connection_and_direction_give_the_same_pieces() {
        let a = pieces(random(7), 3, Dir::Up, 500);
        assert_eq!(a, pieces(random(7), 3, Dir::Up, 500));
        assert_ne!(a, pieces(random(8), 3, Dir::Up, 500), "seed matters");
        assert_ne!(a, pieces(random(7), 4, Dir::Up, 500), "connection matters");
        assert_ne!(a, pieces(random(7), 3, Dir::Down, 500), "direction matters");
    }

    #[test]
    fn random_pieces_cover_the_range_and_stay_in_it() {
        let p = pieces(random(1), 0, Dir::Up, 20_000);
        assert!(p.iter().all(|p| (1..=4096).contains(&p.len)));
        assert!(p.iter().any(|p| p.len == 1), "single bytes occur");
        assert!(p.iter().any(|p| p.len > 2048), "large pieces occur");
        let small = p.iter().filter(|p| p.len < 64).count();
        assert!(
            small > p.len() / 3,
            "log-uniform: many small pieces ({small})"
        );
        let one = pieces(
            Cut::Random {
                seed: 1,
                max_piece: 1,
                max_delay: Duration::ZERO,
            },
            0,
            Dir::Up,
            100,
        );
        assert!(one.iter().all(|p| p.len == 1 && p.gap.is_zero()));
    }

    #[test]
    fn random_delays_are_bounded_in_size_and_by_the_byte_credit() {
        let p = pieces(random(5), 0, Dir::Down, 20_000);
        assert!(p[0].gap.is_zero(), "no gap before the first piece");
        assert!(p.iter().all(|p| p.gap <= Duration::from_millis(5)));
        let delayed = p.iter().filter(|p| !p.gap.is_zero()).count() as u64;
        let bytes: u64 = p.iter().map(|p| p.len as u64).sum();
        assert!(delayed >= DELAY_FREE, "delays happen: {delayed}");
        assert!(
            delayed <= DELAY_FREE + bytes / DELAY_CREDIT_BYTES,
            "{delayed} delays over {bytes} bytes"
        );
        // The first few boundaries of a stream are delayed freely (1 in DELAY_ODDS).
        let early = p[1..41].iter().filter(|p| !p.gap.is_zero()).count();
        assert!((3..=DELAY_FREE as usize).contains(&early), "{early}");
    }

    #[test]
    fn fixed_modes() {
        let m = pieces(Cut::Mtu, 0, Dir::Up, 3);
        assert_eq!(
            m[0],
            Piece {
                len: MTU_SEGMENT,
                gap: Duration::ZERO
            }
        );
        assert_eq!(
            m[2],
            Piece {
                len: MTU_SEGMENT,
                gap: MTU_GAP
            }
        );
        assert!(pieces(Cut::Bytes, 0, Dir::Up, 5).iter().all(|p| p.len == 1));
        assert_eq!(pieces(Cut::Whole, 0, Dir::Up, 1)[0].len, usize::MAX);
        let restarts = |cut| Cutter::new(cut, 0, Dir::Up).restarts_per_read();
        assert!(restarts(Cut::Mtu));
        assert!(!restarts(Cut::Bytes) && !restarts(Cut::Whole) && !restarts(random(1)));
    }

    #[test]
    fn specs_parse() {
        assert_eq!(Cut::from_spec("whole", 0), Ok(Cut::Whole));
        assert_eq!(Cut::from_spec("bytes", 0), Ok(Cut::Bytes));
        assert_eq!(Cut::from_spec("mtu", 0), Ok(Cut::Mtu));
        assert_eq!(Cut::from_spec("random:42", 0), Ok(random(42)));
        assert_eq!(Cut::from_spec("random", 9), Ok(random(9)));
        assert!(Cut::from_spec("random:x", 0).is_err());
        assert!(Cut::from_spec("mtu:3", 0).is_err());
        assert!(Cut::from_spec("slow", 0).is_err());
    }
}
