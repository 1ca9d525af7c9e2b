//! `loadgen bench`: wrk-style saturation against one URL. Closed loop (each connection keeps
//! `pipeline` requests in flight, back-to-back, fixed request bytes, no per-request allocation)
//! or fixed rate (`--rate`, open loop through the engine, latency from the intended time).
//! Owns its own worker threads for the closed loop; reuses [`crate::engine`] for fixed rate.

use crate::client::{Conn, TlsSetup};
use crate::engine::{self, EngineConfig, KeyWork, ReqSource};
use crate::plan::{Arrival, KeyPlan, Mix, Mode, Profile};
use crate::request::Target;
use crate::stats::{KeyStats, Percentiles, new_hist};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::cell::RefCell;
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

/// Result of a bench run (serialised into the JSON report).
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
    pub duration_s: f64,
    pub elapsed_s: f64,
    pub requests: u64,
    pub rps: f64,
    /// Responses by class: index 1 = 1xx … 5 = 5xx.
    pub status_classes: [u64; 6],
    pub transport_errors: u64,
    pub timeouts: u64,
    pub bytes_in: u64,
    /// Closed loop: send→response. Fixed rate: from the intended send time.
    pub latency_ms: Percentiles,
    pub service_ms: Percentiles,
}

impl BenchResult {
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
            "{} {} for {:.1}s: {} thread(s), {} connections, pipeline {}{} (driver {})\n",
            self.mode,
            self.url,
            self.duration_s,
            self.threads,
            self.connections,
            self.pipeline,
            self.rate.map_or(String::new(), |r| format!(", rate {r}/s")),
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
            "  {} requests in {:.2}s, {:.2} MB read\n",
            self.requests,
            self.elapsed_s,
            self.bytes_in as f64 / 1e6
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

fn request_bytes(t: &Target, o: &BenchOpts) -> Vec<u8> {
    let mut r = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\n",
        o.method, t.path_and_query, t.host_header
    );
    for h in &o.headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    if o.body_size > 0 || o.method == "PUT" || o.method == "POST" {
        r.push_str(&format!("Content-Length: {}\r\n", o.body_size));
    }
    r.push_str("\r\n");
    let mut b = r.into_bytes();
    b.resize(b.len() + o.body_size as usize, b'x');
    b
}

fn tls_for(t: &Target, o: &BenchOpts) -> Result<Option<TlsSetup>, BenchError> {
    t.tls
        .then(|| TlsSetup::new(o.ca_file.as_deref(), o.insecure, &t.host))
        .transpose()
        .map_err(BenchError::Tls)
}

pub fn run(o: &BenchOpts) -> Result<BenchResult, BenchError> {
    if o.connections == 0 || o.threads == 0 || o.pipeline == 0 {
        return Err(BenchError::Option(
            "connections, threads and pipeline must be ≥ 1".into(),
        ));
    }
    if o.connections < o.threads {
        return Err(BenchError::Option(
            "need at least one connection per thread".into(),
        ));
    }
    match o.rate {
        Some(r) if r > 0.0 => run_rate(o, r),
        Some(_) => Err(BenchError::Option("--rate must be > 0".into())),
        None => run_closed(o),
    }
}

fn run_rate(o: &BenchOpts, rate: f64) -> Result<BenchResult, BenchError> {
    if o.pipeline != 1 {
        return Err(BenchError::Option(
            "--pipeline is for closed-loop runs (without --rate)".into(),
        ));
    }
    let target = Target::parse(&o.url)?;
    let tls = tls_for(&target, o)?;
    let bytes = request_bytes(&target, o);
    let head = o.method.eq_ignore_ascii_case("HEAD");
    let profile = Arc::new(Profile::constant(
        rate / o.threads as f64,
        o.duration.as_secs_f64(),
    ));
    let mix = Arc::new(Mix::new([1, 0, 0, 0], 1, vec![0]));
    let keys: Vec<KeyWork> = (0..o.threads)
        .map(|i| KeyWork {
            idx: i,
            source: ReqSource::Fixed {
                bytes: bytes.clone(),
                head,
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
        .collect();
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
    let requests = all.sent;
    Ok(BenchResult {
        format: "loadgen-bench",
        version: 1,
        url: o.url.clone(),
        mode: "fixed-rate",
        driver: out.driver,
        threads: o.threads,
        connections: o.connections,
        pipeline: 1,
        rate: Some(rate),
        duration_s: o.duration.as_secs_f64(),
        elapsed_s: out.elapsed.as_secs_f64(),
        requests,
        rps: requests as f64 / o.duration.as_secs_f64(),
        status_classes: classes,
        transport_errors: all.transport,
        timeouts: all.timeouts,
        bytes_in: all.bytes_in,
        latency_ms: Percentiles::of(&all.latency),
        service_ms: Percentiles::of(&all.service),
    })
}

struct ClosedState {
    hist: Histogram<u64>,
    classes: [u64; 6],
    transport: u64,
    timeouts: u64,
    bytes_in: u64,
}

/// One closed-loop worker thread's share of the run: its connections, each sending `req`
/// back to back (`pipeline` in flight) until `deadline`.
struct ClosedThread {
    ti: usize,
    conns: usize,
    req: Vec<u8>,
    tls: Option<TlsSetup>,
    addr: std::net::SocketAddr,
    pin: Vec<usize>,
    pipeline: usize,
    head: bool,
    deadline: Instant,
    timeout: Duration,
    count: Arc<AtomicU64>,
}

impl ClosedThread {
    fn run(self) -> Result<(ClosedState, &'static str), BenchError> {
        if let Some(&core) = self.pin.get(self.ti % self.pin.len().max(1)) {
            core_affinity::set_for_current(core_affinity::CoreId { id: core });
        }
        let (mut rt, driver) = engine::build_runtime(true).map_err(BenchError::Runtime)?;
        let st = Rc::new(RefCell::new(ClosedState {
            hist: new_hist(),
            classes: [0; 6],
            transport: 0,
            timeouts: 0,
            bytes_in: 0,
        }));
        let tls = self.tls.map(Rc::new);
        let req = Rc::new(self.req);
        let st2 = st.clone();
        let (deadline, timeout) = (self.deadline, self.timeout);
        rt.block_on(async move {
            let mut hs = Vec::new();
            for _ in 0..self.conns {
                let f = closed_conn(
                    self.addr,
                    tls.clone(),
                    req.clone(),
                    self.pipeline,
                    self.head,
                    deadline,
                    st2.clone(),
                    self.count.clone(),
                );
                let st3 = st2.clone();
                let limit = deadline.saturating_duration_since(Instant::now()) + timeout;
                hs.push(monoio::spawn(async move {
                    if monoio::time::timeout(limit, f).await.is_err() {
                        st3.borrow_mut().timeouts += 1;
                    }
                }));
            }
            for h in hs {
                h.await;
            }
        });
        let st = Rc::try_unwrap(st)
            .ok()
            .expect("tasks finished")
            .into_inner();
        Ok((st, driver))
    }
}

#[allow(clippy::too_many_arguments)]
async fn closed_conn(
    addr: std::net::SocketAddr,
    tls: Option<Rc<TlsSetup>>,
    req: Rc<Vec<u8>>,
    pipeline: usize,
    head: bool,
    deadline: Instant,
    st: Rc<RefCell<ClosedState>>,
    count: Arc<AtomicU64>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(req.len() * pipeline);
    for _ in 0..pipeline {
        buf.extend_from_slice(&req);
    }
    let mut conn: Option<Conn> = None;
    while Instant::now() < deadline {
        if conn.is_none() {
            match Conn::connect(addr, tls.as_deref()).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    st.borrow_mut().transport += 1;
                    monoio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected");
        let t = Instant::now();
        let (r, b) = c.write(buf).await;
        buf = b;
        if r.is_err() {
            st.borrow_mut().transport += 1;
            conn = None;
            continue;
        }
        let mut ok = 0;
        for _ in 0..pipeline {
            match c.read_response(head).await {
                Ok(resp) => {
                    let us = (t.elapsed().as_nanos() / 1000) as u64;
                    let mut s = st.borrow_mut();
                    s.hist.saturating_record(us.max(1));
                    s.classes[(resp.status as usize / 100).min(5)] += 1;
                    s.bytes_in += resp.body_bytes;
                    ok += 1;
                    if resp.close {
                        break;
                    }
                }
                Err(_) => {
                    st.borrow_mut().transport += 1;
                    break;
                }
            }
        }
        count.fetch_add(ok, Relaxed);
        if ok < pipeline as u64 {
            conn = None;
        }
    }
}

fn run_closed(o: &BenchOpts) -> Result<BenchResult, BenchError> {
    let target = Target::parse(&o.url)?;
    let tls = tls_for(&target, o)?;
    let req = request_bytes(&target, o);
    let head = o.method.eq_ignore_ascii_case("HEAD");
    let start = Instant::now();
    let deadline = start + o.duration;
    let counters: Vec<Arc<AtomicU64>> = (0..o.threads)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let mut handles = Vec::new();
    for (ti, counter) in counters.iter().enumerate() {
        let t = ClosedThread {
            ti,
            conns: o.connections / o.threads + usize::from(ti < o.connections % o.threads),
            req: req.clone(),
            tls: tls.clone(),
            addr: target.addr,
            pin: o.pin_cores.clone(),
            pipeline: o.pipeline,
            head,
            deadline,
            timeout: o.timeout,
            count: counter.clone(),
        };
        handles.push(std::thread::spawn(move || t.run()));
    }
    if o.progress {
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
    let mut hist = new_hist();
    let mut classes = [0u64; 6];
    let (mut transport, mut timeouts, mut bytes_in) = (0, 0, 0);
    let mut drivers = Vec::new();
    for h in handles {
        let (s, d) = h
            .join()
            .map_err(|_| BenchError::Engine(engine::EngineError::Panic))??;
        hist.add(&s.hist).expect("same bounds");
        for (c, v) in classes.iter_mut().zip(s.classes) {
            *c += v;
        }
        transport += s.transport;
        timeouts += s.timeouts;
        bytes_in += s.bytes_in;
        drivers.push(d);
    }
    let elapsed = start.elapsed();
    drivers.dedup();
    let requests: u64 = classes.iter().sum();
    Ok(BenchResult {
        format: "loadgen-bench",
        version: 1,
        url: o.url.clone(),
        mode: "closed-loop",
        driver: drivers.join(","),
        threads: o.threads,
        connections: o.connections,
        pipeline: o.pipeline,
        rate: None,
        duration_s: o.duration.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        requests,
        rps: requests as f64 / elapsed.as_secs_f64(),
        status_classes: classes,
        transport_errors: transport,
        timeouts,
        bytes_in,
        latency_ms: Percentiles::of(&hist),
        service_ms: Percentiles::of(&hist),
    })
}
