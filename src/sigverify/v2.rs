//! AWS Signature Version 2 (HMAC-SHA1), from `Authorization: AWS KEY:sig` or a presigned
//! query (`AWSAccessKeyId`, `Expires`, `Signature`). The string to sign is
//!
//! ```text
//! METHOD \n Content-MD5 \n Content-Type \n Date \n CanonicalizedAmzHeaders CanonicalizedResource
//! ```
//!
//! with every `x-amz-*` field lower-cased, sorted, repeated fields joined with `,`, and the
//! resource = (bucket from the Host, for virtual-hosted requests) + the path as sent + the
//! sub-resource parameters (sorted; values decoded). It is streamed into HMAC-SHA1.
//!
//! Where clients and servers disagree, each reading is tried (each one is a message only
//! the secret's holder can sign, so trying several forges nothing): the bucket is not
//! known without the store's domain, so the resource is tried path-style first, then with
//! each dot-prefix of the Host as the bucket (`b.s3.example.com` → `b`, `b.s3`, …, the
//! whole host = CNAME style); with `x-amz-date`, the Date line is tried empty (as the S3
//! text says), as the `x-amz-date` value (as its Delete example signs), and as the `Date`
//! header (as MinIO signs). HMAC states are cloned so each try costs only its tail.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::iter::once;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::Mac;

use super::auth::V2Query;
use super::encode::{Decode, HmacSha1, Sink, borrow_if_unencoded, decode_into, put_stream};
use super::error::VerifyError;
use super::request::{RequestParts, gather, params, trim};
use super::secrets::SecretLookup;
use super::time::parse_http_date;
use super::{MAX_SKEW_SECS, Verified};
use crate::identity::AuthMethod;

/// Query parameters that are part of the CanonicalizedResource: the S3 documentation's
/// list, the `response-*` overrides, and those later APIs added that SDKs and servers sign.
const SUBRESOURCES: [&[u8]; 37] = [
    b"accelerate",
    b"acl",
    b"analytics",
    b"cors",
    b"delete",
    b"encryption",
    b"inventory",
    b"legal-hold",
    b"lifecycle",
    b"location",
    b"logging",
    b"metrics",
    b"notification",
    b"object-lock",
    b"partNumber",
    b"policy",
    b"replication",
    b"requestPayment",
    b"response-cache-control",
    b"response-content-disposition",
    b"response-content-encoding",
    b"response-content-language",
    b"response-content-type",
    b"response-expires",
    b"restore",
    b"retention",
    b"select",
    b"select-type",
    b"storageClass",
    b"tagging",
    b"torrent",
    b"uploadId",
    b"uploads",
    b"versionId",
    b"versioning",
    b"versions",
    b"website",
];

/// At most this many Host dot-prefixes are tried as the bucket.
const MAX_BUCKET_CANDIDATES: usize = 8;

/// Base64 with or without padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One reading of the Date line.
#[derive(Clone, Copy)]
struct DateLine<'a> {
    value: &'a [u8],
    /// `x-amz-date` is not among the amz headers in this reading.
    without_x_amz_date: bool,
}

#[derive(Clone, Copy)]
struct AmzField<'a> {
    name: &'a [u8],
    value: &'a [u8],
    index: usize,
}

#[derive(Clone, Copy)]
struct SubResource<'a> {
    name: &'static [u8],
    value: &'a [u8],
    has_eq: bool,
    index: usize,
}

fn cmp_lower(a: &[u8], b: &[u8]) -> Ordering {
    a.iter()
        .map(u8::to_ascii_lowercase)
        .cmp(b.iter().map(u8::to_ascii_lowercase))
}

fn write_amz_headers(sink: &mut impl Sink, fields: &[AmzField<'_>], without_x_amz_date: bool) {
    let mut prev: Option<&[u8]> = None;
    let kept = fields
        .iter()
        .filter(|f| !(without_x_amz_date && f.name.eq_ignore_ascii_case(b"x-amz-date")));
    for f in kept {
        match prev {
            Some(p) if p.eq_ignore_ascii_case(f.name) => sink.put(b","),
            _ => {
                if prev.is_some() {
                    sink.put(b"\n");
                }
                put_stream(sink, f.name.iter().map(u8::to_ascii_lowercase));
                sink.put(b":");
            }
        }
        sink.put(trim(f.value));
        prev = Some(f.name);
    }
    if prev.is_some() {
        sink.put(b"\n");
    }
}

fn write_resource(
    sink: &mut impl Sink,
    bucket: Option<&[u8]>,
    path: &[u8],
    subs: &[SubResource<'_>],
) {
    if let Some(b) = bucket {
        sink.put(b"/");
        sink.put(b);
    }
    sink.put(path);
    for (i, s) in subs.iter().enumerate() {
        sink.put(if i == 0 { b"?" } else { b"&" });
        sink.put(s.name);
        if s.has_eq {
            sink.put(b"=");
            put_stream(sink, Decode::path(s.value));
        }
    }
}

fn subresource_name(raw: &[u8]) -> Option<&'static [u8]> {
    let mut buf = [0u8; 32];
    let name = decode_into(raw, &mut buf)?;
    SUBRESOURCES.iter().copied().find(|s| *s == name)
}

/// The Host (without port) and its dot-prefixes, shortest first; none for an IP literal.
fn bucket_candidates(host: &[u8]) -> impl Iterator<Item = &[u8]> {
    let host = match host.iter().rposition(|&b| b == b':') {
        Some(i) if host[i + 1..].iter().all(u8::is_ascii_digit) => &host[..i],
        _ => host,
    };
    let ip = host.starts_with(b"[") || host.iter().all(|b| b.is_ascii_digit() || *b == b'.');
    let ends = host
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'.')
        .map(|(i, _)| i)
        .chain(once(host.len()));
    ends.filter(move |&end| !ip && end > 0)
        .take(MAX_BUCKET_CANDIDATES)
        .map(move |end| &host[..end])
}

/// Gathers (on the stack) and sorts the `x-amz-*` fields and the sub-resources of `req`,
/// which every reading of its string to sign shares, and hands them to `f`.
fn with_shared_parts<R>(
    req: &RequestParts<'_>,
    f: impl FnOnce(&[AmzField<'_>], &[SubResource<'_>]) -> R,
) -> R {
    let mut amz_stack = [AmzField {
        name: b"",
        value: b"",
        index: 0,
    }; 32];
    let mut amz_heap = Vec::new();
    let amz_fields = req
        .headers
        .iter()
        .enumerate()
        .filter_map(|(index, (name, value))| {
            let amz = name.len() > 6 && name[..6].eq_ignore_ascii_case(b"x-amz-");
            amz.then_some(AmzField { name, value, index })
        });
    let amz = gather(amz_fields, &mut amz_stack, &mut amz_heap);
    amz.sort_unstable_by(|a, b| cmp_lower(a.name, b.name).then(a.index.cmp(&b.index)));

    let mut sub_stack = [SubResource {
        name: b"",
        value: b"",
        has_eq: false,
        index: 0,
    }; 16];
    let mut sub_heap = Vec::new();
    let sub_params = params(req.query()).enumerate().filter_map(|(index, p)| {
        Some(SubResource {
            name: subresource_name(p.name)?,
            value: p.value,
            has_eq: p.has_eq,
            index,
        })
    });
    let subs = gather(sub_params, &mut sub_stack, &mut sub_heap);
    subs.sort_unstable_by(|a, b| a.name.cmp(b.name).then(a.index.cmp(&b.index)));
    f(amz, subs)
}

fn first<'a>(req: &RequestParts<'a>, name: &'a [u8]) -> &'a [u8] {
    req.headers.values(name).next().unwrap_or(b"")
}

/// `METHOD\nContent-MD5\nContent-Type\n`.
fn write_head(sink: &mut impl Sink, req: &RequestParts<'_>) {
    let (md5, content_type) = (first(req, b"content-md5"), first(req, b"content-type"));
    for part in [req.method, b"\n", md5, b"\n", content_type, b"\n"] {
        sink.put(part);
    }
}

/// Whether any reading of the string to sign gives `sig` under `secret`.
fn check(req: &RequestParts<'_>, secret: &[u8], dates: &[DateLine<'_>], sig: &[u8; 20]) -> bool {
    with_shared_parts(req, |amz, subs| {
        let mut head = HmacSha1::new_from_slice(secret).expect("HMAC takes any key length");
        write_head(&mut head, req);
        for d in dates {
            let mut with_date = head.clone();
            with_date.put(d.value);
            with_date.put(b"\n");
            write_amz_headers(&mut with_date, amz, d.without_x_amz_date);
            let buckets = once(None).chain(bucket_candidates(first(req, b"host")).map(Some));
            for bucket in buckets {
                let mut m = with_date.clone();
                write_resource(&mut m, bucket, req.path(), subs);
                if m.verify_slice(sig).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

fn decode_signature(b64: &[u8]) -> Result<[u8; 20], VerifyError> {
    let mut out = [0u8; 32];
    match BASE64.decode_slice(b64, &mut out) {
        Ok(20) => Ok(out[..20].try_into().unwrap_or_default()),
        _ => Err(VerifyError::SignatureDoesNotMatch),
    }
}

/// Verifies `Authorization: AWS KEY:signature`.
pub(crate) fn verify_header<'a>(
    req: &RequestParts<'a>,
    params: &'a [u8],
    secrets: &dyn SecretLookup,
    now: u64,
) -> Result<Verified<'a>, VerifyError> {
    let params = trim(params);
    let colon = params
        .iter()
        .position(|&b| b == b':')
        .filter(|&c| c > 0)
        .ok_or(VerifyError::AuthorizationHeaderMalformed(
            "The authorization header is malformed; expected AWS AccessKeyId:Signature",
        ))?;
    let (key, sig) = (&params[..colon], trim(&params[colon + 1..]));
    let secret = secrets.secret(key).ok_or(VerifyError::InvalidAccessKeyId)?;
    let single = |name| {
        req.headers
            .single(name)
            .map_err(|()| VerifyError::MissingDate)
    };
    let (amz_date, date) = (single(b"x-amz-date")?, single(b"date")?);
    let t = amz_date
        .or(date)
        .and_then(parse_http_date)
        .ok_or(VerifyError::MissingDate)?;
    if t.abs_diff(now) > MAX_SKEW_SECS {
        return Err(VerifyError::RequestTimeTooSkewed);
    }
    let sig = decode_signature(sig)?;
    let line = |value, without_x_amz_date| DateLine {
        value,
        without_x_amz_date,
    };
    let mut dates = [line(b"", false); 3];
    let n = match (amz_date, date) {
        (Some(x), Some(d)) => {
            dates = [line(b"", false), line(x, true), line(d, false)];
            3
        }
        (Some(x), None) => {
            dates[1] = line(x, true);
            2
        }
        (None, Some(d)) => {
            dates[0] = line(d, false);
            1
        }
        (None, None) => return Err(VerifyError::MissingDate),
    };
    if !check(req, secret, &dates[..n], &sig) {
        return Err(VerifyError::SignatureDoesNotMatch);
    }
    Ok(Verified {
        access_key: Cow::Borrowed(key),
        method: AuthMethod::V2,
    })
}

/// Verifies a presigned V2 request.
pub(crate) fn verify_query<'a>(
    req: &RequestParts<'a>,
    q: &V2Query<'a>,
    secrets: &dyn SecretLookup,
    now: u64,
) -> Result<Verified<'a>, VerifyError> {
    let (Some(key_raw), Some(expires_raw), Some(sig_raw)) = (q.access_key, q.expires, q.signature)
    else {
        return Err(VerifyError::MissingV2QueryParameters);
    };
    let mut key_buf = [0u8; 256];
    let key = decode_into(key_raw, &mut key_buf)
        .filter(|k| !k.is_empty())
        .ok_or(VerifyError::InvalidAccessKeyId)?;
    let secret = secrets.secret(key).ok_or(VerifyError::InvalidAccessKeyId)?;
    let mut expires_buf = [0u8; 20];
    let expires = decode_into(expires_raw, &mut expires_buf)
        .filter(|e| !e.is_empty() && e.len() <= 19 && e.iter().all(u8::is_ascii_digit))
        .ok_or(VerifyError::AuthorizationQueryParametersError(
            "Expires must be a number of seconds since 1970-01-01",
        ))?;
    let expires_at = expires
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    if now > expires_at {
        return Err(VerifyError::Expired);
    }
    // `+` in a signature left unencoded reads as a space; base64 has no spaces.
    let mut sig_buf = [0u8; 64];
    let sig = decode_into(sig_raw, &mut sig_buf).ok_or(VerifyError::SignatureDoesNotMatch)?;
    let mut sig_plus = [0u8; 64];
    for (d, &s) in sig_plus.iter_mut().zip(sig) {
        *d = if s == b' ' { b'+' } else { s };
    }
    let sig = decode_signature(&sig_plus[..sig.len()])?;
    let dates = [DateLine {
        value: expires,
        without_x_amz_date: false,
    }];
    if !check(req, secret, &dates, &sig) {
        return Err(VerifyError::SignatureDoesNotMatch);
    }
    Ok(Verified {
        access_key: borrow_if_unencoded(key_raw, key),
        method: AuthMethod::V2Query,
    })
}

/// The string to sign of one reading (tests compare it with published ones).
#[cfg(test)]
pub(crate) fn string_to_sign_text(
    req: &RequestParts<'_>,
    date: &[u8],
    without_x_amz_date: bool,
    bucket: Option<&[u8]>,
) -> String {
    let mut v: Vec<u8> = Vec::new();
    write_head(&mut v, req);
    v.put(date);
    v.put(b"\n");
    with_shared_parts(req, |amz, subs| {
        write_amz_headers(&mut v, amz, without_x_amz_date);
        write_resource(&mut v, bucket, req.path(), subs);
    });
    String::from_utf8(v).expect("test strings are UTF-8")
}
