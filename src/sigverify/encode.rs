//! Byte plumbing for canonical strings: percent-decoding, AWS URI encoding, and the
//! [`Sink`] every canonical form is written into (a hasher, a MAC, or a `Vec` in tests),
//! so no canonical request is ever built as a string on the data path.

use std::borrow::Cow;

use hmac::Mac;
use sha2::Digest;

pub(crate) type HmacSha256 = hmac::Hmac<sha2::Sha256>;
pub(crate) type HmacSha1 = hmac::Hmac<sha1::Sha1>;

/// Where canonical bytes go.
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for sha2::Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        Digest::update(self, bytes);
    }
}

impl Sink for HmacSha256 {
    fn put(&mut self, bytes: &[u8]) {
        Mac::update(self, bytes);
    }
}

impl Sink for HmacSha1 {
    fn put(&mut self, bytes: &[u8]) {
        Mac::update(self, bytes);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Writes a byte stream in 64-byte pieces (one `put` per piece, not per byte).
pub(crate) fn put_stream(sink: &mut impl Sink, bytes: impl Iterator<Item = u8>) {
    let mut buf = [0u8; 64];
    let mut n = 0;
    for b in bytes {
        buf[n] = b;
        n += 1;
        if n == buf.len() {
            sink.put(&buf);
            n = 0;
        }
    }
    sink.put(&buf[..n]);
}

/// Percent-decoding of one URI component (see `http::pct`).
pub(crate) use crate::http::pct::PercentDecode as Decode;

pub(crate) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// AWS URI encoding of a byte stream: unreserved bytes as they are, `/` too when
/// `keep_slash`, every other byte `%XX` in upper case.
#[derive(Clone)]
pub(crate) struct Encode<I> {
    inner: I,
    keep_slash: bool,
    pending: [u8; 2],
    npending: u8,
}

impl<I: Iterator<Item = u8>> Encode<I> {
    pub(crate) fn new(inner: I, keep_slash: bool) -> Self {
        Encode {
            inner,
            keep_slash,
            pending: [0; 2],
            npending: 0,
        }
    }
}

impl<I: Iterator<Item = u8>> Iterator for Encode<I> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        if self.npending > 0 {
            let b = self.pending[2 - self.npending as usize];
            self.npending -= 1;
            return Some(b);
        }
        let b = self.inner.next()?;
        if is_unreserved(b) || (self.keep_slash && b == b'/') {
            return Some(b);
        }
        self.pending = [HEX[(b >> 4) as usize], HEX[(b & 15) as usize]];
        self.npending = 2;
        Some(b'%')
    }
}

/// The canonical (decoded, then AWS-encoded) form of a query name or value.
pub(crate) fn canonical_query_part(raw: &[u8]) -> Encode<Decode<'_>> {
    Encode::new(Decode::query(raw), false)
}

/// Only unreserved bytes: its own canonical query form (the common case, written as is).
pub(crate) fn is_plain(raw: &[u8]) -> bool {
    raw.iter().all(|&b| is_unreserved(b))
}

/// Writes the canonical query form of `raw`.
pub(crate) fn put_query_part(sink: &mut impl Sink, raw: &[u8]) {
    if is_plain(raw) {
        sink.put(raw);
    } else {
        put_stream(sink, canonical_query_part(raw));
    }
}

/// Orders two raw query parts by their canonical forms.
pub(crate) fn cmp_query_parts(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    if is_plain(a) && is_plain(b) {
        a.cmp(b)
    } else {
        canonical_query_part(a).cmp(canonical_query_part(b))
    }
}

/// Whether `path` is its own AWS-normalised form.
pub(crate) fn path_is_normalised(path: &[u8]) -> bool {
    path.iter().all(|&b| is_unreserved(b) || b == b'/')
        || normalised_path(path).eq(path.iter().copied())
}

/// The AWS-normalised form of a path: decoded, then encoded with `/` kept.
pub(crate) fn normalised_path(raw: &[u8]) -> Encode<Decode<'_>> {
    Encode::new(Decode::path(raw), true)
}

/// Whether the percent-decoded `raw` equals `want` (no spaces in it) ignoring ASCII case.
pub(crate) fn decoded_eq_ignore_case(raw: &[u8], want: &[u8]) -> bool {
    match raw.len().cmp(&want.len()) {
        std::cmp::Ordering::Less => false,
        // Same length: nothing is escaped, and a `+` (a space) cannot match.
        std::cmp::Ordering::Equal => raw.eq_ignore_ascii_case(want),
        std::cmp::Ordering::Greater => Decode::query(raw)
            .map(|b| b.to_ascii_lowercase())
            .eq(want.iter().map(|b| b.to_ascii_lowercase())),
    }
}

/// Percent-decodes `raw` into `buf`; `None` when it does not fit.
pub(crate) fn decode_into<'b>(raw: &[u8], buf: &'b mut [u8]) -> Option<&'b [u8]> {
    let mut n = 0;
    for b in Decode::query(raw) {
        *buf.get_mut(n)? = b;
        n += 1;
    }
    Some(&buf[..n])
}

/// `decoded` (a prefix of the decoding of `raw`) as a slice of `raw` when the bytes are
/// the same there (nothing was encoded), else as a copy.
pub(crate) fn borrow_if_unencoded<'a>(raw: &'a [u8], decoded: &[u8]) -> Cow<'a, [u8]> {
    match raw.get(..decoded.len()) {
        Some(prefix) if prefix == decoded => Cow::Borrowed(prefix),
        _ => Cow::Owned(decoded.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(it: impl Iterator<Item = u8>) -> String {
        String::from_utf8(it.collect()).unwrap()
    }

    #[test]
    fn decoding() {
        assert_eq!(s(Decode::query(b"a%2Fb+c%zz%4")), "a/b c%zz%4");
        assert_eq!(s(Decode::path(b"a+b%2fc")), "a+b/c");
    }

    #[test]
    fn encoding() {
        assert_eq!(
            s(canonical_query_part(b"a b/c~d+e%2f")),
            "a%20b%2Fc~d%20e%2F"
        );
        assert_eq!(
            s(normalised_path("/ሴ x/%7e".as_bytes())),
            "/%E1%88%B4%20x/~"
        );
        assert_eq!(
            s(Encode::new(b"!'()*".iter().copied(), false)),
            "%21%27%28%29%2A"
        );
    }

    #[test]
    fn fast_paths_agree_with_the_slow_ones() {
        let parts: [&[u8]; 7] = [b"abc", b"ab%41", b"a b", b"A", b"~", b"a+b", b""];
        for a in parts {
            let mut fast = Vec::new();
            put_query_part(&mut fast, a);
            assert_eq!(fast, canonical_query_part(a).collect::<Vec<_>>());
            for b in parts {
                let slow = canonical_query_part(a).cmp(canonical_query_part(b));
                assert_eq!(cmp_query_parts(a, b), slow);
            }
        }
        for (path, normalised) in [
            (&b"/a/b-c"[..], true),
            (b"/a%20b", true),
            (b"/a%2a", false),
            (b"/a$b", false),
            (b"/a%41", false),
        ] {
            assert_eq!(path_is_normalised(path), normalised, "{path:?}");
        }
    }

    #[test]
    fn names_and_buffers() {
        assert!(decoded_eq_ignore_case(
            b"x-amz-%53ignature",
            b"X-Amz-Signature"
        ));
        assert!(!decoded_eq_ignore_case(
            b"X-Amz-Signatur",
            b"X-Amz-Signature"
        ));
        let mut buf = [0u8; 4];
        assert_eq!(decode_into(b"a%2Fb", &mut buf), Some(&b"a/b"[..]));
        assert_eq!(decode_into(b"abcde", &mut buf), None);
    }

    #[test]
    fn borrows_unencoded_keys() {
        assert!(matches!(
            borrow_if_unencoded(b"AK%2Fdate", b"AK"),
            Cow::Borrowed(b"AK")
        ));
        assert_eq!(
            borrow_if_unencoded(b"A%4B%2Fdate", b"AK"),
            Cow::<[u8]>::Owned(b"AK".to_vec())
        );
    }

    #[test]
    fn streams_in_pieces() {
        let mut v = Vec::new();
        put_stream(&mut v, (0..200u8).map(|b| b % 26 + b'a'));
        assert_eq!(v.len(), 200);
        assert_eq!(v[199], 199 % 26 + b'a');
    }
}
