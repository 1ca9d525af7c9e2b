//! The relay phase: the rest of the request body upstream (after `100 Continue`, or after
//! `upstream.expect_timeout` without one), the response head(s) with interim responses, the
//! response body to the client, and the reuse decision for both connections
//! ([`Reuse::decide`], pure). Must not touch the limiter or node selection.

use std::ops::Range;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent};

use crate::http::{
    AUTH_FAILURE_SCAN, BodyFraming, BodyProgress, ConnHeader, HeadLimits, ParseStatus,
    auth_failure_code, parse_response, write_response_head,
};

use super::super::Snapshot;
use super::super::bufio::{BufPool, IoEnd, PoolBuf, flush, read_append, write_range};
use super::super::limiter;
use super::super::upstream::{UpConn, answered_early};
use super::{Conn, Fail, ReqInfo};

/// Response-side head limits (upstream heads are trusted more, but still bounded; a pooled
/// buffer holds the largest).
const UPSTREAM_HEAD: HeadLimits = HeadLimits {
    max_head_bytes: BufPool::SIZE,
    max_headers: 256,
};

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// How long a request-body write may wait on an upstream that takes nothing before the
/// upstream is checked for an early answer (and again at this interval until
/// `upstream.idle_timeout`).
const STALL_PROBE: Duration = Duration::from_millis(200);

/// Where the request body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReqBody {
    /// Held back (the client asked `Expect: 100-continue`): sent after the upstream's `100`
    /// or after `upstream.expect_timeout` without one.
    Held,
    /// The bytes buffered with the head went upstream; the rest is still to be pumped.
    Streaming,
    /// All of it went upstream (or there was none).
    Sent,
    /// The upstream stopped taking it (it answered early, or closed).
    Abandoned,
}

/// The request body as the exchange carries it.
pub(super) struct Body {
    pub progress: BodyProgress,
    /// Where the body starts in the client buffer.
    pub start: usize,
    /// How many of its bytes the client buffer held after the head.
    pub buffered: usize,
    pub state: ReqBody,
}

/// After an exchange: may each connection carry another request, and how does the
/// response go to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reuse {
    pub client: bool,
    pub upstream: bool,
    pub conn_header: ConnHeader,
    /// A chunked response to an HTTP/1.0 client goes without its chunk framing and ends
    /// when the connection closes.
    pub unchunk: bool,
}

impl Reuse {
    /// Both connections are reusable only once the request body was all sent (an abandoned
    /// or never-sent body leaves the client mid-message and the upstream perhaps waiting
    /// for it) and the response framing lets the end be found. Pure: table-tested below.
    pub fn decide(req: &ReqInfo, body: ReqBody, resp_keep_alive: bool, resp: BodyFraming) -> Reuse {
        let settled = body == ReqBody::Sent;
        let unchunk = req.http10 && resp == BodyFraming::Chunked;
        let client_until_close = resp == BodyFraming::UntilClose || unchunk;
        let client = req.keep_alive && settled && !client_until_close;
        let conn_header = if !client {
            ConnHeader::Close
        } else if req.http10 {
            ConnHeader::KeepAlive
        } else {
            ConnHeader::Omit
        };
        Reuse {
            client,
            upstream: settled && resp_keep_alive && resp != BodyFraming::UntilClose,
            conn_header,
            unchunk,
        }
    }
}

enum BodyWrite {
    Done,
    Failed,
    /// The upstream answered (or closed) while not taking the body.
    Answered,
    TimedOut,
}

impl<S: AsyncReadRent + AsyncWriteRent> Conn<S> {
    /// Streams the rest of the request body and the whole response.
    pub(super) async fn relay(
        &mut self,
        snap: &Snapshot,
        up: &mut UpConn,
        req: &ReqInfo,
        body: &mut Body,
        stale_ok: bool,
    ) -> Result<Reuse, Fail> {
        if body.state == ReqBody::Held && !up.can_wait_readable() {
            // Over TLS the wait for the upstream's 100 cannot be cut short safely: answer
            // the client's Expect here and send the body at once.
            self.send_held_body(snap, up, body).await?;
        } else if body.state == ReqBody::Streaming {
            body.state = self.pump_request(snap, up, &mut body.progress).await?;
        }
        let mut rbuf = self.w.pool.get();
        self.read_final_head(snap, up, req, body, &mut rbuf, stale_ok)
            .await?;
        if body.state == ReqBody::Abandoned {
            self.w.stats.upstream_early_responses.inc();
        }
        if self.auth_check && matches!(self.rhead.status, 400 | 403) {
            self.settle_auth_failure(snap, up, &mut rbuf).await?;
        }
        let mut reuse = Reuse::decide(req, body.state, self.rhead.keep_alive, self.rhead.framing);
        self.stream_response(snap, up, &mut rbuf, &mut reuse)
            .await?;
        Ok(reuse)
    }

    /// An upstream 403 (or 400) whose S3 error code says the request was not authenticated
    /// (a borrowed key with a wrong signature, an unknown key …): the admission goes back to
    /// the key's windows and the failure counts against the client address, so nobody can
    /// burn a victim's quota. Reads up to `AUTH_FAILURE_SCAN` bytes of a Content-Length
    /// body into `rbuf` (they are relayed from there as usual).
    async fn settle_auth_failure(
        &mut self,
        snap: &Snapshot,
        up: &mut UpConn,
        rbuf: &mut PoolBuf,
    ) -> Result<(), Fail> {
        let hl = self.rhead.head_len;
        let BodyFraming::Length(n) = self.rhead.framing else {
            return Ok(());
        };
        let want = hl + (n as usize).min(AUTH_FAILURE_SCAN);
        let deadline = Instant::now() + snap.cfg.upstream.idle_timeout;
        while rbuf.len() < want {
            read_append(up, rbuf, BufPool::SIZE, deadline)
                .await
                .map_err(|_| Fail::Upstream)?;
        }
        if auth_failure_code(&rbuf[hl..want]).is_none() {
            return Ok(());
        }
        self.w.stats.auth_failures.inc();
        if let Some(token) = self.refund.take() {
            limiter::refund(&self.w, &self.subject, token);
        }
        limiter::add_penalty(&self.w, self.client, snap.cfg.limits.ipv6_prefix);
        Ok(())
    }

    /// Reads upstream until a final response head is in `rbuf`, relaying interim responses
    /// and sending a held body on `100 Continue` or after `upstream.expect_timeout`. The
    /// response deadline runs from when the last request byte was sent.
    async fn read_final_head(
        &mut self,
        snap: &Snapshot,
        up: &mut UpConn,
        req: &ReqInfo,
        body: &mut Body,
        rbuf: &mut PoolBuf,
        stale_ok: bool,
    ) -> Result<(), Fail> {
        let up_cfg = &snap.cfg.upstream;
        let head_deadline = |held: bool| {
            let wait = if held {
                up_cfg.expect_timeout
            } else {
                up_cfg.response_head_timeout
            };
            Instant::now() + wait
        };
        let mut deadline = head_deadline(body.state == ReqBody::Held);
        let mut got_any = false;
        loop {
            if !rbuf.is_empty() {
                match parse_response(rbuf, &UPSTREAM_HEAD, req.is_head, &mut self.rhead) {
                    Ok(ParseStatus::Complete) if self.rhead.is_interim() => {
                        let held = body.state == ReqBody::Held;
                        self.interim(snap, up, req, body, rbuf).await?;
                        if held && body.state != ReqBody::Held {
                            deadline = head_deadline(false);
                        }
                        continue;
                    }
                    Ok(ParseStatus::Complete) => return Ok(()),
                    Ok(ParseStatus::Partial) => {}
                    Err(_) => return Err(Fail::Upstream),
                }
            }
            let held = body.state == ReqBody::Held;
            match read_upstream(up, rbuf, deadline, held, up_cfg.response_head_timeout).await {
                Ok(()) => got_any = true,
                Err(IoEnd::TimedOut) if held => {
                    // The upstream ignores Expect (RFC 9110 allows it): send the body anyway.
                    self.send_held_body(snap, up, body).await?;
                    deadline = head_deadline(false);
                }
                Err(IoEnd::TimedOut) => return Err(Fail::Timeout),
                Err(_) if !got_any && stale_ok => return Err(Fail::Stale),
                Err(_) => return Err(Fail::Upstream),
            }
        }
    }

    /// One interim (1xx) response at the front of `rbuf`: `100` releases a held body; other
    /// 1xx (and a `100` the client asked for and has not had) go to HTTP/1.1 clients only;
    /// `101` is refused (upgrades are never carried).
    async fn interim(
        &mut self,
        snap: &Snapshot,
        up: &mut UpConn,
        req: &ReqInfo,
        body: &mut Body,
        rbuf: &mut PoolBuf,
    ) -> Result<(), Fail> {
        let status = self.rhead.status;
        let hl = self.rhead.head_len;
        if status == 101 {
            return Err(Fail::Upstream);
        }
        if status == 100 && body.state == ReqBody::Held {
            rbuf.drain(..hl);
            return self.send_held_body(snap, up, body).await;
        }
        let forward = !req.http10 && (status != 100 || (req.expect && !self.sent_continue));
        if forward {
            self.out.clear();
            self.out.extend_from_slice(&rbuf[..hl]);
            self.write_out().await?;
            self.sent_continue |= status == 100;
        }
        rbuf.drain(..hl);
        Ok(())
    }

    /// Tells the client to go on (`100 Continue`, once) and sends the held body: the bytes
    /// already buffered, then the rest as it comes.
    async fn send_held_body(
        &mut self,
        snap: &Snapshot,
        up: &mut UpConn,
        body: &mut Body,
    ) -> Result<(), Fail> {
        if !self.sent_continue {
            self.out.clear();
            self.out.extend_from_slice(CONTINUE);
            self.write_out().await?;
            self.sent_continue = true;
        }
        let deadline = Instant::now() + snap.cfg.upstream.idle_timeout;
        let prefix = body.start..body.start + body.buffered;
        write_range(up, &mut self.cbuf, prefix, deadline)
            .await
            .map_err(up_fail)?;
        flush(up, deadline).await.map_err(up_fail)?;
        self.cstart = body.start + body.buffered;
        body.state = if body.progress.is_done() {
            ReqBody::Sent
        } else {
            self.pump_request(snap, up, &mut body.progress).await?
        };
        Ok(())
    }

    /// Streams the rest of a request body client → upstream in two large pooled buffers,
    /// like [`relay_body`](Self::relay_body) the other way: while one piece is written
    /// upstream the next is already being read from the client. The next read is started
    /// only while the body is unfinished, so bytes after the body (a pipelined request) come
    /// in the last read only and go to the client buffer once, in order. The write's outcome
    /// comes first: an upstream that answers early or fails ends the body at once (the read
    /// in flight is dropped; the client connection closes after the answer), while a failed
    /// read counts only once the piece before it is written, as if the two were in turn.
    async fn pump_request(
        &mut self,
        snap: &Snapshot,
        up: &mut UpConn,
        progress: &mut BodyProgress,
    ) -> Result<ReqBody, Fail> {
        let up_idle = snap.cfg.upstream.idle_timeout;
        // Everything buffered so far belongs to the body already sent.
        self.compact();
        let mut cur = self.w.pool.get_large();
        let mut next = self.w.pool.get_large();
        let deadline = self.client_deadline();
        let first = read_append(&mut self.io, &mut cur, BufPool::SIZE, deadline).await;
        let mut take = self.took_from_client(&cur, first, progress)?;
        loop {
            let more = !progress.is_done();
            next.clear();
            let deadline = self.client_deadline();
            let write = async {
                match write_body(up, &mut cur, 0..take, up_idle).await {
                    BodyWrite::Done => Ok(()),
                    end => Err(end),
                }
            };
            // Never an `Err`: a failed read must not cut the write short.
            let read = async {
                if !more {
                    return Ok(None);
                }
                let r = read_append(&mut self.io, &mut next, BufPool::SIZE, deadline).await;
                Ok(Some(r))
            };
            let read = match monoio::try_join!(write, read) {
                Ok(((), read)) => read,
                Err(BodyWrite::TimedOut) => return Err(Fail::Timeout),
                // The caller reads and relays the answer (both connections then close).
                Err(_) => return Ok(ReqBody::Abandoned),
            };
            let Some(read) = read else {
                return Ok(match flush(up, Instant::now() + up_idle).await {
                    Ok(()) => ReqBody::Sent,
                    Err(_) => ReqBody::Abandoned,
                });
            };
            std::mem::swap(&mut cur, &mut next);
            take = self.took_from_client(&cur, read, progress)?;
        }
    }

    /// When a client read started now must have returned.
    fn client_deadline(&self) -> Instant {
        Instant::now() + self.client_idle
    }

    /// Accounts for one read of request-body bytes at the front of `buf`: feeds them to
    /// `progress` and moves any bytes after the body to the client buffer. Returns how many
    /// go upstream.
    fn took_from_client(
        &mut self,
        buf: &[u8],
        read: Result<usize, IoEnd>,
        progress: &mut BodyProgress,
    ) -> Result<usize, Fail> {
        let n = read.map_err(|_| Fail::Client)?;
        self.w.stats.bytes_from_client.add(n as u64);
        let take = progress.feed(&buf[..n]).map_err(|_| Fail::BadBody)?;
        self.count_body(take);
        if take < n {
            self.cbuf.extend_from_slice(&buf[take..n]);
        }
        Ok(take)
    }

    /// Writes the final response head and streams the body to the client. A body whose end
    /// cannot be found, or bytes after it, make the upstream connection unusable.
    async fn stream_response(
        &mut self,
        snap: &Snapshot,
        up: &mut UpConn,
        rbuf: &mut PoolBuf,
        reuse: &mut Reuse,
    ) -> Result<(), Fail> {
        let hl = self.rhead.head_len;
        self.out.clear();
        let (out, rhead) = (&mut self.out, &self.rhead);
        self.extra.with_pairs(|p| {
            write_response_head(rbuf, rhead, p, reuse.conn_header, reuse.unchunk, out)
        });
        self.count_status(self.rhead.status);
        let mut body = BodyProgress::new(self.rhead.framing);
        let (take, data) = feed_body(&mut body, &mut rbuf[hl..], reuse.unchunk)?;
        if hl + take < rbuf.len() {
            reuse.upstream = false;
        }
        self.out.extend_from_slice(&rbuf[hl..hl + data]);
        self.count_body(data);
        self.write_out().await?;
        if body.is_done() {
            return Ok(());
        }
        self.relay_body(snap, up, &mut body, reuse).await
    }

    /// Streams the rest of a response body upstream → client in two large pooled buffers:
    /// while one piece is written to the client the next is already being read from the
    /// upstream, so both sockets stay busy and each piece is whatever has arrived meanwhile.
    /// The next read is started only while the body is unfinished (a keep-alive upstream
    /// sends nothing after it). A failed write ends the exchange at once (the read in flight
    /// is dropped with the upstream connection).
    async fn relay_body(
        &mut self,
        snap: &Snapshot,
        up: &mut UpConn,
        body: &mut BodyProgress,
        reuse: &mut Reuse,
    ) -> Result<(), Fail> {
        let up_idle = snap.cfg.upstream.idle_timeout;
        let mut cur = self.w.pool.get_large();
        let mut next = self.w.pool.get_large();
        let mut piece = read_body(up, &mut cur, body, reuse, up_idle).await?;
        while let Some(n) = piece {
            let deadline = self.client_deadline();
            let write = async {
                write_range(&mut self.io, &mut cur, 0..n, deadline)
                    .await
                    .map_err(|_| Fail::Late)
            };
            piece = if body.is_done() {
                write.await?;
                None
            } else {
                monoio::try_join!(write, read_body(up, &mut next, body, reuse, up_idle))?.1
            };
            self.w.stats.bytes_to_client.add(n as u64);
            self.rec.bytes_sent += n as u64;
            self.count_body(n);
            std::mem::swap(&mut cur, &mut next);
        }
        let deadline = self.client_deadline();
        flush(&mut self.io, deadline).await.map_err(|_| Fail::Late)
    }
}

/// Reads the next piece of a response body into `buf` (emptied first): `Some(bytes to send
/// at its front)`, or `None` when an until-close body ended. Bytes after the body make the
/// upstream connection unusable.
async fn read_body(
    up: &mut UpConn,
    buf: &mut PoolBuf,
    body: &mut BodyProgress,
    reuse: &mut Reuse,
    idle: Duration,
) -> Result<Option<usize>, Fail> {
    buf.clear();
    let n = match read_append(up, buf, BufPool::SIZE, Instant::now() + idle).await {
        Ok(n) => n,
        Err(IoEnd::Closed) if body.framing() == BodyFraming::UntilClose => return Ok(None),
        Err(_) => return Err(Fail::Late),
    };
    let (take, data) = feed_body(body, buf, reuse.unchunk).map_err(|_| Fail::Late)?;
    if take < n {
        reuse.upstream = false;
    }
    Ok(Some(data))
}

/// Feeds response bytes: (consumed, bytes to send at the front of `bytes`).
fn feed_body(
    body: &mut BodyProgress,
    bytes: &mut [u8],
    unchunk: bool,
) -> Result<(usize, usize), Fail> {
    let r = if unchunk {
        body.feed_unchunked(bytes)
    } else {
        body.feed(bytes).map(|n| (n, n))
    };
    r.map_err(|_| Fail::Upstream)
}

/// Reads more of a response head. While a body is held for `100 Continue` the wait is for
/// readability only (cut short safely by `deadline`: no byte is lost to a cancelled read);
/// the read itself then has the whole response-head timeout.
async fn read_upstream(
    up: &mut UpConn,
    rbuf: &mut PoolBuf,
    deadline: Instant,
    held: bool,
    head_timeout: Duration,
) -> Result<(), IoEnd> {
    let deadline = if held {
        up.readable_by(deadline).await?;
        Instant::now() + head_timeout
    } else {
        deadline
    };
    read_append(up, rbuf, 16 * 1024, deadline).await.map(|_| ())
}

fn up_fail(e: IoEnd) -> Fail {
    match e {
        IoEnd::TimedOut => Fail::Timeout,
        IoEnd::Closed | IoEnd::Failed => Fail::Upstream,
    }
}

/// Writes request-body bytes upstream. An upstream that answers early (403, 413 …) and then
/// stops reading without closing would otherwise hold the upload until `idle`; while the
/// write is stuck, the socket is checked for an answer every [`STALL_PROBE`]. The write is
/// never cancelled while the exchange goes on, so no byte is lost or sent twice.
async fn write_body(
    up: &mut UpConn,
    buf: &mut Vec<u8>,
    range: Range<usize>,
    idle: Duration,
) -> BodyWrite {
    let deadline = Instant::now() + idle;
    let as_write = |r: Result<(), IoEnd>| match r {
        Ok(()) => BodyWrite::Done,
        Err(IoEnd::TimedOut) => BodyWrite::TimedOut,
        Err(_) => BodyWrite::Failed,
    };
    let Some(fd) = up.early_answer_fd() else {
        return as_write(write_range(up, buf, range, deadline).await);
    };
    let mut write = std::pin::pin!(write_range(up, buf, range, deadline));
    loop {
        let probe = (Instant::now() + STALL_PROBE).min(deadline);
        monoio::select! {
            r = &mut write => return as_write(r),
            _ = monoio::time::sleep_until(probe.into()) => {
                if answered_early(fd) {
                    return BodyWrite::Answered;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Method;

    fn req(keep_alive: bool, http10: bool) -> ReqInfo {
        ReqInfo {
            hl: 0,
            framing: BodyFraming::Length(3),
            expect: false,
            keep_alive,
            http10,
            is_head: false,
            method: Some(Method::Put),
            mi: 1,
        }
    }

    /// Every combination that matters: client keep-alive × HTTP/1.0 × request body state ×
    /// upstream keep-alive × response framing.
    #[test]
    fn reuse_table() {
        use BodyFraming::{Chunked, Length, UntilClose};
        use ConnHeader::{Close, KeepAlive, Omit};
        use ReqBody::{Abandoned, Held, Sent, Streaming};
        // (keep_alive, http10, body, up_keep_alive, framing) → (client, upstream, header, unchunk)
        let rows = [
            (
                (true, false, Sent, true, Length(5)),
                (true, true, Omit, false),
            ),
            (
                (true, true, Sent, true, Length(5)),
                (true, true, KeepAlive, false),
            ),
            (
                (false, false, Sent, true, Length(5)),
                (false, true, Close, false),
            ),
            (
                (true, false, Sent, false, Length(5)),
                (true, false, Omit, false),
            ),
            (
                (true, false, Sent, true, Chunked),
                (true, true, Omit, false),
            ),
            // HTTP/1.0 cannot read chunked: data only, close-delimited; upstream still reusable
            (
                (true, true, Sent, true, Chunked),
                (false, true, Close, true),
            ),
            (
                (true, false, Sent, false, UntilClose),
                (false, false, Close, false),
            ),
            // a body not (all) sent: neither connection is in step
            (
                (true, false, Held, true, Length(5)),
                (false, false, Close, false),
            ),
            (
                (true, false, Abandoned, true, Length(5)),
                (false, false, Close, false),
            ),
            (
                (true, false, Streaming, true, Length(5)),
                (false, false, Close, false),
            ),
        ];
        for ((ka, h10, body, up_ka, framing), (client, upstream, hdr, unchunk)) in rows {
            let r = Reuse::decide(&req(ka, h10), body, up_ka, framing);
            assert_eq!(
                r,
                Reuse {
                    client,
                    upstream,
                    conn_header: hdr,
                    unchunk
                },
                "{:?}",
                (ka, h10, body, up_ka, framing)
            );
        }
    }
}
