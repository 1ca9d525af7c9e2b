//! Request authentication material: AWS Signature V4 (header and presigned query), V2 (header
//! and presigned query), date formats and S3 URI encoding. Pure: the caller passes the time.
//! Owns the per-key V4 signing-key cache; knows nothing about sockets.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use time::{OffsetDateTime, PrimitiveDateTime};

type HmacSha256 = Hmac<Sha256>;
type HmacSha1 = Hmac<sha1::Sha1>;

/// SHA-256 of the empty payload.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// A Unix time as a UTC calendar date and time (the `time` crate's calendar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil(OffsetDateTime);

impl Civil {
    /// Saturates at 9999-12-31T23:59:59Z, the last second a four-digit year can name.
    pub fn from_unix(secs: u64) -> Civil {
        let utc = i64::try_from(secs)
            .ok()
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
            .unwrap_or(PrimitiveDateTime::MAX.assume_utc());
        Civil(utc)
    }

    /// "20130524T000000Z"
    pub fn amz_date(&self) -> String {
        let t = self.0;
        format!(
            "{}T{:02}{:02}{:02}Z",
            self.ymd(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }

    /// "20130524"
    pub fn ymd(&self) -> String {
        let t = self.0;
        format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day())
    }

    /// "Fri, 24 May 2013 00:00:00 GMT"
    pub fn http_date(&self) -> String {
        const WD: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
        const MO: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let t = self.0;
        format!(
            "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
            WD[usize::from(t.weekday().number_days_from_sunday())],
            t.day(),
            MO[usize::from(u8::from(t.month())) - 1],
            t.year(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }
}

/// S3 URI encoding: everything but unreserved characters is %XX; '/' kept when `keep_slash`.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for &b in s.as_bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        if unreserved || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hmac256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("hmac accepts any key length");
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// V4 credentials of one key, with the signing key cached per day.
#[derive(Clone, Debug)]
pub struct V4Signer {
    pub access_key: String,
    secret: String,
    pub region: String,
    cached_day: Option<String>,
    signing_key: [u8; 32],
}

/// A V4 signature plus the pieces a request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V4Signature {
    pub amz_date: String,
    pub credential_scope: String,
    pub signature: String,
}

impl V4Signer {
    pub fn new(access_key: &str, secret: &str, region: &str) -> Self {
        V4Signer {
            access_key: access_key.to_string(),
            secret: secret.to_string(),
            region: region.to_string(),
            cached_day: None,
            signing_key: [0; 32],
        }
    }

    fn key_for(&mut self, ymd: &str) -> [u8; 32] {
        if self.cached_day.as_deref() != Some(ymd) {
            let k = hmac256(format!("AWS4{}", self.secret).as_bytes(), ymd.as_bytes());
            let k = hmac256(&k, self.region.as_bytes());
            let k = hmac256(&k, b"s3");
            self.signing_key = hmac256(&k, b"aws4_request");
            self.cached_day = Some(ymd.to_string());
        }
        self.signing_key
    }

    /// Signs a canonical request. `headers` are (lowercase name, trimmed value), sorted by name;
    /// `query` is the canonical query string (already sorted and encoded).
    pub fn sign(
        &mut self,
        method: &str,
        canonical_uri: &str,
        query: &str,
        headers: &[(&str, &str)],
        payload_hash: &str,
        now: Civil,
    ) -> V4Signature {
        let amz_date = now.amz_date();
        let ymd = now.ymd();
        let mut canon = String::with_capacity(256);
        canon.push_str(method);
        canon.push('\n');
        canon.push_str(canonical_uri);
        canon.push('\n');
        canon.push_str(query);
        canon.push('\n');
        for (k, v) in headers {
            canon.push_str(k);
            canon.push(':');
            canon.push_str(v);
            canon.push('\n');
        }
        canon.push('\n');
        canon.push_str(&signed_headers(headers));
        canon.push('\n');
        canon.push_str(payload_hash);
        let scope = format!("{ymd}/{}/s3/aws4_request", self.region);
        let sts = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canon.as_bytes()))
        );
        let key = self.key_for(&ymd);
        V4Signature {
            amz_date,
            credential_scope: scope,
            signature: hex::encode(hmac256(&key, sts.as_bytes())),
        }
    }

    /// The `Authorization` header value for a header-signed request.
    pub fn authorization(&self, sig: &V4Signature, headers: &[(&str, &str)]) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={}, Signature={}",
            self.access_key,
            sig.credential_scope,
            signed_headers(headers),
            sig.signature
        )
    }

    /// Presigned query string (without leading '?') for `method canonical_uri` with `host`.
    pub fn presign_query(
        &mut self,
        method: &str,
        canonical_uri: &str,
        host: &str,
        expires: u32,
        now: Civil,
    ) -> String {
        self.presign_query_with(method, canonical_uri, "", host, expires, now)
    }

    /// [`Self::presign_query`] for a request that also carries the canonical query `sub`
    /// (e.g. `list-type=2`, `uploads=`: lower-case names, so they sort after the `X-Amz-*`
    /// parameters); the result holds the `X-Amz-*` parameters only, the caller adds `sub`.
    pub fn presign_query_with(
        &mut self,
        method: &str,
        canonical_uri: &str,
        sub: &str,
        host: &str,
        expires: u32,
        now: Civil,
    ) -> String {
        let scope = format!("{}/{}/s3/aws4_request", now.ymd(), self.region);
        let query = format!(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}&X-Amz-Date={}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host",
            uri_encode(&format!("{}/{scope}", self.access_key), false),
            now.amz_date()
        );
        let canonical = if sub.is_empty() {
            query.clone()
        } else {
            format!("{query}&{sub}")
        };
        let sig = self.sign(
            method,
            canonical_uri,
            &canonical,
            &[("host", host)],
            UNSIGNED_PAYLOAD,
            now,
        );
        format!("{query}&X-Amz-Signature={}", sig.signature)
    }
}

fn signed_headers(headers: &[(&str, &str)]) -> String {
    headers.iter().map(|h| h.0).collect::<Vec<_>>().join(";")
}

/// SigV2 signature (base64 HMAC-SHA1) of a string-to-sign.
pub fn v2_signature(secret: &str, string_to_sign: &str) -> String {
    use base64::Engine;
    let mut m = HmacSha1::new_from_slice(secret.as_bytes()).expect("hmac accepts any key length");
    m.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}

/// SigV2 string-to-sign for a request without Content-MD5, Content-Type or x-amz-* headers.
pub fn v2_string_to_sign(method: &str, date_or_expires: &str, resource: &str) -> String {
    format!("{method}\n\n\n{date_or_expires}\n{resource}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const AK: &str = "AKIAIOSFODNN7EXAMPLE";
    const SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    #[test]
    fn civil_dates() {
        let c = Civil::from_unix(1_369_353_600); // 2013-05-24 00:00:00 Fri
        assert_eq!(c.amz_date(), "20130524T000000Z");
        assert_eq!(c.http_date(), "Fri, 24 May 2013 00:00:00 GMT");
        let c = Civil::from_unix(951_782_400 + 3661); // 2000-02-29 01:01:01 Tue
        assert_eq!(c.amz_date(), "20000229T010101Z");
        assert_eq!(c.http_date(), "Tue, 29 Feb 2000 01:01:01 GMT");
    }

    #[test]
    fn civil_date_edges() {
        let cases = [
            (0, "19700101T000000Z", "Thu, 01 Jan 1970 00:00:00 GMT"),
            (
                946_684_799,
                "19991231T235959Z",
                "Fri, 31 Dec 1999 23:59:59 GMT",
            ),
            (
                946_684_800,
                "20000101T000000Z",
                "Sat, 01 Jan 2000 00:00:00 GMT",
            ),
            (
                4_107_542_399,
                "21000228T235959Z",
                "Sun, 28 Feb 2100 23:59:59 GMT",
            ),
            (
                4_107_542_400,
                "21000301T000000Z",
                "Mon, 01 Mar 2100 00:00:00 GMT",
            ),
            (
                253_402_300_799,
                "99991231T235959Z",
                "Fri, 31 Dec 9999 23:59:59 GMT",
            ),
        ];
        for (t, amz, http) in cases {
            let c = Civil::from_unix(t);
            assert_eq!((c.amz_date().as_str(), c.http_date().as_str()), (amz, http));
            assert_eq!(c.ymd(), amz[..8]);
        }
    }

    #[test]
    fn uri_encoding() {
        assert_eq!(uri_encode("a b/c~d", true), "a%20b/c~d");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
    }

    /// AWS documentation example: GET Object with a Range header.
    #[test]
    fn v4_header_vector() {
        let mut s = V4Signer::new(AK, SK, "us-east-1");
        let now = Civil::from_unix(1_369_353_600);
        let headers = [
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
        ];
        let sig = s.sign("GET", "/test.txt", "", &headers, EMPTY_SHA256, now);
        assert_eq!(
            sig.signature,
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        assert!(s.authorization(&sig, &headers).starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8"
        ));
    }

    /// AWS documentation example: presigned GET valid 86400 s.
    #[test]
    fn v4_presign_vector() {
        let mut s = V4Signer::new(AK, SK, "us-east-1");
        let now = Civil::from_unix(1_369_353_600);
        let q = s.presign_query(
            "GET",
            "/test.txt",
            "examplebucket.s3.amazonaws.com",
            86400,
            now,
        );
        assert!(q.ends_with(
            "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        ));
        assert!(q.contains(
            "X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        ));
    }

    /// AWS documentation example (REST authentication, GET object).
    #[test]
    fn v2_vector() {
        let sts = v2_string_to_sign(
            "GET",
            "Tue, 27 Mar 2007 19:36:42 +0000",
            "/awsexamplebucket1/photos/puppy.jpg",
        );
        assert_eq!(v2_signature(SK, &sts), "qgk2+6Sv9/oM7G3qLEjTH1a1l1g=");
    }

    #[test]
    fn signing_key_cache_follows_the_day() {
        let mut s = V4Signer::new(AK, SK, "garage");
        let h = [("host", "h")];
        let a = s.sign(
            "GET",
            "/",
            "",
            &h,
            EMPTY_SHA256,
            Civil::from_unix(1_369_353_600),
        );
        let b = s.sign(
            "GET",
            "/",
            "",
            &h,
            EMPTY_SHA256,
            Civil::from_unix(1_369_353_600 + 86_400),
        );
        let mut fresh = V4Signer::new(AK, SK, "garage");
        let c = fresh.sign(
            "GET",
            "/",
            "",
            &h,
            EMPTY_SHA256,
            Civil::from_unix(1_369_353_600 + 86_400),
        );
        assert_ne!(a.signature, b.signature);
        assert_eq!(b, c);
    }
}
