//! The admin API's request reading, pure and bounded: a request head → [`AdminRequest`],
//! query parameters, the `Host` allow-list and the constant-time bearer-token check.
//! Never panics on any input (property-tested); no I/O.

use std::net::{IpAddr, SocketAddr};

use crate::limit::addr_subject;

/// Max bytes of an admin request head.
pub const MAX_HEAD: usize = 8192;
/// Max header lines of an admin request.
const MAX_HEADERS: usize = 32;

/// The parts of an admin request the routes need (raw bytes, nothing decoded yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminRequest {
    pub method: String,
    /// The target up to `?`.
    pub path: Vec<u8>,
    /// The target after `?` (empty if none).
    pub query: Vec<u8>,
    pub host: Option<Vec<u8>>,
    pub authorization: Option<Vec<u8>>,
    /// `Accept` names `text/html`.
    pub accept_html: bool,
}

/// Outcome of [`parse_head`].
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed (and may still come: the buffer is below [`MAX_HEAD`]).
    Partial,
    Complete(AdminRequest),
    /// Not an HTTP/1.x request head, or too large.
    Bad,
}

/// Parses the request head at the start of `buf`.
pub fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Parsed::Partial,
        _ => return Parsed::Bad,
    }
    let target = req.path.unwrap_or("/").as_bytes();
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => (target, &target[target.len()..]),
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.to_vec())
    };
    let accept_html = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("accept") && h.value.windows(9).any(|w| w == b"text/html")
    });
    Parsed::Complete(AdminRequest {
        method: req.method.unwrap_or("GET").to_string(),
        path: path.to_vec(),
        query: query.to_vec(),
        host: header("host"),
        authorization: header("authorization"),
        accept_html,
    })
}

/// Percent-decodes `v` (`+` is a space; an invalid escape is kept as it is).
pub fn pct_decode(v: &[u8]) -> Vec<u8> {
    crate::http::pct::PercentDecode::query(v).collect()
}

/// Every `(name, value)` of a query string, both percent-decoded.
pub fn query_pairs(query: &[u8]) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
    query
        .split(|&b| b == b'&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.iter().position(|&b| b == b'=') {
            Some(e) => (pct_decode(&kv[..e]), pct_decode(&kv[e + 1..])),
            None => (pct_decode(kv), Vec::new()),
        })
}

/// The decoded value of the first parameter `name`.
pub fn query_param(query: &[u8], name: &str) -> Option<Vec<u8>> {
    query_pairs(query).find_map(|(k, v)| (k == name.as_bytes()).then_some(v))
}

/// The table subject a query names: `Ok(None)` for an empty query, `Ok(Some)` for
/// exactly one `key=K` (non-empty) or `addr=IP` (valid), `Err` for anything else —
/// so a typo never widens an operation (a bad subject must not clear everything). An IPv6
/// `addr` names the network it is counted under (`v6_prefix` bits, `limits.ipv6_prefix`).
pub fn subject_query(query: &[u8], v6_prefix: u8) -> Result<Option<Vec<u8>>, &'static str> {
    let mut pairs = query_pairs(query);
    let Some((name, value)) = pairs.next() else {
        return Ok(None);
    };
    if pairs.next().is_some() {
        return Err("give exactly one of ?key=K or ?addr=IP");
    }
    match name.as_slice() {
        b"key" if !value.is_empty() => Ok(Some(value)),
        b"addr" => std::str::from_utf8(&value)
            .ok()
            .and_then(|a| a.parse::<IpAddr>().ok())
            .map(|ip| Some(addr_subject(ip, v6_prefix).to_vec()))
            .ok_or("addr is not an IP address"),
        _ => Err("give exactly one of ?key=K or ?addr=IP"),
    }
}

/// Whether `host` (a `Host` header value) names this admin listener: its own address
/// (`local`, the address the client connected to), `localhost`, `127.0.0.1` or
/// `[::1]`, each with no port or `local`'s port, or one of `extra` (exact, case-
/// insensitive). A request without `Host` is refused. This is what stops a web page
/// that rebinds its own DNS name to 127.0.0.1 from reading or clearing the tables.
pub fn host_allowed(host: Option<&[u8]>, local: SocketAddr, extra: &[String]) -> bool {
    let Some(host) = host.map(|h| h.trim_ascii()) else {
        return false;
    };
    if extra
        .iter()
        .any(|e| e.as_bytes().eq_ignore_ascii_case(host))
    {
        return true;
    }
    let (name, port) = split_port(host);
    if port.is_some_and(|p| p != local.port()) {
        return false;
    }
    let own = match local.ip() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    [
        b"localhost".as_slice(),
        b"127.0.0.1",
        b"[::1]",
        own.as_bytes(),
    ]
    .iter()
    .any(|n| n.eq_ignore_ascii_case(name))
}

/// `name[:port]` → (name, port); a bad port is `Some(0)` (never a listener's port).
fn split_port(host: &[u8]) -> (&[u8], Option<u16>) {
    let colon = match host.iter().rposition(|&b| b == b':') {
        Some(c) if !host[c..].contains(&b']') => c,
        _ => return (host, None),
    };
    let port = std::str::from_utf8(&host[colon + 1..])
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    (&host[..colon], Some(port))
}

/// Whether `authorization` is `Bearer <token>`, compared in constant time (for a given
/// length: only the length of the token can leak).
pub fn token_matches(authorization: Option<&[u8]>, token: &str) -> bool {
    let Some(given) = authorization.and_then(|a| a.strip_prefix(b"Bearer ")) else {
        return false;
    };
    let given = given.trim_ascii();
    let want = token.as_bytes();
    let diff = given
        .iter()
        .zip(want)
        .fold(0u8, |acc, (a, b)| acc | std::hint::black_box(a ^ b));
    given.len() == want.len() && diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn local() -> SocketAddr {
        "127.0.0.1:8404".parse().unwrap()
    }

    #[test]
    fn query_params_are_percent_decoded() {
        assert_eq!(query_param(b"a=1&key=AK%2FB+C", "key").unwrap(), b"AK/B C");
        assert_eq!(query_param(b"n=5", "n").unwrap(), b"5");
        assert!(query_param(b"n=5", "key").is_none());
        assert_eq!(pct_decode(b"%zz%41"), b"%zzA");
        // `%` then a non-ASCII byte, or at the very end: kept, no panic (issue 11).
        assert_eq!(pct_decode("%ÿ".as_bytes()), "%ÿ".as_bytes());
        assert_eq!(pct_decode(b"%4"), b"%4");
        assert_eq!(pct_decode(b"a%41"), b"aA");
    }

    #[test]
    fn subjects_must_parse() {
        assert_eq!(subject_query(b"", 64), Ok(None));
        assert_eq!(subject_query(b"key=AKIA1", 64), Ok(Some(b"AKIA1".to_vec())));
        assert_eq!(
            subject_query(b"addr=10.0.0.1", 64),
            Ok(Some(addr_subject("10.0.0.1".parse().unwrap(), 64).to_vec()))
        );
        for bad in [
            "addr=10.0.0.300",
            "addr=",
            "key=",
            "kee=AKIA",
            "key=A&addr=10.0.0.1",
            "key=A&x=1",
            "all",
        ] {
            assert!(subject_query(bad.as_bytes(), 64).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        let ok = |h: &str| host_allowed(Some(h.as_bytes()), local(), &[]);
        for h in [
            "127.0.0.1:8404",
            "127.0.0.1",
            "localhost",
            "LocalHost:8404",
            "[::1]:8404",
            "[::1]",
            " localhost ",
        ] {
            assert!(ok(h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:8404",
            "localhost:8405",
            "localhost:",
            "localhost:x",
            "127.0.0.1.evil.example",
            "admin",
            "",
            "[::1]:80",
        ] {
            assert!(!ok(h), "{h}");
        }
        assert!(!host_allowed(None, local(), &[]));
        let v6: SocketAddr = "[2001:db8::5]:9000".parse().unwrap();
        assert!(host_allowed(Some(b"[2001:db8::5]:9000"), v6, &[]));
        assert!(!host_allowed(Some(b"[2001:db8::6]:9000"), v6, &[]));
        let extra = vec!["admin.internal:8404".to_string()];
        assert!(host_allowed(Some(b"Admin.Internal:8404"), local(), &extra));
    }

    #[test]
    fn tokens() {
        assert!(token_matches(Some(b"Bearer s3cret"), "s3cret"));
        assert!(token_matches(Some(b"Bearer s3cret "), "s3cret"));
        assert!(!token_matches(Some(b"Bearer s3cre"), "s3cret"));
        assert!(!token_matches(Some(b"Bearer s3cretx"), "s3cret"));
        assert!(!token_matches(Some(b"Bearer S3cret"), "s3cret"));
        assert!(!token_matches(Some(b"s3cret"), "s3cret"));
        assert!(!token_matches(None, "s3cret"));
    }

    #[test]
    fn heads() {
        let r = "GET /table?key=%C3%BF HTTP/1.1\r\nHost: localhost\r\nAccept: text/html\r\nAuthorization: Bearer t\r\n\r\n";
        let Parsed::Complete(req) = parse_head(r.as_bytes()) else {
            panic!("not parsed");
        };
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, b"/table");
        assert_eq!(req.query, b"key=%C3%BF");
        assert_eq!(req.host.as_deref(), Some(b"localhost".as_slice()));
        assert_eq!(req.authorization.as_deref(), Some(b"Bearer t".as_slice()));
        assert!(req.accept_html);
        assert_eq!(parse_head(b"GET /health HTTP/1.1\r\nHo"), Parsed::Partial);
        assert_eq!(parse_head(b"\x16\x03\x01\x02\x00"), Parsed::Bad);
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(parse_head(big.as_bytes()), Parsed::Bad);
        let many: String = (0..40).map(|i| format!("X{i}: 1\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_head(many.as_bytes()), Parsed::Bad);
    }

    fn valid_request() -> impl Strategy<Value = (String, String, String, String)> {
        (
            prop::sample::select(vec!["GET", "POST", "PUT", "DELETE"]),
            "/[a-z/]{0,20}",
            "([a-z]{1,5}=[A-Za-z0-9%+.:]{0,10}(&[a-z]{1,5}=[A-Za-z0-9%.:]{0,10}){0,3})?",
            "[a-z0-9.:-]{1,30}",
        )
            .prop_map(|(m, p, q, h)| (m.to_string(), p, q, h))
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_head(&buf);
            let _ = pct_decode(&buf);
            let _ = subject_query(&buf, 64);
            let _ = host_allowed(Some(&buf), local(), &[]);
            let _ = token_matches(Some(&buf), "token");
        }

        #[test]
        fn a_valid_request_always_parses((method, path, query, host) in valid_request(), cut in 0usize..400) {
            let target = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
            let raw = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: t\r\n\r\n");
            let Parsed::Complete(req) = parse_head(raw.as_bytes()) else {
                return Err(TestCaseError::fail(format!("not parsed: {raw:?}")));
            };
            prop_assert_eq!(req.method, method);
            prop_assert_eq!(req.path, path.as_bytes());
            prop_assert_eq!(req.query, query.as_bytes());
            prop_assert_eq!(req.host, Some(host.into_bytes()));
            // Any strict prefix is incomplete, never bad.
            let cut = cut.min(raw.len() - 1);
            prop_assert_eq!(parse_head(&raw.as_bytes()[..cut]), Parsed::Partial);
        }
    }
}
