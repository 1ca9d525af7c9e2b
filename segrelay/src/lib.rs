//! segrelay: a TCP relay for tests that re-cuts both byte streams of every connection it
//! relays — each byte its own write, seeded random pieces with random delays, 1,448-byte
//! segments 1 ms apart, or a plain copy — so a peer behind it sees the reads a real network
//! can produce. Reproducible: the cuts of connection i, direction d depend only on the
//! seed, i and d. Used by tollgate's integration tests (tests/common) and, as the
//! `segrelay` binary, by the real-client S3 suite (tests/s3/conftest.py).
//!
//! `cut` decides where a stream is cut and how long to wait; `relay` moves the bytes.

mod cut;
mod relay;

pub use cut::{
    Cut, Cutter, DEFAULT_MAX_DELAY, DEFAULT_MAX_PIECE, Dir, MTU_GAP, MTU_SEGMENT, Piece, SplitMix64,
};
pub use relay::{RESET_GRACE, Relay, Stats};
