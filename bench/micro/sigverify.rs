//! Why: with `[limits.verify]` every signed request is verified on the data path before
//! the limiter, so its CPU is added to every request's cost. This measures one
//! verification per mechanism on a parsed head shaped like an SDK's (boto3/awscli header
//! set, 26-byte Garage key): SigV4 header with the signing key cached (the steady state:
//! one SHA-256 of the canonical request + one HMAC) and not cached (a new key or a new
//! day: four more HMACs and an insert), presigned V4, SigV2 header, presigned V2, and the
//! refusal of a forged SigV4 and of a forged virtual-hosted SigV2 (the most readings
//! tried). Requests are signed by loadgen's signer, the project's own.
//!
//! Run: `cargo bench --bench sigverify -- --warm-up-time 1 --measurement-time 3`.
//! Record the machine (CPU model, cores, kernel, rustc) beside any figure you keep.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use loadgen::sign::{Civil, EMPTY_SHA256, V4Signer, v2_signature, v2_string_to_sign};
use tollgate::http::{HeadLimits, RequestHead, parse_request};
use tollgate::sigverify::{RequestParts, Secrets, SigningKeyCache, verify};

const KEY: &str = "GK31c2f218a2e44f485b94239e";
const SECRET: &str = "b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f9d769d67f16c3835";
const NOW: u64 = 1_700_000_000;
const HOST: &str = "127.0.0.1:3900";
const PATH: &str = "/bench/photos/2023/11/obj-000042.jpg";
const SDK_HEADERS: &str = "Accept-Encoding: identity\r\nUser-Agent: aws-cli/2.13.0 Python/3.11.4 Linux/6.1 exe/x86_64 prompt/off command/s3.cp\r\namz-sdk-invocation-id: 5e0b1c7e-4a4e-4d7b-9a7c-0a4f2d9c1e11\r\namz-sdk-request: attempt=1\r\n";

fn v4_header() -> String {
    let civil = Civil::from_unix(NOW);
    let amz = civil.amz_date();
    let headers = [
        ("host", HOST),
        ("x-amz-content-sha256", EMPTY_SHA256),
        ("x-amz-date", amz.as_str()),
    ];
    let mut signer = V4Signer::new(KEY, SECRET, "garage");
    let sig = signer.sign("GET", PATH, "", &headers, EMPTY_SHA256, civil);
    format!(
        "GET {PATH} HTTP/1.1\r\nHost: {HOST}\r\n{SDK_HEADERS}X-Amz-Date: {amz}\r\nX-Amz-Content-SHA256: {EMPTY_SHA256}\r\nAuthorization: {}\r\n\r\n",
        signer.authorization(&sig, &headers)
    )
}

fn v4_presigned() -> String {
    let mut signer = V4Signer::new(KEY, SECRET, "garage");
    let q = signer.presign_query("GET", PATH, HOST, 3600, Civil::from_unix(NOW));
    format!(
        "GET {PATH}?{q} HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"
    )
}

fn v2_header(host: &str, resource: &str) -> String {
    let date = Civil::from_unix(NOW).http_date();
    let sig = v2_signature(SECRET, &v2_string_to_sign("GET", &date, resource));
    format!(
        "GET {PATH} HTTP/1.1\r\nHost: {host}\r\n{SDK_HEADERS}Date: {date}\r\nAuthorization: AWS {KEY}:{sig}\r\n\r\n"
    )
}

fn v2_presigned() -> String {
    let expires = (NOW + 3600).to_string();
    let sig = v2_signature(SECRET, &v2_string_to_sign("GET", &expires, PATH));
    let sig = sig
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    format!(
        "GET {PATH}?AWSAccessKeyId={KEY}&Expires={expires}&Signature={sig} HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: curl/8.5.0\r\n\r\n"
    )
}

fn parsed(raw: &str) -> (Vec<u8>, RequestHead) {
    let wire = raw.as_bytes().to_vec();
    let mut head = RequestHead::new();
    let limits = HeadLimits {
        max_head_bytes: 16 * 1024,
        max_headers: 100,
    };
    parse_request(&wire, &limits, &mut head).expect("bench requests parse");
    (wire, head)
}

fn bench(c: &mut Criterion) {
    let secrets = Secrets::from_pairs([(KEY, SECRET)]);
    let forged_v4 = v4_header().replacen("obj-000042", "obj-000043", 1);
    let forged_v2 = v2_header("bench.s3.garage.example.com", "/x").replacen(
        PATH,
        "/photos/2023/11/obj-000042.jpg",
        1,
    );
    // (name, request, clear the cache before each verification, valid)
    let cases = [
        ("v4_header_cache_hit", v4_header(), false, true),
        ("v4_header_cache_miss", v4_header(), true, true),
        ("v4_presigned", v4_presigned(), false, true),
        ("v2_header", v2_header(HOST, PATH), false, true),
        ("v2_presigned", v2_presigned(), false, true),
        ("v4_forged", forged_v4, false, false),
        ("v2_forged_virtual_host", forged_v2, false, false),
    ];
    let good = v4_header();
    let (good_wire, good_head) = parsed(&good);
    let good_req = RequestParts::from_head(&good_wire, &good_head);
    let mut g = c.benchmark_group("sigverify");
    for (name, raw, clear_each, valid) in cases {
        let (wire, head) = parsed(&raw);
        let req = RequestParts::from_head(&wire, &head);
        let mut cache = SigningKeyCache::new(2);
        // The key's scope is cached, as it is after its first request of the day.
        verify(&good_req, &secrets, &mut cache, NOW).expect("the good request verifies");
        let outcome = verify(&req, &secrets, &mut cache, NOW);
        assert_eq!(outcome.is_ok(), valid, "{name}: {outcome:?}");
        g.bench_function(name, |b| {
            b.iter(|| {
                if clear_each {
                    cache.clear();
                }
                black_box(verify(black_box(&req), &secrets, &mut cache, NOW).is_ok())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
