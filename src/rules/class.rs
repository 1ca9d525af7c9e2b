//! The S3 view of a request: which bucket and object key it addresses (path-style
//! `/bucket/key`, or virtual-host-style `bucket.DOMAIN/key` for a configured store domain)
//! and its operation class, from the method, the target and the query's sub-resources.
//!
//! Owns: [`OpClass`], [`ClassSet`], [`S3Target`], [`split_target`], [`classify`]. Pure: no
//! I/O, no allocation. Must not touch: keys, limits, configuration loading.
//!
//! | class | requests |
//! |---|---|
//! | `get_object` | GET of an object (GetObject, with `versionId`, `partNumber`, `response-*` …) |
//! | `put_object` | PUT of an object (PutObject, CopyObject), POST of a form to a bucket (browser upload) |
//! | `list` | GET of a bucket without a sub-resource (ListObjects V1/V2, ListObjectVersions), GET `/` (ListBuckets) |
//! | `delete` | DELETE of an object or a bucket, POST `?delete` (DeleteObjects) |
//! | `head` | HEAD of anything (HeadObject, HeadBucket) |
//! | `multipart` | any request with `uploads` or `uploadId` in its query (create, upload part, complete, abort, list parts/uploads) |
//! | `other` | the rest: sub-resources (`?acl`, `?tagging`, `?policy`, `?versioning`, `?select` …), PUT of a bucket (CreateBucket), OPTIONS |

use crate::http::Method;

/// An S3 operation class (see the module table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpClass {
    GetObject,
    PutObject,
    List,
    Delete,
    Head,
    Multipart,
    Other,
}

impl OpClass {
    pub const ALL: [OpClass; 7] = [
        OpClass::GetObject,
        OpClass::PutObject,
        OpClass::List,
        OpClass::Delete,
        OpClass::Head,
        OpClass::Multipart,
        OpClass::Other,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            OpClass::GetObject => "get_object",
            OpClass::PutObject => "put_object",
            OpClass::List => "list",
            OpClass::Delete => "delete",
            OpClass::Head => "head",
            OpClass::Multipart => "multipart",
            OpClass::Other => "other",
        }
    }

    pub fn from_name(s: &str) -> Option<OpClass> {
        OpClass::ALL.into_iter().find(|c| c.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of operation classes as a bitmask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassSet(pub u8);

impl ClassSet {
    pub fn contains(self, c: OpClass) -> bool {
        self.0 & c.bit() != 0
    }
    pub fn insert(&mut self, c: OpClass) {
        self.0 |= c.bit();
    }
}

/// What a request addresses in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct S3Target<'a> {
    /// The bucket (empty: the service itself, e.g. ListBuckets).
    pub bucket: &'a [u8],
    /// The object key, as sent (empty: the bucket itself).
    pub key: &'a [u8],
    /// The bucket came from the `Host` header (`bucket.DOMAIN`).
    pub virtual_host: bool,
}

/// Splits a request path (without its query) into bucket and key: virtual-host-style when
/// `host` (its port ignored) is `BUCKET.D` for one of `domains` (ASCII case-insensitive),
/// else path-style (the first path segment is the bucket). An absolute-form target
/// (`http://host/…`) is read from its path.
pub fn split_target<'a>(
    path: &'a [u8],
    host: Option<&'a [u8]>,
    domains: &[String],
) -> S3Target<'a> {
    let path = origin_form(path);
    let rest = path.strip_prefix(b"/").unwrap_or(path);
    if let Some(bucket) = host.and_then(|h| vhost_bucket(h, domains)) {
        return S3Target {
            bucket,
            key: rest,
            virtual_host: true,
        };
    }
    let (bucket, key) = match rest.iter().position(|&b| b == b'/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    S3Target {
        bucket,
        key,
        virtual_host: false,
    }
}

/// The path of an absolute-form target (`scheme://authority/path`), else `path` itself.
fn origin_form(path: &[u8]) -> &[u8] {
    if path.first() == Some(&b'/') {
        return path;
    }
    let Some(i) = path.windows(3).position(|w| w == b"://") else {
        return path;
    };
    let after = &path[i + 3..];
    match after.iter().position(|&b| b == b'/') {
        Some(j) => &after[j..],
        None => b"/",
    }
}

/// The bucket of a virtual-host-style `host` (`BUCKET.DOMAIN[:port]`).
fn vhost_bucket<'a>(host: &'a [u8], domains: &[String]) -> Option<&'a [u8]> {
    if host.first() == Some(&b'[') {
        return None; // an IPv6 literal is never BUCKET.DOMAIN
    }
    let name = match host.iter().rposition(|&b| b == b':') {
        Some(i) => &host[..i],
        None => host,
    };
    domains.iter().find_map(|d| {
        let d = d.as_bytes();
        let n = name.len().checked_sub(d.len() + 1)?;
        (n > 0 && name[n] == b'.' && name[n + 1..].eq_ignore_ascii_case(d)).then(|| &name[..n])
    })
}

/// Query parameters that name a sub-resource (a bucket's or object's configuration, ACLs,
/// tags …): with one, a request is not a plain object or list operation.
const SUB_RESOURCES: &[&[u8]] = &[
    b"accelerate",
    b"acl",
    b"analytics",
    b"attributes",
    b"cors",
    b"encryption",
    b"intelligent-tiering",
    b"inventory",
    b"legal-hold",
    b"lifecycle",
    b"location",
    b"logging",
    b"metrics",
    b"notification",
    b"object-lock",
    b"ownershipControls",
    b"policy",
    b"policyStatus",
    b"publicAccessBlock",
    b"replication",
    b"requestPayment",
    b"restore",
    b"retention",
    b"select",
    b"tagging",
    b"torrent",
    b"versioning",
    b"website",
];

/// What the query says, by parameter name.
#[derive(Default)]
struct Query {
    multipart: bool,
    delete: bool,
    sub_resource: bool,
}

impl Query {
    fn scan(q: &[u8]) -> Query {
        let mut out = Query::default();
        for param in q.split(|&b| b == b'&') {
            let name = match param.iter().position(|&b| b == b'=') {
                Some(i) => &param[..i],
                None => param,
            };
            match name {
                b"uploads" | b"uploadId" => out.multipart = true,
                b"delete" => out.delete = true,
                n if SUB_RESOURCES.contains(&n) => out.sub_resource = true,
                _ => {}
            }
        }
        out
    }
}

/// The operation class of a request (see the module table).
pub fn classify(method: Option<Method>, t: &S3Target<'_>, query: &[u8]) -> OpClass {
    let q = Query::scan(query);
    let object = !t.key.is_empty();
    match method {
        Some(Method::Head) => OpClass::Head,
        _ if q.multipart => OpClass::Multipart,
        _ if q.sub_resource => OpClass::Other,
        Some(Method::Get) if object => OpClass::GetObject,
        Some(Method::Get) => OpClass::List,
        Some(Method::Put) if object => OpClass::PutObject,
        Some(Method::Delete) if object || !t.bucket.is_empty() => OpClass::Delete,
        Some(Method::Post) if q.delete => OpClass::Delete,
        Some(Method::Post) if !object && !t.bucket.is_empty() => OpClass::PutObject,
        _ => OpClass::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class_of(line: &str, host: Option<&str>) -> (OpClass, String, String, bool) {
        let domains = vec!["s3.example.com".to_string()];
        let (m, target) = line.split_once(' ').unwrap();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let t = split_target(path.as_bytes(), host.map(str::as_bytes), &domains);
        let c = classify(Method::from_bytes(m.as_bytes()), &t, query.as_bytes());
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (c, s(t.bucket), s(t.key), t.virtual_host)
    }

    /// Every row of the module table, path-style, plus the edges.
    #[test]
    fn operations_are_classed_like_the_table() {
        use OpClass::*;
        let rows: &[(&str, OpClass, &str, &str)] = &[
            ("GET /photos/a/b.jpg", GetObject, "photos", "a/b.jpg"),
            (
                "GET /photos/a.jpg?versionId=3&response-content-type=x",
                GetObject,
                "photos",
                "a.jpg",
            ),
            (
                "GET /photos/a.jpg?X-Amz-Credential=K%2Fx&X-Amz-Signature=s",
                GetObject,
                "photos",
                "a.jpg",
            ),
            (
                "GET /photos/a.jpg?partNumber=2",
                GetObject,
                "photos",
                "a.jpg",
            ),
            ("PUT /photos/a.jpg", PutObject, "photos", "a.jpg"),
            ("POST /photos", PutObject, "photos", ""),
            ("GET /photos", List, "photos", ""),
            ("GET /photos/", List, "photos", ""),
            (
                "GET /photos?list-type=2&prefix=a/&delimiter=/",
                List,
                "photos",
                "",
            ),
            ("GET /photos?versions", List, "photos", ""),
            ("GET /", List, "", ""),
            ("DELETE /photos/a.jpg", Delete, "photos", "a.jpg"),
            ("DELETE /photos", Delete, "photos", ""),
            ("POST /photos?delete", Delete, "photos", ""),
            ("HEAD /photos/a.jpg", Head, "photos", "a.jpg"),
            ("HEAD /photos", Head, "photos", ""),
            ("POST /photos/big?uploads", Multipart, "photos", "big"),
            (
                "PUT /photos/big?partNumber=1&uploadId=abc",
                Multipart,
                "photos",
                "big",
            ),
            ("POST /photos/big?uploadId=abc", Multipart, "photos", "big"),
            (
                "DELETE /photos/big?uploadId=abc",
                Multipart,
                "photos",
                "big",
            ),
            ("GET /photos?uploads", Multipart, "photos", ""),
            ("GET /photos/a.jpg?acl", Other, "photos", "a.jpg"),
            ("PUT /photos/a.jpg?tagging", Other, "photos", "a.jpg"),
            ("GET /photos?policy", Other, "photos", ""),
            ("PUT /photos?versioning", Other, "photos", ""),
            ("DELETE /photos?cors", Other, "photos", ""),
            (
                "POST /photos/a.csv?select&select-type=2",
                Other,
                "photos",
                "a.csv",
            ),
            ("PUT /photos", Other, "photos", ""),
            ("OPTIONS /photos/a.jpg", Other, "photos", "a.jpg"),
            ("DELETE /", Other, "", ""),
            ("PATCH /photos/a", Other, "photos", "a"),
        ];
        for &(line, class, bucket, key) in rows {
            let got = class_of(line, Some("127.0.0.1:9000"));
            assert_eq!(got, (class, bucket.into(), key.into(), false), "{line}");
        }
        // A parameter that merely contains a sub-resource name is not one.
        assert_eq!(class_of("GET /b/k?x-acl=1", None).0, GetObject);
        // An absolute-form target is read from its path.
        assert_eq!(
            class_of("GET http://h:9000/b/k", None),
            (GetObject, "b".into(), "k".into(), false)
        );
    }

    #[test]
    fn virtual_host_buckets_need_the_configured_domain() {
        use OpClass::*;
        let vh = |line, host| class_of(line, Some(host));
        assert_eq!(
            vh("GET /a/b.jpg", "photos.s3.example.com"),
            (GetObject, "photos".into(), "a/b.jpg".into(), true)
        );
        assert_eq!(
            vh("GET /?list-type=2", "Photos.S3.Example.COM:9000"),
            (List, "Photos".into(), "".into(), true)
        );
        assert_eq!(vh("GET /", "photos.s3.example.com").0, List);
        assert_eq!(vh("DELETE /", "photos.s3.example.com").0, Delete);
        assert_eq!(vh("POST /", "photos.s3.example.com").0, PutObject);
        // The domain itself, another domain, a look-alike: path-style.
        assert_eq!(
            vh("GET /photos/a", "s3.example.com"),
            (GetObject, "photos".into(), "a".into(), false)
        );
        assert_eq!(vh("GET /x/a", "photos.s3.other.com").1, "x");
        assert_eq!(vh("GET /x/a", "photoss3.example.com").1, "x");
        assert_eq!(vh("GET /x/a", "[::1]:9000").1, "x");
    }
}
