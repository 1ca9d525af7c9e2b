//! Why: `Shard::check` is the whole per-request cost of rate limiting on the owner
//! core (SipHash of the key, index probe, slab access, window check). Measured with
//! 1,000 keys (hot in cache) and 100,000 keys (the default per-core cap: cache
//! misses dominate), keys visited in a scrambled order.
//!
//! Run: `cargo bench --bench table -- --warm-up-time 1 --measurement-time 3`.
//! Record the machine (CPU model, cores, kernel, rustc) beside any figure you keep.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate::config::WindowConfig;
use tollgate::limit::{Shard, TierLimits};

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

fn keys(n: usize, garage: bool) -> Vec<Vec<u8>> {
    // 20-byte keys like AWS access key ids, visited in a scrambled order.
    let mut v: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            if garage {
                format!("GK{:016x}{:08x}", x, x >> 13 & 0xFFFF_FFFF).into_bytes()
            } else {
                format!("AKIA{x:016X}").into_bytes()
            }
        })
        .collect();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

fn bench(c: &mut Criterion) {
    let lim = premium();
    let mut g = c.benchmark_group("shard");
    for (n, garage) in [
        (1_000usize, false),
        (100_000, false),
        (1_000, true),
        (100_000, true),
    ] {
        let ks = keys(n, garage);
        assert!(ks.iter().all(|k| k.len() == if garage { 26 } else { 20 }));
        let mut sh = Shard::new(n);
        let mut t = 1_000_000u64;
        for k in &ks {
            sh.check(k, 0, &lim, t);
        }
        let mut i = 0usize;
        let name = if garage {
            format!("check_{n}_garage_keys")
        } else {
            format!("check_{n}_keys")
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                if i == ks.len() {
                    i = 0;
                    t += 1000; // every key sees ~1 req/s: admitted path
                }
                black_box(sh.check(black_box(&ks[i]), 0, &lim, t))
            })
        });
        assert_eq!(sh.len(), n);
        assert_eq!(sh.forced_evictions(), 0);
    }
    // Insert + evict path: a full shard receiving new subjects (rotating made-up keys).
    g.bench_function("check_new_subject_full_shard", |b| {
        let mut sh = Shard::new(10_000);
        let mut n = 0u64;
        let t = 5_000_000u64;
        b.iter(|| {
            n += 1;
            let k = format!("FAKE{n:016}");
            black_box(sh.check(k.as_bytes(), 0, &lim, t))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
