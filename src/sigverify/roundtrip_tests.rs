//! Requests signed by the project's own signer (`loadgen`, a dev-dependency) verify; one
//! changed byte anywhere the signature covers does not, while changes it does not cover
//! are accepted; every refusal has its S3 error; the signing-key cache behaves.

use super::*;
use crate::http::{HeadLimits, RequestHead, parse_request};
use loadgen::plan::Op;
use loadgen::request::{RequestBuilder, Target};
use loadgen::scenario::AuthStyle;
use loadgen::sign::{Civil, EMPTY_SHA256, V4Signer, v2_signature, v2_string_to_sign};

const KEY: &str = "GK0123456789abcdef01234567";
const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const OTHER_KEY: &str = "GKother";
const NOW: u64 = 1_700_000_000; // 2023-11-14T22:13:20Z
const HOST: &str = "127.0.0.1:3900";

type Outcome = Result<Option<(Vec<u8>, AuthMethod)>, VerifyError>;

fn secrets() -> Secrets {
    Secrets::from_pairs([(KEY, SECRET), (OTHER_KEY, "another secret")])
}

fn verify_wire(wire: &[u8], s: &Secrets, cache: &mut SigningKeyCache, now: u64) -> Outcome {
    let mut head = RequestHead::new();
    let limits = HeadLimits {
        max_head_bytes: 64 * 1024,
        max_headers: 100,
    };
    parse_request(wire, &limits, &mut head).expect("test requests are valid HTTP");
    let r = verify(&RequestParts::from_head(wire, &head), s, cache, now);
    r.map(|v| v.map(|v| (v.access_key.into_owned(), v.method)))
}

/// `raw` with `\n` line ends as CRLF and the final empty line.
fn wire(raw: &str) -> Vec<u8> {
    let mut w = raw.replace('\n', "\r\n").into_bytes();
    w.extend_from_slice(b"\r\n\r\n");
    w
}

fn check(raw: &str, now: u64) -> Outcome {
    verify_wire(&wire(raw), &secrets(), &mut SigningKeyCache::new(16), now)
}

fn ok(method: AuthMethod) -> Outcome {
    Ok(Some((KEY.as_bytes().to_vec(), method)))
}

fn built(style: AuthStyle, op: Op, now: u64) -> Vec<u8> {
    let target = Target::parse(&format!("http://{HOST}")).unwrap();
    let mut b = RequestBuilder::new(
        KEY,
        SECRET,
        style,
        &target,
        "bench",
        "garage",
        "obj-",
        vec![10],
        3600,
    );
    let mut out = Vec::new();
    b.build(op, 7, 0, now, &mut out);
    out
}

#[test]
fn every_loadgen_style_and_operation_round_trips() {
    let styles = [
        (AuthStyle::Sigv4, Some(AuthMethod::V4)),
        (AuthStyle::Sigv2, Some(AuthMethod::V2)),
        (AuthStyle::PresignV4, Some(AuthMethod::V4Query)),
        (AuthStyle::PresignV2, Some(AuthMethod::V2Query)),
        (AuthStyle::XApiKey, None),
        (AuthStyle::None, None),
    ];
    let mut cache = SigningKeyCache::new(16);
    for (style, method) in styles {
        for op in Op::ALL {
            let w = built(style, op, NOW);
            let want = method.map(|m| (KEY.as_bytes().to_vec(), m));
            assert_eq!(
                verify_wire(&w, &secrets(), &mut cache, NOW + 5),
                Ok(want),
                "{style:?} {op:?}"
            );
        }
    }
}

#[test]
fn loadgen_malformed_requests_never_verify() {
    for i in 0..6 {
        let target = Target::parse(&format!("http://{HOST}")).unwrap();
        let mut b = RequestBuilder::new(
            KEY,
            SECRET,
            AuthStyle::Malformed,
            &target,
            "b",
            "garage",
            "o",
            vec![],
            60,
        );
        let mut out = Vec::new();
        for _ in 0..=i {
            out.clear();
            b.build(Op::Get, 1, 0, NOW, &mut out);
        }
        let got = verify_wire(&out, &secrets(), &mut SigningKeyCache::new(4), NOW);
        assert!(!matches!(got, Ok(Some(_))), "malformed #{i}: {got:?}");
    }
}

/// A SigV4 GET signed by loadgen's signer over the canonical forms given; the wire form
/// (`path`, `query`) may differ from them the way real clients and servers differ.
fn v4_get(
    path: &str,
    canonical_path: &str,
    query: &str,
    canonical_query: &str,
    payload: &str,
) -> String {
    let civil = Civil::from_unix(NOW);
    let amz = civil.amz_date();
    let headers = [
        ("host", HOST),
        ("range", "bytes=0-9"),
        ("x-amz-content-sha256", payload),
        ("x-amz-date", amz.as_str()),
    ];
    let mut signer = V4Signer::new(KEY, SECRET, "garage");
    let sig = signer.sign(
        "GET",
        canonical_path,
        canonical_query,
        &headers,
        payload,
        civil,
    );
    let q = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!(
        "GET {path}{q} HTTP/1.1\nHost: {HOST}\nUser-Agent: test\nRange: bytes=0-9\nx-amz-content-sha256: {payload}\nx-amz-date: {amz}\nAuthorization: {}",
        signer.authorization(&sig, &headers)
    )
}

#[test]
fn v4_query_and_path_forms_round_trip() {
    let valid = ok(AuthMethod::V4);
    let cases = [
        ("/b/k", "/b/k", "", ""),
        (
            "/b/k",
            "/b/k",
            "prefix=a/b+c&list-type=2",
            "list-type=2&prefix=a%2Fb%20c",
        ),
        ("/b/k", "/b/k", "uploads&x=%7e", "uploads=&x=~"),
        ("/b/%e2%82%ac", "/b/%E2%82%AC", "", ""),
        ("/b/a%20b/c", "/b/a%20b/c", "", ""),
    ];
    for (path, cpath, query, cquery) in cases {
        let raw = v4_get(path, cpath, query, cquery, EMPTY_SHA256);
        assert_eq!(check(&raw, NOW), valid, "{path}?{query}");
    }
    for payload in [
        "UNSIGNED-PAYLOAD",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    ] {
        assert_eq!(
            check(&v4_get("/b/k", "/b/k", "", "", payload), NOW),
            valid,
            "{payload}"
        );
    }
}

fn tampered(raw: &str, from: &str, to: &str) -> String {
    assert!(raw.contains(from), "{from:?} not in the request");
    raw.replacen(from, to, 1)
}

#[test]
fn v4_header_tampering() {
    let raw = v4_get("/b/key", "/b/key", "a=1", "a=1", EMPTY_SHA256);
    assert_eq!(check(&raw, NOW), ok(AuthMethod::V4));
    let amz = Civil::from_unix(NOW).amz_date();
    let later = Civil::from_unix(NOW + 1).amz_date();
    let mut bad_sig = raw.clone();
    let last = bad_sig.pop().unwrap();
    bad_sig.push(if last == '0' { '1' } else { '0' });
    let forged = [
        tampered(&raw, "/b/key?", "/b/kez?"),
        tampered(&raw, "GET ", "HEAD "),
        tampered(&raw, "a=1", "a=2"),
        tampered(&raw, "a=1", "a=1&b=2"),
        tampered(&raw, "?a=1", ""),
        tampered(&raw, "Range: bytes=0-9", "Range: bytes=0-8"),
        tampered(
            &raw,
            &format!("x-amz-date: {amz}"),
            &format!("x-amz-date: {later}"),
        ),
        tampered(&raw, &format!("Host: {HOST}"), "Host: 127.0.0.1:3901"),
        bad_sig,
    ];
    for f in &forged {
        assert_eq!(
            check(f, NOW),
            Err(VerifyError::SignatureDoesNotMatch),
            "{f}"
        );
    }
    let harmless = [
        tampered(&raw, "User-Agent: test", "User-Agent: other"),
        tampered(&raw, "User-Agent: test", "User-Agent: test\nX-Extra: 1"),
        tampered(&raw, "Range: bytes=0-9", "RANGE:   bytes=0-9  "),
        tampered(&raw, "a=1", "%61=%31"),
    ];
    for h in &harmless {
        assert_eq!(check(h, NOW), ok(AuthMethod::V4), "{h}");
    }
    let other = tampered(
        &raw,
        &format!("Credential={KEY}/"),
        &format!("Credential={OTHER_KEY}/"),
    );
    assert_eq!(check(&other, NOW), Err(VerifyError::SignatureDoesNotMatch));
    let unknown = tampered(&raw, &format!("Credential={KEY}/"), "Credential=GKnobody/");
    assert_eq!(check(&unknown, NOW), Err(VerifyError::InvalidAccessKeyId));
}

fn presigned(expires: u32) -> String {
    let mut signer = V4Signer::new(KEY, SECRET, "garage");
    let q = signer.presign_query("GET", "/b/key", HOST, expires, Civil::from_unix(NOW));
    format!("GET /b/key?{q} HTTP/1.1\nHost: {HOST}\nUser-Agent: curl")
}

#[test]
fn presigned_v4_tampering_and_validity() {
    let raw = presigned(3600);
    assert_eq!(check(&raw, NOW + 3600), ok(AuthMethod::V4Query));
    assert_eq!(check(&raw, NOW + 3601), Err(VerifyError::Expired));
    for f in [
        tampered(&raw, "X-Amz-Expires=3600", "X-Amz-Expires=3601"),
        tampered(&raw, "/b/key?", "/b/kez?"),
        tampered(&raw, " HTTP/1.1", "&extra=1 HTTP/1.1"),
        tampered(&raw, &format!("Host: {HOST}"), "Host: elsewhere"),
    ] {
        assert_eq!(
            check(&f, NOW),
            Err(VerifyError::SignatureDoesNotMatch),
            "{f}"
        );
    }
    assert_eq!(
        check(&tampered(&raw, "curl", "wget"), NOW),
        ok(AuthMethod::V4Query)
    );
    let long = presigned(604_801);
    assert!(matches!(
        check(&long, NOW),
        Err(VerifyError::AuthorizationQueryParametersError(_))
    ));
}

fn v2_get(path: &str, resource: &str, extra: &str, date: &str) -> String {
    let sts = v2_string_to_sign("GET", date, resource);
    let sig = v2_signature(SECRET, &sts);
    format!(
        "GET {path} HTTP/1.1\nHost: {HOST}\nUser-Agent: test\nDate: {date}\n{extra}Authorization: AWS {KEY}:{sig}"
    )
}

#[test]
fn v2_header_tampering() {
    let date = Civil::from_unix(NOW).http_date();
    let raw = v2_get("/b/key?prefix=x", "/b/key", "", &date);
    assert_eq!(check(&raw, NOW), ok(AuthMethod::V2));
    let later = Civil::from_unix(NOW + 1).http_date();
    for f in [
        tampered(&raw, "/b/key", "/b/kez"),
        tampered(&raw, &date, &later),
        tampered(&raw, "?prefix=x", "?acl"),
        tampered(&raw, "User-Agent: test", "Content-Type: text/plain"),
        tampered(&raw, "User-Agent: test", "x-amz-meta-a: 1"),
        tampered(&raw, "GET ", "PUT "),
    ] {
        assert_eq!(
            check(&f, NOW),
            Err(VerifyError::SignatureDoesNotMatch),
            "{f}"
        );
    }
    // V2 signs neither other headers nor non-sub-resource parameters.
    for h in [
        tampered(&raw, "User-Agent: test", "User-Agent: other"),
        tampered(&raw, "?prefix=x", "?prefix=y"),
    ] {
        assert_eq!(check(&h, NOW), ok(AuthMethod::V2), "{h}");
    }
    let acl = v2_get(
        "/b/key?acl&versionId=3%2F4",
        "/b/key?acl&versionId=3/4",
        "",
        &date,
    );
    assert_eq!(check(&acl, NOW), ok(AuthMethod::V2));
}

#[test]
fn clock_skew_and_dates() {
    let v4 = v4_get("/b/k", "/b/k", "", "", EMPTY_SHA256);
    assert_eq!(check(&v4, NOW + MAX_SKEW_SECS), ok(AuthMethod::V4));
    assert_eq!(
        check(&v4, NOW + MAX_SKEW_SECS + 1),
        Err(VerifyError::RequestTimeTooSkewed)
    );
    assert_eq!(
        check(&v4, NOW - MAX_SKEW_SECS - 1),
        Err(VerifyError::RequestTimeTooSkewed)
    );
    let date = Civil::from_unix(NOW).http_date();
    let v2 = v2_get("/b/k", "/b/k", "", &date);
    assert_eq!(check(&v2, NOW - MAX_SKEW_SECS), ok(AuthMethod::V2));
    assert_eq!(
        check(&v2, NOW + MAX_SKEW_SECS + 1),
        Err(VerifyError::RequestTimeTooSkewed)
    );
    let amz = Civil::from_unix(NOW).amz_date();
    let no_date = tampered(&v4, &format!("x-amz-date: {amz}\n"), "");
    assert_eq!(check(&no_date, NOW), Err(VerifyError::MissingDate));
    let bad_date = tampered(&v4, &format!("x-amz-date: {amz}"), "x-amz-date: yesterday");
    assert_eq!(check(&bad_date, NOW), Err(VerifyError::MissingDate));
    let other_day = tampered(
        &v4,
        &format!("x-amz-date: {amz}"),
        "x-amz-date: 20231115T000000Z",
    );
    assert!(matches!(
        check(&other_day, NOW),
        Err(VerifyError::AuthorizationHeaderMalformed(_))
    ));
}

#[test]
fn malformed_and_ambiguous_requests() {
    let v4 = v4_get("/b/k", "/b/k", "", "", EMPTY_SHA256);
    let malformed = [
        tampered(&v4, "SignedHeaders=", "Signed="),
        tampered(&v4, ", Signature=", ", Credential=x, Signature="),
        tampered(&v4, "/aws4_request", "/aws4"),
        tampered(&v4, "AWS4-HMAC-SHA256 ", "AWS4-ECDSA-P256-SHA256 "),
    ];
    for m in &malformed {
        assert!(
            matches!(
                check(m, NOW),
                Err(VerifyError::AuthorizationHeaderMalformed(_))
            ),
            "{m}"
        );
    }
    let presigned = presigned(60);
    let both = format!("{presigned}\nAuthorization: AWS {KEY}:c2ln");
    assert!(matches!(
        check(&both, NOW),
        Err(VerifyError::InvalidArgument(_))
    ));
    let twice = tampered(
        &presigned,
        "X-Amz-Expires=60",
        "X-Amz-Expires=60&x-amz-expires=60",
    );
    assert!(matches!(
        check(&twice, NOW),
        Err(VerifyError::InvalidArgument(_))
    ));
    let missing = tampered(&presigned, "&X-Amz-SignedHeaders=host", "");
    assert!(matches!(
        check(&missing, NOW),
        Err(VerifyError::AuthorizationQueryParametersError(_))
    ));
    let v2q = format!("GET /b/k?AWSAccessKeyId={KEY}&Signature=x HTTP/1.1\nHost: {HOST}");
    assert_eq!(check(&v2q, NOW), Err(VerifyError::MissingV2QueryParameters));
    for sig in ["zz", "", &"a".repeat(5000)] {
        let garbage = format!(
            "GET / HTTP/1.1\nHost: h\nDate: {}\nAuthorization: AWS {KEY}:{sig}",
            Civil::from_unix(NOW).http_date()
        );
        assert_eq!(
            check(&garbage, NOW),
            Err(VerifyError::SignatureDoesNotMatch),
            "{sig:.8}"
        );
    }
    let unsigned =
        format!("GET /b/k HTTP/1.1\nHost: {HOST}\nX-API-Key: {KEY}\nAuthorization: Bearer t");
    assert_eq!(check(&unsigned, NOW), Ok(None));
}

#[test]
fn percent_encoded_presigned_keys_are_decoded() {
    let raw = presigned(60);
    let encoded = tampered(
        &raw,
        &format!("X-Amz-Credential={KEY}"),
        "X-Amz-Credential=%47K0123456789abcdef01234567",
    );
    assert_eq!(check(&encoded, NOW), ok(AuthMethod::V4Query));
    let mut head = RequestHead::new();
    let limits = HeadLimits {
        max_head_bytes: 8192,
        max_headers: 32,
    };
    let w = wire(&raw);
    parse_request(&w, &limits, &mut head).unwrap();
    let mut cache = SigningKeyCache::new(4);
    let v = verify(
        &RequestParts::from_head(&w, &head),
        &secrets(),
        &mut cache,
        NOW,
    )
    .unwrap()
    .unwrap();
    assert!(matches!(v.access_key, std::borrow::Cow::Borrowed(_)));
}

#[test]
fn the_cache_serves_repeats_and_ignores_forgeries() {
    let s = secrets();
    let mut cache = SigningKeyCache::new(16);
    let good = wire(&v4_get("/b/k", "/b/k", "", "", EMPTY_SHA256));
    let forged = wire(&tampered(
        &v4_get("/b/k", "/b/k", "", "", EMPTY_SHA256),
        "/b/k ",
        "/b/x ",
    ));
    assert_eq!(
        verify_wire(&forged, &s, &mut cache, NOW),
        Err(VerifyError::SignatureDoesNotMatch)
    );
    assert!(cache.is_empty(), "a forgery must not fill the cache");
    for _ in 0..3 {
        assert_eq!(verify_wire(&good, &s, &mut cache, NOW), ok(AuthMethod::V4));
    }
    assert_eq!(cache.len(), 1);
    assert_eq!(
        cache.stats(),
        CacheStats {
            hits: 2,
            misses: 2,
            evictions: 0
        }
    );
    assert_eq!(
        verify_wire(&forged, &s, &mut cache, NOW),
        Err(VerifyError::SignatureDoesNotMatch)
    );
}

#[test]
fn a_rotated_secret_is_not_served_from_the_cache() {
    let mut cache = SigningKeyCache::new(16);
    let old = wire(&v4_get("/b/k", "/b/k", "", "", EMPTY_SHA256));
    assert_eq!(
        verify_wire(&old, &secrets(), &mut cache, NOW),
        ok(AuthMethod::V4)
    );
    let rotated = Secrets::from_pairs([(KEY, "a new secret")]);
    assert_eq!(
        verify_wire(&old, &rotated, &mut cache, NOW),
        Err(VerifyError::SignatureDoesNotMatch)
    );
    let civil = Civil::from_unix(NOW);
    let amz = civil.amz_date();
    let headers = [("host", HOST), ("x-amz-date", amz.as_str())];
    let mut signer = V4Signer::new(KEY, "a new secret", "garage");
    let sig = signer.sign("GET", "/b/k", "", &headers, EMPTY_SHA256, civil);
    let new = wire(&format!(
        "GET /b/k HTTP/1.1\nHost: {HOST}\nx-amz-date: {amz}\nAuthorization: {}",
        signer.authorization(&sig, &headers)
    ));
    assert_eq!(
        verify_wire(&new, &rotated, &mut cache, NOW),
        ok(AuthMethod::V4)
    );
}

#[test]
fn presigned_parameter_errors() {
    let raw = presigned(60);
    let query_error =
        |r: Outcome| matches!(r, Err(VerifyError::AuthorizationQueryParametersError(_)));
    for (from, to) in [
        (
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Algorithm=AWS4-HMAC-SHA1",
        ),
        ("X-Amz-Expires=60", "X-Amz-Expires=soon"),
        ("X-Amz-Credential=GK", "X-Amz-Credential=%2FGK"),
    ] {
        assert!(query_error(check(&tampered(&raw, from, to), NOW)), "{to}");
    }
    let amz = Civil::from_unix(NOW).amz_date();
    let bad_date = tampered(&raw, &format!("X-Amz-Date={amz}"), "X-Amz-Date=20231114");
    assert!(query_error(check(&bad_date, NOW)));
    let unknown = tampered(
        &raw,
        &format!("X-Amz-Credential={KEY}"),
        "X-Amz-Credential=GKnobody",
    );
    assert_eq!(check(&unknown, NOW), Err(VerifyError::InvalidAccessKeyId));
    let v2 =
        format!("GET /b/k?AWSAccessKeyId=GKnobody&Expires=1&Signature=x HTTP/1.1\nHost: {HOST}");
    assert_eq!(check(&v2, NOW), Err(VerifyError::InvalidAccessKeyId));
    let date = Civil::from_unix(NOW).http_date();
    let v2 =
        format!("GET / HTTP/1.1\nHost: {HOST}\nDate: {date}\nAuthorization: AWS GKnobody:c2ln");
    assert_eq!(check(&v2, NOW), Err(VerifyError::InvalidAccessKeyId));
}

#[test]
fn many_parameters_and_amz_fields_spill_to_the_heap_and_still_verify() {
    let names: Vec<String> = (0..40).map(|i| format!("p{i:02}")).collect();
    let wire_query: Vec<String> = names.iter().rev().map(|n| format!("{n}=v")).collect();
    let canonical: Vec<String> = names.iter().map(|n| format!("{n}=v")).collect();
    let raw = v4_get(
        "/b/k",
        "/b/k",
        &wire_query.join("&"),
        &canonical.join("&"),
        EMPTY_SHA256,
    );
    assert_eq!(check(&raw, NOW), ok(AuthMethod::V4));

    let date = Civil::from_unix(NOW).http_date();
    let fields: Vec<String> = (0..40)
        .rev()
        .map(|i| format!("x-amz-meta-f{i:02}:{i}"))
        .collect();
    let mut sorted = fields.clone();
    sorted.sort();
    let sts = format!("PUT\n\n\n{date}\n{}\n/b/k", sorted.join("\n"));
    let sig = v2_signature(SECRET, &sts);
    let raw = format!(
        "PUT /b/k HTTP/1.1\nHost: {HOST}\nDate: {date}\n{}\nContent-Length: 0\nAuthorization: AWS {KEY}:{sig}",
        fields.join("\n").replace(':', ": ")
    );
    assert_eq!(check(&raw, NOW), ok(AuthMethod::V2));
}

/// A SignedHeaders list naming more fields than the request has cannot verify (every signed
/// name is a field of the request): it is refused before any canonical header is written,
/// since each name is looked up in every field (an 8 KiB list of one-letter names cost
/// about a thousand lookups per field). Signed names without a field still count as empty
/// values as long as the list is not longer than the fields.
#[test]
fn v4_signed_list_longer_than_the_request_is_refused() {
    let civil = Civil::from_unix(NOW);
    let amz = civil.amz_date();
    // The wire has 4 fields: Host, x-amz-content-sha256, x-amz-date, Authorization.
    for (absent, verifies) in [(0, true), (1, true), (2, false), (40, false)] {
        let names: Vec<String> = (0..absent).map(|i| format!("x-absent-{i:02}")).collect();
        let mut headers = vec![
            ("host", HOST),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", amz.as_str()),
        ];
        headers.extend(names.iter().map(|n| (n.as_str(), "")));
        let mut signer = V4Signer::new(KEY, SECRET, "garage");
        let sig = signer.sign("GET", "/b/k", "", &headers, EMPTY_SHA256, civil);
        let raw = format!(
            "GET /b/k HTTP/1.1\nHost: {HOST}\nx-amz-content-sha256: {EMPTY_SHA256}\nx-amz-date: {amz}\nAuthorization: {}",
            signer.authorization(&sig, &headers)
        );
        let got = check(&raw, NOW);
        if verifies {
            assert_eq!(got, ok(AuthMethod::V4), "{absent} absent names");
        } else {
            assert_eq!(
                got,
                Err(VerifyError::SignatureDoesNotMatch),
                "{absent} absent names"
            );
        }
    }
}

/// Up to `MAX_SIGNED_QUERY_PARAMS` query parameters a signed request verifies; one more is
/// refused before the canonical query is sorted (a 16 KiB `a&a&a…` query took ~1 ms).
#[test]
fn signed_query_parameters_are_bounded() {
    use super::MAX_SIGNED_QUERY_PARAMS as MAX;
    for (n, verifies) in [(MAX, true), (MAX + 1, false)] {
        let q = (0..n)
            .map(|i| format!("p{i:04}=v"))
            .collect::<Vec<_>>()
            .join("&");
        let got = check(&v4_get("/b/k", "/b/k", &q, &q, EMPTY_SHA256), NOW);
        if verifies {
            assert_eq!(got, ok(AuthMethod::V4), "{n} parameters");
        } else {
            assert_eq!(
                got,
                Err(VerifyError::InvalidArgument(
                    "a signed request may carry at most 128 query parameters"
                )),
                "{n} parameters"
            );
        }
    }
    // Unsigned requests are not verified, whatever their query.
    let q = "a&".repeat(2000);
    let raw = format!("GET /b/k?{q} HTTP/1.1\nHost: {HOST}");
    assert_eq!(check(&raw, NOW), Ok(None));
}
