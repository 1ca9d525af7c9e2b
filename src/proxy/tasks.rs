//! A core's background tasks besides the accept loops and the mesh: housekeeping (every
//! 250 ms: table expiry, closing unclean or expired idle upstream connections, gauges, the
//! heartbeat the control thread watches, the access-log hand-off), one health loop per
//! upstream node this core probes, and the spread top-N scan of the admin API's `/keys?top=N`.
//!
//! Owns: those loops. Must not touch: client connections; the tables are borrowed only
//! between awaits, for bounded work (at most [`TOP_SCAN`] or the sweep's 8192 entries).

use std::future::poll_fn;
use std::rc::Rc;
use std::sync::mpsc::SyncSender;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::limit::EntrySnapshot;
use crate::runtime::msg::{CoreMsg, TableReply};

use super::observe::unix_ms;
use super::{Worker, upstream};

/// Table slots one turn of a top-N scan looks at, before it lets the core serve requests.
pub const TOP_SCAN: usize = 16_384;

/// Every 250 ms: expire idle table entries (bounded work) and pooled upstream connections,
/// publish gauges, beat, hand a due access-log buffer to the writer.
pub async fn housekeeping(w: Rc<Worker>) {
    loop {
        w.stats.heartbeat.inc();
        monoio::time::sleep(Duration::from_millis(250)).await;
        let snap = w.snapshot();
        let now = w.now_ms();
        let mut shard = w.shard.borrow_mut();
        let removed = shard.sweep(now, 8192, |t| snap.tier(t));
        w.stats.table_expired.add(removed as u64);
        w.stats.table_entries.set(shard.len() as u64);
        w.stats.table_evictions.set(shard.evictions());
        w.stats.table_forced_evictions.set(shard.forced_evictions());
        w.stats.table_refused.set(shard.refused());
        drop(shard);
        let mut ups = w.upstreams.borrow_mut();
        ups.expire_idle(Instant::now());
        ups.publish(Instant::now());
        let discarded = ups.nodes.iter().map(|n| n.pool_discarded).sum();
        w.stats.upstream_pool_discarded.set(discarded);
        drop(ups);
        let mesh = w.mesh.borrow();
        w.stats.cross_core_sent.set(mesh.sent);
        w.stats.cross_core_received.set(mesh.received);
        w.stats.cross_core_batches.set(mesh.batches);
        drop(mesh);
        if let Some(l) = w.alog.borrow_mut().as_mut() {
            l.tick(&w.stats);
        }
    }
}

/// Whether this core probes the node with stable id `id` (one core per node).
pub fn probes(w: &Worker, id: u16) -> bool {
    usize::from(id) % w.mesh.borrow().cores() == w.id
}

/// Probes the node in `slot` every `health.interval` (when health checks are on) and
/// sends each verdict to the other cores; ends when the node leaves the config or the
/// core shuts down.
pub async fn health_loop(w: Rc<Worker>, slot: usize) {
    loop {
        let (c, addr, host, tls, id) = {
            let ups = w.upstreams.borrow();
            let n = &ups.nodes[slot];
            if n.removed {
                return;
            }
            let tls = ups.tls_for(slot);
            (
                ups.config().health.clone(),
                n.addr,
                n.name.clone(),
                tls,
                n.id,
            )
        };
        if c.enabled {
            let outcome = upstream::probe(addr, &host, &c.path, c.timeout, tls).await;
            let ok = w
                .upstreams
                .borrow_mut()
                .probe_result(slot, outcome, unix_ms());
            if let Some(ok) = ok {
                let mut mesh = w.mesh.borrow_mut();
                for core in (0..mesh.cores()).filter(|&c| c != w.id) {
                    mesh.send(core, CoreMsg::Health { node: id, ok });
                }
            }
            w.kick_mesh();
        }
        monoio::select! {
            _ = monoio::time::sleep(c.interval) => {},
            _ = w.shutdown.wait() => return,
        }
    }
}

/// Gives the event loop one turn (other tasks run before this one goes on).
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// The `n` subjects of this core's shard with the highest sustained counts, scanned
/// [`TOP_SCAN`] slots per event-loop turn so a large table never stalls the core; answers
/// on `reply`.
pub async fn top_scan(w: Rc<Worker>, n: usize, reply: SyncSender<TableReply>) {
    let mut best: Vec<EntrySnapshot> = Vec::new();
    let mut from = Some(0);
    while let Some(start) = from {
        let snap = w.snapshot();
        let now = w.now_ms();
        let (part, next) = w
            .shard
            .borrow()
            .top_slots(start, TOP_SCAN, n, now, |t| snap.tier(t));
        best.extend(part);
        // An entry moved by a removal between two turns can be seen twice: keep it once.
        best.sort_by(|a, b| a.subject.cmp(&b.subject));
        best.dedup_by(|a, b| a.subject == b.subject);
        best.sort_by(|a, b| {
            b.sustained_count
                .cmp(&a.sustained_count)
                .then_with(|| a.subject.cmp(&b.subject))
        });
        best.truncate(n);
        from = next;
        if from.is_some() {
            yield_now().await;
        }
    }
    let _ = reply.send(TableReply::Entries(best));
}
