//! The sending machinery. One monoio runtime (FusionDriver: io_uring, epoll fallback) per worker
//! thread, each with its own keys and keep-alive connections. Open loop: a clock thread per worker
//! sleeps precisely until each key's next intended time and hands due requests to its runtime
//! (monoio's timer only has 1 ms ticks); any free connection sends the oldest due request, and
//! latency is measured from the intended time. Closed loop: each connection sends back-to-back.
//! Owns threads, sockets and the progress counters; knows nothing about reports or scenarios: it
//! runs [`KeyWork`]s (request source, plan, limited ops) under an [`EngineConfig`].

use crate::client::{ClientError, Conn, TlsSetup};
use crate::plan::{KeyPlan, Mix, Mode, Op, Pick, Rng};
use crate::request::{BODY_CHUNK, RequestBuilder, Target, body_source};
use crate::stats::{KeyStats, Outcome, Sample, Timeline, new_hist};
use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
#[allow(
    clippy::disallowed_types,
    reason = "the clock thread's hand-off, see Handoff"
)]
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot build the monoio runtime: {0}")]
    Runtime(std::io::Error),
    #[error("worker thread panicked")]
    Panic,
}

/// How a key's requests are built.
#[derive(Debug, Clone)]
pub enum ReqSource {
    /// Path-style S3 requests signed per the group's auth style.
    S3(Box<RequestBuilder>),
    /// Fixed requests sent in turn, from `next` on (bench mode; one, or one per key).
    Fixed {
        reqs: Arc<Vec<Vec<u8>>>,
        next: usize,
        head: bool,
    },
}

/// One key's work.
#[derive(Debug, Clone)]
pub struct KeyWork {
    /// Index into the run's key list (stats come back in this order).
    pub idx: usize,
    pub source: ReqSource,
    /// Open loop: the intended schedule. Closed loop: `None`.
    pub plan: Option<KeyPlan>,
    /// Closed loop: op/object/size choice.
    pub mix: Arc<Mix>,
    pub seed: u64,
    /// Which methods the limiter counts for this key ([`crate::plan::LIMITED_METHODS`] order).
    pub limited: [bool; 4],
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The first target: its host signs every request (as behind one balancer).
    pub target: Target,
    /// Every target's address (the first is `target`'s); connection `c` of a worker
    /// serves target `c mod N`, and each key's requests are spread over them.
    pub addrs: Vec<std::net::SocketAddr>,
    pub spread: crate::plan::Spread,
    pub tls: Option<TlsSetup>,
    pub threads: usize,
    pub conns_per_thread: usize,
    pub pin_cores: Vec<usize>,
    pub timeout: Duration,
    pub mode: Mode,
    pub warmup: Duration,
    pub total: Duration,
    pub record_admitted: bool,
    pub progress: bool,
}

/// The runtime type every worker uses (io_uring or epoll behind one type).
pub type Runtime = monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
>;

/// Builds a worker runtime: io_uring when available (epoll fallback), or epoll when
/// `LOADGEN_DRIVER=epoll` is set. `throughput` (closed-loop bench) selects COOP_TASKRUN;
/// `LOADGEN_URING=plain|coop|defer` overrides. Returns the runtime and the driver's name.
pub fn build_runtime(throughput: bool) -> std::io::Result<(Runtime, &'static str)> {
    let force_epoll = std::env::var("LOADGEN_DRIVER").is_ok_and(|v| v == "epoll");
    let rt: Runtime = if force_epoll {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()?
            .into()
    } else {
        let mut urb = io_uring::IoUring::builder();
        // COOP_TASKRUN: completions run when the thread enters the kernel anyway instead of
        // interrupting it (fewer IPIs): slightly more closed-loop throughput (see
        // bench/results/loadgen-vs-wrk-*), but a later wake-up from the clock thread, so open-loop
        // runs keep the plain ring.
        let flags = std::env::var("LOADGEN_URING")
            .unwrap_or_else(|_| if throughput { "coop" } else { "plain" }.into());
        match flags.as_str() {
            "coop" => {
                urb.setup_coop_taskrun().setup_taskrun_flag();
            }
            "defer" => {
                urb.setup_single_issuer().setup_defer_taskrun();
            }
            _ => {}
        }
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .with_entries(4096)
            .uring_builder(urb)
            .build()?
    };
    let name = match &rt {
        monoio::FusionRuntime::Uring(_) => "io_uring",
        monoio::FusionRuntime::Legacy(_) => "epoll",
    };
    Ok((rt, name))
}

/// Everything measured.
#[derive(Debug)]
pub struct RunOutput {
    pub keys: Vec<KeyStats>,
    pub timeline: Timeline,
    /// Clock-thread hand-off lateness: when the runtime took the request minus its intended time (µs).
    pub dispatch_lag: Histogram<u64>,
    /// Actual write minus intended time (µs); includes waiting for a free connection.
    pub send_lag: Histogram<u64>,
    pub driver: String,
    pub elapsed: Duration,
    pub started_unix: f64,
}

/// Live counters, one set per worker (summed by the progress printer).
#[derive(Debug, Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub denied: AtomicU64,
    pub errors: AtomicU64,
    pub max_latency_us: AtomicU64,
    pub done: AtomicBool,
}

/// A due request.
#[derive(Debug, Clone, Copy)]
struct Job {
    key: u32,
    /// Index into `EngineConfig::addrs`.
    target: u16,
    intended_ns: u64,
    pick: Pick,
}

#[derive(Default)]
struct HandoffInner {
    jobs: Vec<Job>,
    waker: Option<Waker>,
    done: bool,
}

/// Clock thread → runtime hand-off (one per worker). A lock, taken once per batch of due
/// requests: the clock thread is a plain OS thread sleeping precisely, so it cannot use the
/// runtime's own (`!Send`) queues.
#[derive(Default)]
#[allow(
    clippy::disallowed_types,
    reason = "loadgen's clock thread → runtime hand-off, one lock per batch"
)]
struct Handoff(Mutex<HandoffInner>);

struct TakeJobs<'a>(&'a Handoff, Vec<Job>);

impl Future for TakeJobs<'_> {
    type Output = (Vec<Job>, bool);
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut g = self.0.0.lock().expect("handoff lock");
        if !g.jobs.is_empty() || g.done {
            let done = g.done;
            let mut spare = std::mem::take(&mut self.1);
            std::mem::swap(&mut g.jobs, &mut spare);
            return Poll::Ready((spare, done));
        }
        g.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

fn clock_thread(
    t0: Instant,
    mut plans: Vec<(u32, KeyPlan, crate::plan::TargetChooser)>,
    handoff: Arc<Handoff>,
    stop: Arc<AtomicBool>,
) {
    let mut heap = BinaryHeap::new();
    let mut next: Vec<Option<crate::plan::Planned>> = Vec::with_capacity(plans.len());
    for (i, (_, p, _)) in plans.iter_mut().enumerate() {
        let n = p.next();
        if let Some(pl) = n {
            heap.push(Reverse((pl.at_ns, i)));
        }
        next.push(n);
    }
    let mut batch = Vec::new();
    while let Some(&Reverse((t, _))) = heap.peek() {
        if stop.load(Relaxed) {
            break;
        }
        let due = t0 + Duration::from_nanos(t);
        let wall = Instant::now();
        if due > wall {
            std::thread::sleep(due - wall);
            continue;
        }
        let now = t0.elapsed().as_nanos() as u64;
        while let Some(&Reverse((t, i))) = heap.peek() {
            if t > now {
                break;
            }
            heap.pop();
            let pl = next[i].take().expect("planned");
            batch.push(Job {
                key: plans[i].0,
                target: plans[i].2.next_target(),
                intended_ns: pl.at_ns,
                pick: Pick {
                    op: pl.op,
                    bucket: pl.bucket,
                    obj: pl.obj,
                    size_idx: pl.size_idx,
                },
            });
            next[i] = plans[i].1.next();
            if let Some(n) = &next[i] {
                heap.push(Reverse((n.at_ns, i)));
            }
        }
        let waker = {
            let mut g = handoff.0.lock().expect("handoff lock");
            g.jobs.append(&mut batch);
            g.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
    let waker = {
        let mut g = handoff.0.lock().expect("handoff lock");
        g.done = true;
        g.waker.take()
    };
    if let Some(w) = waker {
        w.wake();
    }
}

/// Per-worker state shared by its tasks (single thread, so `Rc` + `RefCell`).
struct Local {
    t0: Instant,
    unix0: f64,
    cfg: Arc<EngineConfig>,
    /// Due requests and idle connections, per target.
    queue: Vec<RefCell<VecDeque<Job>>>,
    idle: Vec<RefCell<Vec<Waker>>>,
    done: Cell<bool>,
    sources: RefCell<Vec<ReqSource>>,
    limited: Vec<[bool; 4]>,
    global_idx: Vec<usize>,
    closed: RefCell<Vec<(Arc<Mix>, Rng)>>,
    rr: Cell<usize>,
    state: RefCell<ThreadState>,
    progress: Arc<Progress>,
}

struct ThreadState {
    keys: Vec<KeyStats>,
    timeline: Timeline,
    dispatch_lag: Histogram<u64>,
    send_lag: Histogram<u64>,
}

impl Local {
    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    fn wake_idle(&self, target: usize, n: usize) {
        let mut idle = self.idle[target].borrow_mut();
        for _ in 0..n {
            match idle.pop() {
                Some(w) => w.wake(),
                None => break,
            }
        }
    }

    fn record(
        &self,
        job: &Job,
        sent_ns: u64,
        done_ns: u64,
        outcome: Outcome,
        resp: Option<&crate::client::Response>,
        bytes_out: u64,
    ) {
        let warm = job.intended_ns < self.cfg.warmup.as_nanos() as u64;
        let s = Sample {
            intended_ns: job.intended_ns,
            sent_ns,
            done_ns,
            outcome,
            status: resp.map_or(0, |r| r.status),
            limited: job
                .pick
                .op
                .method_index()
                .is_some_and(|m| self.limited[job.key as usize][m]),
            op: job.pick.op,
            bucket: job.pick.bucket,
            warm,
            retry_after_s: resp.and_then(|r| r.retry_after_s),
            amz_retry_after_ms: resp.and_then(|r| r.amz_retry_after_ms),
            bytes_out,
            bytes_in: resp.map_or(0, |r| r.body_bytes),
        };
        let lat_us = done_ns.saturating_sub(job.intended_ns) / 1000;
        {
            let mut st = self.state.borrow_mut();
            st.keys[job.key as usize].record(&s, self.cfg.record_admitted);
            if !warm {
                let since = done_ns.saturating_sub(self.cfg.warmup.as_nanos() as u64);
                st.timeline.record(since, outcome, lat_us);
            }
        }
        let p = &self.progress;
        p.sent.fetch_add(1, Relaxed);
        match outcome {
            Outcome::Ok => p.ok.fetch_add(1, Relaxed),
            Outcome::Denied => p.denied.fetch_add(1, Relaxed),
            _ => p.errors.fetch_add(1, Relaxed),
        };
        p.max_latency_us.fetch_max(lat_us, Relaxed);
    }

    /// Next job for a connection: queued by the clock thread (open loop) or generated now
    /// (closed loop); None when the run is over.
    async fn next_job(&self, target: usize) -> Option<Job> {
        match self.cfg.mode {
            Mode::Open => NextJob(self, target).await,
            Mode::Closed => self.next_closed(target),
        }
    }

    /// The head of `job`'s request into `wbuf` (cleared first): (body bytes still to send,
    /// HEAD request, body length).
    fn build_request(&self, job: &Job, wbuf: &mut Vec<u8>) -> (u64, bool, u64) {
        wbuf.clear();
        let unix = (self.unix0 + job.intended_ns as f64 / 1e9) as u64;
        let mut sources = self.sources.borrow_mut();
        match &mut sources[job.key as usize] {
            ReqSource::S3(b) => {
                let p = &job.pick;
                let rest = b.build_pick(p, unix, wbuf);
                (rest, p.op == Op::Head, b.body_len(p.op, p.size_idx))
            }
            ReqSource::Fixed { reqs, next, head } => {
                wbuf.extend_from_slice(&reqs[*next % reqs.len()]);
                *next = next.wrapping_add(1);
                (0, *head, 0)
            }
        }
    }

    /// A generated closed-loop job (round robin over the keys), or None after the run.
    /// Closed loop: the next request for a connection to `target` (connections are spread
    /// over the targets, so the requests are too).
    fn next_closed(&self, target: usize) -> Option<Job> {
        let now = self.now_ns();
        if now >= self.cfg.total.as_nanos() as u64 {
            return None;
        }
        let n = self.global_idx.len();
        let k = self.rr.get() % n;
        self.rr.set(self.rr.get() + 1);
        let mut closed = self.closed.borrow_mut();
        let (mix, rng) = &mut closed[k];
        Some(Job {
            key: k as u32,
            target: target as u16,
            intended_ns: now,
            pick: mix.pick(rng),
        })
    }
}

struct NextJob<'a>(&'a Local, usize);

impl Future for NextJob<'_> {
    type Output = Option<Job>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Job>> {
        let (l, t) = (self.0, self.1);
        if let Some(j) = l.queue[t].borrow_mut().pop_front() {
            return Poll::Ready(Some(j));
        }
        if l.done.get() {
            return Poll::Ready(None);
        }
        l.idle[t].borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

async fn dispatcher(local: Rc<Local>, handoff: Arc<Handoff>) {
    let mut spare = Vec::new();
    loop {
        let (mut jobs, done) = TakeJobs(&handoff, spare).await;
        let now = local.now_ns();
        let mut per_target = vec![0usize; local.queue.len()];
        {
            let mut st = local.state.borrow_mut();
            for j in jobs.drain(..) {
                st.dispatch_lag
                    .saturating_record((now.saturating_sub(j.intended_ns) / 1000).max(1));
                let t = (j.target as usize).min(local.queue.len() - 1);
                per_target[t] += 1;
                local.queue[t].borrow_mut().push_back(j);
            }
        }
        spare = jobs;
        for (t, n) in per_target.into_iter().enumerate() {
            local.wake_idle(t, n);
        }
        if done {
            local.done.set(true);
            for idle in &local.idle {
                for w in std::mem::take(&mut *idle.borrow_mut()) {
                    w.wake();
                }
            }
            return;
        }
    }
}

async fn connection(local: Rc<Local>, tls: Option<Rc<TlsSetup>>, target: usize) {
    let cfg = local.cfg.clone();
    let addr = cfg.addrs.get(target).copied().unwrap_or(cfg.target.addr);
    let timeout_ns = cfg.timeout.as_nanos() as u64;
    let mut conn: Option<Conn> = None;
    let mut wbuf: Vec<u8> = Vec::with_capacity(16 * 1024);
    while let Some(job) = local.next_job(target).await {
        let now = local.now_ns();
        if now > job.intended_ns + timeout_ns {
            // Waited for a connection longer than the timeout: never sent.
            if job.intended_ns >= cfg.warmup.as_nanos() as u64 {
                local.state.borrow_mut().keys[job.key as usize].dropped += 1;
            }
            continue;
        }
        if conn.is_none() {
            let r = monoio::time::timeout(cfg.timeout, Conn::connect(addr, tls.as_deref())).await;
            match r {
                Ok(Ok(c)) => conn = Some(c),
                Ok(Err(_)) | Err(_) => {
                    let t = local.now_ns();
                    let outcome = if r.is_err() {
                        Outcome::Timeout
                    } else {
                        Outcome::Transport
                    };
                    local.record(&job, t, t, outcome, None, 0);
                    if cfg.mode == Mode::Closed {
                        monoio::time::sleep(Duration::from_millis(10)).await;
                    }
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected");
        let (rest, is_head, bytes_out) = local.build_request(&job, &mut wbuf);
        let sent_ns = local.now_ns();
        local
            .state
            .borrow_mut()
            .send_lag
            .saturating_record((sent_ns.saturating_sub(job.intended_ns) / 1000).max(1));
        // The timeout runs from the actual send; time spent queued shows in the latency, and
        // a request queued longer than the timeout is dropped above.
        let res = monoio::time::timeout(
            cfg.timeout,
            exchange(c, std::mem::take(&mut wbuf), rest, is_head),
        )
        .await;
        let done_ns = local.now_ns();
        match res {
            Ok((Ok(resp), b)) => {
                wbuf = b;
                let outcome = Outcome::classify(resp.status, resp.slowdown);
                local.record(&job, sent_ns, done_ns, outcome, Some(&resp), bytes_out);
                if resp.close {
                    conn = None;
                }
            }
            Ok((Err(e), b)) => {
                wbuf = b;
                let _: ClientError = e;
                local.record(&job, sent_ns, done_ns, Outcome::Transport, None, bytes_out);
                conn = None;
            }
            Err(_) => {
                wbuf = Vec::with_capacity(16 * 1024);
                local.record(&job, sent_ns, done_ns, Outcome::Timeout, None, bytes_out);
                conn = None;
            }
        }
    }
}

/// Writes one request (head in `buf`, then `rest` body bytes) and reads its response; the
/// write buffer comes back for reuse.
async fn exchange(
    c: &mut Conn,
    buf: Vec<u8>,
    rest: u64,
    is_head: bool,
) -> (Result<crate::client::Response, ClientError>, Vec<u8>) {
    let (r, back) = c.write(buf).await;
    if let Err(e) = r {
        return (Err(e), back);
    }
    let mut left = rest;
    while left > 0 {
        let n = left.min(BODY_CHUNK as u64) as usize;
        if let Err(e) = c.write_static(&body_source()[..n]).await {
            return (Err(e), back);
        }
        left -= n as u64;
    }
    (c.read_response(is_head).await, back)
}

struct WorkerOut {
    keys: Vec<(usize, KeyStats)>,
    timeline: Timeline,
    dispatch_lag: Histogram<u64>,
    send_lag: Histogram<u64>,
    driver: &'static str,
}

#[allow(clippy::too_many_arguments)]
fn worker(
    ti: usize,
    cfg: Arc<EngineConfig>,
    t0: Instant,
    unix0: f64,
    keys: Vec<KeyWork>,
    handoff: Option<Arc<Handoff>>,
    progress: Arc<Progress>,
) -> Result<WorkerOut, EngineError> {
    if let Some(&core) = cfg.pin_cores.get(ti % cfg.pin_cores.len().max(1)) {
        core_affinity::set_for_current(core_affinity::CoreId { id: core });
    }
    let (mut rt, driver) = build_runtime(false).map_err(EngineError::Runtime)?;
    let global_idx: Vec<usize> = keys.iter().map(|k| k.idx).collect();
    let ntargets = cfg.addrs.len().max(1);
    let local = Rc::new(Local {
        t0,
        unix0,
        cfg: cfg.clone(),
        queue: (0..ntargets)
            .map(|_| RefCell::new(VecDeque::new()))
            .collect(),
        idle: (0..ntargets).map(|_| RefCell::new(Vec::new())).collect(),
        done: Cell::new(false),
        sources: RefCell::new(keys.iter().map(|k| k.source.clone()).collect()),
        limited: keys.iter().map(|k| k.limited).collect(),
        global_idx: global_idx.clone(),
        closed: RefCell::new(
            keys.iter()
                .map(|k| (k.mix.clone(), Rng::new(k.seed ^ 0xC105ED)))
                .collect(),
        ),
        rr: Cell::new(ti),
        state: RefCell::new(ThreadState {
            keys: keys.iter().map(|_| KeyStats::default()).collect(),
            timeline: Timeline::default(),
            dispatch_lag: new_hist(),
            send_lag: new_hist(),
        }),
        progress: progress.clone(),
    });
    let tls = cfg.tls.clone().map(Rc::new);
    let l2 = local.clone();
    std::thread::sleep(t0.saturating_duration_since(Instant::now()));
    rt.block_on(async move {
        let mut handles = Vec::new();
        if let Some(h) = handoff {
            handles.push(monoio::spawn(dispatcher(l2.clone(), h)));
        }
        if !l2.global_idx.is_empty() {
            // At least one connection per target; connection c serves target c mod N.
            for c in 0..cfg.conns_per_thread.max(ntargets) {
                handles.push(monoio::spawn(connection(
                    l2.clone(),
                    tls.clone(),
                    c % ntargets,
                )));
            }
        }
        for h in handles {
            h.await;
        }
    });
    progress.done.store(true, Relaxed);
    let st = local.state.replace(ThreadState {
        keys: Vec::new(),
        timeline: Timeline::default(),
        dispatch_lag: new_hist(),
        send_lag: new_hist(),
    });
    Ok(WorkerOut {
        keys: global_idx.into_iter().zip(st.keys).collect(),
        timeline: st.timeline,
        dispatch_lag: st.dispatch_lag,
        send_lag: st.send_lag,
        driver,
    })
}

/// Runs the load and returns the merged measurements. `on_tick` is called about once a second
/// with the summed live counters (for the progress line).
pub fn run(
    cfg: EngineConfig,
    keys: Vec<KeyWork>,
    mut on_tick: impl FnMut(Duration, &ProgressSnapshot),
) -> Result<RunOutput, EngineError> {
    let cfg = Arc::new(cfg);
    let threads = cfg.threads.max(1);
    let nkeys = keys.iter().map(|k| k.idx + 1).max().unwrap_or(0);
    let mut per_thread: Vec<Vec<KeyWork>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, k) in keys.into_iter().enumerate() {
        per_thread[i % threads].push(k);
    }
    let stop = Arc::new(AtomicBool::new(false));
    // Start a little in the future so every thread is ready at t = 0.
    let t0 = Instant::now() + Duration::from_millis(50);
    let unix0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
        + 0.05;
    let mut handles = Vec::new();
    let mut clocks = Vec::new();
    let mut progresses = Vec::new();
    for (ti, mut work) in per_thread.into_iter().enumerate() {
        let progress = Arc::new(Progress::default());
        progresses.push(progress.clone());
        let handoff = if cfg.mode == Mode::Open {
            let h = Arc::new(Handoff::default());
            let n = cfg.addrs.len();
            let plans: Vec<(u32, KeyPlan, crate::plan::TargetChooser)> = work
                .iter_mut()
                .enumerate()
                .filter_map(|(li, k)| {
                    let choose = crate::plan::TargetChooser::new(n, cfg.spread, k.seed);
                    k.plan.take().map(|p| (li as u32, p, choose))
                })
                .collect();
            let (h2, s2) = (h.clone(), stop.clone());
            clocks.push(
                std::thread::Builder::new()
                    .name(format!("loadgen-clock-{ti}"))
                    .spawn(move || clock_thread(t0, plans, h2, s2))
                    .expect("spawn clock thread"),
            );
            Some(h)
        } else {
            None
        };
        let c = cfg.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("loadgen-worker-{ti}"))
                .spawn(move || worker(ti, c, t0, unix0, work, handoff, progress))
                .expect("spawn worker thread"),
        );
    }
    let start = Instant::now();
    progress_loop(&progresses, t0, cfg.progress, &mut on_tick);
    let mut out = RunOutput {
        keys: (0..nkeys).map(|_| KeyStats::default()).collect(),
        timeline: Timeline::default(),
        dispatch_lag: new_hist(),
        send_lag: new_hist(),
        driver: String::new(),
        elapsed: Duration::ZERO,
        started_unix: unix0,
    };
    let mut drivers = Vec::new();
    let mut err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(w)) => {
                for (i, k) in w.keys {
                    out.keys[i].merge(&k);
                    out.keys[i].admitted.extend_from_slice(&k.admitted);
                }
                out.timeline.merge(&w.timeline);
                out.dispatch_lag.add(&w.dispatch_lag).expect("same bounds");
                out.send_lag.add(&w.send_lag).expect("same bounds");
                drivers.push(w.driver);
            }
            Ok(Err(e)) => err = Some(e),
            Err(_) => err = Some(EngineError::Panic),
        }
    }
    stop.store(true, Relaxed);
    for c in clocks {
        let _ = c.join();
    }
    if let Some(e) = err {
        return Err(e);
    }
    drivers.dedup();
    out.driver = drivers.join(",");
    out.elapsed = start
        .elapsed()
        .saturating_sub(t0.saturating_duration_since(start));
    Ok(out)
}

/// Until every worker is done: about once a second, sums the workers' live counters and
/// (when `show`) hands them to `on_tick`.
fn progress_loop(
    progresses: &[Arc<Progress>],
    t0: Instant,
    show: bool,
    on_tick: &mut impl FnMut(Duration, &ProgressSnapshot),
) {
    let mut last = ProgressSnapshot::default();
    let mut next_tick = t0 + Duration::from_secs(1);
    while !progresses.iter().all(|p| p.done.load(Relaxed)) {
        let now = Instant::now();
        if now >= next_tick {
            let mut s = ProgressSnapshot::default();
            for p in progresses {
                s.sent += p.sent.load(Relaxed);
                s.ok += p.ok.load(Relaxed);
                s.denied += p.denied.load(Relaxed);
                s.errors += p.errors.load(Relaxed);
                s.max_latency_us = s.max_latency_us.max(p.max_latency_us.swap(0, Relaxed));
            }
            s.delta_sent = s.sent - last.sent;
            s.delta_ok = s.ok - last.ok;
            s.delta_denied = s.denied - last.denied;
            s.delta_errors = s.errors - last.errors;
            if show {
                on_tick(next_tick.saturating_duration_since(t0), &s);
            }
            last = s;
            next_tick += Duration::from_secs(1);
        }
        std::thread::sleep(
            Duration::from_millis(20)
                .min(next_tick.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1)),
        );
    }
}

/// Summed live counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProgressSnapshot {
    pub sent: u64,
    pub ok: u64,
    pub denied: u64,
    pub errors: u64,
    pub max_latency_us: u64,
    pub delta_sent: u64,
    pub delta_ok: u64,
    pub delta_denied: u64,
    pub delta_errors: u64,
}
