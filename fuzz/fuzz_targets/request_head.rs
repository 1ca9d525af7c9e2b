//! Fuzz target: `parse_request` on arbitrary bytes never panics; when it reports a complete
//! head, `head_len` and every range lie inside the input, and the head written upstream
//! from it parses again to the same request line and framing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::http::{HeadLimits, ParseStatus, RequestHead, parse_request, write_request_head};

fuzz_target!(|data: &[u8]| {
    let limits = HeadLimits { max_head_bytes: 16384, max_headers: 100 };
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
        write_request_head(data, &head, None, &[], &mut out);
        let mut again = RequestHead::new();
        let wide = HeadLimits { max_head_bytes: usize::MAX, max_headers: 101 };
        assert_eq!(parse_request(&out, &wide, &mut again), Ok(ParseStatus::Complete));
        assert_eq!(again.head_len, out.len());
        assert_eq!(&out[again.request_line.clone()], &data[head.request_line.clone()]);
        assert_eq!(again.framing, head.framing);
    }
});
