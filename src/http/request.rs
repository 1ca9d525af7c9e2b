//! Request heads: parsing a client's request head into byte ranges of the read buffer,
//! rejecting smuggling shapes, and writing the head sent upstream with the request line and
//! the surviving header lines copied verbatim (signatures stay valid). Must not touch I/O,
//! identity extraction or limit decisions; nothing here allocates in steady state.

use std::mem::MaybeUninit;
use std::ops::Range;

use super::fields::{
    Summary, TransferCoding, classify_request_error, collect_headers, has_bare_lf, list_elements,
    offset, push_decimal, push_header, signed_names, summarize,
};
use super::{BodyFraming, HEADER_STACK_CAP, HeadError, HeadLimits, HeaderPos, ParseStatus};

/// A parsed request head. Every range indexes the buffer that was parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head including the final CRLF (and any empty lines before the request
    /// line): the body, or the next pipelined request, starts here.
    pub head_len: usize,
    pub method: Range<usize>,
    pub target: Range<usize>,
    /// The whole request line including its CRLF.
    pub request_line: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Header lines in arrival order.
    pub headers: Vec<HeaderPos>,
    /// `None`, `Length(n)` or `Chunked` (requests never frame until close).
    pub framing: BodyFraming,
    /// The client allows another request on this connection after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// Value of the first `X-Request-ID` header.
    pub x_request_id: Option<Range<usize>>,
    /// Value of the `Host` header.
    pub host: Option<Range<usize>>,
    /// The Content-Length field (if any) is one line with one number, so it is sent on as
    /// it came; otherwise (`5, 5`, or equal values on two lines) one canonical line is sent.
    pub content_length_as_sent: bool,
}

impl Default for RequestHead {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestHead {
    pub fn new() -> Self {
        RequestHead {
            head_len: 0,
            method: 0..0,
            target: 0..0,
            request_line: 0..0,
            minor_version: 1,
            headers: Vec::with_capacity(32),
            framing: BodyFraming::None,
            keep_alive: false,
            expect_continue: false,
            x_request_id: None,
            host: None,
            content_length_as_sent: true,
        }
    }

    fn reset(&mut self) {
        self.head_len = 0;
        self.method = 0..0;
        self.target = 0..0;
        self.request_line = 0..0;
        self.minor_version = 1;
        self.headers.clear();
        self.framing = BodyFraming::None;
        self.keep_alive = false;
        self.expect_continue = false;
        self.x_request_id = None;
        self.host = None;
        self.content_length_as_sent = true;
    }

    pub fn method<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.method.clone()]
    }

    pub fn target<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.target.clone()]
    }

    /// The target up to (not including) the first `?`.
    pub fn path<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        let t = self.target(buf);
        match t.iter().position(|&b| b == b'?') {
            Some(q) => &t[..q],
            None => t,
        }
    }

    /// The target after the first `?` (empty if there is none).
    pub fn query<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        let t = self.target(buf);
        match t.iter().position(|&b| b == b'?') {
            Some(q) => &t[q + 1..],
            None => &[],
        }
    }

    /// Value of the first header named `name` (case-insensitive).
    pub fn header<'a>(&self, buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.is(buf, name))
            .map(|h| &buf[h.value.clone()])
    }

    /// All `(name, value)` pairs in arrival order.
    pub fn headers<'a>(
        &'a self,
        buf: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone + 'a {
        self.headers
            .iter()
            .map(move |h| (&buf[h.name.clone()], &buf[h.value.clone()]))
    }
}

/// When a request head that is still arriving is worth parsing again. Each parse reads the
/// head from its start, so parsing after every read of a head sent a byte at a time cost
/// ~15 µs per byte for a 16 KiB head (a quadratic cost a client sets by how it cuts its
/// bytes). Parsed: on its first bytes (garbage is refused at once), when a line has ended
/// since the last parse (only a line end completes a head or a field), when it has grown
/// by half since, and once it reaches `max_head_bytes` (refused as too large).
#[derive(Debug, Default)]
pub struct ReparseGate {
    /// Length of the head at the last parse (0: not parsed yet).
    parsed: usize,
}

impl ReparseGate {
    /// Whether to parse `head` (all of the head's bytes so far) now; records it if so.
    pub fn ready(&mut self, head: &[u8], max_head_bytes: usize) -> bool {
        let new = &head[self.parsed.min(head.len())..];
        let go = self.parsed == 0
            || head.len() >= max_head_bytes
            || head.len() >= self.parsed + self.parsed / 2
            || memchr::memchr(b'\n', new).is_some();
        if go {
            self.parsed = head.len();
        }
        go
    }
}

/// Parses a request head from the start of `buf` into `out` (reusing its `Vec`: no
/// allocation in steady state). `Partial` = need more bytes; but once `buf` holds
/// `max_head_bytes` without a complete head → `Err(TooLarge)`. On error `out` is left in an
/// unspecified (but valid) state.
pub fn parse_request(
    buf: &[u8],
    limits: &HeadLimits,
    out: &mut RequestHead,
) -> Result<ParseStatus, HeadError> {
    out.reset();
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    let status = if limits.max_headers <= HEADER_STACK_CAP {
        let mut stack = [const { MaybeUninit::uninit() }; HEADER_STACK_CAP];
        parse_into(window, &mut stack[..limits.max_headers], out)
    } else {
        let mut stack = [const { MaybeUninit::uninit() }; HEADER_STACK_CAP];
        match parse_into(window, &mut stack, out) {
            Err(HeadError::TooManyHeaders) => {
                // Only with a configured max_headers above the stack cap.
                let mut heap = vec![MaybeUninit::uninit(); limits.max_headers];
                parse_into(window, &mut heap, out)
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
    out: &mut RequestHead,
) -> Result<ParseStatus, HeadError> {
    let mut req = httparse::Request::new(&mut []);
    let head_len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, scratch)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(ParseStatus::Partial),
        Err(e) => return Err(classify_request_error(buf, e)),
    };
    let head = &buf[..head_len];
    if has_bare_lf(head) {
        return Err(HeadError::Smuggling("bare LF line ending"));
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    if target.is_empty() {
        return Err(HeadError::Malformed("empty request-target"));
    }
    if minor > 1 {
        return Err(HeadError::Version);
    }
    let method_start = offset(buf, method.as_bytes());
    let target_start = offset(buf, target.as_bytes());
    let line_end = head[method_start..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(head_len, |p| method_start + p + 1);
    out.head_len = head_len;
    out.method = method_start..method_start + method.len();
    out.target = target_start..target_start + target.len();
    out.request_line = method_start..line_end;
    out.minor_version = minor;
    collect_headers(buf, req.headers, &mut out.headers)?;

    let s = summarize(buf, &out.headers)?;
    if s.host_count > 1 {
        return Err(HeadError::Smuggling("more than one Host header"));
    }
    if minor == 1 && s.host_count == 0 {
        return Err(HeadError::Malformed("HTTP/1.1 request without Host"));
    }
    if method == "CONNECT" {
        return Err(HeadError::NotImplemented("CONNECT is not supported"));
    }
    if s.upgrade {
        return Err(HeadError::NotImplemented(
            "protocol upgrades are not supported",
        ));
    }
    if s.underscore_alias {
        return Err(HeadError::Smuggling(
            "a field name with '_' that reads as a framing or hop-by-hop field",
        ));
    }
    out.framing = request_framing(buf, &out.headers, &s, minor)?;
    out.content_length_as_sent = s.cl_lines == 0 || s.cl_plain;
    out.keep_alive = if minor == 1 {
        !s.close
    } else {
        s.keep_alive && !s.close
    };
    out.expect_continue = s.expect_continue;
    out.host = s.host;
    out.x_request_id = s.x_request_id;
    Ok(ParseStatus::Complete)
}

/// The body framing of a request (RFC 9112 §6.3), refusing every Transfer-Encoding but one
/// line of exactly `chunked`: other codings are not implemented (501), and lists with empty
/// elements or a second line are read differently by different parsers (400).
fn request_framing(
    buf: &[u8],
    headers: &[HeaderPos],
    s: &Summary,
    minor: u8,
) -> Result<BodyFraming, HeadError> {
    match (s.transfer_coding, s.content_length) {
        (TransferCoding::Absent, None) => return Ok(BodyFraming::None),
        (TransferCoding::Absent, Some(n)) => return Ok(BodyFraming::Length(n)),
        (_, Some(_)) => {
            return Err(HeadError::Smuggling(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        (_, None) if minor == 0 => {
            return Err(HeadError::Smuggling(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        (TransferCoding::NotChunkedLast, None) => {
            return Err(HeadError::Smuggling("final transfer-coding is not chunked"));
        }
        (TransferCoding::ChunkedLast, None) => {}
    }
    if s.te_lines > 1 {
        return Err(HeadError::Smuggling("more than one Transfer-Encoding line"));
    }
    if !s.te_just_chunked {
        let te = headers
            .iter()
            .find(|h| h.is(buf, "transfer-encoding"))
            .map_or(&b""[..], |h| h.value(buf));
        if list_elements(te).any(<[u8]>::is_empty) {
            return Err(HeadError::Smuggling("empty element in Transfer-Encoding"));
        }
        return Err(HeadError::NotImplemented(
            "transfer codings other than chunked are not supported",
        ));
    }
    Ok(BodyFraming::Chunked)
}

/// The first field of `head` that is hop-by-hop yet named in the SigV4 `SignedHeaders` list
/// (`;`-separated): such a request cannot be both proxied (hop-by-hop fields are not sent
/// on) and keep its signature. The framing fields sent on for a chunked body are exempt.
/// The list is split once, into at most as many names as the head has fields (each signed
/// name must be a field of the request, so a longer list cannot verify anyway): an
/// attacker's 8 KiB list scanned again for every hop-by-hop field cost ~100 times the parse
/// of the head.
pub fn signed_hop_by_hop<'a>(
    buf: &'a [u8],
    head: &RequestHead,
    signed_headers: &[u8],
) -> Option<&'a [u8]> {
    let limit = head.headers.len();
    let mut stack = [&b""[..]; HEADER_STACK_CAP];
    let mut heap = Vec::new();
    let slots: &mut [&[u8]] = if limit <= HEADER_STACK_CAP {
        &mut stack[..limit]
    } else {
        heap.resize(limit, &b""[..]);
        &mut heap
    };
    let count = signed_names(signed_headers, slots);
    let signed = &slots[..count];
    head.headers
        .iter()
        .filter(|h| h.hop_by_hop)
        .map(|h| h.name(buf))
        .find(|name| {
            !forwarded_framing_field(head, name)
                && signed.iter().any(|s| s.eq_ignore_ascii_case(name))
        })
}

/// `Transfer-Encoding` and `Trailer` of a chunked request: hop-by-hop, but sent on because the
/// body is passed through still chunked.
fn forwarded_framing_field(head: &RequestHead, name: &[u8]) -> bool {
    head.framing == BodyFraming::Chunked
        && (name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"trailer"))
}

/// Appends the head to send upstream to `out`: the request line verbatim, every
/// non-hop-by-hop header line verbatim, in order (check [`signed_hop_by_hop`] first: a signed
/// hop-by-hop field would be dropped here). Framing goes on in one canonical form, never as
/// the client spelled it: a chunked body's `Transfer-Encoding` as `Transfer-Encoding:
/// chunked` (its `Trailer` line kept), a Content-Length list or repeated line as one
/// `Content-Length` line. Then `extra` (a client field of the same name as one of them is
/// left out: the proxy's value replaces it), then `Connection: keep-alive` for an HTTP/1.0
/// request, then the final CRLF.
pub fn write_request_head(
    buf: &[u8],
    head: &RequestHead,
    extra: &[(&[u8], &[u8])],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(&buf[head.request_line.clone()]);
    let mut length_written = false;
    for h in &head.headers {
        let name = h.name(buf);
        if forwarded_framing_field(head, name) {
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            } else {
                out.extend_from_slice(h.line(buf));
            }
        } else if h.hop_by_hop || extra.iter().any(|(n, _)| name.eq_ignore_ascii_case(n)) {
            continue;
        } else if !head.content_length_as_sent && name.eq_ignore_ascii_case(b"content-length") {
            if let (false, BodyFraming::Length(n)) = (length_written, head.framing) {
                out.extend_from_slice(b"Content-Length: ");
                push_decimal(out, n);
                out.extend_from_slice(b"\r\n");
                length_written = true;
            }
        } else {
            out.extend_from_slice(h.line(buf));
        }
    }
    for (name, value) in extra {
        push_header(out, name, value);
    }
    if head.minor_version == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
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

    fn parse(buf: &[u8]) -> Result<(ParseStatus, RequestHead), HeadError> {
        let mut head = RequestHead::new();
        parse_request(buf, &LIMITS, &mut head).map(|s| (s, head))
    }

    fn complete(buf: &[u8]) -> RequestHead {
        match parse(buf) {
            Ok((ParseStatus::Complete, h)) => h,
            other => panic!("expected complete head, got {other:?}"),
        }
    }

    fn err(buf: &[u8]) -> HeadError {
        match parse(buf) {
            Err(e) => e,
            Ok(other) => panic!("expected an error, got {other:?}"),
        }
    }

    fn assert_400(buf: &[u8]) -> HeadError {
        let e = err(buf);
        assert_eq!(
            e.status(),
            400,
            "{e:?} for {:?}",
            String::from_utf8_lossy(buf)
        );
        e
    }

    #[test]
    fn simple_get_ranges() {
        let buf = b"GET /bucket/key?uploads&x=1 HTTP/1.1\r\nHost: s3.local\r\nX-Request-ID: abc\r\n\r\nNEXT";
        let h = complete(buf);
        assert_eq!(h.head_len, buf.len() - 4);
        assert_eq!(h.method(buf), b"GET");
        assert_eq!(h.target(buf), b"/bucket/key?uploads&x=1");
        assert_eq!(h.path(buf), b"/bucket/key");
        assert_eq!(h.query(buf), b"uploads&x=1");
        assert_eq!(
            &buf[h.request_line.clone()],
            b"GET /bucket/key?uploads&x=1 HTTP/1.1\r\n"
        );
        assert_eq!(h.minor_version, 1);
        assert_eq!(h.header(buf, "host"), Some(&b"s3.local"[..]));
        assert_eq!(h.header(buf, "HOST"), Some(&b"s3.local"[..]));
        assert_eq!(h.header(buf, "missing"), None);
        assert_eq!(&buf[h.host.clone().unwrap()], b"s3.local");
        assert_eq!(&buf[h.x_request_id.clone().unwrap()], b"abc");
        assert_eq!(h.framing, BodyFraming::None);
        assert!(h.keep_alive);
        assert!(!h.expect_continue);
        assert_eq!(&buf[h.headers[1].line.clone()], b"X-Request-ID: abc\r\n");
        let all: Vec<_> = h.headers(buf).collect();
        assert_eq!(
            all,
            vec![(&b"Host"[..], &b"s3.local"[..]), (b"X-Request-ID", b"abc")]
        );
        assert_eq!(h.query(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"), b"");
    }

    #[test]
    fn partial_until_complete_and_reuse() {
        let buf = b"PUT /b/k HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
        let mut head = RequestHead::new();
        for n in 0..buf.len() - 5 {
            assert_eq!(
                parse_request(&buf[..n], &LIMITS, &mut head),
                Ok(ParseStatus::Partial),
                "prefix {n}"
            );
        }
        assert_eq!(
            parse_request(buf, &LIMITS, &mut head),
            Ok(ParseStatus::Complete)
        );
        assert_eq!(head.framing, BodyFraming::Length(5));
        assert_eq!(&buf[head.head_len..], b"hello");
        // Reusing the same RequestHead for another request does not keep stale state.
        let cap = head.headers.capacity();
        let next = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(
            parse_request(next, &LIMITS, &mut head),
            Ok(ParseStatus::Complete)
        );
        assert_eq!(head.headers.len(), 1);
        assert_eq!(head.framing, BodyFraming::None);
        assert_eq!(head.headers.capacity(), cap);
    }

    #[test]
    fn leading_empty_line_is_skipped_but_counted() {
        let buf = b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
        let h = complete(buf);
        assert_eq!(h.head_len, buf.len());
        assert_eq!(h.method(buf), b"GET");
        assert_eq!(&buf[h.request_line.clone()], b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn smuggling_cl_and_te() {
        let e = assert_400(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(matches!(e, HeadError::Smuggling(_)));
        assert_400(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n");
    }

    #[test]
    fn content_length_duplicates() {
        let h = complete(
            b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        );
        assert_eq!(h.framing, BodyFraming::Length(5));
        let h = complete(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Length(5));
        let e = assert_400(
            b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        );
        assert_eq!(e, HeadError::Smuggling("conflicting Content-Length values"));
        assert_400(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n");
    }

    #[test]
    fn content_length_must_be_digits_and_fit() {
        for bad in [
            &b"+5"[..],
            b"-1",
            b"0x10",
            b"5 5",
            b"",
            b"5,",
            b"1e3",
            b"18446744073709551616",
            b"99999999999999999999999",
        ] {
            let mut buf = b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: ".to_vec();
            buf.extend_from_slice(bad);
            buf.extend_from_slice(b"\r\n\r\n");
            assert!(
                matches!(assert_400(&buf), HeadError::Smuggling(_)),
                "{bad:?}"
            );
        }
        let h =
            complete(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551615\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Length(u64::MAX));
        let h = complete(b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Length(7));
    }

    #[test]
    fn transfer_encoding_rules() {
        let h = complete(b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Chunked);
        let h = complete(b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Chunked);
        // Codings before chunked are valid HTTP but not carried (501); a second line is
        // ambiguous (400).
        let e = err(b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, CHUNKED\r\n\r\n");
        assert_eq!(e.status(), 501);
        assert_400(b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n");
        for bad in [
            &b"Transfer-Encoding: gzip\r\n"[..],
            b"Transfer-Encoding: chunked, gzip\r\n",
            b"Transfer-Encoding: chunked, chunked\r\n",
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
            b"Transfer-Encoding: chunked;x=1\r\n",
            b"Transfer-Encoding: \r\n",
            b"Transfer-Encoding: chu nked\r\n",
            b"Transfer-Encoding: xchunked\r\n",
        ] {
            let mut buf = b"POST / HTTP/1.1\r\nHost: h\r\n".to_vec();
            buf.extend_from_slice(bad);
            buf.extend_from_slice(b"\r\n");
            assert_400(&buf);
        }
        let e = assert_400(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(
            e,
            HeadError::Smuggling("Transfer-Encoding in an HTTP/1.0 request")
        );
    }

    #[test]
    fn bare_lf_anywhere_is_rejected() {
        for buf in [
            &b"GET / HTTP/1.1\nHost: h\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: h\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\n\n",
            b"\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\nHost: h\n\n",
        ] {
            assert_eq!(assert_400(buf), HeadError::Smuggling("bare LF line ending"));
        }
    }

    #[test]
    fn obs_fold_and_space_before_colon() {
        let e = assert_400(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n");
        assert_eq!(
            e,
            HeadError::Smuggling("obs-fold (header line starting with whitespace)")
        );
        let e = assert_400(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n\tb\r\n\r\n");
        assert!(matches!(e, HeadError::Smuggling(_)));
        let e = assert_400(b"GET / HTTP/1.1\r\n Host: h\r\n\r\n");
        assert!(matches!(e, HeadError::Smuggling(_)));
        let e = assert_400(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n");
        assert_eq!(
            e,
            HeadError::Smuggling("whitespace between field name and colon")
        );
        let e = assert_400(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length\t: 1\r\n\r\n");
        assert_eq!(
            e,
            HeadError::Smuggling("whitespace between field name and colon")
        );
        // Detected before the whole head arrived.
        assert_400(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length ");
    }

    #[test]
    fn host_rules() {
        assert_eq!(
            assert_400(b"GET / HTTP/1.1\r\nX: y\r\n\r\n"),
            HeadError::Malformed("HTTP/1.1 request without Host")
        );
        assert_eq!(
            assert_400(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
            HeadError::Smuggling("more than one Host header")
        );
        assert_400(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n");
        let h = complete(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(h.host, None);
        assert_eq!(h.minor_version, 0);
        let h = complete(b"GET / HTTP/1.1\r\nHost:\r\n\r\n");
        assert_eq!(h.host, Some(h.headers[0].value.clone()));
        assert!(h.host.unwrap().is_empty());
    }

    #[test]
    fn request_line_shapes() {
        assert_eq!(
            assert_400(b"GET  HTTP/1.1\r\nHost: h\r\n\r\n"),
            HeadError::Malformed("empty request-target")
        );
        assert_400(b"GET / HTTP/1.1 x\r\nHost: h\r\n\r\n");
        assert_400(b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_400(b"GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_400(b"GET / HTTP/1.1\rHost: h\r\n\r\n");
        assert_400(b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n");
        assert_400(b"GET / HTTP/1.1\r\nHo(st: a\r\n\r\n");
        assert_400(b"GET / HTTP/1.1\r\nHost: a\r\nX-Null: a\0b\r\n\r\n");
    }

    #[test]
    fn versions() {
        for v in [&b"HTTP/2.0"[..], b"HTTP/1.2", b"HTTP/0.9", b"HTTP/3"] {
            let mut buf = b"GET / ".to_vec();
            buf.extend_from_slice(v);
            buf.extend_from_slice(b"\r\nHost: h\r\n\r\n");
            let e = err(&buf);
            assert_eq!(e, HeadError::Version, "{v:?}");
            assert_eq!(e.status(), 505);
        }
        assert_eq!(
            assert_400(b"GET / FTP/1.1\r\nHost: h\r\n\r\n"),
            HeadError::Malformed("invalid HTTP version")
        );
    }

    #[test]
    fn too_large_head() {
        let limits = HeadLimits {
            max_head_bytes: 64,
            max_headers: 100,
        };
        let mut head = RequestHead::new();
        let mut buf = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ".to_vec();
        buf.resize(63, b'a');
        assert_eq!(
            parse_request(&buf, &limits, &mut head),
            Ok(ParseStatus::Partial)
        );
        buf.push(b'a');
        let e = parse_request(&buf, &limits, &mut head).unwrap_err();
        assert_eq!(e, HeadError::TooLarge);
        assert_eq!(e.status(), 431);
        // A head that fits completes even with body bytes beyond the limit.
        let mut buf = b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n".to_vec();
        let head_len = buf.len();
        buf.resize(head_len + 100, b'x');
        assert_eq!(
            parse_request(&buf, &limits, &mut head),
            Ok(ParseStatus::Complete)
        );
        assert_eq!(head.head_len, head_len);
        // Exactly at the limit is fine; one byte over is not.
        let exact = HeadLimits {
            max_head_bytes: head_len,
            max_headers: 100,
        };
        assert_eq!(
            parse_request(&buf, &exact, &mut head),
            Ok(ParseStatus::Complete)
        );
        let under = HeadLimits {
            max_head_bytes: head_len - 1,
            max_headers: 100,
        };
        assert_eq!(
            parse_request(&buf, &under, &mut head),
            Err(HeadError::TooLarge)
        );
    }

    fn with_n_headers(n: usize) -> Vec<u8> {
        let mut buf = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        for i in 1..n {
            buf.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        buf
    }

    #[test]
    fn too_many_headers() {
        let limits = HeadLimits {
            max_head_bytes: 1 << 20,
            max_headers: 10,
        };
        let mut head = RequestHead::new();
        assert_eq!(
            parse_request(&with_n_headers(10), &limits, &mut head),
            Ok(ParseStatus::Complete)
        );
        assert_eq!(head.headers.len(), 10);
        let e = parse_request(&with_n_headers(11), &limits, &mut head).unwrap_err();
        assert_eq!(e, HeadError::TooManyHeaders);
        assert_eq!(e.status(), 431);
        assert_eq!(e.s3_code(), "RequestHeaderSectionTooLarge");
    }

    #[test]
    fn max_headers_above_stack_cap() {
        let limits = HeadLimits {
            max_head_bytes: 1 << 20,
            max_headers: 300,
        };
        let mut head = RequestHead::new();
        assert_eq!(
            parse_request(&with_n_headers(300), &limits, &mut head),
            Ok(ParseStatus::Complete)
        );
        assert_eq!(head.headers.len(), 300);
        assert_eq!(
            parse_request(&with_n_headers(301), &limits, &mut head),
            Err(HeadError::TooManyHeaders)
        );
        assert_eq!(
            parse_request(&with_n_headers(129), &limits, &mut head),
            Ok(ParseStatus::Complete)
        );
    }

    #[test]
    fn keep_alive_rules() {
        assert!(complete(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").keep_alive);
        assert!(!complete(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(
            !complete(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, CLOSE\r\n\r\n")
                .keep_alive
        );
        assert!(
            complete(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n").keep_alive
        );
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!complete(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
    }

    #[test]
    fn expect_continue_flag() {
        assert!(
            complete(
                b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
            )
            .expect_continue
        );
        assert!(
            complete(b"PUT / HTTP/1.1\r\nHost: h\r\nexpect: 100-CONTINUE\r\n\r\n").expect_continue
        );
        assert!(!complete(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n").expect_continue);
        assert!(!complete(b"PUT / HTTP/1.1\r\nHost: h\r\n\r\n").expect_continue);
    }

    /// A head arriving a byte at a time is parsed about once per line, not once per byte,
    /// and still as soon as it is complete; its first bytes are always parsed (garbage is
    /// refused at once), and so is a head that grows without a line end (at least by half).
    #[test]
    fn reparse_gate_parses_once_per_line() {
        let mut head = b"GET /b/k HTTP/1.1\r\nHost: s3\r\n".to_vec();
        for i in 0..98 {
            head.extend_from_slice(format!("X-F{i}: {}\r\n", "v".repeat(150)).as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        let lines = head.iter().filter(|&&b| b == b'\n').count();
        let mut gate = ReparseGate::default();
        let mut out = RequestHead::new();
        let mut parses = 0;
        for end in 1..=head.len() {
            if gate.ready(&head[..end], 16384) {
                parses += 1;
                let got = parse_request(&head[..end], &LIMITS, &mut out);
                assert_eq!(
                    got == Ok(ParseStatus::Complete),
                    end == head.len(),
                    "at {end}"
                );
            }
        }
        // One per line end, plus the growth-by-half parses (at most log1.5 of 16 KiB, 24);
        // parsing after every read was 15,603 here.
        assert!(parses <= lines + 24, "{parses} parses for {lines} lines");
        // Garbage: parsed on its first byte; a head without line ends: at lengths growing by half.
        let mut gate = ReparseGate::default();
        assert!(gate.ready(b"\x16", 16384));
        let mut gate = ReparseGate::default();
        let at: Vec<usize> = (1..=100)
            .filter(|&n| gate.ready(&[b'a'; 100][..n], 16384))
            .collect();
        assert_eq!(at, [1, 2, 3, 4, 6, 9, 13, 19, 28, 42, 63, 94]);
        // At the size limit it is parsed (and refused as too large).
        let mut gate = ReparseGate::default();
        assert!(gate.ready(&[b'a'; 1000], 1024));
        assert!(!gate.ready(&[b'a'; 1023], 1024));
        assert!(gate.ready(&[b'a'; 1024], 1024));
    }

    #[test]
    fn hop_by_hop_marking() {
        let buf = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Foo, content-length, host\r\nX-Foo: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Connection: y\r\nX-Bar: 2\r\n\r\n";
        let h = complete(buf);
        let hop: Vec<(&[u8], bool)> = h
            .headers
            .iter()
            .map(|p| (p.name(buf), p.hop_by_hop))
            .collect();
        assert_eq!(
            hop,
            vec![
                (&b"Host"[..], false),
                (b"Connection", true),
                (b"X-Foo", true),
                (b"Keep-Alive", true),
                (b"TE", true),
                (b"Proxy-Connection", true),
                (b"X-Bar", false),
            ]
        );
    }

    #[test]
    fn write_head_is_byte_exact_and_drops_hop_by_hop() {
        let buf = b"PUT /b/My%20Key?partNumber=1&uploadId=x%2Fy HTTP/1.1\r\nhOsT: S3.Example:9000\r\nConnection: keep-alive, X-Hop\r\nx-amz-date: 20240101T000000Z\r\nX-Hop: 1\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=ab\r\nContent-Length: 3\r\nKeep-Alive: timeout=5\r\nx-amz-meta-A:  spaced  \r\n\r\nabc";
        let h = complete(buf);
        let mut out = Vec::new();
        assert_eq!(signed_hop_by_hop(buf, &h, b"host;x-amz-date"), None);
        write_request_head(buf, &h, &[(b"X-Forwarded-For", b"10.0.0.1")], &mut out);
        let expected = b"PUT /b/My%20Key?partNumber=1&uploadId=x%2Fy HTTP/1.1\r\nhOsT: S3.Example:9000\r\nx-amz-date: 20240101T000000Z\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=ab\r\nContent-Length: 3\r\nx-amz-meta-A:  spaced  \r\nX-Forwarded-For: 10.0.0.1\r\n\r\n";
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(expected)
        );
        // The written head parses back to the same request with the same end-to-end headers.
        let back = complete(&out);
        assert_eq!(back.target(&out), h.target(buf));
        assert_eq!(back.framing, BodyFraming::Length(3));
    }

    /// Each `Connection` option is looked up among every field name: more than
    /// `MAX_CONNECTION_OPTIONS` (all lines together, empty elements not counted) are refused
    /// with 400, so a 16 KiB head of `a,a,a,…` costs no more than a plain one.
    #[test]
    fn connection_options_are_bounded() {
        use crate::http::fields::MAX_CONNECTION_OPTIONS as MAX;
        let head = |lines: &[String]| {
            let mut b = b"GET / HTTP/1.1\r\nHost: h\r\nX-O0: 1\r\n".to_vec();
            for l in lines {
                b.extend_from_slice(format!("Connection: {l}\r\n").as_bytes());
            }
            b.extend_from_slice(b"\r\n");
            b
        };
        let opts = |from: usize, n: usize| -> String {
            (from..from + n)
                .map(|i| format!("x-o{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // At the bound, over two lines and with empty elements: accepted, still marked.
        let at = head(&[opts(0, MAX - 10), format!(",, {}, ,", opts(MAX - 10, 10))]);
        let h = complete(&at);
        assert!(
            h.headers
                .iter()
                .find(|f| f.name(&at) == b"X-O0")
                .unwrap()
                .hop_by_hop
        );
        for over in [head(&[opts(0, MAX + 1)]), head(&[opts(0, MAX), "x".into()])] {
            let e = assert_400(&over);
            assert_eq!(
                e,
                HeadError::Malformed("Connection lists more than 32 options")
            );
        }
        assert!(format!("{:?}", assert_400(&head(&[opts(0, MAX + 1)]))).contains(&MAX.to_string()));
        // The attack shape: one 16 KiB list of one-letter options.
        let mut flood = "a,".repeat(7_000);
        flood.push('a');
        assert_400(&head(&[flood]));
    }

    /// The `SignedHeaders` list is split once into at most as many names as the head has
    /// fields: a signed hop-by-hop field is found among those, and an 8 KiB list is not
    /// scanned again per hop-by-hop field.
    #[test]
    fn signed_list_is_read_up_to_the_field_count() {
        let buf = b"GET /k HTTP/1.1\r\nHost: h\r\nTE: trailers\r\nX-Amz-Date: 1\r\n\r\n";
        let h = complete(buf);
        assert_eq!(
            signed_hop_by_hop(buf, &h, b"host;x-amz-date;te"),
            Some(&b"TE"[..])
        );
        // A fourth name cannot be one of the three fields' names, so it is not looked at.
        assert_eq!(signed_hop_by_hop(buf, &h, b"host;x-a;x-amz-date;te"), None);
        let long = format!("{}te", "x-amz-meta-aaaa;".repeat(500));
        assert_eq!(signed_hop_by_hop(buf, &h, long.as_bytes()), None);
    }

    #[test]
    fn hop_by_hop_fields_never_go_on_and_signing_one_is_found() {
        let buf = b"GET /k HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nProxy-Connection: x\r\nTE: trailers\r\nKeep-Alive: 1\r\n\r\n";
        let h = complete(buf);
        let mut out = Vec::new();
        write_request_head(buf, &h, &[], &mut out);
        assert_eq!(&out[..], b"GET /k HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(signed_hop_by_hop(buf, &h, b"host;x-amz-date"), None);
        assert_eq!(
            signed_hop_by_hop(buf, &h, b"host;te;x-amz-date"),
            Some(&b"TE"[..])
        );
        assert_eq!(
            signed_hop_by_hop(buf, &h, b"connection;host"),
            Some(&b"Connection"[..])
        );
        assert_eq!(
            signed_hop_by_hop(buf, &h, b"host;keep-alive"),
            Some(&b"Keep-Alive"[..])
        );
    }

    #[test]
    fn write_head_passes_chunked_through() {
        let buf = b"PUT /k HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: x-amz-checksum-crc32\r\nx-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER\r\n\r\n";
        let h = complete(buf);
        assert_eq!(h.framing, BodyFraming::Chunked);
        let mut out = Vec::new();
        write_request_head(buf, &h, &[], &mut out);
        assert_eq!(&out[..], &buf[..]);
        // Signing the framing fields of a chunked body is no reason to refuse it.
        assert_eq!(
            signed_hop_by_hop(buf, &h, b"host;transfer-encoding;trailer"),
            None
        );
    }

    /// Point 6 of the wire issue: what goes upstream is canonical framing or nothing.
    #[test]
    fn framing_goes_on_canonical_or_is_refused() {
        let te = |v: &str| format!("PUT /k HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: {v}\r\n\r\n");
        for v in ["gzip, chunked", "identity, chunked", "x-custom, chunked"] {
            assert_eq!(err(te(v).as_bytes()).status(), 501, "{v}");
        }
        for v in [",chunked", "chunked,", "chunked, ", " , chunked"] {
            assert_eq!(err(te(v).as_bytes()).status(), 400, "{v}");
        }
        assert_400(b"PUT /k HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_400(b"PUT /k HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\nTransfer-Encoding: chunked\r\n\r\n");
        for name in ["Transfer_Encoding", "Content_Length", "transfer_encoding"] {
            let buf = format!(
                "PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n{name}: chunked\r\n\r\n"
            );
            assert_eq!(err(buf.as_bytes()).status(), 400, "{name}");
        }
        // Spelling of chunked is normalised.
        let buf = b"PUT /k HTTP/1.1\r\nHost: h\r\ntransfer-encoding:  CHUNKED \r\n\r\n";
        let h = complete(buf);
        let mut out = Vec::new();
        write_request_head(buf, &h, &[], &mut out);
        assert_eq!(
            &out[..],
            b"PUT /k HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        // Equal Content-Length values go on as one line, where the first one was.
        for cl in [
            "Content-Length: 5, 5\r\n",
            "Content-Length: 5\r\ncontent-length: 5\r\n",
        ] {
            let buf = format!("PUT /k HTTP/1.1\r\nHost: h\r\n{cl}X-A: 1\r\n\r\n");
            let h = complete(buf.as_bytes());
            assert!(!h.content_length_as_sent);
            let mut out = Vec::new();
            write_request_head(buf.as_bytes(), &h, &[], &mut out);
            assert_eq!(
                &out[..],
                b"PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n",
                "{cl}"
            );
        }
        // CONNECT and upgrades are never carried.
        assert_eq!(
            err(b"CONNECT s3:443 HTTP/1.1\r\nHost: s3:443\r\n\r\n").status(),
            501
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
                .status(),
            501
        );
    }

    #[test]
    fn write_head_http10_gets_keep_alive() {
        let buf = b"GET /k HTTP/1.0\r\nHost: h\r\nConnection: close\r\n\r\n";
        let h = complete(buf);
        let mut out = Vec::new();
        write_request_head(buf, &h, &[(b"X-A", b"1")], &mut out);
        assert_eq!(
            &out[..],
            b"GET /k HTTP/1.0\r\nHost: h\r\nX-A: 1\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn error_codes() {
        assert_eq!(HeadError::Smuggling("x").s3_code(), "BadRequest");
        assert_eq!(HeadError::Malformed("x").status(), 400);
        assert_eq!(HeadError::Version.status(), 505);
        assert_eq!(HeadError::TooLarge.status(), 431);
    }

    fn check_in_bounds(buf: &[u8], h: &RequestHead) {
        assert!(h.head_len <= buf.len());
        for r in [&h.method, &h.target, &h.request_line] {
            assert!(r.start <= r.end && r.end <= h.head_len);
        }
        for p in &h.headers {
            for r in [&p.name, &p.value, &p.line] {
                assert!(r.start <= r.end && r.end <= h.head_len);
            }
            assert!(buf[p.line.clone()].ends_with(b"\r\n"));
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut head = RequestHead::new();
            if let Ok(ParseStatus::Complete) = parse_request(&data, &LIMITS, &mut head) {
                check_in_bounds(&data, &head);
            }
        }

        #[test]
        fn mutated_requests_never_panic_and_stay_in_bounds(
            pos in 0usize..120,
            byte in proptest::sample::select(b" \t\r\n:,;0aA\x00\x7f\xff".to_vec()),
            insert in proptest::prelude::any::<bool>(),
            base in 0usize..3,
        ) {
            let bases: [&[u8]; 3] = [
                b"PUT /b/k?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: x\r\nx: 1\r\n\r\nhello",
                b"PUT /b/k?x=1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\nConnection: x, close\r\nx: 1\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                b"POST /b/k?x=1 HTTP/1.0\r\nHost: h\r\nContent-Length: 5, 5\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\r\nhello",
            ];
            let mut data = bases[base].to_vec();
            let pos = pos.min(data.len() - 1);
            if insert { data.insert(pos, byte) } else { data[pos] = byte }
            let mut head = RequestHead::new();
            if let Ok(ParseStatus::Complete) = parse_request(&data, &LIMITS, &mut head) {
                check_in_bounds(&data, &head);
                // Nothing ambiguous got through: never both framings.
                let cl = head.header(&data, "content-length").is_some();
                let te = head.header(&data, "transfer-encoding").is_some();
                proptest::prop_assert!(!(cl && te));
                // What is written upstream parses again to the same request line and framing.
                let mut out = Vec::new();
                write_request_head(&data, &head, &[], &mut out);
                let mut again = RequestHead::new();
                proptest::prop_assert_eq!(parse_request(&out, &LIMITS, &mut again), Ok(ParseStatus::Complete));
                proptest::prop_assert_eq!(again.head_len, out.len());
                proptest::prop_assert_eq!(&out[again.request_line.clone()], &data[head.request_line.clone()]);
                proptest::prop_assert_eq!(again.framing, head.framing);
            }
        }

        /// Names in any case and order survive write_request_head byte for byte, and every
        /// strict prefix of the head is Partial.
        #[test]
        fn headers_survive_byte_exact(
            fields in proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,12}", "[ -~]{0,20}"), 0..12),
        ) {
            let mut buf = b"GET /Some%2FKey?versionId=AbC HTTP/1.1\r\nHOST: Bucket.S3\r\n".to_vec();
            for (n, v) in &fields {
                let lower = n.to_ascii_lowercase();
                if ["host", "content-length", "transfer-encoding", "connection", "keep-alive",
                    "proxy-connection", "te", "trailer", "upgrade"].contains(&lower.as_str()) {
                    continue;
                }
                buf.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
            }
            buf.extend_from_slice(b"\r\n");
            let h = complete(&buf);
            let mut out = Vec::new();
            write_request_head(&buf, &h, &[], &mut out);
            proptest::prop_assert_eq!(&out, &buf);
            let mut scratch = RequestHead::new();
            for n in 0..buf.len() {
                proptest::prop_assert_eq!(parse_request(&buf[..n], &LIMITS, &mut scratch), Ok(ParseStatus::Partial));
            }
        }
    }
}
