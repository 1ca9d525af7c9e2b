//! Why: `identify` runs on every request (before any limit decision), so it must stay a
//! few tens of ns and allocate nothing. Measured for the common request shapes: a SigV4
//! header with a typical query, a presigned V4 URL, a presigned V2 URL, a custom key,
//! and an anonymous request with a query.
//!
//! Run: `cargo bench --bench identity -- --warm-up-time 1 --measurement-time 3`.
//! Record the machine (CPU model, cores, kernel, rustc) beside any figure you keep.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate::identity::identify;

const V4: &[u8] = b"AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024";
const PRESIGNED_V4: &[u8] = b"/bucket/object.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
const PRESIGNED_V2: &[u8] = b"/bucket/object.bin?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires=1141889120&Signature=vjbyPxybdZaNmGa%2ByT272YEAiv4%3D";

/// Header (name, value) pairs as the codec hands them to `identify`.
type Headers<'a> = Vec<(&'a [u8], &'a [u8])>;

fn headers(auth: Option<&[u8]>) -> Headers<'_> {
    let mut h: Headers = vec![
        (b"Host", b"s3.example.com"),
        (
            b"User-Agent",
            b"aws-sdk-go-v2/1.30.3 os/linux lang/go#1.22.5",
        ),
        (b"X-Amz-Content-Sha256", b"UNSIGNED-PAYLOAD"),
        (b"X-Amz-Date", b"20130524T000000Z"),
        (b"Accept-Encoding", b"identity"),
    ];
    if let Some(a) = auth {
        h.push((b"Authorization", a));
    }
    h
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("identify");
    let cases: [(&str, &[u8], Headers); 5] = [
        (
            "v4_header",
            b"/bucket/photos/2024/img.jpg?versionId=3HL4kqtJlcpXroDTDmJ",
            headers(Some(V4)),
        ),
        ("v4_query", PRESIGNED_V4, headers(None)),
        ("v2_query", PRESIGNED_V2, headers(None)),
        ("custom", b"/bucket/object", {
            let mut h = headers(None);
            h.push((b"X-API-Key", b"my-custom-key-0001"));
            h
        }),
        (
            "anonymous",
            b"/bucket?list-type=2&prefix=photos%2F&max-keys=1000",
            headers(None),
        ),
    ];
    for (name, target, h) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| {
                let mut scratch = [0u8; 256];
                let id = identify(
                    black_box(target),
                    black_box(h.as_slice()).iter().copied(),
                    128,
                    &mut scratch,
                );
                black_box(id.key.map(|k| k.len()));
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
