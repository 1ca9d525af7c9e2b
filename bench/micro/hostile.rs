//! Why: a head's cost must grow with its size no faster than its bytes, whatever it holds:
//! otherwise a client can make each request cost far more CPU than it sends (CPU
//! amplification). Measured for the shapes that once did not (`bench/results/
//! 2026-12-01-hostile-heads.md`): a 16 KiB `Connection` list of one-letter options, many
//! `Connection` lines, a long SigV4 `SignedHeaders` list against many hop-by-hop fields,
//! long query strings through identification, `[[rules]]` classification and signature
//! verification — each beside a plain 16 KiB head, the figure to compare with.
//!
//! Run: `cargo bench --bench hostile -- --warm-up-time 1 --measurement-time 3`.
//! Record the machine (CPU model, cores, kernel, rustc) beside any figure you keep.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate::http::{HeadLimits, Method, RequestHead, parse_request, signed_hop_by_hop};
use tollgate::identity::identify;
use tollgate::rules::class::{classify, split_target};
use tollgate::sigverify::{Headers, RequestParts, Secrets, SigningKeyCache, verify};

const LIMITS: HeadLimits = HeadLimits {
    max_head_bytes: 16384,
    max_headers: 100,
};

/// A request head of about 16 KiB: `lines` after the Host line.
fn head(lines: impl Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut h = b"GET /b/k HTTP/1.1\r\nHost: s3\r\n".to_vec();
    lines(&mut h);
    h.extend_from_slice(b"\r\n");
    h
}

fn heads() -> [(&'static str, Vec<u8>); 3] {
    [
        (
            "plain_16k",
            head(|h| {
                for i in 0..98 {
                    h.extend_from_slice(format!("X-F{i}: {}\r\n", "v".repeat(150)).as_bytes());
                }
            }),
        ),
        (
            // Each option looked up among 98 field names.
            "connection_options_16k",
            head(|h| {
                for i in 0..97 {
                    h.extend_from_slice(format!("X-F{i}: v\r\n").as_bytes());
                }
                h.extend_from_slice(b"Connection: ");
                h.extend_from_slice("a,".repeat(7_300).as_bytes());
                h.extend_from_slice(b"a\r\n");
            }),
        ),
        (
            "connection_lines_16k",
            head(|h| {
                for _ in 0..98 {
                    h.extend_from_slice(format!("Connection: {}x\r\n", "x,".repeat(70)).as_bytes());
                }
            }),
        ),
    ]
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_request");
    let mut out = RequestHead::new();
    for (name, h) in heads() {
        // Every shape is a whole head within the limits (parsed, not cut short as too large).
        assert!(
            h.len() <= LIMITS.max_head_bytes,
            "{name}: {} bytes",
            h.len()
        );
        g.bench_function(name, |b| {
            b.iter(|| black_box(parse_request(black_box(&h), &LIMITS, &mut out).is_ok()))
        });
    }
    g.finish();
}

fn signed_list(c: &mut Criterion) {
    // 98 fields made hop-by-hop by one option, an 8 KiB signed list naming none of them.
    let h = head(|h| {
        h.extend_from_slice(b"Connection: x-a\r\n");
        for _ in 0..97 {
            h.extend_from_slice(b"X-A: v\r\n");
        }
    });
    let mut parsed = RequestHead::new();
    parse_request(&h, &LIMITS, &mut parsed).expect("valid head");
    let signed = format!("host{}", ";x-amz-meta-aaaa".repeat(500));
    c.bench_function("signed_hop_by_hop/8k_list_98_hop_fields", |b| {
        b.iter(|| black_box(signed_hop_by_hop(&h, &parsed, black_box(signed.as_bytes()))))
    });
}

/// A 16 KiB query of one-letter parameters.
fn long_query() -> String {
    format!("/b/k?{}a", "a&".repeat(7_500))
}

fn queries(c: &mut Criterion) {
    let target = long_query();
    let mut g = c.benchmark_group("long_query_16k");
    g.bench_function("identify", |b| {
        b.iter(|| {
            let mut scratch = [0u8; 256];
            black_box(
                identify(
                    black_box(target.as_bytes()),
                    std::iter::empty(),
                    128,
                    &mut scratch,
                )
                .key
                .is_some(),
            )
        })
    });
    let domains: Vec<String> = Vec::new();
    let t = split_target(b"/b/k", Some(b"s3"), &domains);
    let query = &target.as_bytes()[5..];
    g.bench_function("classify", |b| {
        b.iter(|| black_box(classify(Method::from_bytes(b"GET"), &t, black_box(query))))
    });
    let secrets = Secrets::from_pairs([("GK0123", "secret")]);
    let mut cache = SigningKeyCache::new(4);
    let auth = b"AWS4-HMAC-SHA256 Credential=GK0123/20231114/garage/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=0000000000000000000000000000000000000000000000000000000000000000";
    let pairs: [(&[u8], &[u8]); 3] = [
        (b"host", b"s3"),
        (b"x-amz-date", b"20231114T221320Z"),
        (b"authorization", auth),
    ];
    let req = RequestParts {
        method: b"GET",
        target: target.as_bytes(),
        headers: Headers::Pairs(&pairs),
    };
    g.bench_function("verify_v4", |b| {
        b.iter(|| black_box(verify(&req, &secrets, &mut cache, 1_700_000_000).is_ok()))
    });
    g.finish();
}

criterion_group!(benches, parse, signed_list, queries);
criterion_main!(benches);
