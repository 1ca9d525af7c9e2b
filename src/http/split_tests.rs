//! Property: any split of a valid stream of requests (or responses) into reads parses exactly
//! like the whole stream, when each read is appended to what is buffered — the way the data
//! path reads (`proxy::bufio::read_append`). Heads are re-parsed from the start of the
//! buffer after every read; bodies are followed with [`BodyProgress`].

use proptest::prelude::*;

use super::*;

const LIMITS: HeadLimits = HeadLimits {
    max_head_bytes: 16384,
    max_headers: 100,
};

/// (head bytes, body bytes) of each message in `reads`, parsed as the data path does.
fn messages(reads: &[&[u8]], response: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut body: Option<BodyProgress> = None;
    let mut req = RequestHead::new();
    let mut resp = ResponseHead::new();
    for r in reads {
        buf.extend_from_slice(r);
        loop {
            if let Some(b) = body.as_mut() {
                let n = b.feed(&buf).expect("valid body");
                let (_, bytes): &mut (Vec<u8>, Vec<u8>) = out.last_mut().unwrap();
                bytes.extend_from_slice(&buf[..n]);
                buf.drain(..n);
                if !b.is_done() {
                    break;
                }
                body = None;
            }
            let (status, hl, framing) = if response {
                let s = parse_response(&buf, &LIMITS, false, &mut resp).expect("valid head");
                (s, resp.head_len, resp.framing)
            } else {
                let s = parse_request(&buf, &LIMITS, &mut req).expect("valid head");
                (s, req.head_len, req.framing)
            };
            if status == ParseStatus::Partial {
                break;
            }
            out.push((buf[..hl].to_vec(), Vec::new()));
            buf.drain(..hl);
            body = Some(BodyProgress::new(framing));
        }
    }
    out
}

const REQUESTS: &[u8] = b"PUT /b/k HTTP/1.1\r\nHost: s3\r\nContent-Length: 5\r\nx-amz-meta-a: 1\r\n\r\nhelloGET /b/k?list-type=2 HTTP/1.1\r\nHost: s3\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AK/20261201/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\n\r\nPUT /b/c HTTP/1.1\r\nHost: s3\r\nTransfer-Encoding: chunked\r\n\r\n3;chunk-signature=ab\r\nabc\r\n0\r\nx-amz-checksum-crc32: AAAAAA==\r\n\r\nDELETE /b/k HTTP/1.1\r\nHost: s3\r\n\r\n";

const RESPONSES: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nETag: \"x\"\r\n\r\nokHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n0\r\n\r\nHTTP/1.1 204 No Content\r\nx-amz-request-id: 1\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nNoSuchKey";

fn split(data: &[u8], mut cuts: Vec<usize>) -> Vec<&[u8]> {
    cuts.sort_unstable();
    cuts.dedup();
    let mut pieces = Vec::new();
    let mut prev = 0;
    for c in cuts.into_iter().chain(std::iter::once(data.len())) {
        pieces.push(&data[prev..c]);
        prev = c;
    }
    pieces
}

#[test]
fn every_single_split_parses_like_the_whole_stream() {
    for (data, response) in [(REQUESTS, false), (RESPONSES, true)] {
        let whole = messages(&[data], response);
        assert_eq!(whole.len(), if response { 5 } else { 4 });
        for k in 1..data.len() {
            assert_eq!(
                messages(&split(data, vec![k]), response),
                whole,
                "split at {k}"
            );
        }
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(messages(&bytes, response), whole, "byte by byte");
    }
}

proptest! {
    #[test]
    fn any_split_parses_like_the_whole_stream(
        req_cuts in prop::collection::vec(1..REQUESTS.len(), 0..24),
        resp_cuts in prop::collection::vec(1..RESPONSES.len(), 0..24),
    ) {
        let whole = messages(&[REQUESTS], false);
        prop_assert_eq!(messages(&split(REQUESTS, req_cuts), false), whole);
        let whole = messages(&[RESPONSES], true);
        prop_assert_eq!(messages(&split(RESPONSES, resp_cuts), true), whole);
    }
}
