//! Percent-encoding as URIs carry it: one hex-digit reader and one lenient decoder, shared by
//! every place that reads a target (the chunked scanner's sizes, identity's query keys,
//! signature verification, the admin API). Pure; allocates nothing.

/// The value of one hex digit (either case).
pub fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decoding of one URI component: `%XX` → the byte; an invalid escape stays
/// literal. In a query (`plus_is_space`), `+` is a space, as S3 reads it.
#[derive(Clone)]
pub struct PercentDecode<'a> {
    raw: &'a [u8],
    i: usize,
    plus_is_space: bool,
}

impl<'a> PercentDecode<'a> {
    /// A query name or value (`+` is a space).
    pub fn query(raw: &'a [u8]) -> Self {
        PercentDecode {
            raw,
            i: 0,
            plus_is_space: true,
        }
    }

    /// A path (`+` is itself).
    pub fn path(raw: &'a [u8]) -> Self {
        PercentDecode {
            raw,
            i: 0,
            plus_is_space: false,
        }
    }
}

impl Iterator for PercentDecode<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let b = *self.raw.get(self.i)?;
        self.i += 1;
        if b == b'+' && self.plus_is_space {
            return Some(b' ');
        }
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                self.raw.get(self.i).copied().and_then(hex_digit),
                self.raw.get(self.i + 1).copied().and_then(hex_digit),
            ) {
                self.i += 2;
                return Some(h << 4 | l);
            }
        }
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_and_lenient_decoding() {
        assert_eq!(
            (hex_digit(b'7'), hex_digit(b'c'), hex_digit(b'F')),
            (Some(7), Some(12), Some(15))
        );
        assert_eq!(hex_digit(b'g'), None);
        let q: Vec<u8> = PercentDecode::query(b"a%2Fb+c%zz%4").collect();
        assert_eq!(q, b"a/b c%zz%4");
        let p: Vec<u8> = PercentDecode::path(b"a+b%20c%ff").collect();
        assert_eq!(p, b"a+b c\xff");
    }
}
