//! Chunked bodies passing through: a byte-at-a-time state machine that follows the
//! `Transfer-Encoding: chunked` framing (RFC 9112 §7.1) of bytes it is shown, without
//! modifying or copying them, to find where the body ends. Chunk extensions and trailer
//! fields are allowed (they travel on untouched); anything ambiguous is an error. Must not
//! touch I/O or buffers; holds no more than a few words of state, so a body split across
//! reads at any byte boundary gives the same result as one read.

/// Max bytes of a chunk-size line including extensions and CRLF.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Max bytes of the trailer section including the final CRLF.
pub const MAX_TRAILER_BYTES: usize = 16384;

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size")]
    BadSize,
    #[error("whitespace between the chunk size and its CRLF")]
    SpaceBeforeCrlf,
    #[error("chunk size has more than 16 hex digits")]
    SizeOverflow,
    #[error("bare LF in chunked framing")]
    BareLf,
    #[error("CR not followed by LF in chunked framing")]
    BareCr,
    #[error("chunk data not followed by CRLF")]
    MissingCrlf,
    #[error("invalid byte in chunk extension")]
    BadExtension,
    #[error("chunk-size line longer than {MAX_CHUNK_LINE} bytes")]
    LineTooLong,
    #[error("invalid trailer field line")]
    BadTrailer,
    #[error("trailer section longer than {MAX_TRAILER_BYTES} bytes")]
    TrailersTooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size,
    /// Whitespace after the size (before `;` or CR).
    SizeWs,
    /// Inside chunk extensions, up to CR.
    Ext,
    /// Saw the CR ending a size line.
    SizeLf,
    /// Inside chunk data (`remaining` > 0).
    Data,
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value, up to CR.
    TrailerValue,
    /// Saw the CR ending a trailer line.
    TrailerLf,
    /// Saw the CR of the final CRLF.
    FinalLf,
    /// The body has ended.
    Done,
}

/// Follows a chunked body; see the module docs.
#[derive(Debug, Clone)]
pub struct ChunkedScanner {
    state: State,
    /// Chunk size being read, then data bytes still to pass.
    remaining: u64,
    digits: u8,
    line_len: usize,
    trailer_len: usize,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        Self::new()
    }
}

/// Control characters other than HTAB (including DEL).
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

impl ChunkedScanner {
    /// A scanner at the start of a chunked body. Caps: a size line with extensions ≤
    /// [`MAX_CHUNK_LINE`] bytes, trailers ≤ [`MAX_TRAILER_BYTES`].
    pub fn new() -> Self {
        ChunkedScanner {
            state: State::Size,
            remaining: 0,
            digits: 0,
            line_len: 0,
            trailer_len: 0,
        }
    }

    /// The final CRLF (after the last chunk and any trailers) has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes bytes; returns how many belong to this body (`data.len()` unless the body
    /// ends inside `data`). After the end, returns `Ok(0)`.
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Done => return Ok(i),
                State::Data => {
                    let avail = (data.len() - i) as u64;
                    let n = self.remaining.min(avail);
                    i += n as usize;
                    self.remaining -= n;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => {
                    self.step(data[i])?;
                    i += 1;
                }
            }
        }
        Ok(i)
    }

    /// Like [`feed`](Self::feed), but also moves the chunk *data* among the consumed bytes
    /// to the front of `data` (the body without its chunk framing). Returns (consumed, data
    /// bytes now at the front).
    pub fn feed_data(&mut self, data: &mut [u8]) -> Result<(usize, usize), ChunkError> {
        let mut i = 0;
        let mut kept = 0;
        while i < data.len() {
            match self.state {
                State::Done => return Ok((i, kept)),
                State::Data => {
                    let n = self.remaining.min((data.len() - i) as u64) as usize;
                    data.copy_within(i..i + n, kept);
                    kept += n;
                    i += n;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => {
                    self.step(data[i])?;
                    i += 1;
                }
            }
        }
        Ok((i, kept))
    }

    fn size_line_byte(&mut self) -> Result<(), ChunkError> {
        self.line_len += 1;
        if self.line_len > MAX_CHUNK_LINE {
            return Err(ChunkError::LineTooLong);
        }
        Ok(())
    }

    fn trailer_byte(&mut self) -> Result<(), ChunkError> {
        self.trailer_len += 1;
        if self.trailer_len > MAX_TRAILER_BYTES {
            return Err(ChunkError::TrailersTooLarge);
        }
        Ok(())
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        match self.state {
            State::Size => {
                self.size_line_byte()?;
                if let Some(v) = super::pct::hex_digit(b) {
                    if self.digits == 16 {
                        return Err(ChunkError::SizeOverflow);
                    }
                    self.digits += 1;
                    self.remaining = (self.remaining << 4) | u64::from(v);
                    return Ok(());
                }
                if self.digits == 0 {
                    return Err(ChunkError::BadSize);
                }
                self.state = match b {
                    b';' => State::Ext,
                    b' ' | b'\t' => State::SizeWs,
                    b'\r' => State::SizeLf,
                    b'\n' => return Err(ChunkError::BareLf),
                    _ => return Err(ChunkError::BadSize),
                };
            }
            State::SizeWs => {
                self.size_line_byte()?;
                // RFC 9112 §7.1.1 allows whitespace only before a `;` extension: a size line
                // ending in whitespace is read differently by different parsers.
                self.state = match b {
                    b' ' | b'\t' => State::SizeWs,
                    b';' => State::Ext,
                    b'\r' => return Err(ChunkError::SpaceBeforeCrlf),
                    b'\n' => return Err(ChunkError::BareLf),
                    _ => return Err(ChunkError::BadSize),
                };
            }
            State::Ext => {
                self.size_line_byte()?;
                match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => return Err(ChunkError::BareLf),
                    _ if is_ctl(b) => return Err(ChunkError::BadExtension),
                    _ => {}
                }
            }
            State::SizeLf => {
                self.size_line_byte()?;
                if b != b'\n' {
                    return Err(ChunkError::BareCr);
                }
                self.state = if self.remaining == 0 {
                    State::TrailerStart
                } else {
                    State::Data
                };
            }
            State::DataCr => {
                if b != b'\r' {
                    return Err(ChunkError::MissingCrlf);
                }
                self.state = State::DataLf;
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(ChunkError::MissingCrlf);
                }
                self.state = State::Size;
                self.digits = 0;
                self.line_len = 0;
            }
            State::TrailerStart => {
                self.trailer_byte()?;
                self.state = match b {
                    b'\r' => State::FinalLf,
                    b'\n' => return Err(ChunkError::BareLf),
                    _ if super::fields::is_tchar(b) => State::TrailerName,
                    _ => return Err(ChunkError::BadTrailer),
                };
            }
            State::TrailerName => {
                self.trailer_byte()?;
                match b {
                    b':' => self.state = State::TrailerValue,
                    _ if super::fields::is_tchar(b) => {}
                    b'\n' => return Err(ChunkError::BareLf),
                    _ => return Err(ChunkError::BadTrailer),
                }
            }
            State::TrailerValue => {
                self.trailer_byte()?;
                match b {
                    b'\r' => self.state = State::TrailerLf,
                    b'\n' => return Err(ChunkError::BareLf),
                    _ if is_ctl(b) => return Err(ChunkError::BadTrailer),
                    _ => {}
                }
            }
            State::TrailerLf => {
                self.trailer_byte()?;
                if b != b'\n' {
                    return Err(ChunkError::BareCr);
                }
                self.state = State::TrailerStart;
            }
            State::FinalLf => {
                self.trailer_byte()?;
                if b != b'\n' {
                    return Err(ChunkError::BareCr);
                }
                self.state = State::Done;
            }
            State::Data | State::Done => unreachable!("handled in feed"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds everything at once.
    fn scan_all(data: &[u8]) -> (Result<usize, ChunkError>, bool) {
        let mut s = ChunkedScanner::new();
        let r = s.feed(data);
        (r, s.is_done())
    }

    /// Feeds in pieces of the given sizes (cycled), stopping at the end of the body or the
    /// first error; returns the total consumed like a single feed would.
    fn scan_split(data: &[u8], sizes: &[usize]) -> (Result<usize, ChunkError>, bool) {
        let mut s = ChunkedScanner::new();
        let mut pos = 0;
        let mut k = 0;
        while pos < data.len() {
            let n = sizes[k % sizes.len()].max(1).min(data.len() - pos);
            k += 1;
            match s.feed(&data[pos..pos + n]) {
                Ok(c) => {
                    pos += c;
                    if c < n {
                        assert!(s.is_done());
                        break;
                    }
                }
                Err(e) => return (Err(e), s.is_done()),
            }
        }
        (Ok(pos), s.is_done())
    }

    #[test]
    fn simple_body_and_what_follows() {
        let body = b"5\r\nhello\r\n0\r\n\r\n";
        let mut data = body.to_vec();
        data.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(scan_all(&data), (Ok(body.len()), true));
        let mut s = ChunkedScanner::new();
        assert_eq!(s.feed(&data), Ok(body.len()));
        assert_eq!(s.feed(b"more"), Ok(0));
        assert!(s.is_done());
    }

    #[test]
    fn incomplete_body_is_not_done() {
        for n in 0..15 {
            let (r, done) = scan_all(&b"5\r\nhello\r\n0\r\n\r\n"[..n]);
            assert_eq!(r, Ok(n));
            assert!(!done, "prefix {n}");
        }
    }

    #[test]
    fn extensions_and_trailers_pass_through() {
        let body = b"4;name=value;q=\"quoted; string\"\r\nWiki\r\nA ; ext\r\n0123456789\r\n0;chunk-signature=abc\r\nx-amz-checksum-crc32: AAAAAA==\r\nX-Other:\r\n\r\n";
        let mut data = body.to_vec();
        data.extend_from_slice(b"trailing");
        assert_eq!(scan_all(&data), (Ok(body.len()), true));
    }

    #[test]
    fn aws_chunked_shape() {
        // STREAMING-AWS4-HMAC-SHA256-PAYLOAD framing carried inside HTTP chunked.
        let inner = b"3;chunk-signature=0123abcd\r\nabc\r\n0;chunk-signature=ffff\r\n\r\n";
        let mut data = format!("{:x}\r\n", inner.len()).into_bytes();
        data.extend_from_slice(inner);
        data.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(scan_all(&data), (Ok(data.len()), true));
    }

    #[test]
    fn upper_and_lower_hex_and_max_digits() {
        let (r, done) = scan_all(b"aB\r\n");
        assert_eq!((r, done), (Ok(4), false));
        let (r, _) = scan_all(b"ffffffffffffffff\r\nxx");
        assert_eq!(r, Ok(20));
        assert_eq!(
            scan_all(b"00000000000000001\r\n").0,
            Err(ChunkError::SizeOverflow)
        );
        assert_eq!(
            scan_all(b"10000000000000000\r\n").0,
            Err(ChunkError::SizeOverflow)
        );
    }

    #[test]
    fn errors() {
        let cases: &[(&[u8], ChunkError)] = &[
            (b"\r\n", ChunkError::BadSize),
            (b"g\r\n", ChunkError::BadSize),
            (b"-1\r\n", ChunkError::BadSize),
            (b"0x5\r\n", ChunkError::BadSize),
            (b"5 5\r\n", ChunkError::BadSize),
            (b"5 \r\nhello\r\n", ChunkError::SpaceBeforeCrlf),
            (b"5\t\r\nhello\r\n", ChunkError::SpaceBeforeCrlf),
            (b";ext\r\n", ChunkError::BadSize),
            (b"5\nhello\r\n", ChunkError::BareLf),
            (b"5;a\nhello\r\n", ChunkError::BareLf),
            (b"5\rhello", ChunkError::BareCr),
            (b"5\r\nhello\n0\r\n\r\n", ChunkError::MissingCrlf),
            (b"5\r\nhelloX\r\n", ChunkError::MissingCrlf),
            (b"5\r\nhello\rX", ChunkError::MissingCrlf),
            (b"5;a\x00b\r\n", ChunkError::BadExtension),
            (b"0\r\n\n", ChunkError::BareLf),
            (b"0\r\nX: 1\n\r\n", ChunkError::BareLf),
            (b"0\r\n\rX", ChunkError::BareCr),
            (b"0\r\n folded: x\r\n\r\n", ChunkError::BadTrailer),
            (b"0\r\nNo colon\r\n\r\n", ChunkError::BadTrailer),
            (b"0\r\nX: a\x01\r\n\r\n", ChunkError::BadTrailer),
        ];
        for (data, want) in cases {
            assert_eq!(
                scan_all(data).0,
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn caps() {
        let mut line = b"1;".to_vec();
        line.resize(MAX_CHUNK_LINE - 2, b'x');
        line.extend_from_slice(b"\r\n");
        assert_eq!(scan_all(&line).0, Ok(MAX_CHUNK_LINE));
        line.insert(3, b'x');
        assert_eq!(scan_all(&line).0, Err(ChunkError::LineTooLong));

        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() < 3 + MAX_TRAILER_BYTES {
            trailers.extend_from_slice(b"x-pad: 0123456789abcdef\r\n");
        }
        trailers.extend_from_slice(b"\r\n");
        assert_eq!(scan_all(&trailers).0, Err(ChunkError::TrailersTooLarge));
    }

    #[test]
    fn agrees_with_httparse_on_size_lines() {
        for line in [
            &b"0\r\n"[..],
            b"1a\r\n",
            b"FFFF;x=y\r\n",
            b"7 ;e\r\n",
            b"ffffffffffffffff\r\n",
        ] {
            let (pos, size) = httparse::parse_chunk_size(line).unwrap().unwrap();
            let mut s = ChunkedScanner::new();
            assert_eq!(s.feed(&line[..pos]), Ok(pos));
            assert_eq!(s.remaining, size);
        }
    }

    /// A valid chunked body from chunk sizes, an extension flag and trailer count.
    fn build_body(chunks: &[(usize, bool)], trailers: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &(len, ext)) in chunks.iter().enumerate() {
            out.extend_from_slice(format!("{len:X}").as_bytes());
            if ext {
                out.extend_from_slice(format!(";e{i}=\"v;{i}\"").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out.extend((0..len).map(|j| b"\r\n0;x\r\nab"[j % 9]));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        for t in 0..trailers {
            out.extend_from_slice(format!("x-t{t}: v {t}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    proptest! {
        #[test]
        fn valid_bodies_end_exactly_whatever_the_split(
            chunks in prop::collection::vec((1usize..300, any::<bool>()), 0..8),
            trailers in 0usize..3,
            tail in prop::collection::vec(any::<u8>(), 0..40),
            sizes in prop::collection::vec(1usize..50, 1..8),
        ) {
            let body = build_body(&chunks, trailers);
            let mut data = body.clone();
            data.extend_from_slice(&tail);
            prop_assert_eq!(scan_all(&data), (Ok(body.len()), true));
            prop_assert_eq!(scan_split(&data, &[1]), (Ok(body.len()), true));
            prop_assert_eq!(scan_split(&data, &sizes), (Ok(body.len()), true));
        }

        #[test]
        fn byte_by_byte_equals_all_at_once_on_any_input(
            data in prop::collection::vec(
                prop::sample::select(b"0123456789aAfFgx;= \t\r\n:\x00".to_vec()), 0..200),
            sizes in prop::collection::vec(1usize..20, 1..5),
        ) {
            let whole = scan_all(&data);
            prop_assert_eq!(scan_split(&data, &[1]), whole);
            prop_assert_eq!(scan_split(&data, &sizes), whole);
        }

        #[test]
        fn corrupting_the_crlf_after_data_is_caught(
            len in 1usize..100,
            bad in any::<u8>().prop_filter("not CR", |b| *b != b'\r'),
        ) {
            let mut data = build_body(&[(len, false)], 0);
            let crlf = format!("{len:X}\r\n").len() + len;
            data[crlf] = bad;
            prop_assert_eq!(scan_all(&data).0, Err(ChunkError::MissingCrlf));
            prop_assert_eq!(scan_split(&data, &[1]).0, Err(ChunkError::MissingCrlf));
        }
    }
}
