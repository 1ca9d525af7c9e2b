//! Request methods, looked up once per request.
//!
//! Owns: `Method` (the methods a tier can limit), `MethodSet` (a tier's limited methods as a
//! bitmask) and the per-method counter layout (`METHODS`, `METHOD_NAMES`, `method_index`:
//! the seven methods in `Method` order, then "OTHER"). One table serves both, so a request's
//! method is matched once: `Method::from_bytes`, then `method_index` of the result.
//! Must not touch: counters themselves (`stats`), configuration, I/O.

/// Which request methods count against limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Get,
    Put,
    Post,
    Head,
    Delete,
    Options,
    Patch,
}

impl Method {
    pub fn from_bytes(b: &[u8]) -> Option<Method> {
        Some(match b {
            b"GET" => Method::Get,
            b"PUT" => Method::Put,
            b"POST" => Method::Post,
            b"HEAD" => Method::Head,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"PATCH" => Method::Patch,
            _ => return None,
        })
    }
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Head => "HEAD",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
        }
    }
    pub const ALL: [Method; 7] = [
        Method::Get,
        Method::Put,
        Method::Post,
        Method::Head,
        Method::Delete,
        Method::Options,
        Method::Patch,
    ];
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of methods as a bitmask (cheap to test on the data path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MethodSet(pub u8);

impl MethodSet {
    pub fn contains(self, m: Method) -> bool {
        self.0 & m.bit() != 0
    }
    pub fn insert(&mut self, m: Method) {
        self.0 |= m.bit();
    }
}

/// Methods with their own counters: every `Method`, then one slot for all others.
pub const METHODS: usize = Method::ALL.len() + 1;

/// Counter names by `method_index`: GET PUT POST HEAD DELETE OPTIONS PATCH OTHER.
pub const METHOD_NAMES: [&str; METHODS] = {
    let mut names = ["OTHER"; METHODS];
    let mut i = 0;
    while i < Method::ALL.len() {
        names[i] = Method::ALL[i].as_str();
        i += 1;
    }
    names
};

/// Index of a request's method in the per-method counter arrays (`None` = any other method).
pub fn method_index(m: Option<Method>) -> usize {
    m.map_or(METHODS - 1, |m| m as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_table_for_limits_and_counters() {
        let names = [
            "GET", "PUT", "POST", "HEAD", "DELETE", "OPTIONS", "PATCH", "OTHER",
        ];
        assert_eq!(METHOD_NAMES, names);
        for (i, name) in names.iter().enumerate().take(7) {
            let m = Method::from_bytes(name.as_bytes()).unwrap();
            assert_eq!((m.as_str(), method_index(Some(m))), (*name, i));
            assert_eq!(Method::ALL[i], m);
        }
        for other in [&b"get"[..], b"PROPFIND", b"", b"GETX", b"OTHER"] {
            assert_eq!(Method::from_bytes(other), None);
            assert_eq!(method_index(Method::from_bytes(other)), 7);
        }
    }

    #[test]
    fn method_set_bits() {
        let mut s = MethodSet::default();
        assert!(Method::ALL.iter().all(|&m| !s.contains(m)));
        s.insert(Method::Put);
        s.insert(Method::Patch);
        let has: Vec<Method> = Method::ALL.into_iter().filter(|&m| s.contains(m)).collect();
        assert_eq!(has, [Method::Put, Method::Patch]);
    }
}
