//! S3-style error responses written by the proxy itself (SlowDown, 4xx for bad heads,
//! 502/503/504 for upstream failures): status line, `Content-Type: application/xml`,
//! Content-Length, caller-supplied headers, and the XML `<Error>` body with every field
//! escaped. Must not decide which error applies or touch I/O; it only appends bytes.
//! Also reads one thing back: [`auth_failure_code`], whether an upstream error body says
//! the request was not authenticated (bounded, pure).

use super::fields::{push_decimal, push_header};

/// The fields of an S3 `<Error>` body.
#[derive(Clone, Copy, Debug)]
pub struct ErrorBody<'a> {
    pub code: &'a str,
    pub message: &'a str,
    /// The resource (usually the request path, as sent).
    pub resource: &'a [u8],
    pub request_id: &'a str,
    /// Included as `<ApiKey>` when present.
    pub api_key: Option<&'a [u8]>,
}

/// The reason phrase for a status code (a class name for unlisted codes).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => match status / 100 {
            1 => "Informational",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Unknown",
        },
    }
}

const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// Emits `text` XML-escaped through `emit`: `& < > " '` become entities; bytes that are
/// not valid UTF-8 and control characters (C0, DEL, C1) become U+FFFD. ASCII is handled a
/// byte at a time (runs of plain bytes emitted whole); from the first non-ASCII byte on,
/// the rest goes through [`escape_utf8`].
fn escape(text: &[u8], emit: &mut impl FnMut(&[u8])) {
    let mut run_start = 0;
    for (i, &b) in text.iter().enumerate() {
        let replacement: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'"' => b"&quot;",
            b'\'' => b"&apos;",
            0x20..=0x7e => continue,
            0x00..=0x1f | 0x7f => REPLACEMENT,
            0x80.. => {
                emit(&text[run_start..i]);
                return escape_utf8(&text[i..], emit);
            }
        };
        emit(&text[run_start..i]);
        emit(replacement);
        run_start = i + 1;
    }
    emit(&text[run_start..]);
}

/// [`escape`] for text that is not plain ASCII: decoded chunk by chunk, invalid sequences
/// and control characters replaced.
fn escape_utf8(text: &[u8], emit: &mut impl FnMut(&[u8])) {
    for chunk in text.utf8_chunks() {
        let valid = chunk.valid();
        let mut run_start = 0;
        for (i, c) in valid.char_indices() {
            let replacement: &[u8] = match c {
                '&' => b"&amp;",
                '<' => b"&lt;",
                '>' => b"&gt;",
                '"' => b"&quot;",
                '\'' => b"&apos;",
                c if c.is_control() => REPLACEMENT,
                _ => continue,
            };
            emit(&valid.as_bytes()[run_start..i]);
            emit(replacement);
            run_start = i + c.len_utf8();
        }
        emit(&valid.as_bytes()[run_start..]);
        if !chunk.invalid().is_empty() {
            emit(REPLACEMENT);
        }
    }
}

fn write_body(body: &ErrorBody<'_>, emit: &mut impl FnMut(&[u8])) {
    emit(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>");
    escape(body.code.as_bytes(), emit);
    emit(b"</Code><Message>");
    escape(body.message.as_bytes(), emit);
    emit(b"</Message><Resource>");
    escape(body.resource, emit);
    emit(b"</Resource><RequestId>");
    escape(body.request_id.as_bytes(), emit);
    emit(b"</RequestId>");
    if let Some(key) = body.api_key {
        emit(b"<ApiKey>");
        escape(key, emit);
        emit(b"</ApiKey>");
    }
    emit(b"</Error>");
}

/// Appends a full error response to `out`: `HTTP/1.1 {status} {reason}`,
/// `Content-Type: application/xml`, `Content-Length`, `extra` headers, `Connection: close`
/// if `close`, CRLF, then the XML body (omitted if `head_only`; Content-Length is still the
/// body's, as a HEAD response must say).
pub fn write_error_response(
    status: u16,
    body: &ErrorBody<'_>,
    extra: &[(&[u8], &[u8])],
    close: bool,
    head_only: bool,
    out: &mut Vec<u8>,
) {
    // The body is escaped once, at the end of `out`; the head (whose Content-Length is the
    // escaped length) is written after it, then rotated in front of it.
    let start = out.len();
    write_body(body, &mut |s: &[u8]| out.extend_from_slice(s));
    let body_len = out.len() - start;
    write_head(status, body_len, extra, close, out);
    head_to_front(&mut out[start..], body_len);
    if head_only {
        out.truncate(out.len() - body_len);
    }
}

/// `buf` is a body (`body_len` bytes) then a head: puts the head first. Three copies through
/// a stack buffer when the head fits in it (`rotate_left` moves byte cycles at these sizes).
fn head_to_front(buf: &mut [u8], body_len: usize) {
    let head_len = buf.len() - body_len;
    let mut tmp = [0u8; 2048];
    if head_len > tmp.len() {
        return buf.rotate_left(body_len);
    }
    tmp[..head_len].copy_from_slice(&buf[body_len..]);
    buf.copy_within(..body_len, head_len);
    buf[..head_len].copy_from_slice(&tmp[..head_len]);
}

fn write_head(
    status: u16,
    body_len: usize,
    extra: &[(&[u8], &[u8])],
    close: bool,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: application/xml\r\nContent-Length: ");
    push_decimal(out, body_len as u64);
    out.extend_from_slice(b"\r\n");
    for (name, value) in extra {
        push_header(out, name, value);
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// An upstream's "this request is not authenticated" answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    SignatureDoesNotMatch,
    InvalidAccessKeyId,
    AuthorizationHeaderMalformed,
    RequestTimeTooSkewed,
    ExpiredToken,
}

/// Bytes of an error body examined at most by [`auth_failure_code`].
pub const AUTH_FAILURE_SCAN: usize = 4096;

/// Whether `body` (the start of an upstream error response) is an S3 `<Error>` whose
/// `<Code>` says the request was not authenticated: one of the [`AuthFailure`] codes
/// (AWS, MinIO, s3s), or Garage's `AccessDenied` with the message of a bad signature,
/// an unknown key or an expired key (Garage has no distinct codes for these). Reads at
/// most [`AUTH_FAILURE_SCAN`] bytes; never panics.
pub fn auth_failure_code(body: &[u8]) -> Option<AuthFailure> {
    let body = &body[..body.len().min(AUTH_FAILURE_SCAN)];
    let after_root = &body[find(body, b"<Error>")? + 7..];
    let code = trim_xml(element(after_root, b"Code")?);
    let failure = match code {
        b"SignatureDoesNotMatch" => AuthFailure::SignatureDoesNotMatch,
        b"InvalidAccessKeyId" => AuthFailure::InvalidAccessKeyId,
        b"AuthorizationHeaderMalformed" => AuthFailure::AuthorizationHeaderMalformed,
        b"RequestTimeTooSkewed" => AuthFailure::RequestTimeTooSkewed,
        b"ExpiredToken" => AuthFailure::ExpiredToken,
        b"AccessDenied" => return garage_auth_failure(element(after_root, b"Message")?),
        _ => return None,
    };
    Some(failure)
}

/// Garage 2.x answers authentication failures with 403 `AccessDenied` and one of these
/// messages (`garage_api_common::signature::payload::verify_v4`); any other
/// `AccessDenied` is an authorization failure of an authenticated key.
fn garage_auth_failure(message: &[u8]) -> Option<AuthFailure> {
    let m = trim_xml(message).strip_prefix(b"Forbidden: ")?;
    if m == b"Invalid signature" {
        Some(AuthFailure::SignatureDoesNotMatch)
    } else if m.starts_with(b"No such key: ") {
        Some(AuthFailure::InvalidAccessKeyId)
    } else if m.starts_with(b"Access key ") && m.ends_with(b" has expired") {
        Some(AuthFailure::ExpiredToken)
    } else {
        None
    }
}

/// The text of the first `<name>…</name>` in `xml`.
fn element<'a>(xml: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut open = [0u8; 16];
    let n = name.len();
    if n + 3 > open.len() {
        return None;
    }
    open[0] = b'<';
    open[1..=n].copy_from_slice(name);
    open[n + 1] = b'>';
    let start = find(xml, &open[..n + 2])? + n + 2;
    open[1] = b'/';
    open[2..n + 2].copy_from_slice(name);
    open[n + 2] = b'>';
    let len = find(&xml[start..], &open[..n + 3])?;
    Some(&xml[start..start + len])
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim_xml(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn escaped(text: &[u8]) -> String {
        let mut v = Vec::new();
        escape(text, &mut |s: &[u8]| v.extend_from_slice(s));
        String::from_utf8(v).expect("escape output is UTF-8")
    }

    #[test]
    fn escaping() {
        assert_eq!(escaped(b"a&b<c>d\"e'f"), "a&amp;b&lt;c&gt;d&quot;e&apos;f");
        assert_eq!(escaped(b"plain/path-\xc3\xa9"), "plain/path-\u{e9}");
        assert_eq!(escaped(b"bad\xffbyte"), "bad\u{FFFD}byte");
        assert_eq!(escaped(b"\xe2\x82"), "\u{FFFD}");
        assert_eq!(
            escaped(b"ctl\x00\x1b\r\n\t\x7f"),
            "ctl\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}"
        );
        assert_eq!(escaped("c1\u{85}".as_bytes()), "c1\u{FFFD}");
        assert_eq!(escaped(b"]]><x/>"), "]]&gt;&lt;x/&gt;");
        assert_eq!(escaped(b""), "");
        // ASCII entities after the first non-ASCII byte (the UTF-8 path).
        assert_eq!(
            escaped("\u{e9}&<\x01".as_bytes()),
            "\u{e9}&amp;&lt;\u{FFFD}"
        );
    }

    proptest::proptest! {
        /// The ASCII fast path writes what the UTF-8 path writes, for any bytes.
        #[test]
        fn ascii_path_matches_utf8_path(
            // Mostly ASCII, so that long ASCII runs come before (or without) other bytes.
            text in proptest::collection::vec(
                proptest::prop_oneof![6 => 0u8..0x80, 1 => proptest::prelude::any::<u8>()],
                0..64,
            )
        ) {
            let mut slow = Vec::new();
            escape_utf8(&text, &mut |s: &[u8]| slow.extend_from_slice(s));
            proptest::prop_assert_eq!(escaped(&text).into_bytes(), slow);
        }
    }

    fn split(resp: &[u8]) -> (&str, &[u8]) {
        let end = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        (std::str::from_utf8(&resp[..end]).unwrap(), &resp[end..])
    }

    #[test]
    fn full_response() {
        let body = ErrorBody {
            code: "SlowDown",
            message: "Rate limit exceeded for tier premium (1000 requests per minute)",
            resource: b"/bucket/a&b<'\"\xff",
            request_id: "r-1",
            api_key: Some(b"AKIA<x>"),
        };
        let mut out = Vec::new();
        write_error_response(429, &body, &[(b"Retry-After", b"3")], true, false, &mut out);
        let (head, xml) = split(&out);
        let xml_expected = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Rate limit exceeded for tier premium (1000 requests per minute)</Message><Resource>/bucket/a&amp;b&lt;&apos;&quot;\u{FFFD}</Resource><RequestId>r-1</RequestId><ApiKey>AKIA&lt;x&gt;</ApiKey></Error>";
        assert_eq!(std::str::from_utf8(xml).unwrap(), xml_expected);
        assert_eq!(
            head,
            format!(
                "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nRetry-After: 3\r\nConnection: close\r\n\r\n",
                xml_expected.len()
            )
        );
        // The result parses as a response whose body is exactly Content-Length long.
        let mut h = crate::http::ResponseHead::new();
        let limits = crate::http::HeadLimits {
            max_head_bytes: 4096,
            max_headers: 16,
        };
        crate::http::parse_response(&out, &limits, false, &mut h).unwrap();
        assert_eq!(
            h.framing,
            crate::http::BodyFraming::Length((out.len() - h.head_len) as u64)
        );
    }

    #[test]
    fn head_only_and_no_api_key() {
        let body = ErrorBody {
            code: "ServiceUnavailable",
            message: "no healthy upstream",
            resource: b"/b",
            request_id: "id",
            api_key: None,
        };
        let mut full = Vec::new();
        write_error_response(503, &body, &[], false, false, &mut full);
        let mut head = Vec::new();
        write_error_response(503, &body, &[], false, true, &mut head);
        let (full_head, xml) = split(&full);
        assert_eq!(full_head.as_bytes(), &head[..]);
        assert!(!full_head.contains("Connection"));
        assert!(full_head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(full_head.contains(&format!("Content-Length: {}\r\n", xml.len())));
        assert!(!std::str::from_utf8(xml).unwrap().contains("ApiKey"));
        // A head longer than the stack buffer (many extra headers) is moved in front too.
        let long = vec![(&b"x-long"[..], &[b'v'; 3000][..])];
        let mut big = Vec::new();
        write_error_response(503, &body, &long, false, false, &mut big);
        let (big_head, big_xml) = split(&big);
        assert!(big_head.starts_with("HTTP/1.1 503 ") && big_head.len() > 3000);
        assert_eq!(big_xml, xml);
        // Appended after what `out` held (responses queued before it), which stays as it was.
        for head_only in [false, true] {
            let mut queued = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
            write_error_response(503, &body, &[], false, head_only, &mut queued);
            let alone = if head_only { &head } else { &full };
            assert_eq!(&queued[..19], b"HTTP/1.1 200 OK\r\n\r\n");
            assert_eq!(&queued[19..], &alone[..]);
        }
    }

    #[test]
    fn reasons() {
        assert_eq!(reason_phrase(429), "Too Many Requests");
        assert_eq!(reason_phrase(504), "Gateway Timeout");
        assert_eq!(reason_phrase(599), "Server Error");
        assert_eq!(reason_phrase(999), "Unknown");
    }

    #[test]
    fn auth_failures_of_real_stores_are_recognised() {
        use AuthFailure::*;
        // MinIO (cmd/api-errors.go shapes), with an XML declaration and a newline.
        let minio = |code: &str, msg: &str| {
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{msg}</Message><Key>o.bin</Key><BucketName>b</BucketName><Resource>/b/o.bin</Resource><RequestId>17F1C0B1E9D0A2B3</RequestId><HostId>dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8</HostId></Error>"
            )
        };
        let cases = [
            (minio("SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your key and signing method."), Some(SignatureDoesNotMatch)),
            (minio("InvalidAccessKeyId", "The Access Key Id you provided does not exist in our records."), Some(InvalidAccessKeyId)),
            (minio("AuthorizationHeaderMalformed", "The authorization header is malformed; the region is wrong; expecting &#39;us-east-1&#39;."), Some(AuthorizationHeaderMalformed)),
            (minio("RequestTimeTooSkewed", "The difference between the request time and the server&#39;s time is too large."), Some(RequestTimeTooSkewed)),
            (minio("ExpiredToken", "The provided token has expired."), Some(ExpiredToken)),
            (minio("AccessDenied", "Access Denied."), None),
            (minio("NoSuchKey", "The specified key does not exist."), None),
            // Garage 2.5 (garage_api_s3 xml::Error: Code, Message, Resource, Region).
            ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Forbidden: Invalid signature</Message><Resource>/b/o.bin</Resource><Region>garage</Region></Error>".into(), Some(SignatureDoesNotMatch)),
            ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Forbidden: No such key: GK31c2f218a2e44f485b94239e</Message><Resource>/b/o.bin</Resource><Region>garage</Region></Error>".into(), Some(InvalidAccessKeyId)),
            ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Forbidden: Access key GK31c2f218a2e44f485b94239e has expired</Message><Resource>/b</Resource><Region>garage</Region></Error>".into(), Some(ExpiredToken)),
            ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Forbidden: Operation is not allowed for this key.</Message><Resource>/b</Resource><Region>garage</Region></Error>".into(), None),
            ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AuthorizationHeaderMalformed</Code><Message>Authorization header malformed, unexpected scope: 'x', expected: 'y'</Message><Resource>/b</Resource><Region>garage</Region></Error>".into(), Some(AuthorizationHeaderMalformed)),
            // AWS S3, pretty-printed, with the long StringToSign fields after the code.
            (format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n  <Code> SignatureDoesNotMatch </Code>\n  <Message>The request signature we calculated does not match the signature you provided.</Message>\n  <AWSAccessKeyId>AKIAIOSFODNN7EXAMPLE</AWSAccessKeyId>\n  <StringToSign>{}</StringToSign>\n</Error>", "41 57 ".repeat(400)), Some(SignatureDoesNotMatch)),
        ];
        for (body, want) in &cases {
            assert_eq!(auth_failure_code(body.as_bytes()), *want, "{body}");
        }
    }

    #[test]
    fn auth_failure_needs_an_error_document_within_the_bound() {
        assert_eq!(auth_failure_code(b""), None);
        assert_eq!(
            auth_failure_code(b"<Code>SignatureDoesNotMatch</Code>"),
            None,
            "no <Error> root"
        );
        assert_eq!(
            auth_failure_code(b"<Error><Code>SignatureDoesNotMatch"),
            None,
            "unterminated"
        );
        assert_eq!(
            auth_failure_code(b"<Error><Code>signaturedoesnotmatch</Code></Error>"),
            None
        );
        assert_eq!(auth_failure_code(b"<html>403 Forbidden</html>"), None);
        let late = format!(
            "<Error><Message>{}</Message><Code>ExpiredToken</Code></Error>",
            "x".repeat(AUTH_FAILURE_SCAN)
        );
        assert_eq!(auth_failure_code(late.as_bytes()), None, "past the bound");
        let early = format!(
            "<Error><Code>ExpiredToken</Code><Message>{}</Message></Error>",
            "x".repeat(10 * AUTH_FAILURE_SCAN)
        );
        assert_eq!(
            auth_failure_code(early.as_bytes()),
            Some(AuthFailure::ExpiredToken)
        );
    }

    proptest! {
        #[test]
        fn auth_failure_code_never_panics(
            prefix in prop::collection::vec(any::<u8>(), 0..64),
            mid in prop::sample::select(vec!["<Error>", "<Code>", "</Code>", "<Message>", "</Message>", "AccessDenied", "Forbidden: ", "ExpiredToken", ""]),
            tail in prop::collection::vec(any::<u8>(), 0..64),
            cut in 0usize..200,
        ) {
            let mut body = prefix;
            body.extend_from_slice(b"<Error><Code>");
            body.extend_from_slice(mid.as_bytes());
            body.extend_from_slice(&tail);
            body.truncate(cut);
            let _ = auth_failure_code(&body);
        }
    }
}
