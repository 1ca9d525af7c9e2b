//! AWS Signature Version 4 (`AWS4-HMAC-SHA256`), from the `Authorization` header or a
//! presigned query. The canonical request is streamed into SHA-256, never built:
//!
//! - path: as sent (S3 neither re-encodes nor normalises it); when the client sent bytes
//!   AWS would have encoded (`$`, a space, raw UTF-8), the decoded-and-AWS-encoded path is
//!   tried as well — the form servers such as MinIO and Garage sign — at the cost of one
//!   more hash, only then;
//! - query: every parameter decoded (`+` is a space) and AWS-encoded, sorted by name then
//!   value; for presigned requests without `X-Amz-Signature`;
//! - headers: the `SignedHeaders` list in its order, values trimmed, inner whitespace runs
//!   collapsed to one space, repeated fields joined with `,` in arrival order;
//! - payload: the `x-amz-content-sha256` value as sent (a hex digest, `UNSIGNED-PAYLOAD`,
//!   `STREAMING-…`), the empty-body digest without one; presigned: the
//!   `X-Amz-Content-Sha256` parameter or `UNSIGNED-PAYLOAD`. The body is never read: for
//!   aws-chunked uploads only the seed signature (the head's) is checked.

use std::borrow::Cow;

use hmac::Mac;
use sha2::{Digest, Sha256};

use super::auth::V4Query;
use super::cache::SigningKeyCache;
use super::encode::{
    HmacSha256, Sink, borrow_if_unencoded, cmp_query_parts, decode_into, decoded_eq_ignore_case,
    normalised_path, path_is_normalised, put_query_part, put_stream,
};
use super::error::VerifyError;
use super::request::{Param, RequestParts, gather, is_ws, params};
use super::secrets::SecretLookup;
use super::time::{format_amz_date, parse_amz_date, parse_http_date};
use super::{MAX_SKEW_SECS, Verified};
use crate::identity::AuthMethod;

const ALGORITHM: &[u8] = b"AWS4-HMAC-SHA256";
/// SHA-256 of the empty payload.
pub(crate) const EMPTY_SHA256: &[u8] =
    b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const UNSIGNED_PAYLOAD: &[u8] = b"UNSIGNED-PAYLOAD";
/// Longest validity of a presigned V4 URL (seven days), as S3 enforces.
const MAX_EXPIRES_SECS: u64 = 604_800;

/// A credential scope: `KEY/date/region/service/aws4_request`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Scope<'a> {
    pub access_key: &'a [u8],
    pub date: &'a [u8],
    pub region: &'a [u8],
    pub service: &'a [u8],
}

pub(crate) fn parse_scope(credential: &[u8]) -> Option<Scope<'_>> {
    let mut it = credential.split(|&b| b == b'/');
    let scope = Scope {
        access_key: it.next()?,
        date: it.next()?,
        region: it.next()?,
        service: it.next()?,
    };
    let well_formed = it.next() == Some(b"aws4_request")
        && it.next().is_none()
        && !scope.access_key.is_empty()
        && scope.date.len() == 8
        && scope.date.iter().all(u8::is_ascii_digit)
        && !scope.region.is_empty()
        && !scope.service.is_empty();
    well_formed.then_some(scope)
}

/// Everything a V4 signature is checked over, read from the request.
struct Claim<'r, 'a> {
    req: &'r RequestParts<'a>,
    scope: Scope<'r>,
    amz_date: [u8; 16],
    signed_headers: &'r [u8],
    payload_hash: &'r [u8],
    signature: [u8; 32],
    presigned: bool,
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// The HMAC keyed with kSigning of `scope` (four HMACs from the secret).
pub(crate) fn signing_mac(secret: &[u8], scope: &Scope<'_>) -> HmacSha256 {
    let mut k_secret = Vec::with_capacity(4 + secret.len());
    k_secret.extend_from_slice(b"AWS4");
    k_secret.extend_from_slice(secret);
    let k = hmac(&k_secret, scope.date);
    let k = hmac(&k, scope.region);
    let k = hmac(&k, scope.service);
    let k = hmac(&k, b"aws4_request");
    HmacSha256::new_from_slice(&k).expect("HMAC takes any key length")
}

fn put_collapsed(sink: &mut impl Sink, value: &[u8]) {
    let words = value.split(|&b| is_ws(b)).filter(|w| !w.is_empty());
    for (i, word) in words.enumerate() {
        if i > 0 {
            sink.put(b" ");
        }
        sink.put(word);
    }
}

fn write_canonical_headers(sink: &mut impl Sink, c: &Claim<'_, '_>) {
    for name in c.signed_headers.split(|&b| b == b';') {
        sink.put(name);
        sink.put(b":");
        for (i, value) in c.req.headers.values(name).enumerate() {
            if i > 0 {
                sink.put(b",");
            }
            put_collapsed(sink, value);
        }
        sink.put(b"\n");
    }
}

fn write_canonical_query(sink: &mut impl Sink, query: &[u8], presigned: bool) {
    let keep = |p: &Param<'_>| !(presigned && decoded_eq_ignore_case(p.name, b"X-Amz-Signature"));
    let mut stack = [Param::EMPTY; 32];
    let mut heap = Vec::new();
    let list = gather(params(query).filter(keep), &mut stack, &mut heap);
    list.sort_unstable_by(|a, b| {
        cmp_query_parts(a.name, b.name).then_with(|| cmp_query_parts(a.value, b.value))
    });
    for (i, p) in list.iter().enumerate() {
        if i > 0 {
            sink.put(b"&");
        }
        put_query_part(sink, p.name);
        sink.put(b"=");
        put_query_part(sink, p.value);
    }
}

/// The canonical request of `c`, with the path as sent or AWS-normalised.
fn write_canonical_request(sink: &mut impl Sink, c: &Claim<'_, '_>, normalise_path: bool) {
    sink.put(c.req.method);
    sink.put(b"\n");
    if normalise_path {
        put_stream(sink, normalised_path(c.req.path()));
    } else {
        sink.put(c.req.path());
    }
    sink.put(b"\n");
    write_canonical_query(sink, c.req.query(), c.presigned);
    sink.put(b"\n");
    write_canonical_headers(sink, c);
    sink.put(b"\n");
    sink.put(c.signed_headers);
    sink.put(b"\n");
    sink.put(c.payload_hash);
}

fn write_string_to_sign(sink: &mut impl Sink, c: &Claim<'_, '_>, canonical_hash: &[u8]) {
    let mut hex = [0u8; 64];
    hex::encode_to_slice(canonical_hash, &mut hex).expect("32 bytes fit 64 hex digits");
    for part in [
        ALGORITHM,
        b"\n",
        &c.amz_date,
        b"\n",
        c.scope.date,
        b"/",
        c.scope.region,
        b"/",
        c.scope.service,
        b"/aws4_request\n",
        &hex,
    ] {
        sink.put(part);
    }
}

fn signature_matches(c: &Claim<'_, '_>, mac: &HmacSha256, normalise_path: bool) -> bool {
    let mut h = Sha256::new();
    write_canonical_request(&mut h, c, normalise_path);
    let mut m = mac.clone();
    write_string_to_sign(&mut m, c, &h.finalize());
    m.verify_slice(&c.signature).is_ok()
}

/// Checks `c` with the (cached or derived) signing key of its scope; a derived key is
/// cached once it verified a signature.
fn check(c: &Claim<'_, '_>, secret: &[u8], cache: &mut SigningKeyCache) -> Result<(), VerifyError> {
    // Every signed name is a field of the request, so a list naming more than the request
    // has cannot verify; refused before the canonical headers are written (each name looks
    // through every field: an 8 KiB list of one-letter names would cost ~1,000 times that).
    if memchr::memchr_iter(b';', c.signed_headers).count() >= c.req.headers.len() {
        return Err(VerifyError::SignatureDoesNotMatch);
    }
    let cached = cache.get(&c.scope);
    let hit = cached.is_some();
    let mac = cached.unwrap_or_else(|| signing_mac(secret, &c.scope));
    let ok = signature_matches(c, &mac, false)
        || (!path_is_normalised(c.req.path()) && signature_matches(c, &mac, true));
    if !ok {
        return Err(VerifyError::SignatureDoesNotMatch);
    }
    if !hit {
        cache.insert(&c.scope, mac);
    }
    Ok(())
}

fn decode_signature(hex_sig: &[u8]) -> Result<[u8; 32], VerifyError> {
    let mut sig = [0u8; 32];
    hex::decode_to_slice(hex_sig, &mut sig).map_err(|_| VerifyError::SignatureDoesNotMatch)?;
    Ok(sig)
}

/// `Credential=…, SignedHeaders=…, Signature=…` (any order, comma and/or space
/// separated, each exactly once).
fn parse_header_params(params: &[u8]) -> Result<[&[u8]; 3], VerifyError> {
    const MALFORMED: VerifyError = VerifyError::AuthorizationHeaderMalformed(
        "The authorization header is malformed; it must hold Credential, SignedHeaders and Signature, each once",
    );
    let mut found: [Option<&[u8]>; 3] = [None; 3];
    let tokens = params
        .split(|&b| b == b',' || is_ws(b))
        .filter(|t| !t.is_empty());
    for tok in tokens {
        let eq = tok.iter().position(|&b| b == b'=').ok_or(MALFORMED)?;
        let slot = match &tok[..eq] {
            b"Credential" => 0,
            b"SignedHeaders" => 1,
            b"Signature" => 2,
            _ => return Err(MALFORMED),
        };
        if found[slot].replace(&tok[eq + 1..]).is_some() {
            return Err(MALFORMED);
        }
    }
    match found {
        [Some(c), Some(h), Some(s)] => Ok([c, h, s]),
        _ => Err(MALFORMED),
    }
}

/// The request time of a header-signed request: `x-amz-date`, else `Date`.
fn header_time(req: &RequestParts<'_>) -> Result<(u64, [u8; 16]), VerifyError> {
    let single = |name| {
        req.headers
            .single(name)
            .map_err(|()| VerifyError::MissingDate)
    };
    if let Some(v) = single(b"x-amz-date")? {
        let t = parse_amz_date(v).ok_or(VerifyError::MissingDate)?;
        return Ok((t, v.try_into().unwrap_or_default()));
    }
    let date = single(b"date")?.ok_or(VerifyError::MissingDate)?;
    let t = parse_http_date(date).ok_or(VerifyError::MissingDate)?;
    Ok((t, format_amz_date(t)))
}

/// Verifies `Authorization: AWS4-HMAC-SHA256 <params>`.
pub(crate) fn verify_header<'a>(
    req: &RequestParts<'a>,
    params: &'a [u8],
    secrets: &dyn SecretLookup,
    cache: &mut SigningKeyCache,
    now: u64,
) -> Result<Verified<'a>, VerifyError> {
    let [credential, signed_headers, signature] = parse_header_params(params)?;
    let scope = parse_scope(credential).ok_or(VerifyError::AuthorizationHeaderMalformed(
        "The authorization header is malformed; the Credential is not KEY/yyyymmdd/region/service/aws4_request",
    ))?;
    let secret = secrets
        .secret(scope.access_key)
        .ok_or(VerifyError::InvalidAccessKeyId)?;
    let (t, amz_date) = header_time(req)?;
    if amz_date[..8] != *scope.date {
        return Err(VerifyError::AuthorizationHeaderMalformed(
            "Invalid credential date. Date is not the same as X-Amz-Date.",
        ));
    }
    if t.abs_diff(now) > MAX_SKEW_SECS {
        return Err(VerifyError::RequestTimeTooSkewed);
    }
    let payload_hash = req
        .headers
        .single(b"x-amz-content-sha256")
        .map_err(|()| {
            VerifyError::AuthorizationHeaderMalformed("x-amz-content-sha256 is repeated")
        })?
        .unwrap_or(EMPTY_SHA256);
    let claim = Claim {
        req,
        scope,
        amz_date,
        signed_headers,
        payload_hash,
        signature: decode_signature(signature)?,
        presigned: false,
    };
    check(&claim, secret, cache)?;
    Ok(Verified {
        access_key: Cow::Borrowed(scope.access_key),
        method: AuthMethod::V4,
    })
}

const MISSING_QUERY: VerifyError = VerifyError::AuthorizationQueryParametersError(
    "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
);

fn query_error(m: &'static str) -> VerifyError {
    VerifyError::AuthorizationQueryParametersError(m)
}

/// Decoded copies of the presigned parameters (bounded; too long → refused).
struct QueryBufs {
    algorithm: [u8; 32],
    credential: [u8; 512],
    date: [u8; 16],
    expires: [u8; 16],
    signed_headers: [u8; 1024],
    signature: [u8; 64],
    content_sha256: [u8; 128],
}

impl QueryBufs {
    fn new() -> Self {
        QueryBufs {
            algorithm: [0; 32],
            credential: [0; 512],
            date: [0; 16],
            expires: [0; 16],
            signed_headers: [0; 1024],
            signature: [0; 64],
            content_sha256: [0; 128],
        }
    }
}

fn parse_expires(raw: &[u8], buf: &mut [u8; 16]) -> Result<u64, VerifyError> {
    let digits = decode_into(raw, buf)
        .filter(|d| !d.is_empty() && d.len() <= 15 && d.iter().all(u8::is_ascii_digit))
        .ok_or(query_error("X-Amz-Expires should be a number"))?;
    let secs = digits
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    if secs > MAX_EXPIRES_SECS {
        return Err(query_error(
            "X-Amz-Expires must be less than a week (in seconds) that is 604800",
        ));
    }
    Ok(secs)
}

/// The decoded presigned parameters.
struct Presigned<'b> {
    scope: Scope<'b>,
    amz_date: [u8; 16],
    time: u64,
    expires: u64,
    signed_headers: &'b [u8],
    signature: &'b [u8],
    payload_hash: &'b [u8],
}

fn read_presigned<'b>(q: &V4Query<'_>, b: &'b mut QueryBufs) -> Result<Presigned<'b>, VerifyError> {
    let (Some(alg), Some(cred), Some(date), Some(expires), Some(signed), Some(sig)) = (
        q.algorithm,
        q.credential,
        q.date,
        q.expires,
        q.signed_headers,
        q.signature,
    ) else {
        return Err(MISSING_QUERY);
    };
    if decode_into(alg, &mut b.algorithm) != Some(ALGORITHM) {
        return Err(query_error(
            "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"",
        ));
    }
    let scope = decode_into(cred, &mut b.credential).and_then(parse_scope).ok_or(query_error(
        "Error parsing the X-Amz-Credential parameter; it must be KEY/yyyymmdd/region/service/aws4_request",
    ))?;
    let date = decode_into(date, &mut b.date).unwrap_or_default();
    let (Some(time), Ok(amz_date)) = (parse_amz_date(date), <[u8; 16]>::try_from(date)) else {
        return Err(query_error(
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
        ));
    };
    if amz_date[..8] != *scope.date {
        return Err(query_error(
            "Invalid credential date. Date is not the same as X-Amz-Date.",
        ));
    }
    Ok(Presigned {
        scope,
        amz_date,
        time,
        expires: parse_expires(expires, &mut b.expires)?,
        signed_headers: decode_into(signed, &mut b.signed_headers)
            .ok_or(query_error("X-Amz-SignedHeaders is too long"))?,
        signature: decode_into(sig, &mut b.signature).ok_or(VerifyError::SignatureDoesNotMatch)?,
        payload_hash: match q.content_sha256 {
            Some(raw) => decode_into(raw, &mut b.content_sha256)
                .ok_or(query_error("X-Amz-Content-Sha256 is too long"))?,
            None => UNSIGNED_PAYLOAD,
        },
    })
}

/// Verifies a presigned V4 request.
pub(crate) fn verify_query<'a>(
    req: &RequestParts<'a>,
    q: &V4Query<'a>,
    secrets: &dyn SecretLookup,
    cache: &mut SigningKeyCache,
    now: u64,
) -> Result<Verified<'a>, VerifyError> {
    let mut bufs = QueryBufs::new();
    let p = read_presigned(q, &mut bufs)?;
    let secret = secrets
        .secret(p.scope.access_key)
        .ok_or(VerifyError::InvalidAccessKeyId)?;
    if now > p.time + p.expires {
        return Err(VerifyError::Expired);
    }
    if p.time > now + MAX_SKEW_SECS {
        return Err(VerifyError::NotYetValid);
    }
    let claim = Claim {
        req,
        scope: p.scope,
        amz_date: p.amz_date,
        signed_headers: p.signed_headers,
        payload_hash: p.payload_hash,
        signature: decode_signature(p.signature)?,
        presigned: true,
    };
    check(&claim, secret, cache)?;
    let raw_credential = q.credential.unwrap_or_default();
    Ok(Verified {
        access_key: borrow_if_unencoded(raw_credential, p.scope.access_key),
        method: AuthMethod::V4Query,
    })
}

/// The canonical request text (tests compare it with published ones).
#[cfg(test)]
pub(crate) fn canonical_request_text(
    req: &RequestParts<'_>,
    signed_headers: &[u8],
    payload_hash: &[u8],
    presigned: bool,
    normalise_path: bool,
) -> String {
    let claim = Claim {
        req,
        scope: Scope {
            access_key: b"K",
            date: b"20150830",
            region: b"r",
            service: b"s",
        },
        amz_date: *b"20150830T123600Z",
        signed_headers,
        payload_hash,
        signature: [0; 32],
        presigned,
    };
    let mut v = Vec::new();
    write_canonical_request(&mut v, &claim, normalise_path);
    String::from_utf8(v).expect("canonical requests of the tests are UTF-8")
}
