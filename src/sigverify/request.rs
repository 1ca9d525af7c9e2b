//! The request as verification sees it: method, raw target, header fields in arrival
//! order — borrowed from the parsed head, never copied — and the small readers over them
//! (path/query split, query parameters, header lookups).

use crate::http::{HeaderPos, RequestHead};

/// One request to verify. Every slice is the bytes as received.
#[derive(Clone, Copy, Debug)]
pub struct RequestParts<'a> {
    pub method: &'a [u8],
    /// The request-target, byte-exact (`/path?query`, or absolute-form).
    pub target: &'a [u8],
    pub headers: Headers<'a>,
}

/// Header fields in arrival order: either `(name, value)` pairs, or the ranges of a parsed
/// head over its buffer (what the connection code has, so nothing is collected).
#[derive(Clone, Copy, Debug)]
pub enum Headers<'a> {
    Pairs(&'a [(&'a [u8], &'a [u8])]),
    Parsed {
        buf: &'a [u8],
        fields: &'a [HeaderPos],
    },
}

impl<'a> RequestParts<'a> {
    /// The parts of a head parsed by [`crate::http::parse_request`] from `buf`.
    pub fn from_head(buf: &'a [u8], head: &'a RequestHead) -> Self {
        RequestParts {
            method: head.method(buf),
            target: head.target(buf),
            headers: Headers::Parsed {
                buf,
                fields: &head.headers,
            },
        }
    }

    /// The path part of the target (absolute-form: after the authority; empty → `/`).
    pub(crate) fn path(&self) -> &'a [u8] {
        let t = self.target;
        let t = match t.windows(3).position(|w| w == b"://") {
            Some(i) if !t.starts_with(b"/") => {
                let rest = &t[i + 3..];
                let start = rest
                    .iter()
                    .position(|&b| matches!(b, b'/' | b'?' | b'#'))
                    .unwrap_or(rest.len());
                &rest[start..]
            }
            _ => t,
        };
        let end = t
            .iter()
            .position(|&b| b == b'?' || b == b'#')
            .unwrap_or(t.len());
        if end == 0 { b"/" } else { &t[..end] }
    }

    /// The query string (after the first `?`, up to any `#`; empty if none).
    pub(crate) fn query(&self) -> &'a [u8] {
        let Some(q) = self.target.iter().position(|&b| b == b'?') else {
            return b"";
        };
        let rest = &self.target[q + 1..];
        let end = rest.iter().position(|&b| b == b'#').unwrap_or(rest.len());
        &rest[..end]
    }
}

impl<'a> Headers<'a> {
    pub fn len(&self) -> usize {
        match self {
            Headers::Pairs(p) => p.len(),
            Headers::Parsed { fields, .. } => fields.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`-th field as (name, value); values of `Pairs` may carry surrounding
    /// whitespace (readers trim).
    pub fn get(&self, i: usize) -> (&'a [u8], &'a [u8]) {
        match *self {
            Headers::Pairs(p) => p[i],
            Headers::Parsed { buf, fields } => (fields[i].name(buf), fields[i].value(buf)),
        }
    }

    pub fn iter(self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone {
        (0..self.len()).map(move |i| self.get(i))
    }

    /// Trimmed values of every field named `name` (ASCII case-insensitive), in order.
    pub(crate) fn values(self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + Clone {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| trim(v))
    }

    /// The value of `name` when it occurs at most once; `Err` when repeated.
    pub(crate) fn single(self, name: &'a [u8]) -> Result<Option<&'a [u8]>, ()> {
        let mut it = self.values(name);
        let first = it.next();
        match it.next() {
            Some(_) => Err(()),
            None => Ok(first),
        }
    }
}

pub(crate) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

pub(crate) fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| !is_ws(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|&b| !is_ws(b)).map_or(start, |e| e + 1);
    &v[start..end]
}

/// One `name[=value]` of a query string, raw (still percent-encoded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Param<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
    /// The parameter had an `=` (`?acl` has none, `?acl=` has one).
    pub has_eq: bool,
}

impl<'a> Param<'a> {
    pub(crate) const EMPTY: Param<'a> = Param {
        name: b"",
        value: b"",
        has_eq: false,
    };
}

/// Collects `items` into `stack`, or into `heap` when they do not fit (so the common
/// case allocates nothing).
pub(crate) fn gather<'s, T: Copy>(
    items: impl Iterator<Item = T>,
    stack: &'s mut [T],
    heap: &'s mut Vec<T>,
) -> &'s mut [T] {
    let mut n = 0;
    for item in items {
        if n < stack.len() {
            stack[n] = item;
            n += 1;
        } else {
            if heap.is_empty() {
                heap.extend_from_slice(stack);
            }
            heap.push(item);
        }
    }
    if heap.is_empty() {
        &mut stack[..n]
    } else {
        &mut heap[..]
    }
}

/// The parameters of a query string in order; empty segments (`a&&b`) are skipped.
pub(crate) fn params(query: &[u8]) -> impl Iterator<Item = Param<'_>> + Clone {
    query
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&b| b == b'=') {
            Some(eq) => Param {
                name: &p[..eq],
                value: &p[eq + 1..],
                has_eq: true,
            },
            None => Param {
                name: p,
                value: b"",
                has_eq: false,
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(target: &'a str, headers: &'a [(&'a [u8], &'a [u8])]) -> RequestParts<'a> {
        RequestParts {
            method: b"GET",
            target: target.as_bytes(),
            headers: Headers::Pairs(headers),
        }
    }

    #[test]
    fn path_and_query() {
        let cases = [
            ("/a/b?x=1&y", "/a/b", "x=1&y"),
            ("/a#frag", "/a", ""),
            ("/?q#f", "/", "q"),
            ("?q", "/", "q"),
            ("http://host:9000/b/k?x", "/b/k", "x"),
            ("http://host:9000?x", "/", "x"),
            ("http://host", "/", ""),
            ("/p/http://x", "/p/http://x", ""),
        ];
        for (target, path, query) in cases {
            let p = parts(target, &[]);
            assert_eq!(p.path(), path.as_bytes(), "{target}");
            assert_eq!(p.query(), query.as_bytes(), "{target}");
        }
    }

    #[test]
    fn query_params() {
        let got: Vec<_> = params(b"a=1&&acl&b=&c=x=y").collect();
        assert_eq!(got.len(), 4);
        assert_eq!((got[1].name, got[1].has_eq), (&b"acl"[..], false));
        assert_eq!((got[2].value, got[2].has_eq), (&b""[..], true));
        assert_eq!(got[3].value, b"x=y");
    }

    #[test]
    fn gather_spills_to_the_heap() {
        let (mut stack, mut heap) = ([0u8; 3], Vec::new());
        assert_eq!(gather(1..=2u8, &mut stack, &mut heap), [1, 2]);
        assert!(heap.is_empty());
        let (mut stack, mut heap) = ([0u8; 3], Vec::new());
        assert_eq!(gather(1..=5u8, &mut stack, &mut heap), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn header_readers() {
        let h: [(&[u8], &[u8]); 3] = [
            (b"Host", b" h "),
            (b"X-Amz-Meta", b"1"),
            (b"x-amz-meta", b"2"),
        ];
        let p = parts("/", &h);
        assert_eq!(p.headers.single(b"host"), Ok(Some(&b"h"[..])));
        assert_eq!(p.headers.single(b"x-amz-meta"), Err(()));
        assert_eq!(p.headers.single(b"date"), Ok(None));
        let v: Vec<_> = p.headers.values(b"X-AMZ-META").collect();
        assert_eq!(v, [&b"1"[..], b"2"]);
    }

    #[test]
    fn from_a_parsed_head() {
        let raw = b"PUT /b/k?x=1 HTTP/1.1\r\nHost: h\r\nX-Amz-Date:  20130524T000000Z \r\n\r\n";
        let mut head = RequestHead::new();
        let limits = crate::http::HeadLimits {
            max_head_bytes: 4096,
            max_headers: 32,
        };
        crate::http::parse_request(raw, &limits, &mut head).unwrap();
        let p = RequestParts::from_head(raw, &head);
        assert_eq!((p.method, p.target), (&b"PUT"[..], &b"/b/k?x=1"[..]));
        assert_eq!(p.headers.len(), 2);
        assert_eq!(
            p.headers.get(1),
            (&b"X-Amz-Date"[..], &b"20130524T000000Z"[..])
        );
    }
}
