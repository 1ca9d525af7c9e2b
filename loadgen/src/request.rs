//! Target URLs and request bytes. [`Target`] parses and resolves `http(s)://host:port[/base]`;
//! [`RequestBuilder`] turns (key, op class, bucket, object, size, wall-clock second) into the
//! exact bytes of an S3 request (path-style or virtual-host-style, [`Addressing`]) signed in the
//! group's auth style ([`AuthStyle`]); [`Shape`] is the request line of each op class. Pure
//! apart from name resolution.

use crate::plan::{Op, Pick};
use crate::sign::{
    Civil, EMPTY_SHA256, UNSIGNED_PAYLOAD, V4Signer, uri_encode, v2_signature, v2_string_to_sign,
};
use serde::{Deserialize, Serialize};
use std::net::{SocketAddr, ToSocketAddrs};

/// How a group's requests identify their key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum AuthStyle {
    Sigv4,
    Sigv2,
    PresignV4,
    PresignV2,
    XApiKey,
    None,
    Malformed,
}

impl AuthStyle {
    /// Whether the proxy sees a key (false: the request is anonymous to the limiter).
    pub fn identifies_key(self) -> bool {
        !matches!(self, AuthStyle::None | AuthStyle::Malformed)
    }
    pub fn needs_secret(self) -> bool {
        matches!(
            self,
            AuthStyle::Sigv4 | AuthStyle::Sigv2 | AuthStyle::PresignV4 | AuthStyle::PresignV2
        )
    }
}

/// Where the bucket goes: the first path segment (`/bucket/key`) or the Host
/// (`bucket.host/key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Addressing {
    #[default]
    Path,
    Virtual,
}

/// What identifies one request of an op class, before authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub method: &'static str,
    /// The Host header.
    pub host: String,
    /// The URI-encoded path (also the SigV4 canonical URI).
    pub path: String,
    /// The op's own query on the wire (`list-type=2`, `uploads`, `acl`), "" for object ops.
    pub query: &'static str,
    /// The same query in SigV4 canonical form (`uploads=`).
    pub canonical_query: &'static str,
    /// The SigV2 canonicalized resource (`/bucket/key?uploads`; `list-type` is no sub-resource).
    pub v2_resource: String,
}

/// (wire query, SigV4 canonical query, SigV2 sub-resource) of an op class.
fn op_query(op: Op) -> (&'static str, &'static str, &'static str) {
    match op {
        Op::List => ("list-type=2", "list-type=2", ""),
        Op::Multipart => ("uploads", "uploads=", "?uploads"),
        Op::Other => ("acl", "acl=", "?acl"),
        Op::Get | Op::Put | Op::Head | Op::Delete => ("", "", ""),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target {0:?}: expected http://host:port[/path] or https://…")]
    Syntax(String),
    #[error("target {0:?}: cannot resolve host")]
    Resolve(String),
}

/// A parsed, resolved target.
#[derive(Debug, Clone)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The Host header value (port omitted when it is the scheme's default).
    pub host_header: String,
    pub addr: SocketAddr,
    /// Path of the URL without a trailing '/'; "" for the root.
    pub base_path: String,
    /// Full path+query as given (bench mode sends exactly this).
    pub path_and_query: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let err = || TargetError::Syntax(url.to_string());
        let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(err());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(err());
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
            let end = stripped.find(']').ok_or_else(err)?;
            let h = &stripped[..end];
            let p = match &stripped[end + 1..] {
                "" => default_port,
                s => s
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(err)?,
            };
            (h.to_string(), p)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| err())?),
                None => (authority.to_string(), default_port),
            }
        };
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|_| TargetError::Resolve(url.into()))?
            .next()
            .ok_or_else(|| TargetError::Resolve(url.into()))?;
        let host_header = if port == default_port {
            authority
                .rsplit_once(':')
                .map_or(authority, |(h, _)| h)
                .to_string()
        } else {
            authority.to_string()
        };
        let base_path = path
            .split('?')
            .next()
            .unwrap_or("")
            .trim_end_matches('/')
            .to_string();
        Ok(Target {
            tls,
            host,
            port,
            host_header,
            addr,
            base_path,
            path_and_query: path.to_string(),
        })
    }
}

/// Body bytes written after the head (shared, never freed).
pub fn body_source() -> &'static [u8] {
    static BODY: std::sync::OnceLock<&'static [u8]> = std::sync::OnceLock::new();
    BODY.get_or_init(|| Box::leak(vec![b'x'; BODY_CHUNK].into_boxed_slice()))
}
pub const BODY_CHUNK: usize = 1 << 20;
/// Bodies up to this size are appended to the head buffer (one write).
pub const INLINE_BODY: u64 = 16 * 1024;

/// Everything needed to build one key's requests.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    pub key_id: String,
    secret: String,
    auth: AuthStyle,
    host_header: String,
    /// The target URL's path ("" for the root).
    base_path: String,
    buckets: std::sync::Arc<[String]>,
    addressing: Addressing,
    object_prefix: String,
    put_sizes: Vec<u64>,
    presign_expires: u32,
    v4: V4Signer,
    counter: u64,
    cached_sec: u64,
    civil: Civil,
    http_date: String,
}

impl RequestBuilder {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key_id: &str,
        secret: &str,
        auth: AuthStyle,
        target: &Target,
        bucket: &str,
        region: &str,
        object_prefix: &str,
        put_sizes: Vec<u64>,
        presign_expires: u32,
    ) -> Self {
        let civil = Civil::from_unix(0);
        RequestBuilder {
            key_id: key_id.into(),
            secret: secret.into(),
            auth,
            host_header: target.host_header.clone(),
            base_path: target.base_path.clone(),
            buckets: vec![bucket.to_string()].into(),
            addressing: Addressing::Path,
            object_prefix: object_prefix.into(),
            put_sizes,
            presign_expires,
            v4: V4Signer::new(key_id, secret, region),
            counter: 0,
            cached_sec: u64::MAX,
            civil,
            http_date: civil.http_date(),
        }
    }

    pub fn body_len(&self, op: Op, size_idx: u16) -> u64 {
        if op == Op::Put {
            self.put_sizes.get(size_idx as usize).copied().unwrap_or(0)
        } else {
            0
        }
    }

    /// Sends to `buckets` (a [`Pick`]'s bucket indexes them) addressed as `addressing`
    /// instead of the one bucket of [`Self::new`].
    pub fn with_buckets(
        mut self,
        buckets: std::sync::Arc<[String]>,
        addressing: Addressing,
    ) -> Self {
        self.buckets = buckets;
        self.addressing = addressing;
        self
    }

    /// The request line and Host of `op` on bucket `bucket` (an index), object `obj`.
    pub fn shape(&self, op: Op, bucket: u16, obj: u32) -> Shape {
        let b = self
            .buckets
            .get(bucket as usize)
            .unwrap_or(&self.buckets[0]);
        let object = op
            .has_object()
            .then(|| format!("{}{obj:06}", self.object_prefix));
        let (query, canonical_query, v2_sub) = op_query(op);
        let (host, raw_path) = match self.addressing {
            Addressing::Path => (
                self.host_header.clone(),
                match &object {
                    Some(o) => format!("{}/{b}/{o}", self.base_path),
                    None => format!("{}/{b}", self.base_path),
                },
            ),
            Addressing::Virtual => (
                format!("{b}.{}", self.host_header),
                format!("{}/{}", self.base_path, object.as_deref().unwrap_or("")),
            ),
        };
        let path = uri_encode(&raw_path, true);
        let v2_resource = match self.addressing {
            Addressing::Path => format!("{path}{v2_sub}"),
            Addressing::Virtual => format!("/{}{path}{v2_sub}", uri_encode(b, true)),
        };
        Shape {
            method: op.method(),
            host,
            path,
            query,
            canonical_query,
            v2_resource,
        }
    }

    /// [`Self::build_pick`] on the first bucket.
    pub fn build(
        &mut self,
        op: Op,
        obj: u32,
        size_idx: u16,
        now_unix: u64,
        out: &mut Vec<u8>,
    ) -> u64 {
        let p = Pick {
            op,
            bucket: 0,
            obj,
            size_idx,
        };
        self.build_pick(&p, now_unix, out)
    }

    /// Appends the request (head, plus the body when ≤ [`INLINE_BODY`]) to `out`.
    /// Returns the number of body bytes the caller still has to write.
    pub fn build_pick(&mut self, p: &Pick, now_unix: u64, out: &mut Vec<u8>) -> u64 {
        use std::io::Write;
        if now_unix != self.cached_sec {
            self.cached_sec = now_unix;
            self.civil = Civil::from_unix(now_unix);
            self.http_date = self.civil.http_date();
        }
        self.counter += 1;
        let op = p.op;
        let shape = self.shape(op, p.bucket, p.obj);
        let (method, path) = (shape.method, shape.path.as_str());
        let body = self.body_len(op, p.size_idx);
        let (query, extra) = self.auth_parts(&shape, body, now_unix);
        let _ = write!(out, "{method} {path}");
        let query = match (shape.query, query.as_str()) {
            ("", q) => q.to_string(),
            (o, "") => o.to_string(),
            (o, q) => format!("{o}&{q}"),
        };
        if !query.is_empty() {
            out.push(b'?');
            out.extend_from_slice(query.as_bytes());
        }
        let _ = write!(out, " HTTP/1.1\r\nHost: {}\r\n{extra}", shape.host);
        if matches!(op, Op::Put | Op::Multipart) {
            let _ = write!(out, "Content-Length: {body}\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if body > 0 && body <= INLINE_BODY {
            out.extend_from_slice(&body_source()[..body as usize]);
            0
        } else {
            body
        }
    }

    /// The authentication of one request: (query parameters, header lines).
    fn auth_parts(&mut self, shape: &Shape, body: u64, now_unix: u64) -> (String, String) {
        let (method, path) = (shape.method, shape.path.as_str());

        let mut query = String::new();
        let mut extra = String::new();
        match self.auth {
            AuthStyle::None => {}
            AuthStyle::XApiKey => {
                extra = format!("X-API-Key: {}\r\n", self.key_id);
            }
            AuthStyle::Sigv4 => {
                let payload = if body > 0 { UNSIGNED_PAYLOAD } else { EMPTY_SHA256 };
                let amz = self.civil.amz_date();
                let headers = [
                    ("host", shape.host.as_str()),
                    ("x-amz-content-sha256", payload),
                    ("x-amz-date", amz.as_str()),
                ];
                let sig = self.v4.sign(
                    method,
                    path,
                    shape.canonical_query,
                    &headers,
                    payload,
                    self.civil,
                );
                extra = format!(
                    "x-amz-content-sha256: {payload}\r\nx-amz-date: {amz}\r\nAuthorization: {}\r\n",
                    self.v4.authorization(&sig, &headers)
                );
            }
            AuthStyle::Sigv2 => {
                let sts = v2_string_to_sign(method, &self.http_date, &shape.v2_resource);
                extra = format!(
                    "Date: {}\r\nAuthorization: AWS {}:{}\r\n",
                    self.http_date,
                    self.key_id,
                    v2_signature(&self.secret, &sts)
                );
            }
            AuthStyle::PresignV4 => {
                query = self.v4.presign_query_with(
                    method,
                    path,
                    shape.canonical_query,
                    &shape.host,
                    self.presign_expires,
                    self.civil,
                );
            }
            AuthStyle::PresignV2 => {
                let expires = (now_unix + self.presign_expires as u64).to_string();
                let sts = v2_string_to_sign(method, &expires, &shape.v2_resource);
                query = format!(
                    "AWSAccessKeyId={}&Expires={expires}&Signature={}",
                    uri_encode(&self.key_id, false),
                    uri_encode(&v2_signature(&self.secret, &sts), false)
                );
            }
            AuthStyle::Malformed => match self.counter % 6 {
                0 => extra = "Authorization: AWS4-HMAC-SHA256 Credential=, SignedHeaders=host, Signature=00\r\n".into(),
                1 => {
                    extra = format!(
                        "Authorization: AWS4-HMAC-SHA256 Credential={}/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\n",
                        "A".repeat(300)
                    )
                }
                2 => extra = "Authorization: AWS :c2ln\r\n".into(),
                3 => extra = "Authorization: Bearer not-an-s3-key\r\n".into(),
                4 => query = "X-Amz-Credential=%ZZ%2F&X-Amz-Signature=00".into(),
                _ => extra = format!("X-API-Key: {}\u{e9}\r\n", self.key_id),
            },
        }
        (query, extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target::parse("http://127.0.0.1:3900").unwrap()
    }

    fn builder(auth: AuthStyle) -> RequestBuilder {
        RequestBuilder::new(
            "GK0123456789abcdef01234567",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            auth,
            &target(),
            "bench",
            "garage",
            "obj-",
            vec![10, 100_000],
            3600,
        )
    }

    fn head_of(out: &[u8]) -> (String, Vec<(String, String)>) {
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Request::new(&mut hs);
        assert!(r.parse(out).unwrap().is_complete());
        let line = format!("{} {}", r.method.unwrap(), r.path.unwrap());
        let h = r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).to_string(),
                )
            })
            .collect();
        (line, h)
    }

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:8080/base/").unwrap();
        assert_eq!(t.host_header, "127.0.0.1:8080");
        assert_eq!(t.base_path, "/base");
        assert!(!t.tls);
        let t = Target::parse("https://localhost/").unwrap();
        assert_eq!(t.port, 443);
        assert_eq!(t.host_header, "localhost");
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("http://:80").is_err());
    }

    #[test]
    fn sigv4_request_is_well_formed() {
        let mut b = builder(AuthStyle::Sigv4);
        let mut out = Vec::new();
        assert_eq!(b.build(Op::Get, 7, 0, 1_369_353_600, &mut out), 0);
        let (line, h) = head_of(&out);
        assert_eq!(line, "GET /bench/obj-000007");
        let auth = &h.iter().find(|(n, _)| n == "Authorization").unwrap().1;
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=GK0123456789abcdef01234567/20130524/garage/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature="));
        // Recompute the signature independently of the builder's cache.
        let mut s = V4Signer::new(
            "GK0123456789abcdef01234567",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "garage",
        );
        let sig = s.sign(
            "GET",
            "/bench/obj-000007",
            "",
            &[
                ("host", "127.0.0.1:3900"),
                ("x-amz-content-sha256", EMPTY_SHA256),
                ("x-amz-date", "20130524T000000Z"),
            ],
            EMPTY_SHA256,
            Civil::from_unix(1_369_353_600),
        );
        assert!(auth.ends_with(&sig.signature));
    }

    #[test]
    fn put_bodies_inline_or_streamed() {
        let mut b = builder(AuthStyle::Sigv4);
        let mut out = Vec::new();
        assert_eq!(b.build(Op::Put, 1, 0, 1_369_353_600, &mut out), 0);
        assert!(out.ends_with(b"\r\n\r\nxxxxxxxxxx"));
        let s = String::from_utf8_lossy(&out);
        assert!(s.contains("Content-Length: 10\r\n"));
        assert!(s.contains("x-amz-content-sha256: UNSIGNED-PAYLOAD"));
        out.clear();
        assert_eq!(b.build(Op::Put, 1, 1, 1_369_353_600, &mut out), 100_000);
        assert!(out.ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn every_style_builds_parseable_requests() {
        for auth in [
            AuthStyle::Sigv2,
            AuthStyle::PresignV4,
            AuthStyle::PresignV2,
            AuthStyle::XApiKey,
            AuthStyle::None,
            AuthStyle::Malformed,
        ] {
            let mut b = builder(auth);
            for i in 0..6 {
                let mut out = Vec::new();
                b.build(Op::Head, i, 0, 1_700_000_000, &mut out);
                let (line, h) = head_of(&out);
                assert!(line.starts_with("HEAD /bench/obj-"), "{auth:?} {line}");
                match auth {
                    AuthStyle::Sigv2 => assert!(h.iter().any(|(n, v)| n == "Authorization"
                        && v.starts_with("AWS GK0123456789abcdef01234567:"))),
                    AuthStyle::PresignV4 => {
                        assert!(line.contains("X-Amz-Credential=GK0123456789abcdef01234567%2F"))
                    }
                    AuthStyle::PresignV2 => assert!(line.contains(
                        "AWSAccessKeyId=GK0123456789abcdef01234567&Expires=1700003600&Signature="
                    )),
                    AuthStyle::XApiKey => assert!(
                        h.iter()
                            .any(|(n, v)| n == "X-API-Key" && v == "GK0123456789abcdef01234567")
                    ),
                    AuthStyle::None => assert_eq!(h.len(), 1),
                    _ => {}
                }
            }
        }
    }

    fn line_of(b: &mut RequestBuilder, op: Op, bucket: u16) -> (String, Vec<(String, String)>) {
        let mut out = Vec::new();
        let p = Pick {
            op,
            bucket,
            obj: 3,
            size_idx: 0,
        };
        b.build_pick(&p, 1_700_000_000, &mut out);
        head_of(&out)
    }

    fn header<'h>(h: &'h [(String, String)], name: &str) -> Option<&'h str> {
        h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn every_op_class_has_its_request_line() {
        let buckets: std::sync::Arc<[String]> = vec!["bench".into(), "logs".into()].into();
        let mut b = builder(AuthStyle::XApiKey).with_buckets(buckets, Addressing::Path);
        let want = [
            (Op::Get, "GET /logs/obj-000003"),
            (Op::Put, "PUT /logs/obj-000003"),
            (Op::Head, "HEAD /logs/obj-000003"),
            (Op::Delete, "DELETE /logs/obj-000003"),
            (Op::List, "GET /logs?list-type=2"),
            (Op::Multipart, "POST /logs/obj-000003?uploads"),
            (Op::Other, "GET /logs?acl"),
        ];
        for (op, line) in want {
            let (got, h) = line_of(&mut b, op, 1);
            assert_eq!(got, line, "{op:?}");
            assert_eq!(header(&h, "Host"), Some("127.0.0.1:3900"));
            let cl = header(&h, "Content-Length");
            match op {
                Op::Put => assert_eq!(cl, Some("10")),
                Op::Multipart => assert_eq!(cl, Some("0")),
                _ => assert_eq!(cl, None, "{op:?}"),
            }
        }
        assert_eq!(line_of(&mut b, Op::Get, 0).0, "GET /bench/obj-000003");
    }

    #[test]
    fn virtual_host_style_moves_the_bucket_into_host() {
        let buckets: std::sync::Arc<[String]> = vec!["media".into()].into();
        let mut b = builder(AuthStyle::Sigv4).with_buckets(buckets, Addressing::Virtual);
        let (line, h) = line_of(&mut b, Op::Get, 0);
        assert_eq!(line, "GET /obj-000003");
        assert_eq!(header(&h, "Host"), Some("media.127.0.0.1:3900"));
        assert_eq!(line_of(&mut b, Op::List, 0).0, "GET /?list-type=2");
        let s = b.shape(Op::Multipart, 0, 3);
        assert_eq!(s.v2_resource, "/media/obj-000003?uploads");
        // SigV4 signs the Host the request carries and the op's canonical query.
        let mut v4 = V4Signer::new(
            "GK0123456789abcdef01234567",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "garage",
        );
        let civil = Civil::from_unix(1_700_000_000);
        let amz = civil.amz_date();
        let (line, h) = line_of(&mut b, Op::List, 0);
        assert_eq!(line, "GET /?list-type=2");
        let sig = v4.sign(
            "GET",
            "/",
            "list-type=2",
            &[
                ("host", "media.127.0.0.1:3900"),
                ("x-amz-content-sha256", EMPTY_SHA256),
                ("x-amz-date", &amz),
            ],
            EMPTY_SHA256,
            civil,
        );
        assert!(
            header(&h, "Authorization")
                .unwrap()
                .ends_with(&sig.signature)
        );
    }

    #[test]
    fn sub_resources_are_signed_in_every_style() {
        let mut b = builder(AuthStyle::PresignV4);
        let (line, _) = line_of(&mut b, Op::Other, 0);
        assert!(
            line.starts_with("GET /bench?acl&X-Amz-Algorithm="),
            "{line}"
        );
        let mut v4 = V4Signer::new(
            "GK0123456789abcdef01234567",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "garage",
        );
        let q = v4.presign_query_with(
            "GET",
            "/bench",
            "acl=",
            "127.0.0.1:3900",
            3600,
            Civil::from_unix(1_700_000_000),
        );
        assert!(line.ends_with(&format!("?acl&{q}")), "{line}");
        assert_ne!(
            q,
            v4.presign_query(
                "GET",
                "/bench",
                "127.0.0.1:3900",
                3600,
                Civil::from_unix(1_700_000_000)
            ),
            "the sub-resource is part of the signature"
        );
        let mut b = builder(AuthStyle::Sigv2);
        let (_, h) = line_of(&mut b, Op::Multipart, 0);
        let date = Civil::from_unix(1_700_000_000).http_date();
        let sts = v2_string_to_sign("POST", &date, "/bench/obj-000003?uploads");
        let secret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let auth = header(&h, "Authorization").unwrap();
        assert!(auth.ends_with(&v2_signature(secret, &sts)), "{auth}");
        // list-type is no V2 sub-resource.
        assert_eq!(b.shape(Op::List, 0, 0).v2_resource, "/bench");
    }
}
