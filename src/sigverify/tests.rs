//! Verification against published vectors (the AWS SigV4 test suite, the S3 SigV4 header,
//! chunked and presigned examples, the S3 REST (SigV2) authentication examples), round
//! trips through the project's own signer (`loadgen`), tampering, and the error paths.
//! Requests go through the data path's own head parser wherever they are valid HTTP.

use super::*;
use crate::http::{HeadLimits, RequestHead, parse_request};

/// AWS SigV4 test-suite credentials and time (2015-08-30T12:36:00Z).
const SUITE_KEY: &str = "AKIDEXAMPLE";
const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SUITE_NOW: u64 = 1_440_938_160;
/// S3 documentation credentials and time (2013-05-24T00:00:00Z).
const DOC_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const DOC_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const DOC_NOW: u64 = 1_369_353_600;

type Outcome = Result<Option<(Vec<u8>, AuthMethod)>, VerifyError>;

fn secrets() -> Secrets {
    Secrets::from_pairs([(SUITE_KEY, SUITE_SECRET), (DOC_KEY, DOC_SECRET)])
}

fn parse(raw: &[u8]) -> RequestHead {
    let mut head = RequestHead::new();
    let limits = HeadLimits {
        max_head_bytes: 64 * 1024,
        max_headers: 100,
    };
    parse_request(raw, &limits, &mut head).expect("test requests are valid HTTP");
    head
}

fn owned(r: Result<Option<Verified<'_>>, VerifyError>) -> Outcome {
    r.map(|v| v.map(|v| (v.access_key.into_owned(), v.method)))
}

/// Verifies a request given as wire text (`\n` line ends become CRLF).
fn check_with(raw: &str, s: &Secrets, cache: &mut SigningKeyCache, now: u64) -> Outcome {
    let mut wire = raw.replace('\n', "\r\n").into_bytes();
    wire.extend_from_slice(b"\r\n\r\n");
    let head = parse(&wire);
    owned(verify(
        &RequestParts::from_head(&wire, &head),
        s,
        cache,
        now,
    ))
}

fn check(raw: &str, now: u64) -> Outcome {
    check_with(raw, &secrets(), &mut SigningKeyCache::new(16), now)
}

/// Verifies a request given as parts (for targets the HTTP parser would refuse).
fn check_parts(method: &str, target: &str, headers: &[(&str, &str)], now: u64) -> Outcome {
    let pairs: Vec<(&[u8], &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    let req = RequestParts {
        method: method.as_bytes(),
        target: target.as_bytes(),
        headers: Headers::Pairs(&pairs),
    };
    owned(verify(&req, &secrets(), &mut SigningKeyCache::new(16), now))
}

fn ok(key: &str, method: AuthMethod) -> Outcome {
    Ok(Some((key.as_bytes().to_vec(), method)))
}

fn suite_auth(signed: &str, sig: &str) -> String {
    format!(
        "Authorization: AWS4-HMAC-SHA256 Credential={SUITE_KEY}/20150830/us-east-1/service/aws4_request, SignedHeaders={signed}, Signature={sig}"
    )
}

fn sha256_hex(body: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(body))
}

// ---------------------------------------------------------------------------------------
// AWS SigV4 test suite (service "service", us-east-1).

#[test]
fn suite_get_requests() {
    let std_h = "host;x-amz-date";
    let cases = [
        (
            "/",
            std_h,
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "/?Param1=value2&Param1=Value1",
            std_h,
            "eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1",
        ),
        (
            "/?Param2=value2&Param1=value1",
            std_h,
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
        (
            "/?Param1=value2&Param1=value1",
            std_h,
            "5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694",
        ),
        (
            "/?Param1=value1",
            std_h,
            "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb",
        ),
        (
            "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            std_h,
            "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
        ),
        (
            "/?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            std_h,
            "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
        ),
    ];
    for (target, signed, sig) in cases {
        let raw = format!(
            "GET {target} HTTP/1.1\nHost:example.amazonaws.com\nX-Amz-Date:20150830T123600Z\n{}",
            suite_auth(signed, sig)
        );
        assert_eq!(
            check(&raw, SUITE_NOW),
            ok(SUITE_KEY, AuthMethod::V4),
            "{target}"
        );
    }
}

#[test]
fn suite_raw_utf8_and_space_use_the_encoded_path_and_query() {
    for (target, sig) in [
        (
            "/ሴ",
            "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
        ),
        (
            "/example space/",
            "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
        ),
        (
            "/?ሴ=bar",
            "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
        ),
    ] {
        let auth = suite_auth("host;x-amz-date", sig);
        let headers = [
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
            (
                "Authorization",
                auth.strip_prefix("Authorization: ").unwrap(),
            ),
        ];
        let got = check_parts("GET", target, &headers, SUITE_NOW);
        assert_eq!(got, ok(SUITE_KEY, AuthMethod::V4), "{target}");
    }
}

#[test]
fn suite_header_canonicalisation() {
    let h = "Host:example.amazonaws.com\nX-Amz-Date:20150830T123600Z";
    let cases = [
        (
            "My-Header1:value2\nMy-Header1:value2\nMy-Header1:value1",
            "host;my-header1;x-amz-date",
            "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
        ),
        (
            "My-Header1:value4\nMy-Header1:value1\nMy-Header1:value3\nMy-Header1:value2",
            "host;my-header1;x-amz-date",
            "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01",
        ),
        (
            "My-Header1: value1 \nMy-Header2: \"a   b   c\"",
            "host;my-header1;my-header2;x-amz-date",
            "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
        ),
    ];
    for (extra, signed, sig) in cases {
        let raw = format!("GET / HTTP/1.1\n{h}\n{extra}\n{}", suite_auth(signed, sig));
        assert_eq!(
            check(&raw, SUITE_NOW),
            ok(SUITE_KEY, AuthMethod::V4),
            "{extra}"
        );
    }
}

#[test]
fn suite_post_requests() {
    let body = b"Param1=value1";
    let body_hash = sha256_hex(body);
    assert_eq!(
        body_hash,
        "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
    );
    let h = "Host:example.amazonaws.com\nX-Amz-Date:20150830T123600Z";
    // The body is not read: its digest is given in an unsigned x-amz-content-sha256.
    let payload = format!("x-amz-content-sha256: {body_hash}");
    let sts = "X-Amz-Security-Token:AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";
    let cases = [
        (
            String::new(),
            "host;x-amz-date",
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        ),
        (
            "My-Header1:value1".into(),
            "host;my-header1;x-amz-date",
            "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c",
        ),
        (
            sts.into(),
            "host;x-amz-date;x-amz-security-token",
            "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead",
        ),
        (
            format!("Content-Type:application/x-www-form-urlencoded\n{payload}"),
            "content-type;host;x-amz-date",
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
        ),
        (
            format!("Content-Type:application/x-www-form-urlencoded; charset=utf8\n{payload}"),
            "content-type;host;x-amz-date",
            "1a72ec8f64bd914b0e42e42607c7fbce7fb2c7465f63e3092b3b0d39fa77a6fe",
        ),
    ];
    for (extra, signed, sig) in cases {
        let extra = if extra.is_empty() {
            extra
        } else {
            format!("{extra}\n")
        };
        let raw = format!("POST / HTTP/1.1\n{h}\n{extra}{}", suite_auth(signed, sig));
        assert_eq!(
            check(&raw, SUITE_NOW),
            ok(SUITE_KEY, AuthMethod::V4),
            "{signed} {sig}"
        );
    }
}

#[test]
fn suite_canonical_requests_match_the_published_text() {
    let pairs: [(&[u8], &[u8]); 2] = [
        (b"Host", b"example.amazonaws.com"),
        (b"X-Amz-Date", b"20150830T123600Z"),
    ];
    let req = RequestParts {
        method: b"GET",
        target: b"/?Param1=value2&Param1=Value1",
        headers: Headers::Pairs(&pairs),
    };
    assert_eq!(
        v4::canonical_request_text(&req, b"host;x-amz-date", v4::EMPTY_SHA256, false, false),
        "GET\n/\nParam1=Value1&Param1=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let pairs: [(&[u8], &[u8]); 3] = [
        (b"Content-Type", b"application/x-www-form-urlencoded"),
        (b"Host", b"example.amazonaws.com"),
        (b"X-Amz-Date", b"20150830T123600Z"),
    ];
    let req = RequestParts {
        method: b"POST",
        target: b"/",
        headers: Headers::Pairs(&pairs),
    };
    let payload = b"9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e";
    assert_eq!(
        v4::canonical_request_text(&req, b"content-type;host;x-amz-date", payload, false, false),
        "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
    );
}

// ---------------------------------------------------------------------------------------
// S3 SigV4 examples (examplebucket, us-east-1, 2013-05-24).

fn doc_auth(signed: &str, sig: &str) -> String {
    format!(
        "Authorization: AWS4-HMAC-SHA256 Credential={DOC_KEY}/20130524/us-east-1/s3/aws4_request,SignedHeaders={signed},Signature={sig}"
    )
}

const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[test]
fn s3_get_object_with_range() {
    let raw = format!(
        "GET /test.txt HTTP/1.1\nHost: examplebucket.s3.amazonaws.com\n{}\nRange: bytes=0-9\nx-amz-content-sha256:{EMPTY}\nx-amz-date: 20130524T000000Z",
        doc_auth(
            "host;range;x-amz-content-sha256;x-amz-date",
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        )
    );
    assert_eq!(check(&raw, DOC_NOW), ok(DOC_KEY, AuthMethod::V4));
}

#[test]
fn s3_put_object_path_as_sent_or_encoded() {
    assert_eq!(
        sha256_hex(b"Welcome to Amazon S3."),
        "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    );
    for path in ["/test%24file.text", "/test$file.text"] {
        let raw = format!(
            "PUT {path} HTTP/1.1\nHost: examplebucket.s3.amazonaws.com\nDate: Fri, 24 May 2013 00:00:00 GMT\n{}\nx-amz-date: 20130524T000000Z\nx-amz-storage-class: REDUCED_REDUNDANCY\nx-amz-content-sha256: 44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\nContent-Length: 21",
            doc_auth(
                "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
                "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
            )
        );
        assert_eq!(check(&raw, DOC_NOW), ok(DOC_KEY, AuthMethod::V4), "{path}");
    }
}

#[test]
fn s3_bucket_lifecycle_and_list_objects() {
    let signed = "host;x-amz-content-sha256;x-amz-date";
    for (target, sig) in [
        (
            "/?lifecycle",
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
        ),
        (
            "/?lifecycle=",
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
        ),
        (
            "/?max-keys=2&prefix=J",
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        ),
        (
            "/?prefix=%4a&max-keys=2",
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        ),
    ] {
        let raw = format!(
            "GET {target} HTTP/1.1\nHost: examplebucket.s3.amazonaws.com\nx-amz-date: 20130524T000000Z\nx-amz-content-sha256: {EMPTY}\n{}",
            doc_auth(signed, sig)
        );
        assert_eq!(
            check(&raw, DOC_NOW),
            ok(DOC_KEY, AuthMethod::V4),
            "{target}"
        );
    }
}

#[test]
fn s3_chunked_uploads_verify_their_seed_signature() {
    let seed = format!(
        "PUT /examplebucket/chunkObject.txt HTTP/1.1\nHost: s3.amazonaws.com\nx-amz-date: 20130524T000000Z\nx-amz-storage-class: REDUCED_REDUNDANCY\n{}\nx-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD\nContent-Encoding: aws-chunked\nx-amz-decoded-content-length: 66560\nContent-Length: 66824",
        doc_auth(
            "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class",
            "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
        )
    );
    assert_eq!(check(&seed, DOC_NOW), ok(DOC_KEY, AuthMethod::V4));
    let trailer = format!(
        "PUT /examplebucket/chunkObject.txt HTTP/1.1\nHost: s3.amazonaws.com\nx-amz-date: 20130524T000000Z\nx-amz-storage-class: REDUCED_REDUNDANCY\n{}\nx-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER\nContent-Encoding: aws-chunked\nx-amz-decoded-content-length: 66560\nx-amz-trailer: x-amz-checksum-crc32c\nContent-Length: 66824",
        doc_auth(
            "content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class;x-amz-trailer",
            "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
        )
    );
    assert_eq!(check(&trailer, DOC_NOW), ok(DOC_KEY, AuthMethod::V4));
}

const PRESIGNED: &str = "GET /test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404 HTTP/1.1\nHost: examplebucket.s3.amazonaws.com";

#[test]
fn s3_presigned_url_and_its_validity() {
    let valid = ok(DOC_KEY, AuthMethod::V4Query);
    assert_eq!(check(PRESIGNED, DOC_NOW + 3600), valid);
    assert_eq!(check(PRESIGNED, DOC_NOW + 86_400), valid);
    assert_eq!(
        check(PRESIGNED, DOC_NOW + 86_401),
        Err(VerifyError::Expired)
    );
    assert_eq!(check(PRESIGNED, DOC_NOW - 900), valid);
    assert_eq!(
        check(PRESIGNED, DOC_NOW - 901),
        Err(VerifyError::NotYetValid)
    );
    // Parameter order on the wire does not matter; the signature parameter is left out.
    let reordered = PRESIGNED.replace(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential",
        "X-Amz-Credential",
    );
    let reordered = reordered.replace(" HTTP/1.1", "&X-Amz-Algorithm=AWS4-HMAC-SHA256 HTTP/1.1");
    assert_eq!(check(&reordered, DOC_NOW), valid);
    // Unsigned headers may change.
    assert_eq!(
        check(&format!("{PRESIGNED}\nUser-Agent: curl"), DOC_NOW),
        valid
    );
}

// ---------------------------------------------------------------------------------------
// S3 REST authentication (SigV2) examples.

fn v2_now(date: &str) -> u64 {
    time::parse_http_date(date.as_bytes()).expect("example dates parse")
}

#[test]
fn s3_v2_header_examples() {
    let vhost = "Host: awsexamplebucket1.us-west-1.s3.amazonaws.com";
    let vhost2 = "Host: awsexamplebucket1.s3.us-west-1.amazonaws.com";
    let cases = [
        (
            "GET /photos/puppy.jpg",
            vhost,
            "",
            "Tue, 27 Mar 2007 19:36:42 +0000",
            "qgk2+6Sv9/oM7G3qLEjTH1a1l1g=",
        ),
        (
            "PUT /photos/puppy.jpg",
            vhost2,
            "Content-Type: image/jpeg\nContent-Length: 94328\n",
            "Tue, 27 Mar 2007 21:15:45 +0000",
            "iqRzw+ileNPu1fhspnRs8nOjjIA=",
        ),
        (
            "GET /?prefix=photos&max-keys=50&marker=puppy",
            vhost,
            "User-Agent: Mozilla/5.0\n",
            "Tue, 27 Mar 2007 19:42:41 +0000",
            "m0WP8eCtspQl5Ahe6L1SozdX9YA=",
        ),
        (
            "GET /?acl",
            vhost,
            "",
            "Tue, 27 Mar 2007 19:44:46 +0000",
            "82ZHiFIjc+WbcwFKGUVEQspPn+0=",
        ),
        (
            "GET /",
            "Host: s3.us-west-1.amazonaws.com",
            "",
            "Wed, 28 Mar 2007 01:29:59 +0000",
            "qGdzdERIC03wnaRNKh6OqZehG9s=",
        ),
        (
            "GET /dictionary/fran%C3%A7ais/pr%c3%a9f%c3%a8re",
            "Host: s3.us-west-1.amazonaws.com",
            "",
            "Wed, 28 Mar 2007 01:49:49 +0000",
            "DNEZGsoieTZ92F3bUfSPQcbGmlM=",
        ),
    ];
    for (line, host, extra, date, sig) in cases {
        let raw = format!(
            "{line} HTTP/1.1\n{extra}{host}\nDate: {date}\nAuthorization: AWS {DOC_KEY}:{sig}"
        );
        assert_eq!(
            check(&raw, v2_now(date)),
            ok(DOC_KEY, AuthMethod::V2),
            "{line}"
        );
    }
}

#[test]
fn s3_v2_delete_with_x_amz_date() {
    let raw = format!(
        "DELETE /awsexamplebucket1/photos/puppy.jpg HTTP/1.1\nUser-Agent: dotnet\nHost: s3.us-west-1.amazonaws.com\nDate: Tue, 27 Mar 2007 21:20:27 +0000\nx-amz-date: Tue, 27 Mar 2007 21:20:26 +0000\nAuthorization: AWS {DOC_KEY}:XbyTlbQdu9Xw5o8P4iMwPktxQd8="
    );
    let now = v2_now("Tue, 27 Mar 2007 21:20:26 +0000");
    assert_eq!(check(&raw, now), ok(DOC_KEY, AuthMethod::V2));
}

#[test]
fn s3_v2_upload_to_a_cname_bucket() {
    let raw = format!(
        "PUT /db-backup.dat.gz HTTP/1.1\nUser-Agent: curl/7.15.5\nHost: static.awsexamplebucket1.net:8080\nDate: Tue, 27 Mar 2007 21:06:08 +0000\nx-amz-acl: public-read\ncontent-type: application/x-download\nContent-MD5: 4gJE4saaMU4BqNR0kLY+lw==\nX-Amz-Meta-ReviewedBy: joe@awsexamplebucket1.net\nX-Amz-Meta-ReviewedBy: jane@awsexamplebucket1.net\nX-Amz-Meta-FileChecksum: 0x02661779\nX-Amz-Meta-ChecksumAlgorithm: crc32\nContent-Disposition: attachment; filename=database.dat\nContent-Encoding: gzip\nContent-Length: 5913339\nAuthorization: AWS {DOC_KEY}:dKZcB+bz2EPXgSdXZp9ozGeOM4I="
    );
    let mut wire = raw.replace('\n', "\r\n").into_bytes();
    wire.extend_from_slice(b"\r\n\r\n");
    let head = parse(&wire);
    let req = RequestParts::from_head(&wire, &head);
    assert_eq!(
        v2::string_to_sign_text(
            &req,
            b"Tue, 27 Mar 2007 21:06:08 +0000",
            false,
            Some(b"static.awsexamplebucket1.net")
        ),
        "PUT\n4gJE4saaMU4BqNR0kLY+lw==\napplication/x-download\nTue, 27 Mar 2007 21:06:08 +0000\nx-amz-acl:public-read\nx-amz-meta-checksumalgorithm:crc32\nx-amz-meta-filechecksum:0x02661779\nx-amz-meta-reviewedby:joe@awsexamplebucket1.net,jane@awsexamplebucket1.net\n/static.awsexamplebucket1.net/db-backup.dat.gz"
    );
    let now = v2_now("Tue, 27 Mar 2007 21:06:08 +0000");
    assert_eq!(check(&raw, now), ok(DOC_KEY, AuthMethod::V2));
}

/// The query-string example as first published (bucket `johnsmith`): the current page
/// renamed the bucket to awsexamplebucket1 but kept this signature, which only the old
/// bucket name gives (with awsexamplebucket1 it is `1No4mq5ETf02z8aet9voy6gui6E=`).
#[test]
fn s3_v2_presigned_url() {
    let raw = "GET /photos/puppy.jpg?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Signature=NpgCjnDzrM%2BWFzoENXmpNDUsSn8%3D&Expires=1175139620 HTTP/1.1\nHost: johnsmith.s3.amazonaws.com";
    let renamed = "GET /photos/puppy.jpg?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Signature=1No4mq5ETf02z8aet9voy6gui6E%3D&Expires=1175139620 HTTP/1.1\nHost: awsexamplebucket1.s3.us-west-1.amazonaws.com";
    assert_eq!(
        check(renamed, 1_175_139_620),
        ok(DOC_KEY, AuthMethod::V2Query)
    );
    assert_eq!(check(raw, 1_175_139_620), ok(DOC_KEY, AuthMethod::V2Query));
    assert_eq!(check(raw, 1_175_139_621), Err(VerifyError::Expired));
    // An unencoded `+` in the signature reads as a space and is still accepted.
    let plus = raw.replace("%2B", "+");
    assert_eq!(
        check(&plus, 1_175_139_000),
        ok(DOC_KEY, AuthMethod::V2Query)
    );
}
