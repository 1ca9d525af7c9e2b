//! The requests `loadgen bench` sends, in turn: one fixed request, or one per API key with a
//! SigV4-style `Authorization` header rotating over N deterministic keys — the keys
//! bench/lib.sh `gen_keys` writes (so the proxies' key maps list them) with the headers
//! bench/wrk/keys.lua sends. Signatures do not verify (the bench origin does not check them).
//! Owns the request bytes only: no I/O, no timing.

use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Bodies up to this size are appended to each request; larger ones are written separately
/// after the head (allocated once per run).
pub const INLINE_BODY: u64 = 64 * 1024;

/// Access-key id format, as bench/lib.sh `gen_keys` STYLE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStyle {
    /// 26-byte Garage ids: "GK" + 24 hex digits.
    Garage,
    /// 20-byte AWS/MinIO-style ids: "AKIA" + 16 upper-case hex digits.
    Aws,
}

impl KeyStyle {
    pub fn parse(s: &str) -> Result<KeyStyle, String> {
        match s {
            "garage" => Ok(KeyStyle::Garage),
            "aws" => Ok(KeyStyle::Aws),
            _ => Err(format!("unknown key style {s:?} (garage, aws)")),
        }
    }
}

/// Key `i` of bench/lib.sh `gen_keys`: (access key id, 64-hex signature).
pub fn bench_key(i: usize, style: KeyStyle) -> (String, String) {
    let h = hex::encode(Sha256::digest(format!("tollgate-bench-key-{i}")));
    let id = match style {
        KeyStyle::Garage => format!("GK{}", &h[..24]),
        KeyStyle::Aws => format!("AKIA{}", h[..16].to_ascii_uppercase()),
    };
    let sig = hex::encode(Sha256::digest(format!("tollgate-bench-sig-{i}")));
    (id, sig)
}

/// The `Authorization` value bench/wrk/keys.lua sends for a key.
pub fn authorization(id: &str, sig: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={id}/20261123/garage/s3/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature={sig}"
    )
}

/// What every request of a run has in common.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub host_header: &'a str,
    pub headers: &'a [String],
    pub body_size: u64,
    /// 0: no key headers, one request. N: one request per key 0..N.
    pub keys: usize,
    pub style: KeyStyle,
}

/// The requests of a run, sent in turn, and the body written after each head when it is too
/// large to inline.
#[derive(Debug, Clone)]
pub struct RequestSet {
    pub reqs: Arc<Vec<Vec<u8>>>,
    pub body: Option<&'static [u8]>,
    pub head: bool,
}

impl RequestSet {
    pub fn build(s: &Spec) -> RequestSet {
        let inline = s.body_size <= INLINE_BODY;
        let one = |key: Option<usize>| {
            let mut r = format!(
                "{} {} HTTP/1.1\r\nHost: {}\r\n",
                s.method, s.path_and_query, s.host_header
            );
            if let Some(i) = key {
                let (id, sig) = bench_key(i, s.style);
                r.push_str(&format!(
                    "Authorization: {}\r\nx-amz-date: 20261123T000000Z\r\n\
                     x-amz-content-sha256: UNSIGNED-PAYLOAD\r\n",
                    authorization(&id, &sig)
                ));
            }
            for h in s.headers {
                r.push_str(h);
                r.push_str("\r\n");
            }
            if s.body_size > 0 || s.method == "PUT" || s.method == "POST" {
                r.push_str(&format!("Content-Length: {}\r\n", s.body_size));
            }
            r.push_str("\r\n");
            let mut b = r.into_bytes();
            if inline {
                b.resize(b.len() + s.body_size as usize, b'x');
            }
            b
        };
        let reqs = if s.keys == 0 {
            vec![one(None)]
        } else {
            (0..s.keys).map(|i| one(Some(i))).collect()
        };
        // One allocation per run, alive until the process exits: every connection of every
        // thread writes the same large body without copying it.
        let body = (!inline).then(|| &*Vec::leak(vec![b'x'; s.body_size as usize]));
        RequestSet {
            reqs: Arc::new(reqs),
            body,
            head: s.method.eq_ignore_ascii_case("HEAD"),
        }
    }

    /// Bytes sent per request (head + body).
    pub fn bytes_of(&self, i: usize) -> u64 {
        self.reqs[i % self.reqs.len()].len() as u64 + self.body.map_or(0, |b| b.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_bench_lib_gen_keys() {
        // Values printed by bench/lib.sh's `gen_keys` formula (python3 hashlib).
        assert_eq!(
            bench_key(0, KeyStyle::Garage),
            (
                "GK62880068585019aeac49a0b0".to_string(),
                "c2bf731e4d35c9b4a6bb96f7c0e748c4cc91735a19e39d201e3b29ed2fd6ca77".to_string()
            )
        );
        assert_eq!(bench_key(1, KeyStyle::Aws).0, "AKIA1940202C1ED0C2CD");
    }

    fn spec(keys: usize, body_size: u64) -> Spec<'static> {
        Spec {
            method: "PUT",
            path_and_query: "/b/o",
            host_header: "h",
            headers: &[],
            body_size,
            keys,
            style: KeyStyle::Garage,
        }
    }

    #[test]
    fn one_request_per_key_with_the_key_in_its_credential() {
        let set = RequestSet::build(&spec(3, 5));
        assert_eq!(set.reqs.len(), 3);
        for (i, r) in set.reqs.iter().enumerate() {
            let text = String::from_utf8_lossy(r);
            let id = bench_key(i, KeyStyle::Garage).0;
            assert!(text.contains(&format!("Credential={id}/")), "{text}");
            assert!(text.ends_with("Content-Length: 5\r\n\r\nxxxxx"), "{text}");
        }
        assert!(set.body.is_none());
        assert_eq!(RequestSet::build(&spec(0, 0)).reqs.len(), 1);
    }

    #[test]
    fn large_bodies_are_written_after_the_head() {
        let set = RequestSet::build(&spec(2, INLINE_BODY + 1));
        assert_eq!(set.body.map(|b| b.len() as u64), Some(INLINE_BODY + 1));
        assert!(set.reqs[0].ends_with(b"\r\n\r\n"));
        assert_eq!(set.bytes_of(0), set.reqs[0].len() as u64 + INLINE_BODY + 1);
    }
}
