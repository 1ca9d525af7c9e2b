//! Subject → owner core. Every core (and the control thread) builds a [`Router`] from
//! the same `RandomState`, so all agree on the owner of a subject; SipHash with
//! process-random keys because subjects (API keys) are attacker-chosen.
//!
//! Owns: the owner function only. Must not touch: tables, messages, sockets.

use std::hash::{BuildHasher, Hasher, RandomState};

/// Maps a subject to the core that owns its counters.
#[derive(Clone, Debug)]
pub struct Router {
    workers: u64,
    hasher: RandomState,
}

impl Router {
    /// `workers` cores (0 is treated as 1); `hasher` must be the one shared by all cores.
    pub fn new(workers: usize, hasher: RandomState) -> Router {
        Router {
            workers: workers.max(1) as u64,
            hasher,
        }
    }

    /// The owner core of `subject`, in `0..workers`.
    #[inline]
    pub fn owner(&self, subject: &[u8]) -> usize {
        if self.workers == 1 {
            return 0;
        }
        let mut h = self.hasher.build_hasher();
        h.write(subject);
        // Multiply-shift maps the 64-bit hash onto 0..workers without a division.
        ((h.finish() as u128 * self.workers as u128) >> 64) as usize
    }

    pub fn workers(&self) -> usize {
        self.workers as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_hasher_same_owner_everywhere() {
        let h = RandomState::new();
        let a = Router::new(4, h.clone());
        let b = Router::new(4, h);
        for i in 0..1000u32 {
            let k = format!("AKIA{i:016}");
            assert_eq!(a.owner(k.as_bytes()), b.owner(k.as_bytes()));
            assert!(a.owner(k.as_bytes()) < 4);
        }
    }

    #[test]
    fn spreads_keys_evenly() {
        let r = Router::new(3, RandomState::new());
        let mut n = [0usize; 3];
        for i in 0..30_000u32 {
            n[r.owner(format!("key-{i}").as_bytes())] += 1;
        }
        for c in n {
            assert!((9_000..11_000).contains(&c), "{n:?}");
        }
        assert_eq!(Router::new(0, RandomState::new()).owner(b"x"), 0);
        assert_eq!(Router::new(1, RandomState::new()).owner(b"x"), 0);
    }

    #[test]
    fn different_hashers_disagree_somewhere() {
        // Keys are hashed with process-random keys: another RandomState is another map.
        let a = Router::new(8, RandomState::new());
        let b = Router::new(8, RandomState::new());
        let differ = (0..200u32)
            .filter(|i| {
                let k = format!("k{i}");
                a.owner(k.as_bytes()) != b.owner(k.as_bytes())
            })
            .count();
        assert!(differ > 100);
    }
}
