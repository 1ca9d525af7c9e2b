//! Active-active through a real Redis (Debian's `redis-server`, started here on a free
//! port with its own directory, stopped by PID): the tick script against the in-memory
//! model, 2 and 3 tollgate instances holding one limit (and N× without `[cluster]`), and
//! the store stopped, continued and restarted empty under load. 127.0.0.1 only.
//!
//! Without `redis-server` on PATH these tests print a notice and pass, unless
//! `TOLLGATE_REQUIRE_REDIS=1` (scripts/test.sh sets it after installing it).

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tollgate::limit::cluster::{Batch, BatchKey, Coarse, MemStore};

const KEY: &str = "AKIACLUSTERKEY000001";
const KEYS: &str = "[keys]\n\"AKIACLUSTERKEY000001\" = \"premium\"\n";

/// A redis-server of this test: own port, own directory, no persistence.
struct Redis {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Redis {
    /// None (and a notice) when redis-server is not installed and not required.
    fn start(tag: &str) -> Option<Redis> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                std::env::var("TOLLGATE_REQUIRE_REDIS").is_err(),
                "redis-server is required (scripts/deps.sh installs it)"
            );
            eprintln!("tests/cluster: redis-server not installed; skipping");
            return None;
        }
        let dir = tmpdir(&format!("redis-{tag}"));
        let port = free_port();
        Some(Redis {
            child: Self::spawn(port, &dir),
            port,
            dir,
        })
    }

    fn spawn(port: u16, dir: &std::path::Path) -> Child {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert!(
            wait_port(addr, Duration::from_secs(5)),
            "redis did not listen"
        );
        child
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `kill -STOP` / `-CONT` by PID.
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig}");
    }

    /// Killed and started again on the same port, empty.
    fn restart_empty(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.port, &self.dir);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.signal_quietly("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    fn signal_quietly(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }
}

/// An instance: tollgate in front of its own upstream, which records arrival times.
struct Instance {
    proxy: Proxy,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    _up: FakeUpstream,
}

fn instance(tag: &str, cluster: Option<&str>) -> Instance {
    instance_with(tag, cluster, "")
}

/// `instance` with more `[cluster]` lines.
fn instance_with(tag: &str, cluster: Option<&str>, more: &str) -> Instance {
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let a2 = arrivals.clone();
    let up = FakeUpstream::start(Arc::new(move |_s: &Seen| {
        a2.lock().unwrap().push(Instant::now());
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
    }));
    let mut body =
        "[limits]\nkeys_file = \"keys.toml\"\n[upstream.health]\nenabled = false\n".to_string();
    if let Some(url) = cluster {
        body.push_str(&format!("[cluster]\nredis_url = \"{url}\"\n{more}"));
    }
    let proxy = start_proxy(tag, &[up.addr], 2, &body, Some(KEYS));
    Instance {
        proxy,
        arrivals,
        _up: up,
    }
}

/// Requests for KEY to `addr` at `rate` per second for `dur` (paced from the start, one
/// keep-alive connection); returns (status, latency) per request.
fn offer(addr: SocketAddr, rate: u64, dur: Duration) -> Vec<(u16, Duration)> {
    let mut c = Client::connect(addr);
    let t0 = Instant::now();
    let mut out = Vec::new();
    let req = sigv4_get("/b/o", KEY);
    for k in 0.. {
        let at = t0 + Duration::from_micros(k * 1_000_000 / rate);
        if at >= t0 + dur {
            break;
        }
        if let Some(d) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let s = Instant::now();
        let r = c.request(&req);
        out.push((r.status, s.elapsed()));
    }
    out
}

/// `offer` on every address at once.
fn offer_all(addrs: &[SocketAddr], rate: u64, dur: Duration) -> Vec<Vec<(u16, Duration)>> {
    let hs: Vec<_> = addrs
        .iter()
        .map(|&a| std::thread::spawn(move || offer(a, rate, dur)))
        .collect();
    hs.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Most of `ts` (any order) in any `span` window.
fn max_in(ts: &[Instant], span: Duration) -> usize {
    let mut ts = ts.to_vec();
    ts.sort_unstable();
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..ts.len() {
        while ts[hi] - ts[lo] >= span {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

fn stats(p: &Proxy) -> serde_json::Value {
    let (_, body) = admin_get(p.admin.unwrap(), "/stats");
    serde_json::from_str(&body).unwrap()
}

fn table(p: &Proxy) -> serde_json::Value {
    let (_, body) = admin_get(p.admin.unwrap(), &format!("/table?key={KEY}"));
    serde_json::from_str(&body).unwrap()
}

/// Polls `f` every 10 ms for up to `limit`; returns how long it took.
fn until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn p99(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

/// The tick script on a real Redis answers exactly what the in-memory model answers, for
/// two instances pushing and reading interleaved batches over several windows.
#[test]
fn the_script_is_the_model() {
    let Some(redis) = Redis::start("script") else {
        return;
    };
    let cfg = |id: &str| tollgate::config::ClusterConfig {
        redis_url: redis.url(),
        sync_interval: Duration::from_millis(100),
        instance_id: id.into(),
        on_store_failure: tollgate::config::StoreFailure::LocalShare,
        connect_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(1),
        write_timeout: Duration::from_secs(1),
    };
    let mut stores = [
        tollgate::cluster::store::Store::new(&cfg("a")).unwrap(),
        tollgate::cluster::store::Store::new(&cfg("b")).unwrap(),
    ];
    let mut model = MemStore::default();
    let coarse = [
        Coarse::from_windows([3_000, 300]),
        Coarse::from_windows([60_000, 1_000]),
    ];
    let subjects: [&[u8]; 3] = [b"AKIA1", b"k:with:colons", &[0, 1, 2, 255]];
    let t0 = tollgate::cluster::Clock::new(Instant::now()).now_ms();
    let mut seed = 12345u64;
    let mut rnd = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    // Each instance's own cumulative count per (subject, window, sub-bucket), raised at
    // random; calls are sometimes repeated or sent late with older counts.
    let mut own: std::collections::HashMap<(usize, usize, usize, u64), u32> = Default::default();
    for step in 0..160u64 {
        let now = t0 + step * 47;
        let who = rnd(2) as usize;
        let keys = (0..3)
            .map(|k| {
                let c = coarse[k % 2];
                let counts = std::array::from_fn(|i| {
                    (0..rnd(3))
                        .map(|_| {
                            let sb = (now - rnd(2_000)) / c.g[i];
                            let v = own.entry((who, k, i, sb)).or_default();
                            if rnd(4) > 0 {
                                *v += 1 + rnd(5) as u32;
                            }
                            (sb, (*v).saturating_sub(rnd(2) as u32))
                        })
                        .collect()
                });
                BatchKey {
                    subject: subjects[k].into(),
                    coarse: c,
                    counts,
                }
            })
            .collect();
        let b = Batch { now, keys };
        let id = ["a", "b"][who];
        let real = stores[who].call(id, 10_000, &b).unwrap();
        let want = model.eval(id, 10_000, &b);
        assert_eq!(real, want, "step {step}");
    }
}

/// Runs `n` instances (with or without `[cluster]`) under one key offered 150/s in total
/// (3x its 50/s) for 3 s; returns (most admitted in any second, the bound).
fn one_key_over(n: usize, cluster: bool) -> Option<(usize, usize)> {
    let redis = Redis::start(&format!("over{n}{cluster}"))?;
    let url = redis.url();
    let insts: Vec<Instance> = (0..n)
        .map(|i| {
            instance(
                &format!("aa{n}-{i}-{cluster}"),
                cluster.then_some(url.as_str()),
            )
        })
        .collect();
    let addrs: Vec<SocketAddr> = insts.iter().map(|x| x.proxy.addr).collect();
    let rate = 150 / n as u64;
    let results = offer_all(&addrs, rate, Duration::from_secs(3));
    for r in &results {
        assert!(
            r.iter().all(|(s, _)| *s == 200 || *s == 429),
            "only 200 and 429"
        );
    }
    let all: Vec<Instant> = insts
        .iter()
        .flat_map(|x| x.arrivals.lock().unwrap().clone())
        .collect();
    let got = max_in(&all, Duration::from_secs(1));
    // D = F + 2T + 2R (src/limit/cluster.rs) with R the slowest script call measured,
    // plus 10 ms for the path from decision to the upstream's clock.
    let r_max = insts
        .iter()
        .map(|x| {
            stats(&x.proxy)["cluster"]["sync_latency_us"]["max"]
                .as_u64()
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0);
    let d = Duration::from_millis(10 + 200 + 10) + Duration::from_micros(2 * r_max);
    let a = insts
        .iter()
        .map(|x| max_in(&x.arrivals.lock().unwrap(), d))
        .max()
        .unwrap_or(0);
    let bound = (50 + (n - 1) * a).min(50 * n);
    println!(
        "{n} instances, cluster {cluster}: most admitted in a second {got}, bound {bound} (A(D) = {a}, D = {d:?})"
    );
    Some((got, bound))
}

#[test]
fn two_and_three_instances_hold_one_limit_and_without_cluster_n_times() {
    for n in [2, 3] {
        let Some((got, bound)) = one_key_over(n, true) else {
            return;
        };
        assert!(got >= 50, "the limit is reached: {got}");
        assert!(got <= bound, "{n} instances: {got} > bound {bound}");
        let (alone, _) = one_key_over(n, false).unwrap();
        assert!(
            alone >= 50 * n - 2 && alone <= 50 * n,
            "{n} instances without [cluster]: {alone}, the seed's N x"
        );
        assert!(got < alone, "the cluster holds less than N x");
    }
}

#[test]
fn store_stopped_continued_and_restarted_under_load() {
    let Some(mut redis) = Redis::start("fail") else {
        return;
    };
    let url = redis.url();
    let insts = [
        instance("fail-a", Some(&url)),
        instance("fail-b", Some(&url)),
    ];
    let addrs: Vec<SocketAddr> = insts.iter().map(|x| x.proxy.addr).collect();
    let mode = |i: usize| {
        stats(&insts[i].proxy)["cluster"]["mode"]
            .as_str()
            .map(String::from)
    };
    until(Duration::from_secs(3), || {
        stats(&insts[0].proxy)["cluster"]["instances_alive"] == 2
    })
    .expect("both instances in the membership");

    let (_, metrics) = admin_get(insts[0].proxy.admin.unwrap(), "/metrics");
    for want in [
        "tollgate_cluster_mode 1",
        "tollgate_cluster_instances_alive 2",
        "tollgate_cluster_sync_seconds_count",
        "tollgate_cluster_failures_total 0",
    ] {
        assert!(metrics.contains(want), "{want} missing from /metrics");
    }
    assert_eq!(admin_get(insts[0].proxy.admin.unwrap(), "/health").0, 200);

    // Normal: 40/s each (80/s against 50/s).
    let before = offer_all(&addrs, 40, Duration::from_millis(1500));
    let mut lat_before: Vec<Duration> = before
        .iter()
        .flatten()
        .filter(|r| r.0 == 200)
        .map(|r| r.1)
        .collect();

    // kill -STOP: the policy (local_share: 25/s each) within three ticks; no request waits.
    redis.signal("-STOP");
    let stopped = Instant::now();
    let load = {
        let addrs = addrs.clone();
        std::thread::spawn(move || offer_all(&addrs, 40, Duration::from_millis(2000)))
    };
    let took = until(Duration::from_secs(2), || {
        (0..2).all(|i| mode(i).as_deref() == Some("local_share"))
    })
    .expect("local_share applied");
    println!("STOP: local_share after {took:?}");
    assert!(
        took <= Duration::from_millis(500),
        "three ticks (+ polling a loaded machine): {took:?}"
    );
    let during = load.join().unwrap();
    let mut lat_during: Vec<Duration> = during
        .iter()
        .flatten()
        .filter(|r| r.0 == 200)
        .map(|r| r.1)
        .collect();
    let (pb, pd) = (p99(&mut lat_before), p99(&mut lat_during));
    println!("p99 of admitted requests: before {pb:?}, Redis stopped {pd:?}");
    assert!(
        pd < pb + Duration::from_millis(50),
        "no request waits for Redis (a wait would take its 100 ms read timeout)"
    );
    // Each instance kept to its share once the policy applied.
    for x in &insts {
        let late: Vec<Instant> = x
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .copied()
            .filter(|&t| t > stopped + Duration::from_millis(1_400))
            .collect();
        assert!(
            max_in(&late, Duration::from_secs(1)) <= 25,
            "{} in a second",
            late.len()
        );
    }

    // kill -CONT: synced again, deltas replayed, global counts right.
    redis.signal("-CONT");
    until(Duration::from_secs(3), || {
        (0..2).all(|i| {
            let c = &stats(&insts[i].proxy)["cluster"];
            c["mode"] == "synced" && c["deltas_pending"] == 0
        })
    })
    .expect("synced and replayed");
    std::thread::sleep(Duration::from_millis(400));
    let (ta, tb) = (table(&insts[0].proxy), table(&insts[1].proxy));
    println!("after CONT: a {ta}, b {tb}");
    assert_eq!(
        ta["others_sustained"], tb["sustained_count"],
        "a sees all of b's"
    );
    assert_eq!(
        tb["others_sustained"], ta["sustained_count"],
        "b sees all of a's"
    );
    // The key view shows the same: others and the global total the limiter checks.
    let (_, kv) = admin_get(insts[0].proxy.admin.unwrap(), &format!("/keys/{KEY}"));
    let kv: serde_json::Value = serde_json::from_str(&kv).unwrap();
    assert_eq!(kv["cluster"]["others"][0], tb["sustained_count"], "{kv}");
    assert_eq!(
        kv["cluster"]["global"]["sustained"], ta["global_sustained"],
        "{kv}"
    );

    // Restarted empty: no crash, counts rebuilt from the next ticks (every live count is
    // sent again after the failed tick).
    redis.restart_empty();
    let after = offer_all(&addrs, 40, Duration::from_millis(1500));
    assert!(after.iter().flatten().all(|(s, _)| *s == 200 || *s == 429));
    until(Duration::from_secs(3), || {
        (0..2).all(|i| mode(i).as_deref() == Some("synced"))
    })
    .expect("synced after the restart");
    std::thread::sleep(Duration::from_millis(400));
    let (ta, tb) = (table(&insts[0].proxy), table(&insts[1].proxy));
    println!("after restart: a {ta}, b {tb}");
    let (oa, lb) = (
        ta["others_sustained"].as_u64().unwrap(),
        tb["sustained_count"].as_u64().unwrap(),
    );
    assert_eq!(
        oa, lb,
        "rebuilt in full: every live count is sent again after a failed tick"
    );
    assert!(
        stats(&insts[0].proxy)["cluster"]["failures"]
            .as_u64()
            .unwrap()
            >= 2
    );
}

/// `on_store_failure = "closed"`: with Redis stopped every limited request is denied and
/// `/health` tells the balancer (503); once it answers again, both are back.
#[test]
fn closed_policy_denies_and_reports_unhealthy() {
    let Some(redis) = Redis::start("closed") else {
        return;
    };
    let x = instance_with(
        "closed",
        Some(&redis.url()),
        "on_store_failure = \"closed\"\n",
    );
    let admin = x.proxy.admin.unwrap();
    let mut c = Client::connect(x.proxy.addr);
    assert_eq!(c.request(&sigv4_get("/b/o", KEY)).status, 200);
    redis.signal("-STOP");
    until(Duration::from_secs(2), || {
        admin_get(admin, "/health").0 == 503
    })
    .expect("/health 503 while the store is away");
    assert_eq!(
        c.request(&sigv4_get("/b/o", KEY)).status,
        429,
        "closed: denied"
    );
    redis.signal("-CONT");
    until(Duration::from_secs(3), || {
        admin_get(admin, "/health").0 == 200
    })
    .expect("healthy again");
    assert_eq!(c.request(&sigv4_get("/b/o", KEY)).status, 200);
}
