//! The forward phase: the head sent upstream, choosing a node and a connection (a clean
//! pooled one or a new one), retrying what may be retried ([`Attempt`]), and turning an
//! upstream failure into its S3 error ([`UpError`]). Must not touch the limiter.

use std::time::Instant;

use monoio::io::{AsyncReadRent, AsyncWriteRent};

use crate::config::{Method, UpstreamConfig};
use crate::http::{BodyProgress, write_request_head};

use super::super::Snapshot;
use super::super::bufio::{IoEnd, flush, write_all};
use super::super::client_addr::forwarded_for;
use super::super::upstream::{ConnectError, UpConn, connect};
use super::relay::{Body, ReqBody};
use super::{Answer, Conn, Fail, ReqInfo};

/// Why no upstream answer can be relayed; each maps to one S3 error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UpError {
    /// No node was usable to begin with.
    NoneUsable,
    /// Every usable node refused (or failed TLS).
    Refused,
    ConnectTimeout,
    /// This host ran out of something (file descriptors, memory): not the node's fault.
    LocalResources,
    WriteFailed,
    /// The upstream closed or broke the exchange before a response.
    Broke,
    /// The upstream did not answer in time.
    TimedOut,
}

impl UpError {
    fn answer(self) -> (u16, &'static str, &'static str) {
        match self {
            UpError::NoneUsable => (503, "ServiceUnavailable", "No healthy upstream"),
            UpError::LocalResources => (503, "ServiceUnavailable", "Proxy out of resources"),
            UpError::Refused => (502, "BadGateway", "Upstream connection failed"),
            UpError::ConnectTimeout => (504, "GatewayTimeout", "Upstream connect timed out"),
            UpError::WriteFailed => (502, "BadGateway", "Upstream write failed"),
            UpError::Broke => (502, "BadGateway", "Upstream closed the connection"),
            UpError::TimedOut => (504, "GatewayTimeout", "Upstream did not answer in time"),
        }
    }
}

impl From<ConnectError> for UpError {
    fn from(e: ConnectError) -> UpError {
        match e {
            ConnectError::Timeout => UpError::ConnectTimeout,
            ConnectError::Refused | ConnectError::Tls => UpError::Refused,
            ConnectError::Local => UpError::LocalResources,
        }
    }
}

const MAX_TRIED: usize = 8;

/// The nodes and connections tried for one request.
pub(super) struct Attempt {
    tried: [usize; MAX_TRIED],
    ntried: usize,
    retries: u32,
    /// The one retry after a stale pooled connection was used.
    stale_used: bool,
    last: Option<ConnectError>,
    /// A bodiless GET/HEAD/DELETE/OPTIONS: may be sent again if the upstream closed a pooled
    /// connection before answering (it cannot have processed it).
    idempotent: bool,
}

impl Attempt {
    pub(super) fn new(req: &ReqInfo) -> Attempt {
        Attempt {
            tried: [usize::MAX; MAX_TRIED],
            ntried: 0,
            retries: 0,
            stale_used: false,
            last: None,
            idempotent: !req.framing.has_body()
                && matches!(
                    req.method,
                    Some(Method::Get | Method::Head | Method::Delete | Method::Options)
                ),
        }
    }

    fn exclude(&self) -> &[usize] {
        &self.tried[..self.ntried]
    }

    /// A connect to `node` failed; true = another node may be tried.
    fn refused(&mut self, node: usize, e: ConnectError, max_retries: u32) -> bool {
        if self.ntried < MAX_TRIED {
            self.tried[self.ntried] = node;
            self.ntried += 1;
        }
        self.last = Some(e);
        if self.retries < max_retries {
            self.retries += 1;
            return true;
        }
        false
    }

    /// When no node is left: the last connect failure, or "none usable" if there was none.
    fn no_node(&self) -> UpError {
        self.last.map_or(UpError::NoneUsable, UpError::from)
    }

    /// A response may be read as "stale connection" (retry) rather than a failure.
    pub(super) fn stale_ok(&self) -> bool {
        self.idempotent && !self.stale_used
    }

    /// Uses up the one stale-connection retry; false if it was used already.
    pub(super) fn take_stale_retry(&mut self) -> bool {
        !std::mem::replace(&mut self.stale_used, true)
    }
}

impl<S: AsyncReadRent + AsyncWriteRent> Conn<S> {
    /// Forwards an admitted request and relays the answer. Ok(true) = keep the client.
    pub(super) async fn forward(&mut self, snap: &Snapshot, req: &ReqInfo) -> Result<bool, Fail> {
        self.build_upstream_head(snap, req);
        let start = self.cstart + req.hl;
        self.cstart = start;
        let mut progress = BodyProgress::new(req.framing);
        let Ok(buffered) = progress.feed(&self.cbuf[start..]) else {
            return self.answer_400_chunked(req).await;
        };
        self.count_body(buffered);
        let mut body = Body {
            progress,
            start,
            buffered,
            state: if req.expect {
                ReqBody::Held
            } else {
                ReqBody::Streaming
            },
        };
        let mut at = Attempt::new(req);
        loop {
            let (node, mut up) = match self.connect_and_send(snap, &mut body, &mut at).await {
                Ok(x) => x,
                Err(e) => return self.upstream_error(e, req).await,
            };
            self.w.upstreams.borrow_mut().begin(node);
            let r = self
                .relay(snap, &mut up, req, &mut body, at.stale_ok())
                .await;
            self.w.upstreams.borrow_mut().end(node, &mut up);
            match r {
                Ok(reuse) => {
                    if reuse.upstream {
                        self.w
                            .upstreams
                            .borrow_mut()
                            .put_idle(node, up, Instant::now());
                    }
                    return Ok(reuse.client);
                }
                Err(Fail::Stale) if at.take_stale_retry() => {
                    // A pooled connection the upstream had closed before answering (nothing
                    // was processed): pick again on a fresh connection, so a node that died
                    // is skipped like any refused one.
                    self.w.stats.upstream_retries.inc();
                }
                Err(f) => return self.fail(f, req).await,
            }
        }
    }

    /// The head sent upstream: the client's, canonical framing, optional X-Forwarded-For.
    fn build_upstream_head(&mut self, snap: &Snapshot, req: &ReqInfo) {
        let h = &self.cbuf[self.cstart..self.cstart + req.hl];
        self.up_head.clear();
        if snap.cfg.http.x_forwarded_for {
            let mut xff = String::new();
            let theirs = self
                .head
                .headers(h)
                .filter(|(n, _)| n.eq_ignore_ascii_case(b"x-forwarded-for"));
            forwarded_for(
                &snap.cfg.http,
                self.peer.ip(),
                theirs.map(|(_, v)| v),
                &mut xff,
            );
            let extra: [(&[u8], &[u8]); 1] = [(b"X-Forwarded-For", xff.as_bytes())];
            write_request_head(h, &self.head, &extra, &mut self.up_head);
        } else {
            write_request_head(h, &self.head, &[], &mut self.up_head);
        }
    }

    /// Picks a node and a connection to it and sends the head (with the buffered body bytes
    /// unless they are held for `100 Continue`). Retries refused connects on other nodes
    /// (`upstream.max_retries`) and a stale pooled connection once on a fresh one.
    async fn connect_and_send(
        &mut self,
        snap: &Snapshot,
        body: &mut Body,
        at: &mut Attempt,
    ) -> Result<(usize, UpConn), UpError> {
        let up_cfg = &snap.cfg.upstream;
        loop {
            let now = Instant::now();
            let picked = self.w.upstreams.borrow_mut().pick(at.exclude(), now);
            let Some(node) = picked else {
                return Err(at.no_node());
            };
            if at.ntried > 0 {
                self.w.stats.upstream_retries.inc();
            }
            let pooled = if at.stale_used {
                None
            } else {
                self.w.upstreams.borrow_mut().take_idle(node, now)
            };
            let reused = pooled.is_some();
            let mut up = match pooled {
                Some(c) => c,
                None => match self.open(node, up_cfg).await {
                    Ok(c) => c,
                    Err(ConnectError::Local) => return Err(UpError::LocalResources),
                    Err(e) if at.refused(node, e, up_cfg.max_retries) => continue,
                    Err(e) => return Err(e.into()),
                },
            };
            match self.send_head(&mut up, body, up_cfg).await {
                Ok(()) => return Ok((node, up)),
                // A pooled connection the upstream had closed: nothing was processed.
                Err(_) if reused && at.take_stale_retry() => continue,
                Err(_) => return Err(UpError::WriteFailed),
            }
        }
    }

    /// A new connection to `node` (TLS if configured); the result feeds passive ejection,
    /// except a local failure (out of file descriptors …), which is not the node's.
    async fn open(&self, node: usize, up_cfg: &UpstreamConfig) -> Result<UpConn, ConnectError> {
        let (addr, tls) = {
            let ups = self.w.upstreams.borrow();
            (ups.nodes[node].addr, ups.tls_for(node))
        };
        self.w.stats.upstream_connects.inc();
        let r = connect(addr, up_cfg.connect_timeout, tls).await;
        let mut ups = self.w.upstreams.borrow_mut();
        match r {
            Ok(_) => ups.connect_ok(node),
            Err(ConnectError::Local) => self.w.stats.upstream_local_errors.inc(),
            Err(_) => ups.connect_failed(node, Instant::now()),
        }
        r
    }

    /// Writes the upstream head, followed by the body bytes already buffered unless the body
    /// is held; a body not held is then `Sent` (it was all there) or `Streaming`.
    async fn send_head(
        &mut self,
        up: &mut UpConn,
        body: &mut Body,
        up_cfg: &UpstreamConfig,
    ) -> Result<(), IoEnd> {
        self.out.clear();
        self.out.extend_from_slice(&self.up_head);
        let held = body.state == ReqBody::Held;
        if !held {
            self.out
                .extend_from_slice(&self.cbuf[body.start..body.start + body.buffered]);
        }
        let deadline = Instant::now() + up_cfg.idle_timeout;
        let r = write_all(up, &mut self.out, deadline).await;
        self.out.clear();
        r?;
        flush(up, deadline).await?;
        if !held {
            self.cstart = body.start + body.buffered;
            if body.progress.is_done() {
                body.state = ReqBody::Sent;
            }
        }
        Ok(())
    }

    /// The answer to a failed exchange whose response had not started.
    async fn fail(&mut self, f: Fail, req: &ReqInfo) -> Result<bool, Fail> {
        let e = match f {
            Fail::Upstream | Fail::Stale => UpError::Broke,
            Fail::Timeout => UpError::TimedOut,
            Fail::BadBody => return self.answer_400_chunked(req).await,
            Fail::Client | Fail::Late => return Ok(false),
        };
        self.upstream_error(e, req).await?;
        Ok(false)
    }

    /// An S3 XML error for an upstream failure (counted). The request body (if any) may be
    /// partly unread, so the connection closes unless there was none.
    async fn upstream_error(&mut self, e: UpError, req: &ReqInfo) -> Result<bool, Fail> {
        let (status, code, message) = e.answer();
        let st = &self.w.stats;
        match status {
            503 => st.upstream_errors_503.inc(),
            504 => st.upstream_errors_504.inc(),
            _ => st.upstream_errors_502.inc(),
        }
        let close = req.framing.has_body() || !req.keep_alive;
        let answer = Answer {
            status,
            code,
            message,
            api_key: false,
            close,
            head_only: false,
        };
        self.write_s3_error(answer).await?;
        Ok(!close)
    }

    async fn answer_400_chunked(&mut self, req: &ReqInfo) -> Result<bool, Fail> {
        self.w.stats.client_errors_400.inc();
        let answer = Answer {
            status: 400,
            code: "IncompleteBody",
            message: "Malformed chunked body",
            api_key: false,
            close: true,
            head_only: req.is_head,
        };
        self.write_s3_error(answer).await.map(|()| false)
    }
}
