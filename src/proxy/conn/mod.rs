//! One client connection: a loop of request exchanges, each a short sequence of phases —
//! read head → admit (identify the key, decide the limit) → forward (pick a node, send the
//! head) → relay (request body, response head, response body) → reuse (keep or close each
//! connection, decided by one pure function, [`relay::Reuse::decide`]).
//!
//! Owns: the per-connection buffers and the state of the current request ([`ReqInfo`]: what
//! its head says; [`relay::Body`]: how far its body got; [`forward::Attempt`]: which nodes
//! were tried), the one S3 error writer ([`Conn::write_s3_error`]) and the access-log record.
//! Must not touch: other connections' state (only the worker's pools, briefly borrowed and
//! never across an await).
//!
//! Byte-exactness: the request line and every end-to-end header line go upstream as received
//! (see `http::write_request_head`); bodies are relayed with the same owned buffer read from
//! one socket and written to the other. Every read appends to its buffer (`bufio`), so a head
//! or body that arrives in pieces is the same as one that arrives whole.

mod admit;
mod forward;
mod relay;
mod rules;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent};

use crate::config::Method;
use crate::http::{
    BodyFraming, ErrorBody, HeadError, HeadLimits, ParseStatus, ReparseGate, RequestHead,
    ResponseHead, parse_request, write_error_response,
};
use crate::limit::RefundToken;

use super::bufio::{PoolBuf, read_append, write_all};
use super::headers::Extra;
use super::{Snapshot, Worker};

/// Bytes a client head buffer grows by when it is full (it starts at `max_head_bytes` + 1,
/// so this matters only for pipelined bytes kept in front of a head).
const HEAD_GROW: usize = 4096;

/// Why an exchange failed, deciding the status the client gets (if it can still get one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    /// The client went away: just close.
    Client,
    /// The client's chunked body broke its framing after the head went upstream: 400, then
    /// close (the upstream connection, holding half a request, is dropped).
    BadBody,
    /// Upstream broke the exchange before any response byte reached the client → 502.
    Upstream,
    /// Upstream timed out before any response byte reached the client → 504.
    Timeout,
    /// The response to the client had started: nothing to do but close.
    Late,
    /// Stale pooled connection, request not processed: retry on a fresh connection.
    Stale,
}

/// What is known about the current request once its head is parsed, copied out once.
#[derive(Debug, Clone, Copy)]
struct ReqInfo {
    /// Head length: the body (or the next request) starts here.
    hl: usize,
    framing: BodyFraming,
    /// `Expect: 100-continue` that applies: an HTTP/1.1 request with a body (RFC 9110
    /// §10.1.1: ignored from HTTP/1.0 clients; meaningless without a body).
    expect: bool,
    /// The client allows another request after this one, and the per-connection cap is not
    /// reached.
    keep_alive: bool,
    http10: bool,
    is_head: bool,
    method: Option<Method>,
    /// Index of the method in the per-method stats arrays.
    mi: usize,
}

/// An S3 XML error answer (see [`Conn::write_s3_error`]).
struct Answer<'a> {
    status: u16,
    code: &'a str,
    message: &'a str,
    /// Put the request's key in `<ApiKey>`.
    api_key: bool,
    close: bool,
    head_only: bool,
}

struct Conn<S> {
    w: Rc<Worker>,
    io: S,
    peer: SocketAddr,
    tls: bool,
    /// Bytes read from the client; `cstart..` not yet consumed.
    cbuf: PoolBuf,
    cstart: usize,
    /// Bytes being written to the client (response heads, errors) or, briefly, upstream.
    out: Vec<u8>,
    /// Headers the proxy adds to the current response.
    extra: Extra,
    rid: String,
    key: Vec<u8>,
    subject: Vec<u8>,
    /// The upstream request head (kept for a retry).
    up_head: Vec<u8>,
    /// The request path, for `<Resource>` (the head's bytes in `cbuf` do not survive the body).
    resource: Vec<u8>,
    head: RequestHead,
    rhead: ResponseHead,
    /// `client_idle_timeout` of the current request's snapshot.
    client_idle: Duration,
    /// A `100 Continue` went to the client for the current request.
    sent_continue: bool,
    /// The address the current request is counted under (the peer, or the address a trusted
    /// proxy forwarded).
    client: std::net::IpAddr,
    /// Look at an upstream 403/400 for an authentication failure (`refund_on_auth_failure`).
    auth_check: bool,
    /// The admission to give back if the upstream says the request was not authenticated.
    refund: Option<RefundToken>,
    /// `[[rules]]`: what the rules decided for the current request, its charges (their
    /// subjects in `charge_bytes`) and their verdicts, kept for reuse.
    outcome: crate::rules::Outcome,
    charges: Vec<super::limiter::Charge>,
    charge_bytes: Vec<u8>,
    verdicts: Vec<crate::limit::multi::Verdict>,
    /// The current request's body bytes count against a rule's byte window.
    counts_bytes: bool,
    /// The access log is on (fixed for the process's life).
    logging: bool,
    rec: LogRec,
}

/// The current request as the access log sees it (filled only when logging).
struct LogRec {
    method: Vec<u8>,
    target: Vec<u8>,
    /// Final status sent; 0 = none (the client went away, or the connection failed first).
    status: u16,
    tier: Option<u16>,
    auth: &'static str,
    limit: &'static str,
    /// The `[[rules]]` entry that decided (its slot, `Rule::slot`).
    rule: Option<usize>,
    request_length: Option<u64>,
    /// Counted always (one add per write): bytes written to the client for this request.
    bytes_sent: u64,
}

impl LogRec {
    fn new() -> LogRec {
        LogRec {
            method: Vec::new(),
            target: Vec::new(),
            status: 0,
            tier: None,
            auth: "-",
            limit: "-",
            rule: None,
            request_length: None,
            bytes_sent: 0,
        }
    }

    fn reset(&mut self) {
        self.method.clear();
        self.target.clear();
        self.status = 0;
        self.tier = None;
        self.auth = "-";
        self.limit = "-";
        self.rule = None;
        self.request_length = None;
        self.bytes_sent = 0;
    }
}

enum HeadRead {
    Ready,
    Closed,
    Bad(HeadError),
}

/// Serves one client connection until it closes, errs, or the worker shuts down.
pub async fn serve<S: AsyncReadRent + AsyncWriteRent>(
    w: Rc<Worker>,
    io: S,
    peer: SocketAddr,
    tls: bool,
) {
    let mut c = Conn::new(w, io, peer, tls);
    let mut served: u64 = 0;
    loop {
        match c.read_head().await {
            HeadRead::Ready => {}
            HeadRead::Closed => break,
            HeadRead::Bad(e) => {
                c.bad_head(e).await;
                break;
            }
        }
        served += 1;
        if !c.exchange(served).await {
            break;
        }
    }
    let _ = c.io.shutdown().await;
}

impl<S> Drop for Conn<S> {
    /// A connection dropped mid-request (its task cancelled) still releases what the
    /// request holds.
    fn drop(&mut self) {
        if self.charges.iter().any(super::limiter::Charge::holds) {
            super::limiter::release_all(&self.w, &mut self.charges, &self.charge_bytes);
        }
    }
}

impl<S: AsyncReadRent + AsyncWriteRent> Conn<S> {
    fn new(w: Rc<Worker>, io: S, peer: SocketAddr, tls: bool) -> Conn<S> {
        let snap = w.snapshot();
        let mut cbuf = w.pool.get();
        cbuf.reserve(snap.cfg.http.max_head_bytes + 1);
        let logging = w.alog.borrow().is_some();
        Conn {
            logging,
            client_idle: snap.cfg.http.client_idle_timeout,
            w,
            io,
            peer,
            tls,
            cbuf,
            cstart: 0,
            out: Vec::with_capacity(4096),
            extra: Extra::default(),
            rid: String::with_capacity(32),
            key: Vec::with_capacity(64),
            subject: Vec::with_capacity(64),
            up_head: Vec::with_capacity(4096),
            resource: Vec::with_capacity(256),
            head: RequestHead::new(),
            rhead: ResponseHead::new(),
            sent_continue: false,
            client: peer.ip(),
            auth_check: false,
            refund: None,
            outcome: crate::rules::Outcome::new(),
            charges: Vec::new(),
            charge_bytes: Vec::new(),
            verdicts: Vec::new(),
            counts_bytes: false,
            rec: LogRec::new(),
        }
    }

    /// Reads until `cbuf[cstart..]` holds a complete request head (appending every read),
    /// the client goes away or idles out, or the head is refused (too large, malformed).
    async fn read_head(&mut self) -> HeadRead {
        let snap = self.w.snapshot();
        let http = &snap.cfg.http;
        let limits = HeadLimits {
            max_head_bytes: http.max_head_bytes,
            max_headers: http.max_headers,
        };
        // The head timeout runs from the first byte of a head.
        let mut head_deadline: Option<Instant> = None;
        let mut gate = ReparseGate::default();
        loop {
            let head = &self.cbuf[self.cstart..];
            if !head.is_empty() && gate.ready(head, limits.max_head_bytes) {
                match parse_request(head, &limits, &mut self.head) {
                    Ok(ParseStatus::Complete) => return HeadRead::Ready,
                    Ok(ParseStatus::Partial) => {}
                    Err(e) => return HeadRead::Bad(e),
                }
            }
            self.compact();
            let read = if self.cbuf.is_empty() {
                if self.w.shutdown.is_set() {
                    return HeadRead::Closed;
                }
                let idle = Instant::now() + http.client_idle_timeout;
                monoio::select! {
                    r = read_append(&mut self.io, &mut self.cbuf, HEAD_GROW, idle) => r,
                    _ = self.w.shutdown.wait() => return HeadRead::Closed,
                }
            } else {
                let d =
                    *head_deadline.get_or_insert_with(|| Instant::now() + http.client_head_timeout);
                read_append(&mut self.io, &mut self.cbuf, HEAD_GROW, d).await
            };
            match read {
                Ok(n) => self.w.stats.bytes_from_client.add(n as u64),
                Err(_) => return HeadRead::Closed,
            }
        }
    }

    /// Moves the unconsumed bytes to the front of `cbuf`.
    fn compact(&mut self) {
        if self.cstart > 0 {
            self.cbuf.drain(..self.cstart);
            self.cstart = 0;
        }
    }

    /// Answers a head that could not be accepted, then the connection closes.
    async fn bad_head(&mut self, e: HeadError) {
        let t0 = Instant::now();
        self.rec.reset();
        self.w.stats.client_errors_400.inc();
        self.w.next_request_id(&mut self.rid);
        self.extra.clear();
        self.extra.push("X-Request-ID", &self.rid);
        self.resource.clear();
        self.resource.push(b'/');
        let message = e.to_string();
        let answer = Answer {
            status: e.status(),
            code: e.s3_code(),
            message: &message,
            api_key: false,
            close: true,
            head_only: false,
        };
        let _ = self.write_s3_error(answer).await;
        if self.logging {
            self.log_request(t0);
        }
    }

    /// One request/response exchange. true = keep the connection for another request.
    async fn exchange(&mut self, served: u64) -> bool {
        let snap = self.w.snapshot();
        let t0 = Instant::now();
        self.rec.reset();
        let req = self.begin(&snap, served);
        let keep = self.serve_request(&snap, &req).await.unwrap_or(false);
        self.end_charges();
        self.w.record_request(&super::observe::Finished {
            tier: self.rec.tier,
            decision: self.rec.limit,
            auth: self.rec.auth,
            rule: self.rec.rule,
            key: &self.key,
            subject: &self.subject,
            began: t0,
            ended: Instant::now(),
        });
        if self.logging {
            self.log_request(t0);
        }
        keep && !self.w.shutdown.is_set()
    }

    /// The phases of one request after its head: refuse what cannot be proxied, admit or
    /// deny, forward and relay. Ok(true) = the connection can carry another request.
    async fn serve_request(&mut self, snap: &Snapshot, req: &ReqInfo) -> Result<bool, Fail> {
        if let Some(done) = self.refuse_unproxiable(req).await {
            return done;
        }
        let adm = match self.admit(snap, req).await {
            Ok(adm) => adm,
            Err(why) => return self.refuse(req, why).await,
        };
        if let Some(d) = adm.denial() {
            return self.deny(snap, req, &adm, &d).await;
        }
        self.add_limit_headers(snap, &adm);
        self.forward(snap, req).await
    }

    /// Writes `out` to the client and flushes it.
    async fn write_out(&mut self) -> Result<(), Fail> {
        let deadline = Instant::now() + self.client_idle;
        let n = self.out.len() as u64;
        write_all(&mut self.io, &mut self.out, deadline)
            .await
            .map_err(|_| Fail::Client)?;
        self.out.clear();
        self.w.stats.bytes_to_client.add(n);
        self.rec.bytes_sent += n;
        // TLS streams send their records here; a plain stream has nothing to do.
        self.io.flush().await.map_err(|_| Fail::Client)
    }

    /// The one S3 XML error writer: `<Resource>` is the request path, the headers are
    /// `extra` (request id, rate-limit headers), `<ApiKey>` the request's key if asked.
    async fn write_s3_error(&mut self, a: Answer<'_>) -> Result<(), Fail> {
        self.out.clear();
        let body = ErrorBody {
            code: a.code,
            message: a.message,
            resource: &self.resource,
            request_id: &self.rid,
            api_key: (a.api_key && !self.key.is_empty()).then_some(&self.key[..]),
        };
        let out = &mut self.out;
        self.extra
            .with_pairs(|p| write_error_response(a.status, &body, p, a.close, a.head_only, out));
        self.count_status(a.status);
        self.write_out().await
    }

    fn count_status(&mut self, status: u16) {
        if status >= 200 || self.rec.status == 0 {
            self.rec.status = status;
        }
        let class = (status / 100) as usize;
        self.w.stats.responses[if class <= 5 { class } else { 0 }].inc();
    }

    /// Appends the finished request's access-log line to this core's buffer.
    fn log_request(&mut self, t0: Instant) {
        let snap = self.w.snapshot();
        let tier = self
            .rec
            .tier
            .and_then(|t| snap.cfg.limits.tiers.get(t as usize))
            .map(|t| t.name.as_str());
        let r = &self.rec;
        let entry = super::access_log::Entry {
            time: std::time::SystemTime::now(),
            core: self.w.id,
            client: self.peer,
            tls: self.tls,
            request_id: &self.rid,
            method: &r.method,
            target: &r.target,
            status: r.status,
            key: (!self.key.is_empty() && r.tier.is_some()).then_some(&self.key[..]),
            auth: r.auth,
            tier,
            limit: r.limit,
            rule: r
                .rule
                .and_then(|s| snap.cfg.rules.by_slot(s as u16))
                .map(|r| r.name.as_str()),
            request_length: r.request_length,
            bytes_sent: r.bytes_sent,
            duration: t0.elapsed(),
        };
        if let Some(l) = self.w.alog.borrow_mut().as_mut() {
            l.add(&entry, &self.w.stats);
        }
    }
}
