//! Every cross-core message, in one place.
//!
//! Owns: the message types carried by the ring mesh (`mesh`): between worker cores
//! (`CoreMsg`: a `Check` from the core holding the connection to the subject's owner core,
//! the owner's `Decision` back, `Update`s (refunds, penalties) and `Health` results from the
//! core that probes a node) and
//! from the control thread to a core (`ControlMsg`, with `TableOp` / `TableReply` for the
//! admin API), and between the cores and their instance's sync thread (active-active:
//! `ToSync` deltas, `FromSync` views and modes), and the `[[rules]]` charges of a request
//! (`Charge`, `Verdict`, `Undo`, `Release`, `Bytes`). Must not touch: I/O, HTTP.
//!
//! Ring-full policy:
//! - `CoreMsg::Check`, `Decision` and `Health`: never dropped. The sender keeps the message
//!   in its per-destination outbox (`mesh`) and pushes it again on its next event-loop turn
//!   (backpressure: checks are bounded by the sender's in-flight requests, one per
//!   connection; decisions by the checks received; health results by one per node and
//!   probe interval).
//! - `CoreMsg::Charge`, `Verdict`, `Undo` and `Release`: never dropped,
//!   like a `Check` (bounded the same way: by the requests in flight).
//! - A `Check` or `Charge` carries the sender's config version; an owner on an older one
//!   holds it until it takes the reload (never answers it under numbers it does not know).
//! - `CoreMsg::Update` and `Bytes` (refunds, penalties, byte counts; fire-and-forget, no reply): queued like a
//!   `Check`, unless more than a ring's worth (`mesh::RING_SLOTS`) already waits for that
//!   core — then it is dropped and the sender is told (`limiter::refund`/`add_penalty`
//!   return false). Dropping is conservative: an unrefunded slot stays used, an uncounted
//!   failure only delays a penalty.
//! - `ControlMsg`: the control thread retries for a moment (`ControlHandle::send`). A
//!   `Config` or `Tls` snapshot a core did not take is kept by the control plane and sent
//!   again every 250 ms until that core takes it (`control::ControlState::retry_undelivered`;
//!   a newer snapshot replaces the one waiting: each is whole), and the core's lag is shown
//!   in `/config`; a `Table` request is answered 503 by the admin API; a `Shutdown` is
//!   retried like a snapshot.
//! - `CoreMsg::Health` names a node by its stable id (`config::UpstreamServer::id`), never
//!   by a core's slot: a core that does not know the id (yet, or any more) ignores it.
//! - `ToSync::Delta`: never lost. A core pushes it straight into its ring to the sync
//!   thread (no outbox); when the ring is full the admissions stay pending in the shard
//!   entry and go with the next flush (`Shard::take_pending` stops at the first refusal).
//! - `FromSync::Others`: when the core's ring is full the sync thread forgets that it told
//!   the core (`Tracker::untold`) and sends it again after the next tick; meanwhile the
//!   core counts the previous view. `FromSync::Mode`: kept by the sync thread per core and
//!   pushed again every tick until it is in.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use crate::limit::cluster::Mode;
use crate::limit::multi::Verdict;
use crate::limit::{Decision, EntrySnapshot, RefundToken};

/// Inline capacity of a subject; longer subjects (keys up to 255 bytes) go to the heap.
pub const SUBJECT_INLINE: usize = 46;

/// A rate-limit subject (API key bytes, or an address subject) carried between cores
/// without allocating for the common key lengths.
#[derive(Clone, Debug)]
pub enum Subject {
    Inline {
        len: u8,
        bytes: [u8; SUBJECT_INLINE],
    },
    Heap(Box<[u8]>),
}

impl Subject {
    pub fn new(s: &[u8]) -> Subject {
        if s.len() <= SUBJECT_INLINE {
            let mut bytes = [0u8; SUBJECT_INLINE];
            bytes[..s.len()].copy_from_slice(s);
            Subject::Inline {
                len: s.len() as u8,
                bytes,
            }
        } else {
            Subject::Heap(s.into())
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Subject::Inline { len, bytes } => &bytes[..*len as usize],
            Subject::Heap(b) => b,
        }
    }
}

/// Worker-to-worker messages.
#[derive(Debug)]
pub enum CoreMsg {
    /// "Check and, if allowed, admit one request of `subject` in `tier` (its number)." Sent
    /// by the core that holds the connection (origin) to the subject's owner core.
    Check {
        /// Index into the origin core's pending table: the reply path.
        slot: u32,
        subject: Subject,
        tier: u16,
        /// The sender's config version: an owner behind it waits until it runs that
        /// version (a tier the reload added is then known to it).
        version: u32,
    },
    /// The owner's answer to a `Check`.
    Decision { slot: u32, decision: Decision },
    /// "Take charge `what` of one request of `subject`" (`[[rules]]`: one charge of a
    /// request counted on several cores, see `limit::multi`): `what` is a tier number or
    /// `rules::RULE_TIER_BASE` + a rule's slot (numbers a reload keeps, see
    /// `config::LimitsConfig::tiers` and `rules::Rule::slot`). Taken (a reservation)
    /// or denied with nothing counted; answered by a `Verdict`. The owner takes the
    /// rule's cost from its own snapshot.
    Charge {
        slot: u32,
        subject: Subject,
        what: u16,
        /// As `Check::version`.
        version: u32,
    },
    /// The owner's answer to a `Charge`.
    Verdict { slot: u32, verdict: Verdict },
    /// "Give back charge `what` of `subject`, taken as `token`" (a request denied by
    /// another of its charges; never dropped: sent like a `Check`). Not a `LimitUpdate`:
    /// nested, it would make every ring slot bigger.
    Undo {
        subject: Subject,
        what: u16,
        in_flight: bool,
        token: Option<RefundToken>,
    },
    /// "A request of `subject` counted in flight has ended" (never dropped).
    Release { subject: Subject },
    /// "`n` body bytes of `subject` went through" (dropped like an `Update` when the
    /// queue is full: the window then counts fewer bytes).
    Bytes { subject: Subject, n: u64 },
    /// One active health-check result for upstream `node`, from the core that probes it
    /// (each node is probed by one core; every core keeps the same up/down view).
    Health { node: u16, ok: bool },
    /// A limit update that needs no answer.
    Update(LimitUpdate),
}

impl CoreMsg {
    /// Whether this is a check or charge planned under a newer config than version `own`
    /// (the one its owner runs): the owner must hold it until it runs that one. Versions
    /// compare modulo 2^32.
    pub fn planned_ahead_of(&self, own: u32) -> bool {
        match self {
            CoreMsg::Check { version, .. } | CoreMsg::Charge { version, .. } => {
                (version.wrapping_sub(own) as i32) > 0
            }
            _ => false,
        }
    }
}

/// Fire-and-forget changes to a core's limit table (see the ring-full policy above).
#[derive(Debug)]
pub enum LimitUpdate {
    /// "Give back the admission `token` of `subject`": to the subject's owner core, after
    /// the upstream rejected the request as unauthenticated.
    Refund {
        subject: Subject,
        token: RefundToken,
    },
    /// "Count one authentication failure of this client address": to every core (each
    /// keeps the same penalty view, so checking it needs no message).
    Penalty { subject: [u8; 17] },
}

/// Core → its instance's sync thread (active-active, `[cluster]`).
#[derive(Debug)]
pub enum ToSync {
    /// `count` admissions of `subject` (tier `tier`, windows of `windows` ms: sustained,
    /// burst) on this core since its last flush, attributed to cluster time `at` (ms).
    Delta {
        subject: Subject,
        tier: u16,
        windows: [u32; 2],
        at: u64,
        count: u32,
    },
}

/// Sync thread → one core.
#[derive(Debug)]
pub enum FromSync {
    /// The other instances' admissions of `subject` in each window, as just read.
    Others {
        subject: Subject,
        tier: u16,
        others: [u32; 2],
    },
    /// What to count for the other instances from now on (the store answers or not).
    Mode(Mode),
}

/// A table operation asked by the admin API.
#[derive(Debug, Clone)]
pub enum TableOp {
    /// Snapshot of one subject (if this core owns and tracks it).
    Inspect(Vec<u8>),
    /// Top `n` subjects of this core by sustained count.
    Top(usize),
    /// Remove one subject; replies with whether it existed.
    Remove(Vec<u8>),
    /// Remove everything.
    Clear,
    /// The `n` subjects this core denied most often lately (denials are counted on the
    /// core that answered the request).
    Denied(usize),
}

#[derive(Debug)]
pub enum TableReply {
    Entries(Vec<EntrySnapshot>),
    Removed(usize),
    Denied(Vec<DeniedEntry>),
}

/// A subject often denied on one core (see `TableOp::Denied`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedEntry {
    /// The table subject (a key, or an address subject), at most 64 bytes kept.
    pub subject: Vec<u8>,
    pub tier: u16,
    pub denied: u64,
    /// When it was last denied (Unix ms).
    pub last_ms: u64,
}

/// Control thread → one core.
pub enum ControlMsg {
    /// A new validated configuration snapshot (reload). Counters carry over.
    Config(Arc<crate::config::Config>),
    /// New TLS server configuration (certificate reload).
    Tls(Arc<rustls::ServerConfig>),
    /// Table inspection / clearing; the core replies on the channel.
    Table(TableOp, SyncSender<TableReply>),
    /// Stop accepting, finish in-flight requests within the grace period, then exit.
    Shutdown,
}

impl std::fmt::Debug for ControlMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlMsg::Config(c) => write!(f, "Config(v{})", c.limits.version),
            ControlMsg::Tls(_) => write!(f, "Tls"),
            ControlMsg::Table(op, _) => write!(f, "Table({op:?})"),
            ControlMsg::Shutdown => write!(f, "Shutdown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only checks and charges wait for a config, and versions compare across the wrap.
    #[test]
    fn planned_ahead_of_compares_versions_modulo_the_wrap() {
        let check = |version| CoreMsg::Check {
            slot: 0,
            subject: Subject::new(b"k"),
            tier: 0,
            version,
        };
        assert!(check(5).planned_ahead_of(4));
        assert!(!check(4).planned_ahead_of(4) && !check(3).planned_ahead_of(4));
        assert!(check(1).planned_ahead_of(u32::MAX), "after the wrap");
        assert!(
            !check(u32::MAX).planned_ahead_of(1),
            "a sender behind, across it"
        );
        let release = CoreMsg::Release {
            subject: Subject::new(b"k"),
        };
        assert!(!release.planned_ahead_of(0));
    }
}
