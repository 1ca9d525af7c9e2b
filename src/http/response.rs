//! Response heads from the upstream: parsing into byte ranges, deciding the body framing
//! (RFC 9112 §6.3) and whether the upstream connection can be reused, and writing the head
//! sent to the client (status line and end-to-end header lines verbatim). Must not touch
//! I/O or pool bookkeeping; nothing here allocates in steady state.

use std::mem::MaybeUninit;
use std::ops::Range;

use super::fields::{
    TransferCoding, classify_response_error, collect_headers, has_bare_lf, offset, push_header,
    summarize,
};
use super::{BodyFraming, HEADER_STACK_CAP, HeadError, HeadLimits, HeaderPos, ParseStatus};

/// A parsed response head. Every range indexes the buffer that was parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Bytes of the head including the final CRLF: the body starts here.
    pub head_len: usize,
    pub status: u16,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// The whole status line including its CRLF.
    pub status_line: Range<usize>,
    /// Header lines in arrival order.
    pub headers: Vec<HeaderPos>,
    pub framing: BodyFraming,
    /// The upstream connection is reusable after this response's body.
    pub keep_alive: bool,
    /// A Transfer-Encoding field was present (any Content-Length is then not forwarded).
    pub has_transfer_encoding: bool,
}

impl Default for ResponseHead {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseHead {
    pub fn new() -> Self {
        ResponseHead {
            head_len: 0,
            status: 0,
            minor_version: 1,
            status_line: 0..0,
            headers: Vec::with_capacity(32),
            framing: BodyFraming::None,
            keep_alive: false,
            has_transfer_encoding: false,
        }
    }

    fn reset(&mut self) {
        self.head_len = 0;
        self.status = 0;
        self.minor_version = 1;
        self.status_line = 0..0;
        self.headers.clear();
        self.framing = BodyFraming::None;
        self.keep_alive = false;
        self.has_transfer_encoding = false;
    }

    /// Value of the first header named `name` (case-insensitive).
    pub fn header<'a>(&self, buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.is(buf, name))
            .map(|h| &buf[h.value.clone()])
    }

    /// An interim (1xx) response: another head follows for the same request.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status)
    }
}

/// Parses a response head from the start of `buf`. `request_was_head`: HEAD responses have
/// no body whatever Content-Length says; 1xx/204/304 have none either; a final
/// Transfer-Encoding `chunked` → `Chunked`; another final coding → `UntilClose`; else
/// Content-Length → `Length`; else `UntilClose` (and `keep_alive` false).
pub fn parse_response(
    buf: &[u8],
    limits: &HeadLimits,
    request_was_head: bool,
    out: &mut ResponseHead,
) -> Result<ParseStatus, HeadError> {
    out.reset();
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    let status = if limits.max_headers <= HEADER_STACK_CAP {
        let mut stack = [const { MaybeUninit::uninit() }; HEADER_STACK_CAP];
        parse_into(
            window,
            &mut stack[..limits.max_headers],
            request_was_head,
            out,
        )
    } else {
        let mut stack = [const { MaybeUninit::uninit() }; HEADER_STACK_CAP];
        match parse_into(window, &mut stack, request_was_head, out) {
            Err(HeadError::TooManyHeaders) => {
                let mut heap = vec![MaybeUninit::uninit(); limits.max_headers];
                parse_into(window, &mut heap, request_was_head, out)
            }
            other => other,
        }
    }?;
    if status == ParseStatus::Partial && buf.len() >= limits.max_head_bytes {
        return Err(HeadError::TooLarge);
    }
    Ok(status)
}

fn parse_into<'b>(
    buf: &'b [u8],
    scratch: &mut [MaybeUninit<httparse::Header<'b>>],
    request_was_head: bool,
    out: &mut ResponseHead,
) -> Result<ParseStatus, HeadError> {
    let mut resp = httparse::Response::new(&mut []);
    let head_len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, scratch)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(ParseStatus::Partial),
        Err(e) => return Err(classify_response_error(buf, e)),
    };
    let head = &buf[..head_len];
    if has_bare_lf(head) {
        return Err(HeadError::Smuggling("bare LF line ending"));
    }
    let (Some(minor), Some(status)) = (resp.version, resp.code) else {
        return Err(HeadError::Malformed("incomplete status line"));
    };
    if minor > 1 {
        return Err(HeadError::Version);
    }
    if status < 100 {
        return Err(HeadError::Malformed("invalid status code"));
    }
    // The status line starts at the first non-empty line (httparse skips empty ones).
    let line_start = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(0);
    let line_end = head[line_start..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(head_len, |p| line_start + p + 1);
    debug_assert_eq!(offset(buf, &head[line_start..]), line_start);
    out.head_len = head_len;
    out.status = status;
    out.minor_version = minor;
    out.status_line = line_start..line_end;
    collect_headers(buf, resp.headers, &mut out.headers)?;

    let s = summarize(buf, &out.headers)?;
    let te = s.transfer_coding;
    out.has_transfer_encoding = te != TransferCoding::Absent;
    if minor == 0 && out.has_transfer_encoding {
        return Err(HeadError::Smuggling(
            "Transfer-Encoding in an HTTP/1.0 response",
        ));
    }
    let bodiless =
        request_was_head || (100..200).contains(&status) || status == 204 || status == 304;
    out.framing = if bodiless {
        BodyFraming::None
    } else {
        match (te, s.content_length) {
            (TransferCoding::ChunkedLast, _) => BodyFraming::Chunked,
            (TransferCoding::NotChunkedLast, _) => BodyFraming::UntilClose,
            (TransferCoding::Absent, Some(n)) => BodyFraming::Length(n),
            (TransferCoding::Absent, None) => BodyFraming::UntilClose,
        }
    };
    let persistent = if minor == 1 {
        !s.close
    } else {
        s.keep_alive && !s.close
    };
    out.keep_alive = persistent
        && out.framing != BodyFraming::UntilClose
        && status != 101
        // CL together with TE may mean the upstream and we disagree about the framing:
        // never reuse such a connection.
        && !(out.has_transfer_encoding && s.content_length.is_some());
    Ok(ParseStatus::Complete)
}

/// What `Connection` header [`write_response_head`] adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnHeader {
    Omit,
    Close,
    KeepAlive,
}

/// Appends the head to send to the client: the status line verbatim, every non-hop-by-hop
/// header line verbatim (Transfer-Encoding and Trailer kept when a body follows, i.e. the
/// framing is `Chunked`, or `UntilClose` because of a non-chunked final coding: the body is
/// passed through still encoded; Content-Length kept unless a Transfer-Encoding was present
/// too), then `extra`, then
/// `Connection: close|keep-alive` per `conn`, then the final CRLF. An upstream header with
/// the name of one in `extra` is left out: the proxy's own (request id, rate-limit headers)
/// replaces it rather than going out twice with two values. `unchunked`: the chunked body
/// goes on without its chunk framing (to an HTTP/1.0 client, which cannot read it, ending
/// at close), so Transfer-Encoding and Trailer are left out too.
pub fn write_response_head(
    buf: &[u8],
    head: &ResponseHead,
    extra: &[(&[u8], &[u8])],
    conn: ConnHeader,
    unchunked: bool,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&buf[head.status_line.clone()]);
    let coded_body =
        !unchunked && matches!(head.framing, BodyFraming::Chunked | BodyFraming::UntilClose);
    for h in &head.headers {
        let name = &buf[h.name.clone()];
        let keep = if name.eq_ignore_ascii_case(b"content-length") {
            !head.has_transfer_encoding
        } else {
            !h.hop_by_hop
                || (coded_body
                    && (name.eq_ignore_ascii_case(b"transfer-encoding")
                        || name.eq_ignore_ascii_case(b"trailer")))
        };
        let replaced = || {
            extra
                .iter()
                .any(|(n, _)| n.len() == name.len() && n.eq_ignore_ascii_case(name))
        };
        if keep && !replaced() {
            out.extend_from_slice(&buf[h.line.clone()]);
        }
    }
    for (name, value) in extra {
        push_header(out, name, value);
    }
    match conn {
        ConnHeader::Omit => {}
        ConnHeader::Close => out.extend_from_slice(b"Connection: close\r\n"),
        ConnHeader::KeepAlive => out.extend_from_slice(b"Connection: keep-alive\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_head_bytes: 16384,
        max_headers: 100,
    };

    fn complete(buf: &[u8], head_req: bool) -> ResponseHead {
        let mut h = ResponseHead::new();
        assert_eq!(
            parse_response(buf, &LIMITS, head_req, &mut h),
            Ok(ParseStatus::Complete)
        );
        h
    }

    fn err(buf: &[u8]) -> HeadError {
        let mut h = ResponseHead::new();
        parse_response(buf, &LIMITS, false, &mut h).unwrap_err()
    }

    /// A response's `Connection` options are bounded like a request's (→ 502 upstream error).
    #[test]
    fn connection_options_are_bounded() {
        let opts = |n: usize| {
            (0..n)
                .map(|i| format!("x-{i}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let resp = |n| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: {}\r\n\r\n",
                opts(n)
            )
        };
        complete(resp(32).as_bytes(), false);
        assert_eq!(
            err(resp(33).as_bytes()),
            HeadError::Malformed("Connection lists more than 32 options")
        );
    }

    #[test]
    fn content_length_response() {
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\nhello";
        let h = complete(buf, false);
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, BodyFraming::Length(5));
        assert!(h.keep_alive);
        assert_eq!(&buf[h.head_len..], b"hello");
        assert_eq!(h.header(buf, "etag"), Some(&b"\"x\""[..]));
        assert_eq!(&buf[h.status_line.clone()], b"HTTP/1.1 200 OK\r\n");
    }

    #[test]
    fn partial_and_too_large() {
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let mut h = ResponseHead::new();
        for n in 0..buf.len() {
            assert_eq!(
                parse_response(&buf[..n], &LIMITS, false, &mut h),
                Ok(ParseStatus::Partial)
            );
        }
        let small = HeadLimits {
            max_head_bytes: 20,
            max_headers: 10,
        };
        assert_eq!(
            parse_response(buf, &small, false, &mut h),
            Err(HeadError::TooLarge)
        );
        let few = HeadLimits {
            max_head_bytes: 1000,
            max_headers: 0,
        };
        assert_eq!(
            parse_response(buf, &few, false, &mut h),
            Err(HeadError::TooManyHeaders)
        );
    }

    #[test]
    fn head_response_has_no_body_whatever_cl_says() {
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n";
        let h = complete(buf, true);
        assert_eq!(h.framing, BodyFraming::None);
        assert!(h.keep_alive);
        // And the Content-Length is forwarded untouched.
        let mut out = Vec::new();
        write_response_head(buf, &h, &[], ConnHeader::Omit, false, &mut out);
        assert_eq!(&out[..], &buf[..]);
        let h = complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            true,
        );
        assert_eq!(h.framing, BodyFraming::None);
    }

    #[test]
    fn the_proxys_own_headers_replace_the_upstreams() {
        let buf = b"HTTP/1.1 200 OK\r\nx-request-id: up-1\r\nETag: \"e\"\r\nRateLimit: up\r\nX-Request-IDs: other\r\nContent-Length: 0\r\n\r\n";
        let h = complete(buf, false);
        let mut out = Vec::new();
        let extra: [(&[u8], &[u8]); 2] = [(b"X-Request-ID", b"p-1"), (b"RateLimit", b"r=1")];
        write_response_head(buf, &h, &extra, ConnHeader::Omit, false, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nETag: \"e\"\r\nX-Request-IDs: other\r\nContent-Length: 0\r\n\
             X-Request-ID: p-1\r\nRateLimit: r=1\r\n\r\n"
        );
    }

    #[test]
    fn bodiless_statuses() {
        for status in [100u16, 101, 103, 204, 304] {
            let buf = format!("HTTP/1.1 {status} X\r\nContent-Length: 10\r\n\r\n");
            let h = complete(buf.as_bytes(), false);
            assert_eq!(h.framing, BodyFraming::None, "{status}");
            assert_eq!(h.keep_alive, status != 101, "{status}");
            assert_eq!(h.is_interim(), status < 200);
        }
        let h = complete(b"HTTP/1.1 100 Continue\r\n\r\n", false);
        assert_eq!(
            (h.status, h.framing, h.head_len),
            (100, BodyFraming::None, 25)
        );
    }

    #[test]
    fn until_close_responses() {
        let h = complete(b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n", false);
        assert_eq!(h.framing, BodyFraming::UntilClose);
        assert!(!h.keep_alive);
        let h = complete(b"HTTP/1.0 200 OK\r\n\r\n", false);
        assert_eq!(h.framing, BodyFraming::UntilClose);
        assert!(!h.keep_alive);
        let h = complete(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false);
        assert_eq!(h.framing, BodyFraming::UntilClose);
        assert!(!h.keep_alive);
    }

    #[test]
    fn chunked_response_and_cl_te() {
        let buf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n";
        let h = complete(buf, false);
        assert_eq!(h.framing, BodyFraming::Chunked);
        assert!(h.keep_alive);
        let mut out = Vec::new();
        write_response_head(buf, &h, &[], ConnHeader::Omit, false, &mut out);
        assert_eq!(&out[..], &buf[..]);

        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n";
        let h = complete(buf, false);
        assert_eq!(h.framing, BodyFraming::Chunked);
        assert!(
            !h.keep_alive,
            "CL+TE upstream connection must not be reused"
        );
        out.clear();
        write_response_head(buf, &h, &[], ConnHeader::Close, false, &mut out);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn response_keep_alive_rules() {
        assert!(
            !complete(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                false
            )
            .keep_alive
        );
        assert!(!complete(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false).keep_alive);
        assert!(
            complete(
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
                false
            )
            .keep_alive
        );
    }

    #[test]
    fn invalid_responses() {
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").status(),
            400
        );
        assert!(matches!(
            err(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            HeadError::Smuggling(_)
        ));
        assert!(matches!(
            err(b"HTTP/1.1 200 OK\nContent-Length: 1\r\n\r\n"),
            HeadError::Smuggling(_)
        ));
        assert!(matches!(
            err(b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"),
            HeadError::Smuggling(_)
        ));
        assert!(matches!(
            err(b"HTTP/1.1 200 OK\r\nX : a\r\n\r\n"),
            HeadError::Smuggling(_)
        ));
        assert!(matches!(
            err(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HeadError::Smuggling(_)
        ));
        assert!(matches!(
            err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
            HeadError::Smuggling(_)
        ));
        assert_eq!(err(b"HTTP/2.0 200 OK\r\n\r\n"), HeadError::Version);
        assert!(matches!(
            err(b"HTTP/1.1 2x0 OK\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert!(matches!(
            err(b"HTTP/1.1 099 Low\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert!(matches!(
            err(b"ICY 200 OK\r\n\r\n"),
            HeadError::Malformed(_)
        ));
    }

    #[test]
    fn write_response_drops_hop_by_hop_and_keeps_order() {
        let buf = b"HTTP/1.1 206 Partial Content\r\nx-amz-request-id: 1\r\nConnection: keep-alive, X-Internal\r\nKeep-Alive: timeout=5\r\nX-Internal: secret\r\nContent-Range: bytes 0-1/10\r\nContent-Length: 2\r\nUpgrade: h2c\r\nlast-modified: x\r\n\r\nab";
        let h = complete(buf, false);
        let mut out = Vec::new();
        write_response_head(
            buf,
            &h,
            &[(b"RateLimit", b"limit=10, remaining=9")],
            ConnHeader::KeepAlive,
            false,
            &mut out,
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 206 Partial Content\r\nx-amz-request-id: 1\r\nContent-Range: bytes 0-1/10\r\nContent-Length: 2\r\nlast-modified: x\r\nRateLimit: limit=10, remaining=9\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn until_close_response_keeps_te_drops_cl() {
        let buf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 4\r\n\r\n";
        let h = complete(buf, false);
        assert_eq!(h.framing, BodyFraming::UntilClose);
        let mut out = Vec::new();
        write_response_head(buf, &h, &[], ConnHeader::Close, false, &mut out);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n"
        );
        // Bodiless: no coding to describe, the field is dropped.
        let buf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let h = complete(buf, true);
        out.clear();
        write_response_head(buf, &h, &[], ConnHeader::Omit, false, &mut out);
        assert_eq!(&out[..], b"HTTP/1.1 200 OK\r\n\r\n");
    }
}
