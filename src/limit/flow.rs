//! What a rule counts besides requests: requests in flight (`max_in_flight`) and body bytes
//! per window (`bytes_per_window`), per subject, on the subject's owner core.
//!
//! Owns: [`FlowTable`] (subject → in-flight count and byte window), [`ByteWindow`] (the
//! byte counter: pure arithmetic, time passed in) and [`ByteLimit`]. Must not touch:
//! request windows (`table`), clocks, I/O, messages — callers pass `now_ms` and route
//! every operation of a subject to its owner core.
//!
//! # In flight
//!
//! [`FlowTable::take`] admits a request iff fewer than `max_in_flight` of its subject are in
//! flight, and counts it; [`FlowTable::release`] ends it. The caller releases every taken
//! slot exactly once, when the response ends (on every path). An entry with requests in
//! flight is never removed.
//!
//! # Bytes: the debt model
//!
//! Body bytes (request and response) are added as they stream ([`FlowTable::add_bytes`]);
//! the size of an object is not known when its request is admitted. A request is admitted
//! iff the bytes counted in the trailing window are **below** the limit; a request already
//! admitted finishes even when its bytes take the count over (the debt), and the subject's
//! new requests are denied until enough of the counted bytes have left the window that the
//! count is below the limit again ([`ByteWindow::retry_after`]). So in any window the bytes
//! are at most the limit plus what the requests admitted before it was reached went on to
//! move. Counting is conservative: the window is cut into [`BYTE_BUCKETS`] buckets and a
//! bucket counts whole until all of it has left the window (at most `W / 10` late).

use std::collections::HashMap;

/// Buckets of a [`ByteWindow`].
pub const BYTE_BUCKETS: usize = 10;

/// A rule's byte limit: at most `bytes` counted in any trailing `window_ms` before new
/// requests are denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteLimit {
    pub bytes: u64,
    pub window_ms: u32,
}

impl ByteLimit {
    fn bucket_ms(self) -> u64 {
        u64::from(self.window_ms)
            .div_ceil(BYTE_BUCKETS as u64)
            .max(1)
    }
}

/// Bytes counted per bucket of `window_ms / 10`; the newest bucket is `newest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ByteWindow {
    newest: u64,
    counts: [u64; BYTE_BUCKETS + 1],
}

impl ByteWindow {
    /// Moves to the bucket of `now` (clearing the buckets that left the window).
    fn advance(&mut self, lim: ByteLimit, now: u64) {
        let b = now / lim.bucket_ms();
        if b <= self.newest {
            return;
        }
        let n = self.counts.len() as u64;
        for j in (self.newest + 1)..=b.min(self.newest + n) {
            self.counts[(j % n) as usize] = 0;
        }
        self.newest = b;
    }

    /// The live buckets at `now` as (index, count), oldest first: those whose span still
    /// reaches into `(now - W, now]`.
    fn live(&self, lim: ByteLimit, now: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let g = lim.bucket_ms();
        let n = self.counts.len() as u64;
        let first = (now + 1).saturating_sub(u64::from(lim.window_ms)) / g;
        let lo = first.max(self.newest.saturating_sub(n - 1));
        (lo..=self.newest).map(move |j| (j, self.counts[(j % n) as usize]))
    }

    /// Adds `n` bytes at `now`.
    pub fn add(&mut self, lim: ByteLimit, n: u64, now: u64) {
        self.advance(lim, now);
        let len = self.counts.len() as u64;
        let c = &mut self.counts[(self.newest % len) as usize];
        *c = c.saturating_add(n);
    }

    /// Bytes counted in the trailing window at `now` (an upper bound of the true count).
    pub fn count(&self, lim: ByteLimit, now: u64) -> u64 {
        if now / lim.bucket_ms() > self.newest + BYTE_BUCKETS as u64 {
            return 0;
        }
        self.live(lim, now).map(|(_, c)| c).sum()
    }

    /// ms from `now` until the count is below the limit (0: it is now).
    pub fn retry_after(&self, lim: ByteLimit, now: u64) -> u64 {
        let mut left = self.count(lim, now);
        if left < lim.bytes {
            return 0;
        }
        let g = lim.bucket_ms();
        for (j, c) in self.live(lim, now) {
            left -= c;
            if left < lim.bytes {
                // Bucket j is live while now < (j + 1) * g + W - 1.
                return ((j + 1) * g + u64::from(lim.window_ms) - 1).saturating_sub(now);
            }
        }
        1
    }
}

/// One subject's flow state.
#[derive(Clone, Debug, Default)]
struct Flow {
    in_flight: u32,
    bytes: Option<(ByteLimit, ByteWindow)>,
}

impl Flow {
    fn idle(&self, now: u64) -> bool {
        self.in_flight == 0
            && self
                .bytes
                .as_ref()
                .is_none_or(|(l, w)| w.count(*l, now) == 0)
    }
}

/// Why [`FlowTable::take`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowDenial {
    /// `max_in_flight` requests of the subject are in flight.
    InFlight,
    /// The byte window is at its limit; retry in `retry_ms`.
    Bytes { retry_ms: u64 },
    /// The table is full of subjects with requests in flight or bytes in their window.
    Full,
}

/// One core's in-flight counts and byte windows, by subject. Not `Sync`: owned by its core.
#[derive(Debug)]
pub struct FlowTable {
    map: HashMap<Box<[u8]>, Flow>,
    cap: usize,
    refused: u64,
}

impl FlowTable {
    /// A table of at most `cap` subjects (at least 1).
    pub fn new(cap: usize) -> FlowTable {
        FlowTable {
            map: HashMap::new(),
            cap: cap.max(1),
            refused: 0,
        }
    }

    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(1);
    }

    /// Whether [`take`](Self::take) would admit, changing nothing.
    pub fn peek(
        &self,
        subject: &[u8],
        max_in_flight: u32,
        bytes: Option<ByteLimit>,
        now: u64,
    ) -> Result<(), FlowDenial> {
        let Some(f) = self.map.get(subject) else {
            return if self.map.len() >= self.cap {
                Err(FlowDenial::Full)
            } else {
                Ok(())
            };
        };
        if max_in_flight > 0 && f.in_flight >= max_in_flight {
            return Err(FlowDenial::InFlight);
        }
        if let (Some(lim), Some((_, w))) = (bytes, &f.bytes) {
            let retry_ms = w.retry_after(lim, now);
            if retry_ms > 0 {
                return Err(FlowDenial::Bytes { retry_ms });
            }
        }
        Ok(())
    }

    /// Admits one request of `subject` (counting it in flight when `max_in_flight` > 0,
    /// and keeping its byte window when `bytes` is set) or refuses it, changing nothing.
    pub fn take(
        &mut self,
        subject: &[u8],
        max_in_flight: u32,
        bytes: Option<ByteLimit>,
        now: u64,
    ) -> Result<(), FlowDenial> {
        if !self.map.contains_key(subject) && self.map.len() >= self.cap {
            self.sweep(now);
        }
        if let Err(e) = self.peek(subject, max_in_flight, bytes, now) {
            self.refused += u64::from(e == FlowDenial::Full);
            return Err(e);
        }
        let f = self.map.entry(subject.into()).or_default();
        if max_in_flight > 0 {
            f.in_flight += 1;
        }
        if let Some(lim) = bytes {
            match &mut f.bytes {
                Some((l, _)) => *l = lim,
                None => f.bytes = Some((lim, ByteWindow::default())),
            }
        }
        Ok(())
    }

    /// Ends one request of `subject` that [`take`](Self::take) counted in flight.
    pub fn release(&mut self, subject: &[u8], now: u64) {
        if let Some(f) = self.map.get_mut(subject) {
            f.in_flight = f.in_flight.saturating_sub(1);
            if f.idle(now) {
                self.map.remove(subject);
            }
        }
    }

    /// Counts `n` body bytes of `subject` (nothing if it keeps no byte window: the rule
    /// went away in a reload).
    pub fn add_bytes(&mut self, subject: &[u8], n: u64, now: u64) {
        if let Some(Some((lim, w))) = self.map.get_mut(subject).map(|f| f.bytes.as_mut()) {
            w.add(*lim, n, now);
        }
    }

    /// (requests in flight, bytes in the window) of `subject`.
    pub fn get(&self, subject: &[u8], now: u64) -> (u32, u64) {
        self.map.get(subject).map_or((0, 0), |f| {
            let bytes = f.bytes.as_ref().map_or(0, |(l, w)| w.count(*l, now));
            (f.in_flight, bytes)
        })
    }

    /// Removes the subjects with nothing in flight and nothing in their window; returns how
    /// many.
    pub fn sweep(&mut self, now: u64) -> usize {
        let before = self.map.len();
        self.map.retain(|_, f| !f.idle(now));
        before - self.map.len()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// New subjects refused because the table was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Requests in flight over every subject whose bytes start with `prefix`.
    pub fn in_flight_with_prefix(&self, prefix: &[u8]) -> u64 {
        self.map
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, f)| u64::from(f.in_flight))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: ByteLimit = ByteLimit {
        bytes: 1 << 20,
        window_ms: 1000,
    };

    #[test]
    fn in_flight_admits_up_to_max_and_releases() {
        let mut t = FlowTable::new(10);
        assert_eq!(t.take(b"a", 2, None, 0), Ok(()));
        assert_eq!(t.take(b"a", 2, None, 0), Ok(()));
        assert_eq!(t.take(b"a", 2, None, 0), Err(FlowDenial::InFlight));
        assert_eq!(t.peek(b"a", 2, None, 0), Err(FlowDenial::InFlight));
        assert_eq!(t.get(b"a", 0), (2, 0), "the refusal counted nothing");
        t.release(b"a", 1);
        assert_eq!(t.take(b"a", 2, None, 1), Ok(()));
        t.release(b"a", 2);
        t.release(b"a", 2);
        assert!(t.is_empty(), "an idle subject is dropped");
        t.release(b"a", 3);
        assert_eq!(t.get(b"a", 3), (0, 0), "an extra release is harmless");
    }

    #[test]
    fn bytes_deny_once_over_and_admit_after_the_window() {
        let mut t = FlowTable::new(10);
        assert_eq!(t.take(b"k", 0, Some(MIB), 0), Ok(()));
        t.add_bytes(b"k", 600 << 10, 10);
        assert_eq!(t.take(b"k", 0, Some(MIB), 20), Ok(()), "600 KiB < 1 MiB");
        // The request in flight goes on past the limit: the debt.
        t.add_bytes(b"k", 600 << 10, 30);
        assert_eq!(t.get(b"k", 30).1, 1200 << 10);
        let Err(FlowDenial::Bytes { retry_ms }) = t.take(b"k", 0, Some(MIB), 40) else {
            panic!("over the limit must deny");
        };
        // Buckets of 100 ms: the bucket [0, 100) has left (now - 1000, now] at 1099.
        assert_eq!(retry_ms, 1099 - 40);
        assert!(t.peek(b"k", 0, Some(MIB), 1098).is_err());
        assert_eq!(t.take(b"k", 0, Some(MIB), 1099), Ok(()));
        assert_eq!(t.sweep(5000), 1, "empty windows are swept");
    }

    #[test]
    fn a_full_table_refuses_new_subjects_only() {
        let mut t = FlowTable::new(1);
        t.take(b"a", 1, None, 0).unwrap();
        assert_eq!(t.take(b"b", 1, None, 0), Err(FlowDenial::Full));
        assert_eq!(t.refused(), 1);
        t.release(b"a", 0);
        assert_eq!(t.take(b"b", 1, None, 0), Ok(()));
        assert_eq!(t.in_flight_with_prefix(b"b"), 1);
    }

    proptest! {
        /// The byte window never reports less than the bytes added in the trailing window,
        /// nor more than those of the window plus one bucket; `retry_after` is exact.
        #[test]
        fn byte_window_is_a_conservative_trailing_sum(
            window_ms in 1u32..5000,
            adds in prop::collection::vec((0u64..700, 1u64..1000), 1..80),
            limit in 1u64..20_000,
        ) {
            let lim = ByteLimit { bytes: limit, window_ms };
            let g = lim.bucket_ms();
            let mut w = ByteWindow::default();
            let mut log: Vec<(u64, u64)> = Vec::new();
            let mut now = 10_000u64;
            for (gap, n) in adds {
                now += gap;
                w.add(lim, n, now);
                log.push((now, n));
                let sum = |lo: u64| log.iter().filter(|&&(t, _)| t + lo > now).map(|&(_, n)| n).sum::<u64>();
                let c = w.count(lim, now);
                prop_assert!(c >= sum(u64::from(window_ms)));
                prop_assert!(c <= sum(u64::from(window_ms) + g));
                let r = w.retry_after(lim, now);
                if r > 0 {
                    prop_assert!(w.count(lim, now + r) < limit);
                    prop_assert!(w.count(lim, now + r - 1) >= limit);
                } else {
                    prop_assert!(c < limit);
                }
            }
        }
    }
}
