//! Rate limiting: the exact-bounded trailing-window algorithm and its per-core tables.
//!
//! Owns: [`window`] (pure algorithm: [`TierLimits`], [`WindowState`], [`Decision`];
//! time passed in), [`table`] (one core's [`Shard`] of subjects → counters, with idle
//! expiry and a size cap) and [`route`] (subject → owner core, [`Router`]).
//! Must not touch: I/O, clocks, threads, cross-core messaging, configuration loading —
//! callers pass `now_ms` and the validated limits, and route requests to the owner.

pub mod route;
pub mod table;
pub mod window;

pub use route::Router;
pub use table::{EntrySnapshot, Shard, addr_subject};
pub use window::{Decision, MAX_LIMIT, TierLimits, WindowState};
