//! `loadgen bench`: wrk-style saturation against one URL. Closed loop (each connection keeps
//! `pipeline` requests in flight, back-to-back, precomputed request bytes, no per-request
//! allocation) or fixed rate (`--rate`, open loop through the engine, latency from the intended
//! time). Requests rotate over `--keys N` SigV4-style keys ([`keys`]); `--new-conn` opens a
//! connection per request (HTTPS: resumed from the previous session unless `--no-tls-resume`).
//! Owns its own worker threads for the closed loop; reuses [`crate::engine`] for fixed rate.

pub mod keys;

use crate::client::{Conn, TlsSetup, tls_config};
use crate::engine::{self, EngineConfig, KeyWork, ReqSource};
use crate::plan::{Arrival, KeyPlan, Mix, Mode, Profile};
use crate::request::Target;
use crate::stats::{KeyStats, Percentiles, new_hist};
use hdrhistogram::Histogram;
use keys::{KeyStyle, RequestSet, Spec};
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct BenchOpts {
    pub url: String,
    pub connections: usize,
    pub threads: usize,
    pub duration: Duration,
    pub pipeline: usize,
    pub rate: Option<f64>,
    pub timeout: Duration,
    pub method: String,
    pub headers: Vec<String>,
    pub body_size: u64,
    pub insecure: bool,
    pub ca_file: Option<String>,
    pub pin_cores: Vec<usize>,
    pub progress: bool,
    /// 0: one fixed request. N: rotate over keys 0..N (bench/lib.sh `gen_keys`).
    pub keys: usize,
    pub key_style: KeyStyle,
    /// One request per connection (closed loop only).
    pub new_conn: bool,
    /// HTTPS with `new_conn`: resume sessions (tickets / ids) instead of full handshakes.
    pub tls_resume: bool,
    /// Closed loop: stop after this many requests (0 = when the duration is over). With
    /// `keys` = N and `requests` = k × N, every key is sent exactly k times.
    pub requests: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Target(#[from] crate::request::TargetError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    #[error("bad option: {0}")]
    Option(String),
}

/// Result of a bench run (serialised into the JSON report). Counts, rates and latencies only:
/// the CPU a target spends is measured outside (bench/lib.sh reads /proc), `client_cpu_s` is
/// the load generator's own, to tell when the load side was the bottleneck.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub format: &'static str,
    pub version: u32,
    pub url: String,
    pub mode: &'static str,
    pub driver: String,
    pub threads: usize,
    pub connections: usize,
    pub pipeline: usize,
    pub rate: Option<f64>,
    /// Keys rotated over (0 = no key headers).
    pub keys: usize,
    pub new_conn: bool,
    pub tls_resume: bool,
    pub duration_s: f64,
    pub elapsed_s: f64,
    pub requests: u64,
    pub rps: f64,
    /// Responses by class: index 1 = 1xx … 5 = 5xx.
    pub status_classes: [u64; 6],
    pub transport_errors: u64,
    pub timeouts: u64,
    /// Fixed rate: requests never sent (no free connection within the timeout).
    pub dropped: u64,
    /// Fixed rate: requests sent more than 1 ms after their intended time.
    pub late: u64,
    /// Connections opened (closed loop; None for fixed rate).
    pub connections_opened: Option<u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Closed loop: send→response. Fixed rate: from the intended send time.
    pub latency_ms: Percentiles,
    pub service_ms: Percentiles,
    /// Fixed rate: actual send minus intended time.
    pub send_lag_ms: Option<Percentiles>,
    /// utime + stime of this process (all threads), seconds.
    pub client_cpu_s: f64,
}

impl BenchResult {
    /// What every run fills the same way; counts, rates and latencies still zero.
    fn new(o: &BenchOpts, mode: &'static str, driver: String, elapsed: Duration) -> BenchResult {
        BenchResult {
            format: "loadgen-bench",
            version: 1,
            url: o.url.clone(),
            mode,
            driver,
            threads: o.threads,
            connections: o.connections,
            pipeline: o.pipeline,
            rate: None,
            keys: o.keys,
            new_conn: o.new_conn,
            tls_resume: o.tls_resume,
            duration_s: o.duration.as_secs_f64(),
            elapsed_s: elapsed.as_secs_f64(),
            requests: 0,
            rps: 0.0,
            status_classes: [0; 6],
            transport_errors: 0,
            timeouts: 0,
            dropped: 0,
            late: 0,
            connections_opened: None,
            bytes_in: 0,
            bytes_out: 0,
            latency_ms: Percentiles::default(),
            service_ms: Percentiles::default(),
            send_lag_ms: None,
            client_cpu_s: own_cpu_s(),
        }
    }

    pub fn to_text(&self) -> String {
        let non2xx: u64 = self
            .status_classes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, v)| v)
            .sum();
        let l = &self.latency_ms;
        let mut s = format!(
            "{} {} for {:.1}s: {} thread(s), {} connections, pipeline {}{}{}{} (driver {})\n",
            self.mode,
            self.url,
            self.duration_s,
            self.threads,
            self.connections,
            self.pipeline,
            self.rate.map_or(String::new(), |r| format!(", rate {r}/s")),
            if self.keys > 0 {
                format!(", {} keys", self.keys)
            } else {
                String::new()
            },
            if self.new_conn {
                ", a connection per request"
            } else {
                ""
            },
            self.driver
        );
        s += &format!(
            "  latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}\n",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        );
        if self.mode == "fixed-rate" {
            let v = &self.service_ms;
            s += &format!(
                "  service ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}\n",
                v.p50, v.p90, v.p99, v.max
            );
        }
        s += &format!(
            "  {} requests in {:.2}s, {:.2} MB read, {:.2} MB written\n",
            self.requests,
            self.elapsed_s,
            self.bytes_in as f64 / 1e6,
            self.bytes_out as f64 / 1e6
        );
        if non2xx > 0 || self.transport_errors > 0 || self.timeouts > 0 {
            s += &format!(
                "  non-2xx responses: {}  transport errors: {}  timeouts: {}\n",
                non2xx, self.transport_errors, self.timeouts
            );
        }
        s += &format!("Requests/sec: {:.2}\n", self.rps);
        s
    }
}

/// CPU seconds this process has used (utime + stime; USER_HZ is 100 on Linux).
fn own_cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Fields 14 and 15 of /proc/PID/stat (the 12th and 13th after the command).
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn request_set(t: &Target, o: &BenchOpts) -> RequestSet {
    RequestSet::build(&Spec {
        method: &o.method,
        path_and_query: &t.path_and_query,
        host_header: &t.host_header,
        headers: &o.headers,
        body_size: o.body_size,
        keys: o.keys,
        style: o.key_style,
    })
}

/// Client TLS for the target; without resumption when `tls_resume` is off (every connection a
/// full handshake).
fn tls_for(t: &Target, o: &BenchOpts) -> Result<Option<TlsSetup>, BenchError> {
    if !t.tls {
        return Ok(None);
    }
    let mut setup =
        TlsSetup::new(o.ca_file.as_deref(), o.insecure, &t.host).map_err(BenchError::Tls)?;
    if !o.tls_resume {
        let mut cfg =
            (*tls_config(o.ca_file.as_deref(), o.insecure).map_err(BenchError::Tls)?).clone();
        cfg.resumption = rustls::client::Resumption::disabled();
        setup.connector = monoio_rustls::TlsConnector::from(Arc::new(cfg));
    }
    Ok(Some(setup))
}

pub fn run(o: &BenchOpts) -> Result<BenchResult, BenchError> {
    let bad = |m: &str| Err(BenchError::Option(m.into()));
    if o.connections == 0 || o.threads == 0 || o.pipeline == 0 {
        return bad("connections, threads and pipeline must be ≥ 1");
    }
    if o.connections < o.threads {
        return bad("need at least one connection per thread");
    }
    if o.body_size > keys::INLINE_BODY && (o.pipeline > 1 || o.rate.is_some()) {
        return bad("a body over 64 KiB is for closed-loop runs without --pipeline");
    }
    if o.new_conn && (o.pipeline > 1 || o.rate.is_some()) {
        return bad("--new-conn is for closed-loop runs without --pipeline");
    }
    if o.requests > 0 && o.rate.is_some() {
        return bad("--requests is for closed-loop runs");
    }
    match o.rate {
        Some(r) if r > 0.0 => run_rate(o, r),
        Some(_) => bad("--rate must be > 0"),
        None => run_closed(o),
    }
}

/// One engine key per thread, each offering rate / threads from its own place in the set.
fn rate_keys(o: &BenchOpts, set: &RequestSet, rate: f64) -> Vec<KeyWork> {
    let profile = Arc::new(Profile::constant(
        rate / o.threads as f64,
        o.duration.as_secs_f64(),
    ));
    let mix = Arc::new(Mix::new([1, 0, 0, 0], 1, vec![0]));
    let n = set.reqs.len();
    (0..o.threads)
        .map(|i| KeyWork {
            idx: i,
            // Threads start at different keys, so they do not send the same key together.
            source: ReqSource::Fixed {
                reqs: set.reqs.clone(),
                next: i * n / o.threads,
                head: set.head,
            },
            plan: Some(KeyPlan::new(
                profile.clone(),
                Arrival::Uniform,
                mix.clone(),
                1000 + i as u64,
            )),
            mix: mix.clone(),
            seed: i as u64,
            limited: [false; 4],
        })
        .collect()
}

fn run_rate(o: &BenchOpts, rate: f64) -> Result<BenchResult, BenchError> {
    if o.pipeline != 1 {
        return Err(BenchError::Option(
            "--pipeline is for closed-loop runs (without --rate)".into(),
        ));
    }
    let target = Target::parse(&o.url)?;
    let tls = tls_for(&target, o)?;
    let set = request_set(&target, o);
    let keys = rate_keys(o, &set, rate);
    let cfg = EngineConfig {
        addrs: vec![target.addr],
        spread: Default::default(),
        target,
        tls,
        threads: o.threads,
        conns_per_thread: o.connections / o.threads,
        pin_cores: o.pin_cores.clone(),
        timeout: o.timeout,
        mode: Mode::Open,
        warmup: Duration::ZERO,
        total: o.duration,
        record_admitted: false,
        progress: o.progress,
    };
    let out = engine::run(cfg, keys, crate::run::print_progress)?;
    let mut all = KeyStats::default();
    for k in &out.keys {
        all.merge(k);
    }
    let mut classes = [0u64; 6];
    for (s, n) in &all.statuses {
        classes[(*s as usize / 100).min(5)] += n;
    }
    Ok(BenchResult {
        rate: Some(rate),
        requests: all.sent,
        rps: all.sent as f64 / o.duration.as_secs_f64(),
        status_classes: classes,
        transport_errors: all.transport,
        timeouts: all.timeouts,
        dropped: all.dropped,
        late: all.late,
        bytes_in: all.bytes_in,
        bytes_out: all.bytes_out,
        latency_ms: Percentiles::of(&all.latency),
        service_ms: Percentiles::of(&all.service),
        send_lag_ms: Some(Percentiles::of(&out.send_lag)),
        ..BenchResult::new(o, "fixed-rate", out.driver, out.elapsed)
    })
}

#[derive(Default)]
struct ClosedState {
    hist: Option<Histogram<u64>>,
    classes: [u64; 6],
    transport: u64,
    timeouts: u64,
    connections: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl ClosedState {
    fn merge(&mut self, o: ClosedState) {
        if let (Some(h), Some(oh)) = (self.hist.as_mut(), o.hist.as_ref()) {
            h.add(oh).expect("same bounds");
        }
        for (c, v) in self.classes.iter_mut().zip(o.classes) {
            *c += v;
        }
        self.transport += o.transport;
        self.timeouts += o.timeouts;
        self.connections += o.connections;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
    }
}

/// What every connection of one closed-loop thread shares.
struct ConnCtx {
    addr: std::net::SocketAddr,
    tls: Option<TlsSetup>,
    set: RequestSet,
    pipeline: usize,
    new_conn: bool,
    deadline: Instant,
    /// The thread's next request index (round robin over the set, across its connections).
    next: Cell<usize>,
    /// Requests this thread may still send (u64::MAX: no count limit).
    quota: Cell<u64>,
    st: RefCell<ClosedState>,
    count: Arc<AtomicU64>,
}

impl ConnCtx {
    /// The next requests (up to `pipeline`, within the quota) into `buf` (cleared first);
    /// how many.
    fn fill(&self, buf: &mut Vec<u8>) -> usize {
        buf.clear();
        let reqs = &self.set.reqs;
        let n = (self.pipeline as u64).min(self.quota.get()) as usize;
        self.quota.set(self.quota.get() - n as u64);
        for _ in 0..n {
            let i = self.next.get();
            self.next.set(i.wrapping_add(1));
            buf.extend_from_slice(&reqs[i % reqs.len()]);
        }
        n
    }

    /// Writes the pipelined heads in `buf`, then the large body if the set has one.
    async fn send(&self, c: &mut Conn, buf: Vec<u8>) -> (bool, Vec<u8>) {
        let (r, buf) = c.write(buf).await;
        let mut sent = buf.len() as u64;
        let mut ok = r.is_ok();
        if let (true, Some(body)) = (ok, self.set.body) {
            ok = c.write_static(body).await.is_ok();
            sent += body.len() as u64;
        }
        self.st.borrow_mut().bytes_out += sent;
        (ok, buf)
    }

    /// Reads the `n` responses to one write; returns how many arrived whole.
    async fn receive(&self, c: &mut Conn, t: Instant, n: usize) -> u64 {
        let mut ok = 0;
        for _ in 0..n {
            match c.read_response(self.set.head).await {
                Ok(resp) => {
                    let us = (t.elapsed().as_nanos() / 1000) as u64;
                    let mut s = self.st.borrow_mut();
                    if let Some(h) = s.hist.as_mut() {
                        h.saturating_record(us.max(1));
                    }
                    s.classes[(resp.status as usize / 100).min(5)] += 1;
                    s.bytes_in += resp.body_bytes;
                    ok += 1;
                    if resp.close {
                        break;
                    }
                }
                Err(_) => {
                    self.st.borrow_mut().transport += 1;
                    break;
                }
            }
        }
        ok
    }
}

/// One connection of the closed loop, until the deadline: (re)connect, write, read, repeat.
async fn closed_conn(ctx: Rc<ConnCtx>) {
    let mut buf: Vec<u8> = Vec::with_capacity(ctx.set.reqs[0].len() * ctx.pipeline);
    let mut conn: Option<Conn> = None;
    while Instant::now() < ctx.deadline {
        if conn.is_none() {
            match Conn::connect(ctx.addr, ctx.tls.as_ref()).await {
                Ok(c) => {
                    conn = Some(c);
                    ctx.st.borrow_mut().connections += 1;
                }
                Err(_) => {
                    ctx.st.borrow_mut().transport += 1;
                    monoio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected");
        let n = ctx.fill(&mut buf);
        if n == 0 {
            return;
        }
        let t = Instant::now();
        let (sent, b) = ctx.send(c, buf).await;
        buf = b;
        if !sent {
            ctx.st.borrow_mut().transport += 1;
            conn = None;
            continue;
        }
        let ok = ctx.receive(c, t, n).await;
        ctx.count.fetch_add(ok, Relaxed);
        if ok < n as u64 || ctx.new_conn {
            conn = None;
        }
    }
}

/// One closed-loop worker thread's share of the run.
struct ClosedThread {
    ti: usize,
    conns: usize,
    pin: Vec<usize>,
    timeout: Duration,
    ctx: (std::net::SocketAddr, Option<TlsSetup>, RequestSet),
    pipeline: usize,
    new_conn: bool,
    first: usize,
    quota: u64,
    deadline: Instant,
    count: Arc<AtomicU64>,
}

impl ClosedThread {
    fn run(self) -> Result<(ClosedState, &'static str), BenchError> {
        if let Some(&core) = self.pin.get(self.ti % self.pin.len().max(1)) {
            core_affinity::set_for_current(core_affinity::CoreId { id: core });
        }
        let (mut rt, driver) = engine::build_runtime(true).map_err(BenchError::Runtime)?;
        let (addr, tls, set) = self.ctx;
        let ctx = Rc::new(ConnCtx {
            addr,
            tls,
            set,
            pipeline: self.pipeline,
            new_conn: self.new_conn,
            deadline: self.deadline,
            next: Cell::new(self.first),
            quota: Cell::new(self.quota),
            st: RefCell::new(ClosedState {
                hist: Some(new_hist()),
                ..ClosedState::default()
            }),
            count: self.count,
        });
        let limit = self.deadline.saturating_duration_since(Instant::now()) + self.timeout;
        let ctx2 = ctx.clone();
        rt.block_on(async move {
            let hs: Vec<_> = (0..self.conns)
                .map(|_| {
                    let c = ctx2.clone();
                    monoio::spawn(async move {
                        if monoio::time::timeout(limit, closed_conn(c.clone()))
                            .await
                            .is_err()
                        {
                            c.st.borrow_mut().timeouts += 1;
                        }
                    })
                })
                .collect();
            for h in hs {
                h.await;
            }
        });
        let st = std::mem::take(&mut *ctx.st.borrow_mut());
        Ok((st, driver))
    }
}

/// Progress lines once a second until every thread has finished.
fn closed_progress(handles: &[std::thread::JoinHandle<impl Sized>], counters: &[Arc<AtomicU64>]) {
    let start = Instant::now();
    let mut last = 0;
    let mut tick = start + Duration::from_secs(1);
    while !handles.iter().all(|h| h.is_finished()) {
        if Instant::now() >= tick {
            let n: u64 = counters.iter().map(|c| c.load(Relaxed)).sum();
            eprintln!(
                "[{:>5.0}s] {:>10} requests ({:>8}/s)",
                (tick - start).as_secs_f64(),
                n,
                n - last
            );
            last = n;
            tick += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Thread `ti`'s share of a `--requests` total (the remainder to the first threads).
fn thread_quota(total: u64, threads: usize, ti: usize) -> u64 {
    if total == 0 {
        return u64::MAX;
    }
    let t = threads as u64;
    total / t + u64::from((ti as u64) < total % t)
}

fn run_closed(o: &BenchOpts) -> Result<BenchResult, BenchError> {
    let target = Target::parse(&o.url)?;
    let tls = tls_for(&target, o)?;
    let set = request_set(&target, o);
    let start = Instant::now();
    let counters: Vec<Arc<AtomicU64>> = (0..o.threads)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let mut handles = Vec::new();
    for (ti, counter) in counters.iter().enumerate() {
        let t = ClosedThread {
            ti,
            conns: o.connections / o.threads + usize::from(ti < o.connections % o.threads),
            pin: o.pin_cores.clone(),
            timeout: o.timeout,
            ctx: (target.addr, tls.clone(), set.clone()),
            pipeline: o.pipeline,
            new_conn: o.new_conn,
            first: ti * set.reqs.len() / o.threads,
            quota: thread_quota(o.requests, o.threads, ti),
            deadline: start + o.duration,
            count: counter.clone(),
        };
        handles.push(std::thread::spawn(move || t.run()));
    }
    if o.progress {
        closed_progress(&handles, &counters);
    }
    let mut all = ClosedState {
        hist: Some(new_hist()),
        ..ClosedState::default()
    };
    let mut drivers = Vec::new();
    for h in handles {
        let (s, d) = h
            .join()
            .map_err(|_| BenchError::Engine(engine::EngineError::Panic))??;
        all.merge(s);
        drivers.push(d);
    }
    let elapsed = start.elapsed();
    drivers.dedup();
    let hist = all.hist.take().expect("merged histogram");
    let requests: u64 = all.classes.iter().sum();
    Ok(BenchResult {
        requests,
        rps: requests as f64 / elapsed.as_secs_f64(),
        status_classes: all.classes,
        transport_errors: all.transport,
        timeouts: all.timeouts,
        connections_opened: Some(all.connections),
        bytes_in: all.bytes_in,
        bytes_out: all.bytes_out,
        latency_ms: Percentiles::of(&hist),
        service_ms: Percentiles::of(&hist),
        ..BenchResult::new(o, "closed-loop", drivers.join(","), elapsed)
    })
}
