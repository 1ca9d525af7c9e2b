//! API-key extraction: which S3 access key (or custom key) a request claims, and by
//! which method. Pure byte parsing, no allocation, never panics.
//!
//! Owns: [`identify`], [`sigv4_signed_headers`], [`AuthMethod`], [`Identified`].
//! Must not touch: tiers, limits, tables, I/O. Signatures are *not* verified here (the
//! upstream does that); this only decides whose counters a request is charged to.
//!
//! # Order: the first form present wins
//!
//! 1. `Authorization: AWS4-… Credential=KEY/date/region/s3/aws4_request, …` → `v4`
//!    (any `AWS4-` scheme, so SigV4a too; scheme case-insensitive; parameters split on
//!    commas and/or whitespace, in any order; `Credential` is case-sensitive as in AWS).
//! 2. `Authorization: AWS KEY:signature` → `v2`.
//! 3. query `X-Amz-Credential=KEY%2F…` (percent-decoded; the `/` may be encoded or
//!    not) → `v4_query`.
//! 4. query `AWSAccessKeyId=KEY` (percent-decoded) → `v2_query`.
//! 5. header `X-API-Key`, then `X-Access-Key-Id` → `custom`.
//!
//! Header names are case-insensitive. Query parameter names are matched after
//! percent-decoding and ASCII case folding (`x-amz-credential`, `X%2DAmz%2DCredential`
//! are `X-Amz-Credential`: stores decode names before looking them up). An
//! `Authorization` header with another scheme (e.g. `Bearer`) is not a key-bearing
//! form and the search continues.
//!
//! # One key per request: [`Identified::conflict`]
//!
//! tollgate must charge the key the store will authenticate, and stores disagree on
//! which of several credentials wins (Garage takes the last `Credential=`, MinIO a V2
//! query over a V4 header). So a request is flagged, to be refused with 400
//! `InvalidArgument` "Only one auth mechanism allowed", when it carries:
//! - more than one mechanism: an AWS `Authorization` header (`AWS4-…` or `AWS`) and any
//!   presigned query parameter, or V4 (`X-Amz-Credential`, `X-Amz-Algorithm`,
//!   `X-Amz-Signature`) and V2 (`AWSAccessKeyId`, `Signature`) query parameters;
//! - an auth parameter twice: two `Authorization` headers, `Credential` /
//!   `SignedHeaders` / `Signature` twice in a V4 header of more than three parameters
//!   (names compared case-insensitively; with three or fewer, a doubled one leaves a
//!   required one missing and the store refuses the request itself), or any of the
//!   query parameters above twice (after decoding and case folding).
//!
//! Cost (bench/micro/identity.rs, A/B in one run on the shared 2-vCPU VM): SigV4 header
//! 65 → 150 ns (the whole header is now read for doubled parameters), presigned V4
//! 186 → 180 ns, presigned V2 176 → 96 ns, anonymous with a query 65 → 48 ns, custom
//! 21 → 28 ns. No allocation on any path (stack buffers only).
//!
//! The other fields are still filled in as if there were no conflict (for logs).
//!
//! # Malformed keys
//!
//! A key that is empty, longer than `max_key_len` (at most 256 is honoured), or holds a
//! byte outside printable ASCII `0x21..=0x7E`, or a key-bearing form that cannot be
//! parsed (a V4 header without `Credential=KEY/…`, a V2 header without `:`, bad
//! percent-encoding), makes the request **anonymous with `malformed = true`**.
//! **Decision: a present-but-bad form is final — later forms are not consulted.**
//! Otherwise a client could send a deliberately broken signature header plus an
//! `X-API-Key` of its choice and pick the bucket it is counted in. Work and memory are
//! bounded: decoding stops at `max_key_len + 1` bytes in the caller's 256-byte scratch.

use crate::http::pct::hex_digit;

/// How the key was found (`as usize` indexes per-method stats in this order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    V4,
    V2,
    V4Query,
    V2Query,
    Custom,
    Anonymous,
}

impl AuthMethod {
    pub const ALL: [AuthMethod; 6] = [
        AuthMethod::V4,
        AuthMethod::V2,
        AuthMethod::V4Query,
        AuthMethod::V2Query,
        AuthMethod::Custom,
        AuthMethod::Anonymous,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::V4 => "v4",
            AuthMethod::V2 => "v2",
            AuthMethod::V4Query => "v4_query",
            AuthMethod::V2Query => "v2_query",
            AuthMethod::Custom => "custom",
            AuthMethod::Anonymous => "anonymous",
        }
    }
}

/// The outcome of [`identify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identified<'a> {
    /// The key (valid: non-empty, `<= max_key_len`, printable ASCII), or `None` when
    /// anonymous.
    pub key: Option<&'a [u8]>,
    pub method: AuthMethod,
    /// A key-bearing form was present but bad or too long → anonymous.
    pub malformed: bool,
    /// More than one auth mechanism, or an auth parameter twice (see the module docs):
    /// what was doubled. The request must be refused, not forwarded.
    pub conflict: Option<&'static str>,
}

const SCRATCH: usize = 256;

fn found(key: &[u8], method: AuthMethod, max: usize) -> Identified<'_> {
    if valid_key(key, max) {
        Identified {
            key: Some(key),
            method,
            malformed: false,
            conflict: None,
        }
    } else {
        malformed()
    }
}

fn malformed<'a>() -> Identified<'a> {
    Identified {
        key: None,
        method: AuthMethod::Anonymous,
        malformed: true,
        conflict: None,
    }
}

fn valid_key(k: &[u8], max: usize) -> bool {
    !k.is_empty() && k.len() <= max && k.iter().all(|&b| (0x21..=0x7e).contains(&b))
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = v {
        if is_ws(*first) {
            v = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = v {
        if is_ws(*last) {
            v = rest;
        } else {
            break;
        }
    }
    v
}

/// Splits an `Authorization` value into (scheme, parameters).
fn scheme(v: &[u8]) -> (&[u8], &[u8]) {
    let v = trim(v);
    let end = v.iter().position(|&b| is_ws(b)).unwrap_or(v.len());
    (&v[..end], &v[end..])
}

fn is_v4_scheme(s: &[u8]) -> bool {
    s.len() > 5 && s[..5].eq_ignore_ascii_case(b"AWS4-")
}

/// The value of `name=` among comma/whitespace separated parameters: the first token that
/// starts with `name=` (found with a substring search; this runs on every V4 header).
fn auth_param<'a>(params: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let is_sep = |b: u8| b == b',' || is_ws(b);
    memchr::memmem::find_iter(params, name).find_map(|at| {
        let starts_token = at == 0 || is_sep(params[at - 1]);
        let rest = params[at + name.len()..].strip_prefix(b"=")?;
        let end = rest.iter().position(|&b| is_sep(b)).unwrap_or(rest.len());
        starts_token.then_some(&rest[..end])
    })
}

/// The query string of a request-target (between `?` and `#`).
fn query(target: &[u8]) -> Option<&[u8]> {
    let q = memchr::memchr(b'?', target)?;
    let rest = &target[q + 1..];
    let end = memchr::memchr(b'#', rest).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The auth parameters of a query string, by name after decoding and case folding:
/// indices `..=Q_V4_SIGNATURE` are V4, `Q_V2_KEY..` are V2.
const Q_V4_CREDENTIAL: usize = 0;
const Q_V4_SIGNATURE: usize = 2;
const Q_V2_KEY: usize = 3;
const QUERY_NAMES: [&[u8]; 5] = [
    b"X-Amz-Credential",
    b"X-Amz-Algorithm",
    b"X-Amz-Signature",
    b"AWSAccessKeyId",
    b"Signature",
];
const QUERY_TWICE: [&str; 5] = [
    "X-Amz-Credential twice",
    "X-Amz-Algorithm twice",
    "X-Amz-Signature twice",
    "AWSAccessKeyId twice",
    "Signature twice",
];
/// Longest name in [`QUERY_NAMES`].
const QUERY_NAME_MAX: usize = 16;

/// What a query string says about authentication: the first raw value of each auth
/// parameter, and the first parameter seen twice.
#[derive(Default)]
struct QueryAuth<'a> {
    values: [Option<&'a [u8]>; 5],
    twice: Option<&'static str>,
}

impl<'a> QueryAuth<'a> {
    fn scan(q: &'a [u8]) -> QueryAuth<'a> {
        let mut out = QueryAuth::default();
        let mut rest = q;
        loop {
            let end = memchr::memchr(b'&', rest).unwrap_or(rest.len());
            out.param(&rest[..end]);
            if end == rest.len() {
                return out;
            }
            rest = &rest[end + 1..];
        }
    }
    fn param(&mut self, p: &'a [u8]) {
        // A name of at most QUERY_NAME_MAX decoded bytes has its '=' within this window.
        let window = &p[..p.len().min(3 * QUERY_NAME_MAX + 1)];
        let (name, value) = match window.iter().position(|&b| b == b'=') {
            Some(e) => (&p[..e], &p[e + 1..]),
            None if p.len() == window.len() => (p, &p[p.len()..]),
            None => return,
        };
        let Some(i) = query_name(name) else { return };
        if self.values[i].is_some() {
            self.twice = self.twice.or(Some(QUERY_TWICE[i]));
        } else {
            self.values[i] = Some(value);
        }
    }
    fn v4(&self) -> bool {
        self.values[..=Q_V4_SIGNATURE].iter().any(Option::is_some)
    }
    fn v2(&self) -> bool {
        self.values[Q_V2_KEY..].iter().any(Option::is_some)
    }
}

/// Which of [`QUERY_NAMES`] a raw parameter name is, after percent-decoding and ASCII
/// case folding. Cheap for other names: most are rejected by their first byte.
fn query_name(raw: &[u8]) -> Option<usize> {
    match raw.first()? {
        b'x' | b'X' | b'a' | b'A' | b's' | b'S' | b'%' => {}
        _ => return None,
    }
    if !raw.contains(&b'%') {
        return QUERY_NAMES.iter().position(|q| q.eq_ignore_ascii_case(raw));
    }
    let mut buf = [0u8; QUERY_NAME_MAX];
    let mut n = 0;
    let mut i = 0;
    while i < raw.len() {
        let b = if raw[i] == b'%' {
            let hi = raw.get(i + 1).copied().and_then(hex_digit)?;
            let lo = raw.get(i + 2).copied().and_then(hex_digit)?;
            i += 3;
            hi << 4 | lo
        } else {
            i += 1;
            raw[i - 1]
        };
        *buf.get_mut(n)? = b;
        n += 1;
    }
    QUERY_NAMES
        .iter()
        .position(|q| q.eq_ignore_ascii_case(&buf[..n]))
}

/// The first V4 `Authorization` parameter seen twice, names compared case-insensitively
/// (as a lenient store might): every `=` ends a name, found with `memchr`.
///
/// Fast path (this runs on every SigV4 request): with at most three `=` there are at
/// most three parameters, so a doubled one leaves `SignedHeaders` or `Signature`
/// missing and every store refuses the request itself (no key confusion possible); the
/// `=` are counted (`memchr`, vectorised) and the scan is skipped.
fn v4_twice(params: &[u8]) -> Option<&'static str> {
    if memchr::memchr_iter(b'=', params).count() <= 3 {
        return None;
    }
    const NAMES: [&[u8]; 3] = [b"Credential", b"SignedHeaders", b"Signature"];
    const TWICE: [&str; 3] = ["Credential twice", "SignedHeaders twice", "Signature twice"];
    let mut seen = [false; 3];
    let mut from = 0;
    while let Some(p) = memchr::memchr(b'=', &params[from..]) {
        let eq = from + p;
        from = eq + 1;
        // The name: the letters right before '=' (at most 13, and not the tail of a
        // longer word).
        let lo = eq.saturating_sub(13);
        let start = params[lo..eq]
            .iter()
            .rposition(|b| !b.is_ascii_alphabetic())
            .map_or(lo, |s| lo + s + 1);
        if start > 0 && params[start - 1].is_ascii_alphabetic() {
            continue;
        }
        let Some(i) = NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(&params[start..eq]))
        else {
            continue;
        };
        if std::mem::replace(&mut seen[i], true) {
            return Some(TWICE[i]);
        }
    }
    None
}

/// Result of percent-decoding a query value up to an optional stop byte.
enum Decoded {
    /// The key is `raw[..n]` verbatim (nothing was encoded).
    Raw(usize),
    /// The key was decoded into `scratch[..n]`.
    Scratch(usize),
    /// Bad encoding, too long, or the stop byte was required and not found.
    Bad,
}

/// Percent-decodes `raw` until the (decoded) byte `stop`, at most `max` output bytes.
fn decode(raw: &[u8], stop: Option<u8>, max: usize, scratch: &mut [u8; SCRATCH]) -> Decoded {
    let mut i = 0;
    let mut n = 0;
    let mut encoded = false;
    while i < raw.len() {
        let b = if raw[i] == b'%' {
            let (Some(hi), Some(lo)) = (
                raw.get(i + 1).copied().and_then(hex_digit),
                raw.get(i + 2).copied().and_then(hex_digit),
            ) else {
                return Decoded::Bad;
            };
            encoded = true;
            i += 3;
            hi << 4 | lo
        } else {
            i += 1;
            raw[i - 1]
        };
        if Some(b) == stop {
            return if encoded {
                Decoded::Scratch(n)
            } else {
                Decoded::Raw(n)
            };
        }
        if n >= max || n >= SCRATCH {
            return Decoded::Bad;
        }
        scratch[n] = b;
        n += 1;
    }
    match (stop, encoded) {
        (Some(_), _) => Decoded::Bad,
        (None, false) => Decoded::Raw(n),
        (None, true) => Decoded::Scratch(n),
    }
}

fn from_query<'a>(
    raw: &'a [u8],
    stop: Option<u8>,
    method: AuthMethod,
    max: usize,
    scratch: &'a mut [u8; SCRATCH],
) -> Identified<'a> {
    match decode(raw, stop, max, scratch) {
        Decoded::Raw(n) => found(&raw[..n], method, max),
        Decoded::Scratch(n) => {
            let s: &'a [u8; SCRATCH] = scratch;
            found(&s[..n], method, max)
        }
        Decoded::Bad => malformed(),
    }
}

/// Finds the API key a request claims (see the module docs for the order, the
/// malformed rule and conflicts). `target` is the raw request-target; `headers` the raw
/// (name, value) pairs; `scratch` receives a percent-decoded key when needed.
pub fn identify<'a, I>(
    target: &'a [u8],
    headers: I,
    max_key_len: usize,
    scratch: &'a mut [u8; 256],
) -> Identified<'a>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    let max = max_key_len.min(SCRATCH);
    let mut auth = None;
    let mut auth_twice = false;
    let mut api_key = None;
    let mut access_key_id = None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(b"authorization") {
            auth_twice |= auth.is_some();
            auth = auth.or(Some(value));
        } else if api_key.is_none() && name.eq_ignore_ascii_case(b"x-api-key") {
            api_key = Some(value);
        } else if access_key_id.is_none() && name.eq_ignore_ascii_case(b"x-access-key-id") {
            access_key_id = Some(value);
        }
    }
    let q = query(target).map(QueryAuth::scan).unwrap_or_default();
    let mut id = identify_first(auth, &q, api_key.or(access_key_id), max, scratch);
    id.conflict = if auth_twice {
        Some("Authorization header twice")
    } else {
        id.conflict.or(q.twice).or(match (q.v4(), q.v2()) {
            (true, true) => Some("presigned V2 and V4 query parameters"),
            _ => None,
        })
    };
    id
}

/// The first key-bearing form present; `conflict` set only for what
/// the `Authorization` header itself shows (doubled parameters, a presigned query too).
fn identify_first<'a>(
    auth: Option<&'a [u8]>,
    q: &QueryAuth<'a>,
    custom: Option<&'a [u8]>,
    max: usize,
    scratch: &'a mut [u8; SCRATCH],
) -> Identified<'a> {
    if let Some(v) = auth {
        let (sch, params) = scheme(v);
        let both = (q.v4() || q.v2()).then_some("Authorization header and presigned query");
        if is_v4_scheme(sch) {
            // Credential=KEY/date/region/service/aws4_request
            let (cred, twice) = (auth_param(params, b"Credential"), v4_twice(params));
            let id = match cred.and_then(|c| Some(&c[..c.iter().position(|&b| b == b'/')?])) {
                Some(key) => found(key, AuthMethod::V4, max),
                None => malformed(),
            };
            return Identified {
                conflict: twice.or(both),
                ..id
            };
        }
        if sch.eq_ignore_ascii_case(b"AWS") {
            // AWS KEY:signature
            let rest = trim(params);
            let id = match rest.iter().position(|&b| b == b':') {
                Some(colon) => found(&rest[..colon], AuthMethod::V2, max),
                None => malformed(),
            };
            return Identified {
                conflict: both,
                ..id
            };
        }
    }
    if let Some(raw) = q.values[Q_V4_CREDENTIAL] {
        return from_query(raw, Some(b'/'), AuthMethod::V4Query, max, scratch);
    }
    if let Some(raw) = q.values[Q_V2_KEY] {
        return from_query(raw, None, AuthMethod::V2Query, max, scratch);
    }
    if let Some(v) = custom {
        return found(trim(v), AuthMethod::Custom, max);
    }
    Identified {
        key: None,
        method: AuthMethod::Anonymous,
        malformed: false,
        conflict: None,
    }
}

/// The SigV4 `SignedHeaders=` value of an `Authorization` header (`host;x-amz-date;…`),
/// if it is a V4 header that has one.
pub fn sigv4_signed_headers(authorization: &[u8]) -> Option<&[u8]> {
    let (sch, params) = scheme(authorization);
    if !is_v4_scheme(sch) {
        return None;
    }
    auth_param(params, b"SignedHeaders").filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type H<'a> = Vec<(&'a [u8], &'a [u8])>;

    fn id<'a>(target: &'a str, headers: &H<'a>, scratch: &'a mut [u8; 256]) -> Identified<'a> {
        identify(target.as_bytes(), headers.iter().copied(), 128, scratch)
    }

    fn check(target: &str, headers: &[(&str, &str)], want: Option<(&str, AuthMethod)>, bad: bool) {
        let h: H = headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        let mut scratch = [0u8; 256];
        let got = id(target, &h, &mut scratch);
        match want {
            Some((k, m)) => {
                assert_eq!(got.key, Some(k.as_bytes()), "{target} {headers:?}");
                assert_eq!(got.method, m, "{target} {headers:?}");
                assert!(!got.malformed);
            }
            None => {
                assert_eq!(got.key, None, "{target} {headers:?}: {got:?}");
                assert_eq!(got.method, AuthMethod::Anonymous);
                assert_eq!(got.malformed, bad, "{target} {headers:?}");
            }
        }
    }

    const V4: &str = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-date, Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024";

    #[test]
    fn sigv4_header_variants() {
        let k = Some(("AKIAIOSFODNN7EXAMPLE", AuthMethod::V4));
        check("/b/o", &[("Authorization", V4)], k, false);
        check("/b/o", &[("authorization", V4)], k, false);
        check("/", &[("AUTHORIZATION", &V4.replace(", ", ","))], k, false);
        check(
            "/",
            &[(
                "Authorization",
                "AWS4-HMAC-SHA256  SignedHeaders=host, Signature=ab ,Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request",
            )],
            k,
            false,
        );
        check(
            "/",
            &[(
                "Authorization",
                " \tAWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/x,SignedHeaders=host",
            )],
            k,
            false,
        );
        check(
            "/",
            &[(
                "Authorization",
                "aws4-hmac-sha256 Credential=AKIAIOSFODNN7EXAMPLE/x",
            )],
            k,
            false,
        );
        // SigV4a
        check(
            "/",
            &[(
                "Authorization",
                "AWS4-ECDSA-P256-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/s3/aws4_request, SignedHeaders=host, Signature=30",
            )],
            k,
            false,
        );
    }

    #[test]
    fn sigv4_header_malformed_is_final() {
        let long = format!(
            "AWS4-HMAC-SHA256 Credential={}/20130524/us-east-1/s3/aws4_request",
            "A".repeat(129)
        );
        // An over-long V4 key is not overridden by a later form.
        check(
            "/?AWSAccessKeyId=OTHER",
            &[("Authorization", &long), ("X-API-Key", "mine")],
            None,
            true,
        );
        check(
            "/",
            &[("Authorization", "AWS4-HMAC-SHA256 SignedHeaders=host")],
            None,
            true,
        );
        check(
            "/",
            &[("Authorization", "AWS4-HMAC-SHA256 Credential=NOSLASH")],
            None,
            true,
        );
        check(
            "/",
            &[("Authorization", "AWS4-HMAC-SHA256 Credential=/20130524/x")],
            None,
            true,
        );
        check(
            "/",
            &[("Authorization", "AWS4-HMAC-SHA256 Credential=AK\u{1}IA/x")],
            None,
            true,
        );
        check(
            "/",
            &[("Authorization", "AWS4-HMAC-SHA256 credential=AKIA/x")],
            None,
            true,
        );
        // Exactly the maximum is fine.
        let ok = format!("AWS4-HMAC-SHA256 Credential={}/x", "B".repeat(128));
        check(
            "/",
            &[("Authorization", &ok)],
            Some((&"B".repeat(128), AuthMethod::V4)),
            false,
        );
    }

    #[test]
    fn sigv2_header() {
        let k = Some(("AKIAIOSFODNN7EXAMPLE", AuthMethod::V2));
        check(
            "/",
            &[(
                "Authorization",
                "AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=",
            )],
            k,
            false,
        );
        check(
            "/",
            &[("Authorization", "AWS   AKIAIOSFODNN7EXAMPLE:sig")],
            k,
            false,
        );
        check(
            "/",
            &[("Authorization", "AWS AKIAIOSFODNN7EXAMPLE")],
            None,
            true,
        );
        check("/", &[("Authorization", "AWS :sig")], None, true);
        check("/", &[("Authorization", "AWS AK IA:sig")], None, true);
        // V2 beats the query and custom headers.
        check(
            "/?X-Amz-Credential=Q%2Fx",
            &[("X-API-Key", "c"), ("Authorization", "AWS K2:s")],
            Some(("K2", AuthMethod::V2)),
            false,
        );
    }

    #[test]
    fn other_auth_schemes_fall_through() {
        check(
            "/",
            &[("Authorization", "Bearer abc"), ("X-API-Key", "mykey")],
            Some(("mykey", AuthMethod::Custom)),
            false,
        );
        check("/", &[("Authorization", "AWSX foo:bar")], None, false);
        check("/", &[("Authorization", "")], None, false);
    }

    #[test]
    fn presigned_v4_query() {
        let k = Some(("AKIAIOSFODNN7EXAMPLE", AuthMethod::V4Query));
        check(
            "/b/o?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z",
            &[],
            k,
            false,
        );
        check(
            "/b/o?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request",
            &[],
            k,
            false,
        );
        check(
            "/b/o?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2f20130524",
            &[],
            k,
            false,
        );
        // Encoded key bytes are decoded into the scratch buffer.
        check(
            "/?X-Amz-Credential=AKIA%49OSFODNN7EXAMPLE%2Fx",
            &[],
            k,
            false,
        );
        check(
            "http://host/b?x=1&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2Fx#frag",
            &[],
            k,
            false,
        );
        // V4 query beats V2 query and custom headers; names are case-sensitive.
        check(
            "/?AWSAccessKeyId=V2&X-Amz-Credential=V4%2Fx",
            &[("X-API-Key", "c")],
            Some(("V4", AuthMethod::V4Query)),
            false,
        );
        // Names are matched after case folding and percent-decoding (as stores do).
        check(
            "/?x-amz-credential=LOWER%2Fx",
            &[],
            Some(("LOWER", AuthMethod::V4Query)),
            false,
        );
        check(
            "/?X%2DAmz%2DCredential=ENC%2Fx",
            &[],
            Some(("ENC", AuthMethod::V4Query)),
            false,
        );
        check("/?X-Amz-Credentialx=K%2Fx", &[], None, false);
        check("/?X-Amz-Credential%2=K%2Fx", &[], None, false);
        // Malformed forms are final.
        check(
            "/?X-Amz-Credential=AKIA%2",
            &[("X-API-Key", "c")],
            None,
            true,
        );
        check("/?X-Amz-Credential=AKIA%ZZ%2Fx", &[], None, true);
        check(
            "/?X-Amz-Credential=NOSLASH&AWSAccessKeyId=V2",
            &[],
            None,
            true,
        );
        check("/?X-Amz-Credential=%2Fx", &[], None, true);
        check("/?X-Amz-Credential=A%20B%2Fx", &[], None, true);
        check("/?X-Amz-Credential", &[], None, true);
        let long = format!("/?X-Amz-Credential={}%2Fx", "%41".repeat(1000));
        check(&long, &[], None, true);
    }

    #[test]
    fn presigned_v2_query() {
        let k = Some(("AKIAIOSFODNN7EXAMPLE", AuthMethod::V2Query));
        check(
            "/b/o?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires=1141889120&Signature=vjbyPxybdZaNmGa%2ByT272YEAiv4%3D",
            &[],
            k,
            false,
        );
        check(
            "/b/o?Expires=1&AWSAccessKeyId=AKIAIOSFODNN7EXAMPL%45",
            &[],
            k,
            false,
        );
        check(
            "/?AWSAccessKeyId=a%2Bb",
            &[],
            Some(("a+b", AuthMethod::V2Query)),
            false,
        );
        check("/?AWSAccessKeyId=", &[("X-API-Key", "c")], None, true);
        check("/?AWSAccessKeyIdX=abc", &[], None, false);
        check(
            "/?awsaccesskeyid=low&Expires=1&signature=s",
            &[],
            Some(("low", AuthMethod::V2Query)),
            false,
        );
        // V2 query beats custom headers.
        check(
            "/?AWSAccessKeyId=Q",
            &[("X-API-Key", "c")],
            Some(("Q", AuthMethod::V2Query)),
            false,
        );
    }

    #[test]
    fn custom_headers() {
        let k = Some(("my-key", AuthMethod::Custom));
        check("/", &[("X-API-Key", "my-key")], k, false);
        check("/", &[("x-api-key", "  my-key\t")], k, false);
        check("/", &[("X-Access-Key-Id", "my-key")], k, false);
        check(
            "/",
            &[("X-Access-Key-Id", "other"), ("X-Api-Key", "my-key")],
            k,
            false,
        );
        check(
            "/",
            &[("X-API-Key", "my-key"), ("X-API-Key", "second")],
            k,
            false,
        );
        check("/", &[("X-API-Key", "")], None, true);
        check("/", &[("X-API-Key", "a b")], None, true);
        check(
            "/",
            &[("X-API-Key", "bad"), ("X-Access-Key-Id", "ok")],
            Some(("bad", AuthMethod::Custom)),
            false,
        );
        check(
            "/",
            &[("X-API-Key", "caf\u{e9}"), ("X-Access-Key-Id", "ok")],
            None,
            true,
        );
        check("/", &[("X-API-Key", &"k".repeat(129))], None, true);
    }

    #[test]
    fn anonymous() {
        check(
            "/bucket/key",
            &[("Host", "s3"), ("User-Agent", "x")],
            None,
            false,
        );
        check("/?foo=bar", &[], None, false);
        let mut scratch = [0u8; 256];
        let got = identify(b"/", std::iter::empty(), 128, &mut scratch);
        assert_eq!(
            got,
            Identified {
                key: None,
                method: AuthMethod::Anonymous,
                malformed: false,
                conflict: None,
            }
        );
    }

    #[test]
    fn max_key_len_is_respected() {
        let h: H = vec![(b"X-API-Key".as_slice(), b"abcdef".as_slice())];
        let mut scratch = [0u8; 256];
        assert!(identify(b"/", h.iter().copied(), 5, &mut scratch).malformed);
        let mut scratch = [0u8; 256];
        assert_eq!(
            identify(b"/", h.iter().copied(), 6, &mut scratch).key,
            Some(b"abcdef".as_slice())
        );
        let mut scratch = [0u8; 256];
        let t = format!("/?AWSAccessKeyId={}", "%41".repeat(300));
        let got = identify(t.as_bytes(), std::iter::empty(), 10_000, &mut scratch);
        assert!(got.malformed);
        let t = format!("/?AWSAccessKeyId={}", "%41".repeat(256));
        let got = identify(t.as_bytes(), std::iter::empty(), 10_000, &mut scratch);
        assert_eq!(got.key.map(|k| k.len()), Some(256));
    }

    #[test]
    fn method_names() {
        let names: Vec<_> = AuthMethod::ALL.iter().map(|m| m.as_str()).collect();
        assert_eq!(
            names,
            ["v4", "v2", "v4_query", "v2_query", "custom", "anonymous"]
        );
        for (i, m) in AuthMethod::ALL.iter().enumerate() {
            assert_eq!(*m as usize, i);
        }
    }

    #[test]
    fn signed_headers() {
        assert_eq!(
            sigv4_signed_headers(V4.as_bytes()),
            Some(b"host;range;x-amz-date".as_slice())
        );
        assert_eq!(
            sigv4_signed_headers(b"AWS4-HMAC-SHA256 Signature=x,SignedHeaders=host;x-amz-content-sha256,Credential=A/b"),
            Some(b"host;x-amz-content-sha256".as_slice())
        );
        assert_eq!(sigv4_signed_headers(b"AWS AKIA:sig"), None);
        assert_eq!(
            sigv4_signed_headers(b"AWS4-HMAC-SHA256 Credential=A/b"),
            None
        );
        assert_eq!(
            sigv4_signed_headers(b"AWS4-HMAC-SHA256 SignedHeaders=, Credential=A/b"),
            None
        );
        assert_eq!(sigv4_signed_headers(b""), None);
    }

    fn conflict_of(target: &str, headers: &[(&str, &str)]) -> Option<&'static str> {
        let h: H = headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        let mut scratch = [0u8; 256];
        id(target, &h, &mut scratch).conflict
    }

    const PRESIGNED_V4: &str = "/b/o?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Security-Token=tok&X-Amz-Signature=aeee";
    const PRESIGNED_V2: &str =
        "/b/o?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires=1141889120&Signature=vjby%2ByT2%3D";

    #[test]
    fn one_mechanism_is_no_conflict() {
        let v2 = "AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=";
        for (t, h) in [
            (
                "/b/o?versionId=3HL4&x-id=GetObject",
                vec![("Authorization", V4)],
            ),
            (
                "/b?list-type=2&prefix=a%2F&X-Amz-Date=1",
                vec![("Authorization", V4)],
            ),
            ("/b/o?acl", vec![("Authorization", v2)]),
            (PRESIGNED_V4, vec![("X-API-Key", "c")]),
            (PRESIGNED_V2, vec![]),
            ("/b/o", vec![("X-API-Key", "c"), ("X-Access-Key-Id", "d")]),
            (
                "/b/o?Signaturex=1&AWSAccessKeyIdx=2",
                vec![("Authorization", V4)],
            ),
            (
                "/",
                vec![("Authorization", "Bearer x"), ("Authorization2", V4)],
            ),
        ] {
            assert_eq!(conflict_of(t, &h), None, "{t} {h:?}");
        }
    }

    #[test]
    fn every_key_confusion_shape_is_flagged() {
        let v2 = "AWS AKIAIOSFODNN7EXAMPLE:sig";
        let two_creds = "AWS4-HMAC-SHA256 Credential=DECOY/20130524/us-east-1/s3/aws4_request, Credential=VICTIM/20130524/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";
        let lower_cred = two_creds.replace(", Credential=", ",credential=");
        let two_signed = V4.replace("Signature=", "SignedHeaders=a, Signature=");
        let two_sigs = format!("{V4}, Signature=1");
        let v4_sig_twice = format!("{PRESIGNED_V4}&X-Amz-Signature=b");
        let v2_sig_twice = format!("{PRESIGNED_V2}&signature=b");
        // (target, headers, the conflict named)
        type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case> = vec![
            // Issue 11: two Credential= in one header (tollgate took the first, Garage the last).
            (
                "/b/o",
                vec![("Authorization", two_creds)],
                "Credential twice",
            ),
            (
                "/b/o",
                vec![("Authorization", &lower_cred)],
                "Credential twice",
            ),
            (
                "/b/o",
                vec![("Authorization", &two_sigs)],
                "Signature twice",
            ),
            (
                "/b/o",
                vec![("Authorization", &two_signed)],
                "SignedHeaders twice",
            ),
            // A presigned URL plus an Authorization header (either scheme, either query).
            (
                PRESIGNED_V4,
                vec![("Authorization", V4)],
                "Authorization header and presigned query",
            ),
            (
                PRESIGNED_V2,
                vec![("Authorization", V4)],
                "Authorization header and presigned query",
            ),
            (
                PRESIGNED_V4,
                vec![("Authorization", v2)],
                "Authorization header and presigned query",
            ),
            (
                "/b/o?AWSAccessKeyId=X",
                vec![("Authorization", V4)],
                "Authorization header and presigned query",
            ),
            (
                "/b/o?X-Amz-Algorithm=AWS4-HMAC-SHA256",
                vec![("Authorization", v2)],
                "Authorization header and presigned query",
            ),
            // Lower-case or percent-encoded presigned names are seen too.
            (
                "/b/o?x-amz-credential=DECOY%2Fx",
                vec![("Authorization", V4)],
                "Authorization header and presigned query",
            ),
            (
                "/b/o?X%2DAmz%2DCredential=DECOY%2Fx",
                vec![("Authorization", V4)],
                "Authorization header and presigned query",
            ),
            (
                "/b/o?%61wsaccesskeyid=DECOY",
                vec![("Authorization", V4)],
                "Authorization header and presigned query",
            ),
            // V2 and V4 presigned parameters together (MinIO prefers V2).
            (
                "/b/o?AWSAccessKeyId=V2&X-Amz-Credential=V4%2Fx",
                vec![],
                "presigned V2 and V4 query parameters",
            ),
            (
                "/b/o?X-Amz-Credential=V4%2Fx&Signature=s",
                vec![],
                "presigned V2 and V4 query parameters",
            ),
            // The same parameter twice, in any case or encoding of its name.
            (
                "/b/o?X-Amz-Credential=A%2Fx&X-Amz-Credential=B%2Fx",
                vec![],
                "X-Amz-Credential twice",
            ),
            (
                "/b/o?X-Amz-Credential=A%2Fx&x-amz-credential=B%2Fx",
                vec![],
                "X-Amz-Credential twice",
            ),
            (
                "/b/o?X-Amz-Credential=A%2Fx&X%2DAmz%2DCredential=B%2Fx",
                vec![],
                "X-Amz-Credential twice",
            ),
            (
                "/b/o?X-Amz-Credential=A%2Fx&X-AMZ-CREDENTIAL",
                vec![],
                "X-Amz-Credential twice",
            ),
            (
                "/b/o?AWSAccessKeyId=A&awsAccessKeyID=B",
                vec![],
                "AWSAccessKeyId twice",
            ),
            (&v4_sig_twice, vec![], "X-Amz-Signature twice"),
            (&v2_sig_twice, vec![], "Signature twice"),
            // Two Authorization headers.
            (
                "/b/o",
                vec![("Authorization", V4), ("authorization", v2)],
                "Authorization header twice",
            ),
            (
                "/b/o",
                vec![("Authorization", "Bearer x"), ("Authorization", V4)],
                "Authorization header twice",
            ),
        ];
        for (t, h, want) in &cases {
            assert_eq!(conflict_of(t, h), Some(*want), "{t} {h:?}");
        }
        // The key is still reported (for logs) when a conflict is found.
        let h: H = vec![(b"Authorization".as_slice(), two_creds.as_bytes())];
        let mut scratch = [0u8; 256];
        let got = id("/", &h, &mut scratch);
        assert_eq!(got.key, Some(b"DECOY".as_slice()));
        assert_eq!(got.method, AuthMethod::V4);
    }

    /// `name` with each letter in a random case and each byte percent-encoded or not.
    fn disguise(name: &'static str) -> impl Strategy<Value = String> {
        prop::collection::vec((any::<bool>(), any::<bool>()), name.len()).prop_map(move |flags| {
            name.bytes()
                .zip(flags)
                .map(|(b, (upper, enc))| {
                    let b = if upper {
                        b.to_ascii_uppercase()
                    } else {
                        b.to_ascii_lowercase()
                    };
                    if enc {
                        format!("%{b:02X}")
                    } else {
                        (b as char).to_string()
                    }
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn never_panics_and_keys_are_valid(
            target in prop::collection::vec(any::<u8>(), 0..300),
            hv in prop::collection::vec((prop::sample::select(vec!["authorization", "x-api-key", "X-Access-Key-Id", "host"]), prop::collection::vec(any::<u8>(), 0..300)), 0..4),
            max in 0usize..400,
        ) {
            let mut scratch = [0u8; 256];
            let h: Vec<(&[u8], &[u8])> = hv.iter().map(|(n, v)| (n.as_bytes(), v.as_slice())).collect();
            let got = identify(&target, h.iter().copied(), max, &mut scratch);
            if let Some(k) = got.key {
                prop_assert!(valid_key(k, max.min(256)));
                prop_assert!(got.method != AuthMethod::Anonymous);
            } else {
                prop_assert_eq!(got.method, AuthMethod::Anonymous);
            }
        }

        #[test]
        fn structured_inputs_round_trip(key in "[!-~]{1,40}", form in 0usize..5) {
            // Any printable key survives every form (percent-encoded where needed).
            let enc: String = key.bytes().map(|b| format!("%{b:02X}")).collect();
            let (target, headers): (String, Vec<(&str, String)>) = match form {
                0 => ("/".into(), vec![("Authorization", format!("AWS4-HMAC-SHA256 Credential={key}/d/r/s3/aws4_request, SignedHeaders=host, Signature=0"))]),
                1 => ("/".into(), vec![("Authorization", format!("AWS {key}:sig"))]),
                2 => (format!("/?X-Amz-Credential={enc}%2Fd"), vec![]),
                3 => (format!("/?AWSAccessKeyId={enc}"), vec![]),
                _ => ("/".into(), vec![("X-API-Key", key.clone())]),
            };
            let h: Vec<(&[u8], &[u8])> = headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
            let mut scratch = [0u8; 256];
            let got = identify(target.as_bytes(), h.iter().copied(), 128, &mut scratch);
            let expect_ok = match form {
                // The V4 credential ends at '/', commas/spaces split parameters.
                0 => !key.contains(['/', ',']),
                1 => !key.contains(':'),
                2 => !key.contains('/'),
                _ => true,
            };
            if expect_ok {
                prop_assert_eq!(got.key, Some(key.as_bytes()));
                prop_assert_eq!(got.method, AuthMethod::ALL[form]);
            }
        }
    }

    proptest! {
        /// The same parameter as splitting at every separator and taking the first token
        /// that starts with `name=`.
        #[test]
        fn auth_param_is_first_token_match(
            params in prop::collection::vec(prop::sample::select(vec![
                &b"Credential"[..], b"Credential=", b"=", b",", b" ", b"\t", b"xCredential=", b"K/d", b"Signature=ab",
            ]), 0..12).prop_map(|parts| parts.concat()),
        ) {
            let by_split = params
                .split(|&b| b == b',' || is_ws(b))
                .find_map(|tok| tok.strip_prefix(&b"Credential"[..])?.strip_prefix(b"="));
            prop_assert_eq!(auth_param(&params, b"Credential"), by_split);
        }
    }

    proptest! {
        /// Any request carrying two or more of the four mechanisms (V4 / V2 header, V4 /
        /// V2 presigned query), whatever the case and encoding of the query names and
        /// with unrelated parameters around them, is flagged; one alone never is, and
        /// its key is found. A query auth parameter given twice is flagged.
        #[test]
        fn two_mechanisms_are_always_flagged(
            mask in 1u8..16,
            v4n in disguise("X-Amz-Credential"),
            v2n in disguise("AWSAccessKeyId"),
            v4n2 in disguise("X-Amz-Credential"),
            noise in prop::collection::vec("[a-z]{1,8}=[a-z0-9]{0,5}", 0..4),
            dup in any::<bool>(),
        ) {
            let mut params: Vec<String> = noise.clone();
            let mut headers: Vec<(&str, String)> = vec![("Host", "s3".into())];
            if mask & 1 != 0 {
                headers.push(("Authorization", V4.into()));
            }
            if mask & 2 != 0 {
                headers.push(("Authorization", "AWS K2:sig".into()));
            }
            if mask & 4 != 0 {
                params.insert(params.len() / 2, format!("{v4n}=K4%2Fx"));
            }
            if mask & 8 != 0 {
                params.push(format!("{v2n}=K8"));
            }
            let twice = dup && mask == 4;
            if twice {
                params.push(format!("{v4n2}=OTHER%2Fx"));
            }
            let target = if params.is_empty() { "/b/o".to_string() } else { format!("/b/o?{}", params.join("&")) };
            let h: Vec<(&[u8], &[u8])> = headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
            let mut scratch = [0u8; 256];
            let got = identify(target.as_bytes(), h.iter().copied(), 128, &mut scratch);
            if mask.count_ones() >= 2 || twice {
                prop_assert!(got.conflict.is_some(), "{} {:?}: {:?}", target, headers, got);
            } else {
                prop_assert_eq!(got.conflict, None, "{} {:?}", target, headers);
                let want: &[u8] = match mask { 1 => b"AKIAIOSFODNN7EXAMPLE", 2 => b"K2", 4 => b"K4", _ => b"K8" };
                prop_assert_eq!(got.key, Some(want));
            }
        }
    }
}
