//! Which signature a request carries. Exactly one mechanism or none: an AWS
//! `Authorization` header (`AWS4-…`, `AWS`) together with presigned query parameters, V2
//! and V4 query parameters together, two `Authorization` headers, or an auth parameter
//! named twice (any case, any percent-encoding of its name) is refused, because the store
//! might read the other one.

use super::encode::decoded_eq_ignore_case;
use super::error::{ONE_MECHANISM, REPEATED_PARAMETER, VerifyError};
use super::request::{Param, RequestParts, params, trim};

/// The signature-bearing parts of a request, still raw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Auth<'a> {
    /// No S3 signature (anonymous, a custom key header, another `Authorization` scheme).
    None,
    /// `Authorization: AWS4-HMAC-SHA256 <params>`.
    V4Header(&'a [u8]),
    /// `Authorization: AWS <KEY:signature>`.
    V2Header(&'a [u8]),
    V4Query(V4Query<'a>),
    V2Query(V2Query<'a>),
}

/// Presigned-V4 parameters (raw values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct V4Query<'a> {
    pub algorithm: Option<&'a [u8]>,
    pub credential: Option<&'a [u8]>,
    pub date: Option<&'a [u8]>,
    pub expires: Option<&'a [u8]>,
    pub signed_headers: Option<&'a [u8]>,
    pub signature: Option<&'a [u8]>,
    pub content_sha256: Option<&'a [u8]>,
}

/// Presigned-V2 parameters (raw values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct V2Query<'a> {
    pub access_key: Option<&'a [u8]>,
    pub expires: Option<&'a [u8]>,
    pub signature: Option<&'a [u8]>,
}

impl V4Query<'_> {
    fn present(&self) -> bool {
        self.algorithm.is_some() || self.credential.is_some() || self.signature.is_some()
    }
}

impl V2Query<'_> {
    fn present(&self) -> bool {
        self.access_key.is_some() || self.signature.is_some()
    }
}

/// Sorts one query parameter into its slot; `Err` when the slot is already taken.
fn take<'a>(p: Param<'a>, v4: &mut V4Query<'a>, v2: &mut V2Query<'a>) -> Result<(), VerifyError> {
    let slots: [(&[u8], &mut Option<&'a [u8]>); 10] = [
        (b"X-Amz-Algorithm", &mut v4.algorithm),
        (b"X-Amz-Credential", &mut v4.credential),
        (b"X-Amz-Date", &mut v4.date),
        (b"X-Amz-Expires", &mut v4.expires),
        (b"X-Amz-SignedHeaders", &mut v4.signed_headers),
        (b"X-Amz-Signature", &mut v4.signature),
        (b"X-Amz-Content-Sha256", &mut v4.content_sha256),
        (b"AWSAccessKeyId", &mut v2.access_key),
        (b"Expires", &mut v2.expires),
        (b"Signature", &mut v2.signature),
    ];
    for (name, slot) in slots {
        if decoded_eq_ignore_case(p.name, name) {
            return match slot.replace(p.value) {
                Some(_) => Err(REPEATED_PARAMETER),
                None => Ok(()),
            };
        }
    }
    Ok(())
}

/// Finds the one signature mechanism of `req`. As in identity extraction, an
/// `Authorization` header counts as a mechanism when its scheme is an AWS one (`AWS4-…`,
/// `AWS`); two `Authorization` headers of any scheme are refused.
pub(crate) fn detect<'a>(req: &RequestParts<'a>) -> Result<Auth<'a>, VerifyError> {
    let (mut v4, mut v2) = (V4Query::default(), V2Query::default());
    for p in params(req.query()) {
        take(p, &mut v4, &mut v2)?;
    }
    let header = req
        .headers
        .single(b"authorization")
        .map_err(|()| ONE_MECHANISM)?
        .map(header_scheme)
        .filter(|(scheme, _)| *scheme != Scheme::NotAws);
    match (header, v4.present(), v2.present()) {
        (Some(_), true, _) | (Some(_), _, true) | (None, true, true) => Err(ONE_MECHANISM),
        (Some((Scheme::V4, params)), false, false) => Ok(Auth::V4Header(params)),
        (Some((Scheme::V2, params)), false, false) => Ok(Auth::V2Header(params)),
        (Some(_), false, false) => Err(VerifyError::AuthorizationHeaderMalformed(
            "Unsupported signing algorithm: only AWS4-HMAC-SHA256 and AWS (V2) are verified",
        )),
        (None, true, false) => Ok(Auth::V4Query(v4)),
        (None, false, true) => Ok(Auth::V2Query(v2)),
        (None, false, false) => Ok(Auth::None),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    /// `AWS4-HMAC-SHA256`.
    V4,
    /// Another `AWS4-…` algorithm (SigV4a): not verifiable here.
    V4Other,
    /// `AWS` (SigV2).
    V2,
    /// `Bearer`, `Basic`, …: not an S3 signature.
    NotAws,
}

/// The scheme of an `Authorization` value and the parameters after it.
fn header_scheme(value: &[u8]) -> (Scheme, &[u8]) {
    let value = trim(value);
    let end = value
        .iter()
        .position(|&b| b == b' ' || b == b'\t')
        .unwrap_or(value.len());
    let (scheme, rest) = value.split_at(end);
    let kind = if scheme.eq_ignore_ascii_case(b"AWS4-HMAC-SHA256") {
        Scheme::V4
    } else if scheme.len() > 5 && scheme[..5].eq_ignore_ascii_case(b"AWS4-") {
        Scheme::V4Other
    } else if scheme.eq_ignore_ascii_case(b"AWS") {
        Scheme::V2
    } else {
        Scheme::NotAws
    };
    (kind, rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigverify::request::Headers;

    fn detect_of(target: &str, auth: &[&str]) -> Result<Auth<'static>, VerifyError> {
        let target: &'static str = Box::leak(target.to_string().into_boxed_str());
        let pairs: Vec<(&'static [u8], &'static [u8])> = auth
            .iter()
            .map(|v| {
                let v: &'static str = Box::leak(v.to_string().into_boxed_str());
                (&b"Authorization"[..], v.as_bytes())
            })
            .collect();
        let pairs: &'static [(&[u8], &[u8])] = Box::leak(pairs.into_boxed_slice());
        detect(&RequestParts {
            method: b"GET",
            target: target.as_bytes(),
            headers: Headers::Pairs(pairs),
        })
    }

    const V4: &str = "AWS4-HMAC-SHA256 Credential=K/20130524/r/s3/aws4_request, SignedHeaders=host, Signature=00";

    #[test]
    fn one_mechanism_each() {
        assert!(matches!(detect_of("/b/k", &[V4]), Ok(Auth::V4Header(_))));
        assert!(matches!(
            detect_of("/b/k", &["AWS K:c2ln"]),
            Ok(Auth::V2Header(b" K:c2ln"))
        ));
        assert!(matches!(detect_of("/b/k", &["Bearer x"]), Ok(Auth::None)));
        assert!(matches!(
            detect_of("/b?X-Amz-Signature=00", &["Bearer x"]),
            Ok(Auth::V4Query(_))
        ));
        assert_eq!(
            detect_of("/b", &["Bearer x", "Bearer y"]),
            Err(ONE_MECHANISM)
        );
        assert!(matches!(detect_of("/b/k?x=1", &[]), Ok(Auth::None)));
        let Ok(Auth::V4Query(q)) = detect_of("/b?X-Amz-Credential=K%2F&X-Amz-Signature=00", &[])
        else {
            panic!("not V4 query");
        };
        assert_eq!(q.credential, Some(&b"K%2F"[..]));
        let Ok(Auth::V2Query(q)) = detect_of("/b?AWSAccessKeyId=K&Expires=1&Signature=s", &[])
        else {
            panic!("not V2 query");
        };
        assert_eq!(q.expires, Some(&b"1"[..]));
    }

    #[test]
    fn ambiguity_is_refused() {
        for (target, auth) in [
            ("/b?X-Amz-Credential=K%2F", &[V4][..]),
            ("/b?AWSAccessKeyId=K", &["AWS K:s"][..]),
            ("/b?x-amz-signature=00", &["AWS4-ECDSA-P256-SHA256 x"][..]),
            ("/b?AWSAccessKeyId=K&X-Amz-Credential=K", &[][..]),
            ("/b", &[V4, V4][..]),
        ] {
            assert_eq!(
                detect_of(target, auth),
                Err(ONE_MECHANISM),
                "{target} {auth:?}"
            );
        }
        for target in [
            "/b?X-Amz-Credential=a&x-amz-credential=b",
            "/b?X-Amz-Credential=a&X-Amz-%43redential=b",
            "/b?AWSAccessKeyId=a&awsaccesskeyid=b",
            "/b?X-Amz-Signature=a&X-AMZ-SIGNATURE=b",
        ] {
            assert_eq!(detect_of(target, &[]), Err(REPEATED_PARAMETER), "{target}");
        }
    }

    #[test]
    fn other_v4_algorithms_are_refused() {
        assert!(matches!(
            detect_of(
                "/",
                &["AWS4-ECDSA-P256-SHA256 Credential=K/20130524/s3/aws4_request"]
            ),
            Err(VerifyError::AuthorizationHeaderMalformed(_))
        ));
    }
}
