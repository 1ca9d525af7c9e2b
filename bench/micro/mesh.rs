//! Why: a request whose key is owned by another core pays for one message to the owner and
//! one reply back, over the per-core-pair SPSC rings (`runtime::mesh`), on top of the
//! owner-local `Shard::check`. This measures both paths side by side with the real types:
//!
//! * `owner_local`: the plain function call a request on the owner core makes;
//! * `cross_core/batch_N`: N `Check` messages queued on the origin core, flushed (one ring
//!   commit + one doorbell), drained by the owner thread, checked, answered with N
//!   `Decision` messages, drained back on the origin. Time per iteration = one batch round
//!   trip; criterion's throughput line gives the cost per check.
//!
//! The owner thread spins on its rings (a parked owner adds a wake-up, measured by the proxy
//! benchmark, not here). Two cores are needed for the cross-core figures to mean anything.
//!
//! Run: `cargo bench --bench mesh -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tollgate::config::WindowConfig;
use tollgate::limit::{Shard, TierLimits};
use tollgate::runtime::mesh;
use tollgate::runtime::msg::{CoreMsg, Subject};

fn premium() -> TierLimits {
    TierLimits::new(
        WindowConfig {
            length_ms: 60_000,
            limit: 1000,
        },
        WindowConfig {
            length_ms: 1000,
            limit: 50,
        },
    )
}

fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("GK{:024x}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).into_bytes())
        .collect()
}

/// The owner's clock: every key sees about one request per second (admitted path).
fn now_for(round: u64) -> u64 {
    1_000_000 + round * 1000
}

fn bench(c: &mut Criterion) {
    let ks = keys(1000);
    let lim = premium();

    let mut g = c.benchmark_group("limit_path");
    g.throughput(Throughput::Elements(1));
    {
        let mut sh = Shard::new(100_000);
        let mut i = 0usize;
        let mut round = 0u64;
        g.bench_function("owner_local", |b| {
            b.iter(|| {
                i += 1;
                if i == ks.len() {
                    i = 0;
                    round += 1;
                }
                black_box(sh.check(black_box(&ks[i]), 0, &lim, now_for(round)))
            })
        });
    }
    g.finish();

    let (mut meshes, _control) = mesh::build(2);
    let mut owner = meshes.pop().expect("core 1");
    let mut origin = meshes.pop().expect("core 0");
    let stop = Arc::new(AtomicBool::new(false));
    let owner_thread = {
        let stop = stop.clone();
        let lim = premium();
        std::thread::spawn(move || {
            let _ = core_affinity::set_for_current(core_affinity::CoreId { id: 1 });
            let mut sh = Shard::new(100_000);
            let mut checks = 0u64;
            let mut replies = Vec::with_capacity(64);
            while !stop.load(Ordering::Relaxed) {
                owner.drain(|from, msg| {
                    if let CoreMsg::Check {
                        slot,
                        subject,
                        tier,
                        ..
                    } = msg
                    {
                        checks += 1;
                        let decision =
                            sh.check(subject.as_bytes(), tier, &lim, now_for(checks / 1000));
                        replies.push((from, CoreMsg::Decision { slot, decision }));
                    }
                });
                for (to, m) in replies.drain(..) {
                    owner.send(to, m);
                }
                while !owner.flush() {
                    std::hint::spin_loop();
                }
                std::hint::spin_loop();
            }
            checks
        })
    };
    let _ = core_affinity::set_for_current(core_affinity::CoreId { id: 0 });

    let mut g = c.benchmark_group("limit_path/cross_core");
    for batch in [1usize, 8, 32] {
        g.throughput(Throughput::Elements(batch as u64));
        let mut i = 0usize;
        g.bench_function(format!("batch_{batch}"), |b| {
            b.iter(|| {
                for s in 0..batch {
                    i = (i + 1) % ks.len();
                    origin.send(
                        1,
                        CoreMsg::Check {
                            slot: s as u32,
                            subject: Subject::new(&ks[i]),
                            tier: 0,
                            version: 1,
                        },
                    );
                }
                while !origin.flush() {
                    std::hint::spin_loop();
                }
                let mut got = 0usize;
                while got < batch {
                    got += origin.drain(|_, msg| {
                        if let CoreMsg::Decision { decision, .. } = msg {
                            black_box(decision);
                        }
                    });
                }
            })
        });
    }
    g.finish();
    stop.store(true, Ordering::Relaxed);
    let checks = owner_thread.join().expect("owner thread");
    assert!(checks > 0, "the owner answered no checks");
}

criterion_group!(benches, bench);
criterion_main!(benches);
