//! The data path's own HTTP/1.1 codec, built on `httparse`. Pure: no I/O, no monoio.
//!
//! Owns: request and response head parsing into byte ranges of the caller's buffer
//! ([`request`], [`response`]), request-smuggling rejection (RFC 9110/9112 framing rules),
//! hop-by-hop classification, writing the heads sent on (raw lines verbatim, so the bytes a
//! client signed survive: target, case and order), passing chunked bodies through while
//! finding where they end ([`chunked`]), S3-style XML error responses ([`s3error`]), and
//! request methods with their counter index, matched once per request ([`method`]).
//!
//! Must not touch: sockets, buffers pools, time, the rate limiter or configuration types.
//! Parsing reuses the caller's `Vec`s and allocates nothing in steady state; errors are
//! `Copy` values with `&'static str` details.

mod body;
mod chunked;
mod fields;
mod method;
pub mod pct;
mod request;
mod response;
mod s3error;
#[cfg(test)]
mod split_tests;

use std::ops::Range;

pub use body::BodyProgress;
pub use chunked::{ChunkError, ChunkedScanner, MAX_CHUNK_LINE, MAX_TRAILER_BYTES};
pub use method::{METHOD_NAMES, METHODS, Method, MethodSet, method_index};
pub use request::{ReparseGate, RequestHead, parse_request, signed_hop_by_hop, write_request_head};
pub use response::{ConnHeader, ResponseHead, parse_response, write_response_head};
pub use s3error::{
    AUTH_FAILURE_SCAN, AuthFailure, ErrorBody, auth_failure_code, reason_phrase,
    write_error_response,
};

/// Upper bound on header fields parsed without allocating (a stack array of this many
/// `httparse::Header`s). A `max_headers` above it still works but allocates a scratch array
/// for heads that carry more than this many fields.
pub const HEADER_STACK_CAP: usize = 128;

/// Limits applied to every head parsed.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// Max bytes of a head (start line + header lines + final CRLF).
    pub max_head_bytes: usize,
    /// Max number of header field lines.
    pub max_headers: usize,
}

/// How the body following a head is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body at all.
    None,
    /// Exactly this many bytes (`Length(0)` is a valid, empty body).
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked`: scan with [`ChunkedScanner`].
    Chunked,
    /// Responses only: the body runs until the upstream closes the connection.
    UntilClose,
}

impl BodyFraming {
    /// Whether any body bytes can follow the head.
    pub fn has_body(self) -> bool {
        !matches!(self, BodyFraming::None | BodyFraming::Length(0))
    }
}

/// Where one header field line sits in the parsed buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderPos {
    /// The field name as sent (case preserved).
    pub name: Range<usize>,
    /// The field value without surrounding whitespace.
    pub value: Range<usize>,
    /// The whole line including its CRLF.
    pub line: Range<usize>,
    /// Hop-by-hop: a fixed RFC 9110 name or one listed in a `Connection` header.
    pub hop_by_hop: bool,
}

impl HeaderPos {
    /// The name bytes.
    pub fn name<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.name.clone()]
    }
    /// The value bytes.
    pub fn value<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.value.clone()]
    }
    /// The raw line, CRLF included.
    pub fn line<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.line.clone()]
    }
    /// Case-insensitive name comparison.
    pub fn is(&self, buf: &[u8], name: &str) -> bool {
        self.name(buf).eq_ignore_ascii_case(name.as_bytes())
    }
}

/// Outcome of a parse that did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseStatus {
    /// The whole head is in the buffer; `head_len` says where the body starts.
    Complete,
    /// More bytes are needed.
    Partial,
}

/// Why a head was refused. Small and `Copy`: never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The head is larger than `max_head_bytes`.
    #[error("head larger than the configured limit")]
    TooLarge,
    /// More header lines than `max_headers`.
    #[error("more header fields than the configured limit")]
    TooManyHeaders,
    /// Not HTTP/1.x syntax.
    #[error("malformed head: {0}")]
    Malformed(&'static str),
    /// Ambiguous framing: a request-smuggling / response-splitting shape.
    #[error("ambiguous message framing: {0}")]
    Smuggling(&'static str),
    /// An HTTP version other than 1.0 and 1.1.
    #[error("HTTP version not supported")]
    Version,
    /// A valid request this proxy does not carry (CONNECT, protocol upgrades, transfer
    /// codings other than `chunked`).
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
}

impl HeadError {
    /// Status code to answer a client with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            HeadError::Malformed(_) | HeadError::Smuggling(_) => 400,
            HeadError::Version => 505,
            HeadError::NotImplemented(_) => 501,
        }
    }

    /// The S3 `<Code>` for the error body.
    pub fn s3_code(&self) -> &'static str {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => "RequestHeaderSectionTooLarge",
            HeadError::Malformed(_) | HeadError::Smuggling(_) => "BadRequest",
            HeadError::Version => "HttpVersionNotSupported",
            HeadError::NotImplemented(_) => "NotImplemented",
        }
    }

    /// A human-readable `<Message>` for the error body.
    pub fn message(&self) -> &'static str {
        match self {
            HeadError::TooLarge => "Your request header section exceeds the maximum allowed size.",
            HeadError::TooManyHeaders => "Your request has more header fields than allowed.",
            HeadError::Malformed(m) | HeadError::Smuggling(m) | HeadError::NotImplemented(m) => m,
            HeadError::Version => "Only HTTP/1.0 and HTTP/1.1 are supported.",
        }
    }
}
