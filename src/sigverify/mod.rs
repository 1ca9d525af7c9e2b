//! Signature verification in the proxy (optional, `[limits.verify] secrets_file`): checks
//! a request's S3 signature against a secrets table **before the limiter**, so a request
//! naming someone else's access key without its secret is refused (403
//! `SignatureDoesNotMatch`) and never reaches the store or that key's counters.
//!
//! Owns: [`verify`], [`RequestParts`] / [`Headers`] (the request as it sees it),
//! [`Verified`], [`VerifyError`] (S3 code, message, status), the per-core
//! [`SigningKeyCache`], the [`Secrets`] table with its file parser, and [`SecretLookup`].
//! Pure: no I/O, no monoio, no clock (`now` is passed in, Unix seconds); the body is never
//! read, so an aws-chunked upload is verified by its seed (head) signature only.
//! Must not touch: tiers, limits, tables, I/O, and which key a request is charged to —
//! that is `identity`'s; the caller checks that [`Verified::access_key`] is that key.
//!
//! Mechanisms ([`auth`] picks exactly one): SigV4 header ([`v4`]), presigned V4
//! ([`v4`]), SigV2 header ([`v2`]), presigned V2 ([`v2`]). A request with none (anonymous,
//! `X-API-Key`, another `Authorization` scheme) is `Ok(None)`: nothing to verify.
//!
//! Time: a header-signed request whose `x-amz-date` (or `Date`) is more than
//! [`MAX_SKEW_SECS`] from `now` is `RequestTimeTooSkewed`, as S3 answers; a presigned V4
//! URL is valid from `X-Amz-Date` (with the same tolerance) for `X-Amz-Expires` ≤ 7 days;
//! a presigned V2 URL until `Expires`.
//!
//! Cost: one SHA-256 of the canonical request and one HMAC per SigV4 request once the
//! scope's signing key is cached (four more HMACs on a miss); constant-time signature
//! comparison (`hmac`'s `verify_slice`). Nothing allocates except on a cache miss and for
//! more than 32 query parameters or `x-amz-*` fields.

mod auth;
mod cache;
mod encode;
mod error;
mod request;
mod secrets;
mod time;
mod v2;
mod v4;

#[cfg(test)]
mod roundtrip_tests;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

use crate::identity::AuthMethod;

pub use cache::{CacheStats, DEFAULT_SIGNING_KEY_CACHE, SigningKeyCache};
pub use error::VerifyError;
pub use request::{Headers, RequestParts};
pub use secrets::{MAX_ACCESS_KEY_LEN, SecretLookup, Secrets, SecretsError};

/// Largest accepted distance between a signed request's time and `now` (S3's 15 minutes).
pub const MAX_SKEW_SECS: u64 = 15 * 60;

/// A request whose signature the access key's secret produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified<'a> {
    /// The access key that signed (borrowed from the request unless it was
    /// percent-encoded there).
    pub access_key: Cow<'a, [u8]>,
    /// `V4`, `V4Query`, `V2` or `V2Query`.
    pub method: AuthMethod,
}

/// Most query parameters a signed request may carry. The canonical query is sorted (and V2's
/// subresources): with a 16 KiB request-target of `a&a&a…` that took ~1 ms per request, 200
/// times the parse of its head; real S3 requests carry a few, presigned URLs with overrides
/// about a dozen.
pub const MAX_SIGNED_QUERY_PARAMS: usize = 128;

/// Parameters in a query string (`&`-separated; an empty query has none).
fn query_params(query: &[u8]) -> usize {
    if query.is_empty() {
        0
    } else {
        memchr::memchr_iter(b'&', query).count() + 1
    }
}

/// Verifies the signature of `req` at Unix time `now`: `Ok(Some(_))` when it is valid,
/// `Ok(None)` when the request carries no S3 signature, `Err(_)` with the S3 error to
/// answer otherwise.
pub fn verify<'a>(
    req: &RequestParts<'a>,
    secrets: &dyn SecretLookup,
    cache: &mut SigningKeyCache,
    now: u64,
) -> Result<Option<Verified<'a>>, VerifyError> {
    cache.sync_generation(secrets.generation());
    let auth = auth::detect(req)?;
    if !matches!(auth, auth::Auth::None) && query_params(req.query()) > MAX_SIGNED_QUERY_PARAMS {
        return Err(VerifyError::InvalidArgument(
            "a signed request may carry at most 128 query parameters",
        ));
    }
    let verified = match auth {
        auth::Auth::None => return Ok(None),
        auth::Auth::V4Header(params) => v4::verify_header(req, params, secrets, cache, now),
        auth::Auth::V4Query(q) => v4::verify_query(req, &q, secrets, cache, now),
        auth::Auth::V2Header(params) => v2::verify_header(req, params, secrets, now),
        auth::Auth::V2Query(q) => v2::verify_query(req, &q, secrets, now),
    };
    verified.map(Some)
}
