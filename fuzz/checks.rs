//! The properties the fuzz targets check, shared by the libFuzzer targets
//! (`fuzz_targets/*.rs`, nightly + cargo-fuzz) and the stable replay test
//! (`tests/fuzz_replay.rs`, which runs the committed corpus in `fuzz/corpus-seed/` and
//! proptest mutations of it). Each function panics when its property fails.

use tollgate::http::{
    ChunkedScanner, HeadLimits, ParseStatus, RequestHead, parse_request, write_request_head,
};

/// `parse_request` on arbitrary bytes never panics; when it reports a complete head,
/// `head_len` and every range lie inside the input, and the head written upstream from
/// it parses again to the same request line and framing.
pub fn request_head(data: &[u8]) {
    let limits = HeadLimits {
        max_head_bytes: 16384,
        max_headers: 100,
    };
    let mut head = RequestHead::new();
    if let Ok(ParseStatus::Complete) = parse_request(data, &limits, &mut head) {
        assert!(head.head_len <= data.len());
        for r in [&head.method, &head.target, &head.request_line] {
            assert!(r.start <= r.end && r.end <= head.head_len);
        }
        for h in &head.headers {
            for r in [&h.name, &h.value, &h.line] {
                assert!(r.start <= r.end && r.end <= head.head_len);
            }
        }
        let mut out = Vec::new();
        write_request_head(data, &head, &[], &mut out);
        let mut again = RequestHead::new();
        let wide = HeadLimits {
            max_head_bytes: usize::MAX,
            max_headers: 101,
        };
        assert_eq!(
            parse_request(&out, &wide, &mut again),
            Ok(ParseStatus::Complete)
        );
        assert_eq!(again.head_len, out.len());
        assert_eq!(
            &out[again.request_line.clone()],
            &data[head.request_line.clone()]
        );
        assert_eq!(again.framing, head.framing);
    }
}

/// What a scanner says about a whole input: bytes of the body, done, or the error.
fn scan(pieces: &[&[u8]]) -> Result<(usize, bool), tollgate::http::ChunkError> {
    let mut sc = ChunkedScanner::new();
    let mut total = 0;
    for p in pieces {
        let n = sc.feed(p)?;
        assert!(n <= p.len(), "consumed more than given");
        total += n;
        if sc.is_done() {
            assert_eq!(sc.feed(b"more")?, 0, "bytes accepted after the end");
            return Ok((total, true));
        }
        assert_eq!(n, p.len(), "stopped early without being done");
    }
    Ok((total, false))
}

/// The chunked-body scanner never panics, and cutting its input at any two points
/// (taken from the first two bytes) gives the same outcome as one read: bytes in pieces.
pub fn chunked(data: &[u8]) {
    let (cuts, body) = match data {
        [a, b, rest @ ..] => ((*a as usize, *b as usize), rest),
        _ => ((0, 0), data),
    };
    let whole = scan(&[body]);
    let i = cuts.0.min(body.len());
    let j = (i + cuts.1).min(body.len());
    let cut = scan(&[&body[..i], &body[i..j], &body[j..]]);
    assert_eq!(whole, cut, "cut at {i} and {j}");
    let bytewise: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(whole, scan(&bytewise), "one byte at a time");
}
