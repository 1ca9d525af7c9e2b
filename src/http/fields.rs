//! Header-field machinery shared by request and response heads: turning `httparse` slices
//! into byte ranges, hop-by-hop marking, the framing-relevant field summary
//! (Content-Length, Transfer-Encoding, Connection, Host, Expect) and the classification of
//! `httparse` errors into [`HeadError`]s. Must not touch I/O; allocates nothing.

use std::ops::Range;

use super::{HeadError, HeaderPos};

/// Byte offset of `part` (a subslice of `buf`) inside `buf`.
pub(crate) fn offset(buf: &[u8], part: &[u8]) -> usize {
    part.as_ptr().addr() - buf.as_ptr().addr()
}

/// Names that are hop-by-hop whatever a `Connection` header says (RFC 9110 §7.6.1, plus the
/// de-facto `Keep-Alive` and `Proxy-Connection`).
const STATIC_HOP_BY_HOP: [&[u8]; 7] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"upgrade",
    b"transfer-encoding",
];

/// Names a `Connection` header may not turn into hop-by-hop fields: dropping them would
/// change the framing (`Content-Length`) or the routing (`Host`) of what is forwarded.
const NOT_NOMINATABLE: [&[u8]; 2] = [b"content-length", b"host"];

/// Most options the `Connection` fields of one head may list (all lines together; empty list
/// elements are not options). Each option is looked up among every field name, so without a
/// bound a 16 KiB head of `a,a,a,…` costs ~100 times the parse of a plain one; real peers
/// list one to four (`close`, `keep-alive`, `upgrade`, `te`).
pub(crate) const MAX_CONNECTION_OPTIONS: usize = 32;

pub(crate) fn is_static_hop_by_hop(name: &[u8]) -> bool {
    STATIC_HOP_BY_HOP
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// `tchar` of RFC 9110 §5.6.2.
pub(crate) fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+'
        | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Elements of a comma-separated list value, OWS-trimmed (empty elements included).
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows)
}

/// Whether the head contains a LF not preceded by CR (httparse accepts those; we do not,
/// since a peer that splits lines differently would see different headers).
pub(crate) fn has_bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

/// Rebuilds `out` from `httparse`'s parsed headers (slices of `buf`), marking hop-by-hop
/// fields. Reuses `out`'s allocation. Fails when `Connection` lists more than
/// [`MAX_CONNECTION_OPTIONS`] options.
pub(crate) fn collect_headers(
    buf: &[u8],
    parsed: &[httparse::Header<'_>],
    out: &mut Vec<HeaderPos>,
) -> Result<(), HeadError> {
    out.clear();
    for h in parsed {
        let name_start = offset(buf, h.name.as_bytes());
        let value_start = offset(buf, h.value);
        let value_end = value_start + h.value.len();
        // httparse only ends a field line at LF, and it has seen it, so it is there.
        let line_end = buf[value_end..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(buf.len(), |p| value_end + p + 1);
        out.push(HeaderPos {
            name: name_start..name_start + h.name.len(),
            value: value_start..value_end,
            line: name_start..line_end,
            hop_by_hop: is_static_hop_by_hop(h.name.as_bytes()),
        });
    }
    mark_connection_listed(buf, out)
}

/// Marks every field named in a `Connection` header's list as hop-by-hop (at most
/// [`MAX_CONNECTION_OPTIONS`] options looked up, else an error).
fn mark_connection_listed(buf: &[u8], headers: &mut [HeaderPos]) -> Result<(), HeadError> {
    let mut options = 0usize;
    for i in 0..headers.len() {
        if !headers[i].is(buf, "connection") {
            continue;
        }
        let value = headers[i].value.clone();
        for token in list_elements(&buf[value]) {
            if token.is_empty() {
                continue;
            }
            options += 1;
            if options > MAX_CONNECTION_OPTIONS {
                return Err(HeadError::Malformed(
                    "Connection lists more than 32 options",
                ));
            }
            if NOT_NOMINATABLE
                .iter()
                .any(|n| token.eq_ignore_ascii_case(n))
            {
                continue;
            }
            for h in headers.iter_mut() {
                if buf[h.name.clone()].eq_ignore_ascii_case(token) {
                    h.hop_by_hop = true;
                }
            }
        }
    }
    Ok(())
}

/// What the Transfer-Encoding fields say, all lines taken together as one list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TransferCoding {
    /// No Transfer-Encoding field.
    Absent,
    /// `chunked` appears exactly once, as the final coding.
    ChunkedLast,
    /// Present, but the final coding is not `chunked` (and chunked appears at most once).
    NotChunkedLast,
}

/// The framing-relevant facts of a head.
#[derive(Clone, Debug)]
pub(crate) struct Summary {
    pub content_length: Option<u64>,
    pub transfer_coding: TransferCoding,
    /// `Connection` lists `close`.
    pub close: bool,
    /// `Connection` lists `keep-alive`.
    pub keep_alive: bool,
    pub host_count: usize,
    pub host: Option<Range<usize>>,
    pub expect_continue: bool,
    pub x_request_id: Option<Range<usize>>,
    /// Transfer-Encoding field lines.
    pub te_lines: u32,
    /// The only Transfer-Encoding line says exactly `chunked` (any case, OWS trimmed).
    pub te_just_chunked: bool,
    /// Content-Length field lines.
    pub cl_lines: u32,
    /// One Content-Length line holding one plain number: it can be sent on as it came.
    pub cl_plain: bool,
    /// An `Upgrade` field is present.
    pub upgrade: bool,
    /// A field whose name contains `_` and reads as a framing, routing or hop-by-hop name
    /// when `_` is taken for `-` (as CGI-style servers do).
    pub underscore_alias: bool,
}

/// Whether `name` contains `_` and, with `_` read as `-` (as CGI-style servers do), names a
/// framing, routing or hop-by-hop field: one of [`STATIC_HOP_BY_HOP`] or
/// [`NOT_NOMINATABLE`]. (Runs for most fields of every head: a length compare rejects nearly
/// all of them.)
fn is_underscore_alias(name: &[u8]) -> bool {
    STATIC_HOP_BY_HOP.iter().chain(&NOT_NOMINATABLE).any(|a| {
        if a.len() != name.len() {
            return false;
        }
        let mut underscore = false;
        a.iter().zip(name).all(|(&a, &n)| {
            underscore |= n == b'_';
            let n = if n == b'_' { b'-' } else { n };
            a == n.to_ascii_lowercase()
        }) && underscore
    })
}

/// Parses a Content-Length value (`1*DIGIT`, or a list of identical such values).
fn content_length_value(value: &[u8], seen: &mut Option<u64>) -> Result<(), HeadError> {
    for elem in list_elements(value) {
        if elem.is_empty() || !elem.iter().all(u8::is_ascii_digit) {
            return Err(HeadError::Smuggling("invalid Content-Length"));
        }
        let mut n: u64 = 0;
        for &d in elem {
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d - b'0')))
                .ok_or(HeadError::Smuggling("Content-Length overflows"))?;
        }
        match *seen {
            Some(prev) if prev != n => {
                return Err(HeadError::Smuggling("conflicting Content-Length values"));
            }
            _ => *seen = Some(n),
        }
    }
    Ok(())
}

/// Folds one Transfer-Encoding line into the running state (`chunked_count`, `last_chunked`).
fn transfer_encoding_value(
    value: &[u8],
    chunked_count: &mut u32,
    last_chunked: &mut bool,
) -> Result<(), HeadError> {
    for elem in list_elements(value) {
        if elem.is_empty() {
            continue; // RFC 9110 §5.6.1.2: empty list elements are ignored
        }
        let (coding, params) = match elem.iter().position(|&b| b == b';') {
            Some(p) => (trim_ows(&elem[..p]), Some(&elem[p..])),
            None => (elem, None),
        };
        if coding.is_empty() || !coding.iter().all(|&b| is_tchar(b)) {
            return Err(HeadError::Malformed("invalid transfer-coding"));
        }
        if coding.eq_ignore_ascii_case(b"chunked") {
            if params.is_some() {
                return Err(HeadError::Smuggling(
                    "chunked transfer-coding with parameters",
                ));
            }
            *chunked_count += 1;
            if *chunked_count > 1 {
                return Err(HeadError::Smuggling("chunked applied more than once"));
            }
            *last_chunked = true;
        } else {
            *last_chunked = false;
        }
    }
    Ok(())
}

/// One pass over the fields collecting what framing, keep-alive and routing need.
/// Fails on an invalid or conflicting Content-Length and on an invalid Transfer-Encoding.
pub(crate) fn summarize(buf: &[u8], headers: &[HeaderPos]) -> Result<Summary, HeadError> {
    let mut s = Summary {
        content_length: None,
        transfer_coding: TransferCoding::Absent,
        close: false,
        keep_alive: false,
        host_count: 0,
        host: None,
        expect_continue: false,
        x_request_id: None,
        te_lines: 0,
        te_just_chunked: false,
        cl_lines: 0,
        cl_plain: false,
        upgrade: false,
        underscore_alias: false,
    };
    let mut te_present = false;
    let mut chunked_count = 0u32;
    let mut last_chunked = false;
    for h in headers {
        let name = &buf[h.name.clone()];
        let value = &buf[h.value.clone()];
        if name.eq_ignore_ascii_case(b"content-length") {
            content_length_value(value, &mut s.content_length)?;
            s.cl_lines += 1;
            s.cl_plain = s.cl_lines == 1 && value.iter().all(u8::is_ascii_digit);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te_present = true;
            s.te_lines += 1;
            s.te_just_chunked = s.te_lines == 1 && value.eq_ignore_ascii_case(b"chunked");
            transfer_encoding_value(value, &mut chunked_count, &mut last_chunked)?;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            s.upgrade = true;
        } else if is_underscore_alias(name) {
            s.underscore_alias = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in list_elements(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    s.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    s.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            s.host_count += 1;
            if s.host.is_none() {
                s.host = Some(h.value.clone());
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            if value.eq_ignore_ascii_case(b"100-continue") {
                s.expect_continue = true;
            }
        } else if name.eq_ignore_ascii_case(b"x-request-id") && s.x_request_id.is_none() {
            s.x_request_id = Some(h.value.clone());
        }
    }
    if te_present {
        s.transfer_coding = if last_chunked {
            TransferCoding::ChunkedLast
        } else {
            TransferCoding::NotChunkedLast
        };
    }
    Ok(s)
}

/// The first line of `buf` after any leading empty lines, without its line ending.
fn first_line(buf: &[u8]) -> &[u8] {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let rest = &buf[start..];
    let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let line = &rest[..end];
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `HTTP/<digit>` optionally followed by `.<digit>`: a version we understand the shape of
/// but do not speak → 505 rather than 400.
fn looks_like_version(token: &[u8]) -> bool {
    match token {
        [b'H', b'T', b'T', b'P', b'/', d] => d.is_ascii_digit(),
        [b'H', b'T', b'T', b'P', b'/', d, b'.', e] => d.is_ascii_digit() && e.is_ascii_digit(),
        _ => false,
    }
}

/// Finds the header-line shape httparse refused: obs-fold or whitespace before the colon.
fn classify_header_name_error(buf: &[u8]) -> HeadError {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    // Skip the start line.
    let mut lines = buf[start..].split(|&b| b == b'\n').skip(1);
    for line in lines.by_ref() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if matches!(line[0], b' ' | b'\t') {
            return HeadError::Smuggling("obs-fold (header line starting with whitespace)");
        }
        let name_len = line.iter().take_while(|&&b| is_tchar(b)).count();
        if matches!(line.get(name_len), Some(b' ' | b'\t')) {
            return HeadError::Smuggling("whitespace between field name and colon");
        }
        if line.get(name_len) != Some(&b':') && name_len < line.len() {
            return HeadError::Malformed("invalid header field name");
        }
    }
    HeadError::Malformed("invalid header field name")
}

/// Maps an `httparse` error on a request head to a [`HeadError`] (error path only).
pub(crate) fn classify_request_error(buf: &[u8], e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::HeaderName => classify_header_name_error(buf),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header field value"),
        httparse::Error::Version | httparse::Error::NewLine => {
            let line = first_line(buf);
            let token = line.rsplit(|&b| b == b' ').next().unwrap_or(b"");
            if e == httparse::Error::Version && looks_like_version(token) {
                HeadError::Version
            } else if e == httparse::Error::Version {
                HeadError::Malformed("invalid HTTP version")
            } else {
                HeadError::Malformed("invalid line ending")
            }
        }
        httparse::Error::Token => {
            let line = first_line(buf);
            let method_len = line.iter().take_while(|&&b| is_tchar(b)).count();
            if line.get(method_len..method_len + 2) == Some(b"  ") {
                HeadError::Malformed("empty request-target")
            } else {
                HeadError::Malformed("invalid request line")
            }
        }
        httparse::Error::Status => HeadError::Malformed("invalid request line"),
    }
}

/// Maps an `httparse` error on a response head to a [`HeadError`] (error path only).
pub(crate) fn classify_response_error(buf: &[u8], e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::HeaderName => classify_header_name_error(buf),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header field value"),
        httparse::Error::Version => {
            let line = first_line(buf);
            let token = line.split(|&b| b == b' ').next().unwrap_or(b"");
            if looks_like_version(token) {
                HeadError::Version
            } else {
                HeadError::Malformed("invalid HTTP version")
            }
        }
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
        httparse::Error::Status | httparse::Error::Token => {
            HeadError::Malformed("invalid status line")
        }
    }
}

/// Fills `out` with the first names of a `;`-separated SigV4 `SignedHeaders` list (OWS
/// trimmed), at most `out.len()` of them; returns how many.
pub(crate) fn signed_names<'a>(list: &'a [u8], out: &mut [&'a [u8]]) -> usize {
    let mut n = 0;
    for (slot, name) in out.iter_mut().zip(list.split(|&b| b == b';')) {
        *slot = trim_ows(name);
        n += 1;
    }
    n
}

/// Appends `name: value\r\n`.
pub(crate) fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends the decimal digits of `n` without allocating.
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ows_trim_and_lists() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        let v: Vec<&[u8]> = list_elements(b"a, b ,,c").collect();
        assert_eq!(v, vec![&b"a"[..], b"b", b"", b"c"]);
    }

    #[test]
    fn bare_lf_detection() {
        assert!(!has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(has_bare_lf(b"GET / HTTP/1.1\nHost: a\r\n\r\n"));
        assert!(has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\r\n\n"));
        assert!(has_bare_lf(b"\n"));
        // Past the first SIMD blocks, and a CR that is not right before its LF.
        let long = format!(
            "GET / HTTP/1.1\r\n{}X: 1\r\r\n",
            "Name: value\r\n".repeat(20)
        );
        assert!(!has_bare_lf(long.as_bytes()));
        assert!(has_bare_lf(format!("{long}Y: 2\r \n").as_bytes()));
    }

    proptest::proptest! {
        /// The same answer as looking at every byte and the one before it.
        #[test]
        fn bare_lf_matches_bytewise(
            head in proptest::collection::vec(proptest::prop_oneof![
                4 => proptest::prelude::Just(b'a'), 2 => proptest::prelude::Just(b'\r'),
                2 => proptest::prelude::Just(b'\n'), 1 => proptest::prelude::any::<u8>()], 0..200)
        ) {
            let bytewise = head.iter().enumerate().any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'));
            proptest::prop_assert_eq!(has_bare_lf(&head), bytewise);
        }
    }

    #[test]
    fn decimal() {
        for n in [0u64, 7, 10, 1234567890, u64::MAX] {
            let mut v = Vec::new();
            push_decimal(&mut v, n);
            assert_eq!(v, n.to_string().as_bytes());
        }
    }

    #[test]
    fn signed_list() {
        let l = b"host; transfer-encoding;x-amz-date";
        let mut out = [&b""[..]; 4];
        assert_eq!(signed_names(l, &mut out), 3);
        assert_eq!(
            out[..3],
            [&b"host"[..], b"transfer-encoding", b"x-amz-date"]
        );
        let mut two = [&b""[..]; 2];
        assert_eq!(signed_names(l, &mut two), 2, "no more than out holds");
        assert_eq!(signed_names(b"", &mut out), 1, "one empty name");
    }

    #[test]
    fn underscore_aliases_of_framing_names() {
        for n in [
            &b"Transfer_Encoding"[..],
            b"content_length",
            b"CONTENT_LENGTH",
            b"Proxy_Connection",
            b"keep_alive",
        ] {
            assert!(is_underscore_alias(n), "{}", String::from_utf8_lossy(n));
        }
        for n in [
            &b"x_amz_meta"[..],
            b"Content-Length",
            b"content_lengthx",
            b"te",
            b"t_e",
        ] {
            assert!(!is_underscore_alias(n), "{}", String::from_utf8_lossy(n));
        }
    }

    #[test]
    fn versions() {
        assert!(looks_like_version(b"HTTP/2"));
        assert!(looks_like_version(b"HTTP/1.2"));
        assert!(!looks_like_version(b"HTTP/x.1"));
        assert!(!looks_like_version(b"FOO"));
    }
}
