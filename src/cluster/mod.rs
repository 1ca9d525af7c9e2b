//! Active-active, the I/O half: one sync thread per instance (never a data core) that
//! holds the Redis connection. Every `sync_interval` it drains the deltas the cores
//! handed over (`runtime::msg::ToSync`), makes one script call (`store`, `sync.lua`)
//! that pushes them and reads the others' counts, and hands each owner core the views
//! that changed (`FromSync::Others`) and, when the store stops or starts answering, the
//! mode to count in (`FromSync::Mode`). No request ever waits for it: cores decide from
//! what they were last told.
//!
//! Owns: the thread, its timing, the store connection, the cluster stats. The algorithm
//! and bookkeeping are pure, in `limit::cluster` (bound, failure policy, replay).
//! Must not touch: HTTP, the cores' tables (only messages reach them).

pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::ClusterConfig;
use crate::limit::cluster::{Batch, Coarse, Link, Mode, Notice, Tracker};
use crate::runtime::mesh::SyncEnds;
use crate::runtime::msg::{FromSync, Subject, ToSync};
use crate::stats::ClusterStats;

use store::Store;

/// Most keys in one script call; a tick with more makes several.
pub const MAX_KEYS_PER_CALL: usize = 2000;
/// Ticks without a call after which an instance leaves the membership.
const ALIVE_TICKS: u64 = 10;

/// The cluster clock: wall-clock ms (shared by the instances, which must agree on it,
/// e.g. by NTP), read as a fixed offset from the monotonic clock of the process.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: Instant,
    wall_at_epoch_ms: u64,
}

impl Clock {
    /// A clock whose monotonic origin is `epoch` (the cores' `now_ms` origin).
    pub fn new(epoch: Instant) -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Clock {
            epoch,
            wall_at_epoch_ms: wall.saturating_sub(epoch.elapsed().as_millis() as u64),
        }
    }

    /// Cluster time of monotonic `mono_ms` (ms since `epoch`).
    #[inline]
    pub fn at(&self, mono_ms: u64) -> u64 {
        self.wall_at_epoch_ms + mono_ms
    }

    pub fn now_ms(&self) -> u64 {
        self.at(self.epoch.elapsed().as_millis() as u64)
    }
}

/// Starts the sync thread; it stops when `stop` is set (checked every tick).
pub fn spawn(
    cfg: ClusterConfig,
    ends: SyncEnds,
    stats: Arc<ClusterStats>,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    let store = Store::new(&cfg).map_err(std::io::Error::other)?;
    stats.enabled.set(1);
    stats.mode.set(Mode::Synced.code());
    let mut s = Sync {
        link: Link::new(cfg.on_store_failure),
        owed: vec![None; ends.cores()],
        cfg,
        ends,
        stats,
        clock,
        store,
        tracker: Tracker::default(),
        last_error_log: None,
    };
    std::thread::Builder::new()
        .name("tollgate-sync".into())
        .spawn(move || s.run(&stop))
}

struct Sync {
    cfg: ClusterConfig,
    ends: SyncEnds,
    stats: Arc<ClusterStats>,
    clock: Clock,
    store: Store,
    tracker: Tracker,
    link: Link,
    /// Per core, a mode not yet delivered.
    owed: Vec<Option<Mode>>,
    last_error_log: Option<Instant>,
}

impl Sync {
    fn run(&mut self, stop: &AtomicBool) {
        let every = self.cfg.sync_interval;
        let mut next = Instant::now();
        log::info!(
            "cluster: syncing with {} every {:?} as {:?}",
            self.cfg.redacted_url(),
            every,
            self.cfg.instance_id
        );
        while !stop.load(Ordering::Relaxed) {
            next += every;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now; // a slow call: start the next tick at once, then keep time
            }
            self.tick();
        }
    }

    /// One tick: deltas in, one call (or a few, see [`MAX_KEYS_PER_CALL`]), views and
    /// mode out.
    fn tick(&mut self) {
        let tracker = &mut self.tracker;
        self.ends.drain(|core, m| match m {
            ToSync::Delta {
                subject,
                tier,
                windows,
                at,
                count,
            } => tracker.add(
                subject.as_bytes(),
                tier,
                core as u16,
                Coarse::from_windows(windows),
                at,
                count,
            ),
        });
        let now = self.clock.now_ms();
        let batch = self.tracker.batch(now);
        let (keys, deltas) = (batch.keys.len(), batch.deltas());
        let changed = match self.call(batch) {
            Ok(alive) => self.link.answered(alive),
            Err(e) => {
                self.tracker.failed();
                self.stats.failures.inc();
                self.log_failure(&e);
                self.link.failed()
            }
        };
        if let Some(m) = changed {
            log::warn!("cluster: now counting the other instances as {}", m.name());
            self.owed.iter_mut().for_each(|o| *o = Some(m));
            self.stats.mode.set(m.code());
        }
        self.deliver_modes();
        let st = &self.stats;
        st.ticks.inc();
        st.failing.set(self.link.failures() as u64);
        st.alive.set(self.link.alive as u64);
        st.batch_keys.set(keys as u64);
        st.batch_deltas.set(deltas as u64);
        st.pending.set(self.tracker.pending() as u64);
        st.dropped.set(self.tracker.dropped);
        st.tracked.set(self.tracker.len() as u64);
    }

    /// The tick's call(s); on success the views that changed are on their way to the
    /// cores and the live member count is returned.
    fn call(&mut self, batch: Batch) -> Result<u32, store::StoreError> {
        let alive_ttl = ALIVE_TICKS * self.cfg.sync_interval.as_millis() as u64;
        let mut keys = batch.keys.into_iter().peekable();
        loop {
            let chunk = Batch {
                now: batch.now,
                keys: keys.by_ref().take(MAX_KEYS_PER_CALL).collect(),
            };
            let t0 = Instant::now();
            let reply = self.store.call(&self.cfg.instance_id, alive_ttl, &chunk)?;
            self.stats.latency(t0.elapsed().as_micros() as u64);
            self.stats.deltas_sent.add(chunk.deltas() as u64);
            let notices = self.tracker.confirm(&chunk, &reply);
            self.deliver(notices);
            if keys.peek().is_none() {
                return Ok(reply.alive);
            }
        }
    }

    fn deliver(&mut self, notices: Vec<Notice>) {
        let mut woken = vec![false; self.ends.cores()];
        for n in notices {
            let core = n.core as usize;
            let msg = FromSync::Others {
                subject: Subject::new(&n.subject),
                tier: n.tier,
                others: n.others,
            };
            if self.ends.send(core, msg).is_err() {
                self.tracker.untold(&n.subject);
                self.stats.undelivered.inc();
            } else if let Some(w) = woken.get_mut(core) {
                *w = true;
            }
        }
        for (core, w) in woken.into_iter().enumerate() {
            if w {
                self.ends.wake(core);
            }
        }
    }

    fn deliver_modes(&mut self) {
        for core in 0..self.owed.len() {
            if let Some(m) = self.owed[core] {
                if self.ends.send(core, FromSync::Mode(m)).is_ok() {
                    self.owed[core] = None;
                    self.ends.wake(core);
                } else {
                    self.stats.undelivered.inc();
                }
            }
        }
    }

    /// Logs a failed tick at most once every 10 s.
    fn log_failure(&mut self, e: &store::StoreError) {
        let now = Instant::now();
        if self
            .last_error_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            log::warn!(
                "cluster: {} did not answer ({e}); {} failed tick(s) in a row, {} delta(s) kept",
                self.cfg.redacted_url(),
                self.link.failures() + 1,
                self.tracker.pending()
            );
            self.last_error_log = Some(now);
        }
    }
}
