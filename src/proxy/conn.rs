//! One client connection: read a request head, identify the key, decide the limit,
//! forward to an upstream over a pooled keep-alive connection, stream both bodies,
//! add headers; repeat for keep-alive and pipelined requests.
//!
//! Owns: the per-connection buffers and the request/response exchange. Must not
//! touch: other connections' state (only the worker's pools, briefly borrowed and
//! never across an await).
//!
//! Byte-exactness: the request line and every end-to-end header line go upstream as
//! received (see `http::write_request_head`); bodies are relayed with the same owned
//! buffer read from one socket and written to the other.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::IoBuf;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use crate::config::{ExpectDenied, Method};
use crate::http::{
    BodyFraming, ChunkedScanner, ConnHeader, ErrorBody, HeadError, HeadLimits, ParseStatus,
    RequestHead, ResponseHead, parse_request, parse_response, write_error_response,
    write_request_head, write_response_head,
};
use crate::identity::{identify, sigv4_signed_headers};
use crate::stats::method_index;

use super::Worker;
use super::headers::{Extra, rate_limit_headers, retry_headers, window_words};
use super::limiter;
use super::upstream::{ConnectError, UpConn, answered_early, connect};

/// Response-side head limits (upstream heads are trusted more, but still bounded).
const UPSTREAM_HEAD: HeadLimits = HeadLimits {
    max_head_bytes: 64 * 1024,
    max_headers: 256,
};

/// Why an exchange failed, deciding the status the client gets (if it can still get one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    /// The client went away or broke framing: just close.
    Client,
    /// Upstream broke the exchange before any response byte reached the client → 502.
    Upstream,
    /// Upstream timed out before any response byte reached the client → 504.
    Timeout,
    /// The response to the client had started: nothing to do but close.
    Late,
    /// Stale pooled connection, request not processed: retry on a fresh connection.
    Stale,
}

struct Conn<S> {
    w: Rc<Worker>,
    io: S,
    peer: SocketAddr,
    /// Bytes read from the client; `cstart..` not yet consumed.
    cbuf: Vec<u8>,
    cstart: usize,
    out: Vec<u8>,
    extra: Extra,
    rid: String,
    key: Vec<u8>,
    subject: Vec<u8>,
    /// The upstream request head (reused; kept for a retry).
    up_head: Vec<u8>,
    /// The forwarded request's path, for the `<Resource>` of an upstream error (the head's
    /// bytes in `cbuf` are overwritten while the body streams).
    resource: Vec<u8>,
    head: RequestHead,
    rhead: ResponseHead,
    tls: bool,
    /// The access log is on (fixed for the process's life).
    logging: bool,
    /// What the access log records of the current request.
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
        self.request_length = None;
        self.bytes_sent = 0;
    }
}

/// Serves one client connection until it closes, errs, or the worker shuts down.
pub async fn serve<S: AsyncReadRent + AsyncWriteRent>(
    w: Rc<Worker>,
    io: S,
    peer: SocketAddr,
    tls: bool,
) {
    let max_head = w.snapshot().cfg.http.max_head_bytes;
    let mut cbuf = w.pool.borrow_mut().get();
    if cbuf.capacity() < max_head + 1 {
        cbuf.reserve(max_head + 1);
    }
    let mut c = Conn {
        w: w.clone(),
        io,
        peer,
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
        tls,
        logging: w.alog.borrow().is_some(),
        rec: LogRec::new(),
    };
    let mut served: u64 = 0;
    loop {
        match c.read_head().await {
            HeadRead::Ready => {}
            HeadRead::Closed => break,
            HeadRead::Bad(e) => {
                let t0 = Instant::now();
                c.rec.reset();
                c.w.stats.client_errors_400.inc();
                c.simple_error(e.status(), e.s3_code(), &e.to_string(), true)
                    .await;
                if c.logging {
                    c.log_request(t0);
                }
                break;
            }
        }
        served += 1;
        let max_req = c.w.snapshot().cfg.http.max_requests_per_connection;
        let last = max_req != 0 && served >= max_req;
        let t0 = c.logging.then(Instant::now);
        c.rec.reset();
        let r = c.exchange(last).await;
        if let Some(t0) = t0 {
            c.log_request(t0);
        }
        match r {
            Ok(true) => continue,
            Ok(false) => break,
            Err(_) => break,
        }
    }
    let _ = c.io.shutdown().await;
    let b = std::mem::take(&mut c.cbuf);
    w.pool.borrow_mut().put(b);
}

/// The error answer (counted) when no upstream connection could be made: the last connect
/// error (504 for a timeout, else 502), or 503 when no node was usable to begin with.
fn connect_failure(w: &Worker, last: Option<ConnectError>) -> (u16, &'static str, &'static str) {
    match last {
        Some(ConnectError::Timeout) => {
            w.stats.upstream_errors_504.inc();
            (504, "GatewayTimeout", "Upstream connect timed out")
        }
        Some(_) => {
            w.stats.upstream_errors_502.inc();
            (502, "BadGateway", "Upstream connection failed")
        }
        None => {
            w.stats.upstream_errors_503.inc();
            (503, "ServiceUnavailable", "No healthy upstream")
        }
    }
}

enum HeadRead {
    Ready,
    Closed,
    Bad(HeadError),
}

impl<S: AsyncReadRent + AsyncWriteRent> Conn<S> {
    async fn read_head(&mut self) -> HeadRead {
        let snap = self.w.snapshot();
        let http = &snap.cfg.http;
        let limits = HeadLimits {
            max_head_bytes: http.max_head_bytes,
            max_headers: http.max_headers,
        };
        // the head timeout runs from the first byte of a head (set lazily: no clock read for
        // a head that arrives in one read)
        let mut started: Option<Instant> = None;
        loop {
            if self.cstart < self.cbuf.len() {
                match parse_request(&self.cbuf[self.cstart..], &limits, &mut self.head) {
                    Ok(ParseStatus::Complete) => return HeadRead::Ready,
                    Ok(ParseStatus::Partial) => {}
                    Err(e) => return HeadRead::Bad(e),
                }
            }
            if self.cstart > 0 {
                self.cbuf.drain(..self.cstart);
                self.cstart = 0;
            }
            if self.cbuf.len() == self.cbuf.capacity() {
                self.cbuf.reserve(4096);
            }
            let idle = self.cbuf.is_empty();
            let timeout = if idle {
                http.client_idle_timeout
            } else {
                let t0 = *started.get_or_insert_with(Instant::now);
                http.client_head_timeout
                    .saturating_sub(t0.elapsed())
                    .max(Duration::from_millis(1))
            };
            if idle && self.w.shutdown.is_set() {
                return HeadRead::Closed;
            }
            let buf = std::mem::take(&mut self.cbuf);
            let r = if idle {
                monoio::select! {
                    r = monoio::time::timeout(timeout, self.io.read(buf)) => Some(r),
                    _ = self.w.shutdown.wait() => None,
                }
            } else {
                Some(monoio::time::timeout(timeout, self.io.read(buf)).await)
            };
            match r {
                Some(Ok((Ok(n), b))) => {
                    self.cbuf = b;
                    if n == 0 {
                        return HeadRead::Closed;
                    }
                    self.w.stats.bytes_from_client.add(n as u64);
                }
                Some(Ok((Err(_), b))) => {
                    self.cbuf = b;
                    return HeadRead::Closed;
                }
                // Timeout or shutdown: the in-flight read kept the buffer.
                Some(Err(_)) | None => {
                    self.cbuf = Vec::with_capacity(http.max_head_bytes + 1);
                    return HeadRead::Closed;
                }
            }
        }
    }

    async fn write_out(&mut self) -> Result<(), Fail> {
        let out = std::mem::take(&mut self.out);
        let n = out.len();
        let idle = self.w.snapshot().cfg.http.client_idle_timeout;
        match monoio::time::timeout(idle, self.io.write_all(out)).await {
            Ok((Ok(_), b)) => {
                self.out = b;
                self.out.clear();
                self.w.stats.bytes_to_client.add(n as u64);
                self.rec.bytes_sent += n as u64;
                self.io.flush().await.map_err(|_| Fail::Client)
            }
            Ok((Err(_), b)) => {
                self.out = b;
                Err(Fail::Client)
            }
            Err(_) => Err(Fail::Client),
        }
    }

    /// An S3 XML error for a request whose head may be unusable (parse errors).
    async fn simple_error(&mut self, status: u16, code: &str, msg: &str, close: bool) {
        self.w.next_request_id(&mut self.rid);
        self.out.clear();
        let rid = std::mem::take(&mut self.rid);
        self.extra.clear();
        self.extra.push("X-Request-ID", &rid);
        let body = ErrorBody {
            code,
            message: msg,
            resource: b"/",
            request_id: &rid,
            api_key: None,
        };
        let extra = std::mem::take(&mut self.extra);
        extra.with_pairs(|p| write_error_response(status, &body, p, close, false, &mut self.out));
        self.extra = extra;
        self.rid = rid;
        self.count_status(status);
        let _ = self.write_out().await;
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
            request_length: r.request_length,
            bytes_sent: r.bytes_sent,
            duration: t0.elapsed(),
        };
        if let Some(l) = self.w.alog.borrow_mut().as_mut() {
            l.add(&entry, &self.w.stats);
        }
    }

    /// One request/response exchange. Ok(true) = keep the connection.
    async fn exchange(&mut self, last: bool) -> Result<bool, Fail> {
        let w = self.w.clone();
        let snap = w.snapshot();
        let cfg = &snap.cfg;
        let lim = &cfg.limits;
        let hl = self.head.head_len;
        let framing = self.head.framing;
        let expect = self.head.expect_continue;
        let client_keep_alive = self.head.keep_alive && !last;

        // ---- identify, decide (borrows the head bytes only) ----
        let h = &self.cbuf[self.cstart..self.cstart + hl];
        let method = self.head.method(h);
        let method_enum = Method::from_bytes(method);
        let mi = method_index(method_enum);
        w.stats.requests[mi].inc();
        let is_head = method == b"HEAD";
        if self.logging {
            self.rec.method.extend_from_slice(method);
            self.rec.target.extend_from_slice(self.head.target(h));
            self.rec.request_length = match framing {
                BodyFraming::Length(n) => Some(n),
                _ => None,
            };
        }
        match self.head.x_request_id.clone() {
            Some(r)
                if !h[r.clone()].is_empty()
                    && h[r.clone()].len() <= 128
                    && h[r.clone()].iter().all(|b| (0x21..=0x7e).contains(b)) =>
            {
                self.rid.clear();
                self.rid
                    .push_str(std::str::from_utf8(&h[r]).unwrap_or_default());
            }
            _ => w.next_request_id(&mut self.rid),
        }
        let mut scratch = [0u8; 256];
        let id = identify(
            self.head.target(h),
            self.head.headers(h),
            lim.max_key_len,
            &mut scratch,
        );
        let auth = id.method;
        w.stats.auth_methods[auth as usize].inc();
        if id.malformed {
            w.stats.malformed_keys.inc();
        }
        self.key.clear();
        if let Some(k) = id.key {
            self.key.extend_from_slice(k);
        }
        let tgt = limiter::target(lim, &id, self.peer.ip());
        self.subject.clear();
        self.subject.extend_from_slice(tgt.subject.as_bytes());
        let tier_idx = tgt.tier;
        let tier = &lim.tiers[tier_idx];
        let limited = method_enum.is_some_and(|m| tier.methods.contains(m));
        let decision = if limited {
            Some(limiter::check(&w, &self.subject, tier_idx as u16).await)
        } else {
            w.stats.unlimited[mi].inc();
            None
        };
        let enforce = lim.enforce && tier.enforce;
        if self.logging {
            self.rec.tier = Some(tier_idx as u16);
            self.rec.auth = auth.as_str();
            self.rec.limit = match &decision {
                None => "unlimited",
                Some(d) if d.admitted => "admitted",
                Some(_) if enforce => "denied",
                Some(_) => "shadow_denied",
            };
        }
        let key_str = if self.key.is_empty() {
            None
        } else {
            std::str::from_utf8(&self.key).ok()
        };
        let mut shadow_deny = false;
        self.extra.clear();
        self.extra.push("X-Request-ID", &self.rid);
        if let Some(d) = &decision {
            let tm = &w.stats.tiers[tier_idx.min(crate::stats::MAX_TIERS - 1)][mi];
            if d.admitted {
                tm.admitted.inc();
            } else if enforce {
                tm.denied.inc();
            } else {
                tm.shadow_denied.inc();
                shadow_deny = true;
            }
            if !d.admitted && enforce {
                // ---- denied: SlowDown, counters untouched ----
                rate_limit_headers(
                    &mut self.extra,
                    &lim.headers,
                    tier,
                    d,
                    key_str,
                    auth.as_str(),
                    false,
                );
                retry_headers(&mut self.extra, d);
                let burst = d.burst_binds;
                let win = if burst { tier.burst } else { tier.sustained };
                let message = format!(
                    "Rate limit exceeded for tier {} ({} requests per {})",
                    tier.name,
                    win.limit,
                    window_words(win)
                );
                let body_pending = framing.has_body();
                let avail = self.cbuf.len() - self.cstart - hl;
                // Expect: 100-continue and nothing sent yet: the client will not send
                // the body; the connection stays usable only in drain mode.
                let drain_cap = match lim.expect_denied {
                    ExpectDenied::Close => None,
                    ExpectDenied::Drain(cap) => Some(cap),
                };
                let close = !client_keep_alive
                    || (body_pending && (drain_cap.is_none() || (expect && avail == 0)));
                let h = &self.cbuf[self.cstart..self.cstart + hl];
                let body = ErrorBody {
                    code: "SlowDown",
                    message: &message,
                    resource: self.head.path(h),
                    request_id: &self.rid,
                    api_key: id.key,
                };
                self.out.clear();
                let status = lim.deny_status;
                let extra = std::mem::take(&mut self.extra);
                extra.with_pairs(|p| {
                    write_error_response(status, &body, p, close, is_head, &mut self.out)
                });
                self.extra = extra;
                self.count_status(status);
                self.write_out().await?;
                if close {
                    return Ok(false);
                }
                self.cstart += hl;
                if body_pending {
                    return self.discard_body(framing, drain_cap.unwrap_or(0)).await;
                }
                return Ok(!w.shutdown.is_set());
            }
            if lim.headers.on_allowed || shadow_deny {
                rate_limit_headers(
                    &mut self.extra,
                    &lim.headers,
                    tier,
                    d,
                    key_str,
                    auth.as_str(),
                    shadow_deny,
                );
            }
        }

        // ---- forward ----
        let up_cfg = &cfg.upstream;
        let h = &self.cbuf[self.cstart..self.cstart + hl];
        self.resource.clear();
        self.resource.extend_from_slice(self.head.path(h));
        let signed = self
            .head
            .header(h, "authorization")
            .and_then(sigv4_signed_headers);
        let xff;
        let up_extra: [(&[u8], &[u8]); 1];
        let up_extra: &[(&[u8], &[u8])] = if cfg.http.x_forwarded_for {
            xff = self.peer.ip().to_string();
            up_extra = [(b"X-Forwarded-For", xff.as_bytes())];
            &up_extra
        } else {
            &[]
        };
        let mut up_head = std::mem::take(&mut self.up_head);
        up_head.clear();
        write_request_head(h, &self.head, signed, up_extra, &mut up_head);

        // Body bytes already buffered after the head.
        let avail = &self.cbuf[self.cstart + hl..];
        let mut scanner = ChunkedScanner::new();
        let (in_buf, body_done) = match framing {
            BodyFraming::None | BodyFraming::UntilClose => (0, true),
            BodyFraming::Length(n) => {
                let t = (n as usize).min(avail.len());
                (t, t as u64 == n)
            }
            BodyFraming::Chunked => match scanner.feed(avail) {
                Ok(t) => (t, scanner.is_done()),
                Err(_) => {
                    self.simple_error(400, "IncompleteBody", "Malformed chunked body", true)
                        .await;
                    return Ok(false);
                }
            },
        };
        let body_start = self.cstart + hl;
        let idempotent_retry = !framing.has_body()
            && matches!(
                method_enum,
                Some(Method::Get | Method::Head | Method::Delete | Method::Options)
            );

        let mut tried: [usize; 8] = [usize::MAX; 8];
        let mut ntried = 0usize;
        let mut retries = 0u32;
        let mut stale_retry_used = false;
        let mut last_connect_err: Option<ConnectError> = None;
        let mut scanner_once = Some(scanner);
        loop {
            let (node, mut up) = loop {
                let now = Instant::now();
                let picked = w.upstreams.borrow_mut().pick(&tried[..ntried], now);
                let Some(node) = picked else {
                    self.cstart = body_start;
                    // Every usable node refused or timed out: that failure, not "no healthy
                    // node" (which is for when none was usable to begin with).
                    let (status, code, msg) = connect_failure(&w, last_connect_err);
                    return self.upstream_error(status, code, msg, framing).await;
                };
                if ntried > 0 {
                    w.stats.upstream_retries.inc();
                }
                let pooled = if stale_retry_used {
                    None
                } else {
                    w.upstreams.borrow_mut().take_idle(node, now)
                };
                let reused = pooled.is_some();
                let mut conn = match pooled {
                    Some(c) => c,
                    None => {
                        let tls = {
                            let ups = w.upstreams.borrow();
                            ups.tls.as_ref().and_then(|t| {
                                ups.server_name_for(node).map(|n| (t.connector.clone(), n))
                            })
                        };
                        let addr = w.upstreams.borrow().nodes[node].addr;
                        w.stats.upstream_connects.inc();
                        match connect(addr, up_cfg.connect_timeout, tls).await {
                            Ok(c) => {
                                w.upstreams.borrow_mut().connect_ok(node);
                                c
                            }
                            Err(e) => {
                                w.upstreams
                                    .borrow_mut()
                                    .connect_failed(node, Instant::now());
                                if ntried < tried.len() {
                                    tried[ntried] = node;
                                    ntried += 1;
                                }
                                last_connect_err = Some(e);
                                if retries < up_cfg.max_retries {
                                    retries += 1;
                                    continue;
                                }
                                self.cstart = body_start;
                                let (status, code, msg) = connect_failure(&w, Some(e));
                                return self.upstream_error(status, code, msg, framing).await;
                            }
                        }
                    }
                };
                // Send head (+ buffered body unless waiting for 100-continue).
                let mut first = std::mem::take(&mut self.out);
                first.clear();
                first.extend_from_slice(&up_head);
                if !expect {
                    first.extend_from_slice(&self.cbuf[body_start..body_start + in_buf]);
                }
                let (r, b) = write_full(&mut conn, first, up_cfg.idle_timeout).await;
                self.out = b;
                match r {
                    Ok(()) => break (node, conn),
                    Err(_) if reused && !stale_retry_used => {
                        // A pooled connection the upstream had closed: nothing was processed.
                        stale_retry_used = true;
                        continue;
                    }
                    Err(_) => {
                        w.stats.upstream_errors_502.inc();
                        self.cstart = body_start;
                        return self
                            .upstream_error(502, "BadGateway", "Upstream write failed", framing)
                            .await;
                    }
                }
            };
            w.upstreams.borrow_mut().nodes[node].outstanding += 1;
            let result = self
                .relay(
                    &mut up,
                    RelayArgs {
                        framing,
                        expect,
                        in_buf,
                        body_done,
                        body_start,
                        scanner: scanner_once.take().unwrap_or_default(),
                        is_head,
                        client_keep_alive,
                        idempotent_retry: idempotent_retry && !stale_retry_used,
                    },
                )
                .await;
            w.upstreams.borrow_mut().nodes[node].outstanding -= 1;
            return match result {
                Ok((keep_client, keep_up)) => {
                    self.up_head = std::mem::take(&mut up_head);
                    if keep_up {
                        w.upstreams.borrow_mut().put_idle(node, up, Instant::now());
                    }
                    Ok(keep_client && !w.shutdown.is_set())
                }
                Err(Fail::Stale) if !stale_retry_used => {
                    // A pooled connection the upstream had closed before answering (nothing
                    // was processed; bodiless idempotent request only): pick again and use a
                    // fresh connection, so a node that died is skipped like any refused one.
                    stale_retry_used = true;
                    w.stats.upstream_retries.inc();
                    continue;
                }
                Err(f) => self.fail(f, framing).await,
            };
        }
    }

    async fn fail(&mut self, f: Fail, framing: BodyFraming) -> Result<bool, Fail> {
        match f {
            Fail::Upstream | Fail::Stale => {
                self.w.stats.upstream_errors_502.inc();
                self.upstream_error(502, "BadGateway", "Upstream closed the connection", framing)
                    .await?;
                Ok(false)
            }
            Fail::Timeout => {
                self.w.stats.upstream_errors_504.inc();
                self.upstream_error(
                    504,
                    "GatewayTimeout",
                    "Upstream did not answer in time",
                    framing,
                )
                .await?;
                Ok(false)
            }
            Fail::Client | Fail::Late => Ok(false),
        }
    }

    /// An S3 XML error for an upstream failure. The request body (if any) may be
    /// partly unread, so the connection closes unless there was none.
    async fn upstream_error(
        &mut self,
        status: u16,
        code: &str,
        msg: &str,
        framing: BodyFraming,
    ) -> Result<bool, Fail> {
        let close = framing.has_body() || !self.head.keep_alive;
        self.out.clear();
        let rid = std::mem::take(&mut self.rid);
        let extra = std::mem::take(&mut self.extra);
        let body = ErrorBody {
            code,
            message: msg,
            resource: &self.resource,
            request_id: &rid,
            api_key: None,
        };
        extra.with_pairs(|p| write_error_response(status, &body, p, close, false, &mut self.out));
        self.extra = extra;
        self.rid = rid;
        self.count_status(status);
        self.write_out().await?;
        Ok(!close)
    }

    /// Reads and throws away a request body (denied request in drain mode), up to `cap`.
    async fn discard_body(&mut self, framing: BodyFraming, cap: u64) -> Result<bool, Fail> {
        let mut scanner = ChunkedScanner::new();
        let mut remaining = match framing {
            BodyFraming::Length(n) => {
                if n > cap {
                    return Ok(false);
                }
                n
            }
            _ => u64::MAX,
        };
        let mut discarded: u64 = 0;
        let idle = self.w.snapshot().cfg.http.client_idle_timeout;
        loop {
            let avail = &self.cbuf[self.cstart..];
            let take = match framing {
                BodyFraming::Length(_) => (remaining as usize).min(avail.len()),
                BodyFraming::Chunked => scanner.feed(avail).map_err(|_| Fail::Client)?,
                _ => 0,
            };
            self.cstart += take;
            discarded += take as u64;
            if let BodyFraming::Length(_) = framing {
                remaining -= take as u64;
                if remaining == 0 {
                    return Ok(true);
                }
            } else if scanner.is_done() {
                return Ok(true);
            }
            if discarded > cap {
                return Ok(false);
            }
            self.cbuf.clear();
            self.cstart = 0;
            let buf = std::mem::take(&mut self.cbuf);
            match monoio::time::timeout(idle, self.io.read(buf)).await {
                Ok((Ok(n), b)) if n > 0 => {
                    self.cbuf = b;
                }
                Ok((_, b)) => {
                    self.cbuf = b;
                    return Ok(false);
                }
                Err(_) => {
                    self.cbuf = Vec::with_capacity(BUF);
                    return Ok(false);
                }
            }
        }
    }

    /// Streams the rest of the request body and the whole response.
    /// Ok((keep client connection, keep upstream connection)).
    async fn relay(&mut self, up: &mut UpConn, a: RelayArgs) -> Result<(bool, bool), Fail> {
        let w = self.w.clone();
        let snap = w.snapshot();
        let up_cfg = &snap.cfg.upstream;
        let mut scanner = a.scanner;
        let mut body_sent = !a.expect && a.body_done;
        let mut body_buffered_sent = !a.expect;
        let mut remaining: u64 = match a.framing {
            BodyFraming::Length(n) => n - a.in_buf as u64,
            _ => 0,
        };
        self.cstart = a.body_start + a.in_buf;
        // The upstream stopped taking the body (it answered early, e.g. 403/413, and closed):
        // its response may already be waiting, so read it instead of answering 502; neither
        // connection is reused (the client's body was not consumed).
        let mut abandoned = false;
        if !a.expect && !a.body_done {
            match self
                .pump_request(up, a.framing, &mut remaining, &mut scanner)
                .await
            {
                Ok(()) => {}
                Err(Fail::Upstream) => abandoned = true,
                Err(e) => return Err(e),
            }
            body_sent = true;
        }
        if !a.framing.has_body() && !a.expect {
            body_sent = true;
        }

        // ---- response head(s) ----
        let mut rbuf = w.pool.borrow_mut().get();
        let mut got_any = false;
        let mut client_close = !a.client_keep_alive;
        let mut up_reusable = true;
        let deadline = Instant::now() + up_cfg.response_head_timeout;
        loop {
            let complete = if rbuf.is_empty() {
                false
            } else {
                match parse_response(&rbuf, &UPSTREAM_HEAD, a.is_head, &mut self.rhead) {
                    Ok(ParseStatus::Complete) => true,
                    Ok(ParseStatus::Partial) => false,
                    Err(_) => {
                        w.pool.borrow_mut().put(rbuf);
                        return Err(Fail::Upstream);
                    }
                }
            };
            if complete {
                let st = self.rhead.status;
                if (100..200).contains(&st) {
                    let hl = self.rhead.head_len;
                    if st == 100 && a.expect && !body_sent {
                        // Relay 100 Continue, then the body.
                        self.out.clear();
                        self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                        self.write_out().await?;
                        rbuf.drain(..hl);
                        if !body_buffered_sent {
                            let mut first = std::mem::take(&mut self.out);
                            first.clear();
                            first.extend_from_slice(
                                &self.cbuf[a.body_start..a.body_start + a.in_buf],
                            );
                            let (r, b) = write_full(up, first, up_cfg.idle_timeout).await;
                            self.out = b;
                            r?;
                            body_buffered_sent = true;
                        }
                        if !a.body_done {
                            match self
                                .pump_request(up, a.framing, &mut remaining, &mut scanner)
                                .await
                            {
                                Ok(()) => {}
                                Err(Fail::Upstream) => abandoned = true,
                                Err(e) => return Err(e),
                            }
                        }
                        body_sent = true;
                        continue;
                    }
                    if st == 101 {
                        w.pool.borrow_mut().put(rbuf);
                        return Err(Fail::Upstream);
                    }
                    // Other interim responses go to the client as they are.
                    if st != 100 || a.expect {
                        self.out.clear();
                        self.out.extend_from_slice(&rbuf[..hl]);
                        self.write_out().await?;
                    }
                    rbuf.drain(..hl);
                    continue;
                }
                break;
            }
            if rbuf.len() == rbuf.capacity() {
                rbuf.reserve(16 * 1024);
            }
            match monoio::time::timeout_at(deadline.into(), up.read(rbuf)).await {
                Ok((Ok(n), b)) => {
                    rbuf = b;
                    if n == 0 {
                        w.pool.borrow_mut().put(rbuf);
                        return Err(if !got_any && a.idempotent_retry {
                            Fail::Stale
                        } else {
                            Fail::Upstream
                        });
                    }
                    got_any = true;
                }
                Ok((Err(_), b)) => {
                    let stale = !got_any && a.idempotent_retry;
                    w.pool.borrow_mut().put(b);
                    return Err(if stale { Fail::Stale } else { Fail::Upstream });
                }
                Err(_) => return Err(Fail::Timeout),
            }
        }
        if abandoned {
            w.stats.upstream_early_responses.inc();
            client_close = true;
            up_reusable = false;
        }
        if !body_sent {
            // Final answer before 100 Continue (or before the body was sent): the client
            // may still send its body; the upstream may wait for it. Reuse neither.
            client_close = true;
            up_reusable = false;
        }
        // ---- final response head to the client ----
        let hl = self.rhead.head_len;
        let rframing = self.rhead.framing;
        if !self.rhead.keep_alive {
            up_reusable = false;
        }
        if rframing == BodyFraming::UntilClose {
            client_close = true;
            up_reusable = false;
        }
        let conn_hdr = if client_close {
            ConnHeader::Close
        } else if self.head.minor_version == 0 {
            ConnHeader::KeepAlive
        } else {
            ConnHeader::Omit
        };
        self.out.clear();
        let extra = std::mem::take(&mut self.extra);
        extra.with_pairs(|p| write_response_head(&rbuf, &self.rhead, p, conn_hdr, &mut self.out));
        self.extra = extra;
        self.count_status(self.rhead.status);
        let mut rscan = ChunkedScanner::new();
        let avail = rbuf.len() - hl;
        let (take, mut rem, done) = match rframing {
            BodyFraming::None => (0, 0u64, true),
            BodyFraming::Length(n) => {
                let t = (n as usize).min(avail);
                (t, n - t as u64, t as u64 == n)
            }
            BodyFraming::Chunked => {
                let t = rscan.feed(&rbuf[hl..]).map_err(|_| Fail::Upstream)?;
                (t, 0, rscan.is_done())
            }
            BodyFraming::UntilClose => (avail, 0, false),
        };
        if hl + take < rbuf.len() {
            // Bytes beyond the response: the upstream is out of step.
            up_reusable = false;
        }
        self.out.extend_from_slice(&rbuf[hl..hl + take]);
        if let Err(e) = self.write_out().await {
            w.pool.borrow_mut().put(rbuf);
            return Err(e);
        }
        // ---- response body ----
        if !done {
            rbuf.clear();
            loop {
                let r = monoio::time::timeout(up_cfg.idle_timeout, up.read(rbuf)).await;
                let n = match r {
                    Ok((Ok(n), b)) => {
                        rbuf = b;
                        n
                    }
                    Ok((Err(_), b)) => {
                        w.pool.borrow_mut().put(b);
                        return Err(Fail::Late);
                    }
                    Err(_) => return Err(Fail::Late),
                };
                if n == 0 {
                    if rframing == BodyFraming::UntilClose {
                        break;
                    }
                    w.pool.borrow_mut().put(rbuf);
                    return Err(Fail::Late);
                }
                let (take, finished) = match rframing {
                    BodyFraming::Length(_) => {
                        let t = (rem as usize).min(n);
                        rem -= t as u64;
                        (t, rem == 0)
                    }
                    BodyFraming::Chunked => {
                        let t = rscan.feed(&rbuf[..n]).map_err(|_| Fail::Late)?;
                        (t, rscan.is_done())
                    }
                    _ => (n, false),
                };
                if take < n {
                    up_reusable = false;
                }
                let idle = snap.cfg.http.client_idle_timeout;
                let slice = rbuf.slice(0..take);
                match monoio::time::timeout(idle, self.io.write_all(slice)).await {
                    Ok((Ok(_), s)) => {
                        rbuf = s.into_inner();
                        w.stats.bytes_to_client.add(take as u64);
                        self.rec.bytes_sent += take as u64;
                    }
                    Ok((Err(_), s)) => {
                        w.pool.borrow_mut().put(s.into_inner());
                        return Err(Fail::Late);
                    }
                    Err(_) => return Err(Fail::Late),
                }
                rbuf.clear();
                if finished {
                    break;
                }
            }
            self.io.flush().await.map_err(|_| Fail::Late)?;
        }
        w.pool.borrow_mut().put(rbuf);
        Ok((!client_close, up_reusable && body_sent))
    }

    /// Streams the rest of a request body client → upstream with pooled buffers.
    async fn pump_request(
        &mut self,
        up: &mut UpConn,
        framing: BodyFraming,
        remaining: &mut u64,
        scanner: &mut ChunkedScanner,
    ) -> Result<(), Fail> {
        let snap = self.w.snapshot();
        let idle = snap.cfg.http.client_idle_timeout;
        let up_idle = snap.cfg.upstream.idle_timeout;
        // Everything buffered belongs to the body already sent; start clean.
        self.cbuf.drain(..self.cstart.min(self.cbuf.len()));
        self.cstart = 0;
        let mut buf = self.w.pool.borrow_mut().get();
        loop {
            let r = monoio::time::timeout(idle, self.io.read(buf)).await;
            let n = match r {
                Ok((Ok(n), b)) => {
                    buf = b;
                    n
                }
                Ok((Err(_), b)) => {
                    self.w.pool.borrow_mut().put(b);
                    return Err(Fail::Client);
                }
                Err(_) => return Err(Fail::Client),
            };
            if n == 0 {
                self.w.pool.borrow_mut().put(buf);
                return Err(Fail::Client);
            }
            self.w.stats.bytes_from_client.add(n as u64);
            let (take, finished) = match framing {
                BodyFraming::Length(_) => {
                    let t = (*remaining as usize).min(n);
                    *remaining -= t as u64;
                    (t, *remaining == 0)
                }
                BodyFraming::Chunked => match scanner.feed(&buf[..n]) {
                    Ok(t) => (t, scanner.is_done()),
                    Err(_) => {
                        self.w.pool.borrow_mut().put(buf);
                        return Err(Fail::Client);
                    }
                },
                _ => (0, true),
            };
            if take < n {
                // Pipelined bytes of the next request.
                self.cbuf.extend_from_slice(&buf[take..n]);
            }
            let slice = buf.slice(0..take);
            match write_body(up, slice, up_idle).await {
                BodyWrite::Done(s) => buf = s.into_inner(),
                BodyWrite::Failed(b) => {
                    self.w.pool.borrow_mut().put(b);
                    return Err(Fail::Upstream);
                }
                // The caller reads and relays the answer (both connections then close).
                BodyWrite::Answered => return Err(Fail::Upstream),
                BodyWrite::TimedOut => return Err(Fail::Timeout),
            }
            buf.clear();
            if finished {
                up.flush().await.map_err(|_| Fail::Upstream)?;
                self.w.pool.borrow_mut().put(buf);
                return Ok(());
            }
        }
    }
}

const BUF: usize = 64 * 1024;

struct RelayArgs {
    framing: BodyFraming,
    expect: bool,
    in_buf: usize,
    body_done: bool,
    body_start: usize,
    scanner: ChunkedScanner,
    is_head: bool,
    client_keep_alive: bool,
    idempotent_retry: bool,
}

/// How long a request-body write may wait on an upstream that takes nothing before the
/// upstream is checked for an early answer (and again at this interval until
/// `upstream.idle_timeout`).
const STALL_PROBE: Duration = Duration::from_millis(200);

enum BodyWrite {
    Done(monoio::buf::Slice<Vec<u8>>),
    Failed(Vec<u8>),
    /// The upstream answered (or closed) while not taking the body.
    Answered,
    TimedOut,
}

/// Writes request-body bytes upstream. An upstream that answers early (403, 413 …) and then
/// stops reading without closing would otherwise hold the upload until `idle`; while the
/// write is stuck, the socket is checked for an answer every [`STALL_PROBE`]. The write is
/// never cancelled while the exchange goes on, so no byte is lost or sent twice.
async fn write_body(
    up: &mut UpConn,
    slice: monoio::buf::Slice<Vec<u8>>,
    idle: Duration,
) -> BodyWrite {
    let Some(fd) = up.early_answer_fd() else {
        return match monoio::time::timeout(idle, up.write_all(slice)).await {
            Ok((Ok(_), s)) => BodyWrite::Done(s),
            Ok((Err(_), s)) => BodyWrite::Failed(s.into_inner()),
            Err(_) => BodyWrite::TimedOut,
        };
    };
    let deadline = Instant::now() + idle;
    let mut write = std::pin::pin!(up.write_all(slice));
    loop {
        let probe = (Instant::now() + STALL_PROBE).min(deadline);
        monoio::select! {
            r = &mut write => {
                return match r {
                    (Ok(_), s) => BodyWrite::Done(s),
                    (Err(_), s) => BodyWrite::Failed(s.into_inner()),
                };
            }
            _ = monoio::time::sleep_until(probe.into()) => {
                if answered_early(fd) {
                    return BodyWrite::Answered;
                }
                if Instant::now() >= deadline {
                    return BodyWrite::TimedOut;
                }
            }
        }
    }
}

async fn write_full(conn: &mut UpConn, buf: Vec<u8>, t: Duration) -> (Result<(), Fail>, Vec<u8>) {
    match monoio::time::timeout(t, conn.write_all(buf)).await {
        Ok((Ok(_), b)) => match conn.flush().await {
            Ok(()) => (Ok(()), b),
            Err(_) => (Err(Fail::Upstream), b),
        },
        Ok((Err(_), b)) => (Err(Fail::Upstream), b),
        Err(_) => (Err(Fail::Timeout), Vec::with_capacity(4096)),
    }
}
