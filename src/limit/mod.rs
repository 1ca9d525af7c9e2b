//! Rate limiting: the exact-bounded trailing-window algorithm and its per-core tables.
//!
//! Owns: [`window`] (pure algorithm: [`WindowConfig`], [`TierLimits`], [`WindowState`],
//! [`Decision`], refunds; time passed in), [`table`] (one core's [`Shard`] of subjects →
//! counters, with idle expiry, a size cap that never evicts a denying entry, and
//! per-address penalty windows), [`route`] (subject → owner core, [`Router`]) and
//! [`cluster`] (active-active, pure: the view of the other instances, the store's
//! semantics, the sync bookkeeping and the over-admission bound).
//! Must not touch: I/O, clocks, threads, cross-core messaging, configuration loading —
//! callers pass `now_ms` and the validated limits, and route requests to the owner.

pub mod cluster;
pub mod flow;
pub mod multi;
pub mod route;
pub mod table;
pub mod window;

pub use flow::{ByteLimit, FlowDenial, FlowTable};
pub use route::Router;
pub use table::{
    DEFAULT_IPV6_PREFIX, DEFAULT_PENALTY, EntrySnapshot, PENALTY_PREFIX, PENALTY_TIER, Shard,
    addr_subject, client_network, penalty_subject,
};
pub use window::{
    Decision, MAX_LIMIT, NARROW_MAX_LIMIT, RefundToken, TierLimits, WideState, WindowConfig,
    WindowState,
};
