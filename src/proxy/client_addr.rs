//! Who the client is: the TCP peer, or — when the peer is a configured trusted proxy — the
//! address that proxy forwarded in `X-Forwarded-For`; and the `X-Forwarded-For` value tollgate
//! sends upstream. The one place that decides whether a client-sent `X-Forwarded-For` is
//! believed. Pure: no I/O.

use std::net::IpAddr;

use crate::config::HttpConfig;

/// The address a request is counted under: the peer, unless the peer is a trusted proxy;
/// then the last `X-Forwarded-For` address (across all lines, right to left) that is not
/// itself trusted. An entry that is not an address stops the walk at the peer: a list that
/// cannot be read names no one.
pub fn client_ip<'a>(
    http: &HttpConfig,
    peer: IpAddr,
    forwarded: impl DoubleEndedIterator<Item = &'a [u8]>,
) -> IpAddr {
    if !http.is_trusted_proxy(peer) {
        return peer;
    }
    for value in forwarded.rev() {
        for entry in value.rsplit(|&b| b == b',') {
            let Some(ip) = parse_entry(entry) else {
                return peer;
            };
            if !http.is_trusted_proxy(ip) {
                return ip;
            }
        }
    }
    peer
}

/// One `X-Forwarded-For` element: an address, optionally `[v6]` or with a `:port`.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry).ok()?.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip())
}

/// The `X-Forwarded-For` value sent upstream (it replaces the client's lines): the peer
/// alone, or, for a trusted proxy, what it forwarded followed by the peer.
pub fn forwarded_for<'a>(
    http: &HttpConfig,
    peer: IpAddr,
    forwarded: impl Iterator<Item = &'a [u8]>,
    out: &mut String,
) {
    out.clear();
    if http.is_trusted_proxy(peer) {
        for v in forwarded {
            out.push_str(&String::from_utf8_lossy(v));
            out.push_str(", ");
        }
    }
    use std::fmt::Write;
    let _ = write!(out, "{peer}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(trusted: &[&str]) -> HttpConfig {
        use std::time::Duration;
        HttpConfig {
            max_head_bytes: 16384,
            max_headers: 100,
            client_idle_timeout: Duration::from_secs(60),
            client_head_timeout: Duration::from_secs(10),
            x_forwarded_for: true,
            max_requests_per_connection: 0,
            max_connections: 10_000,
            trusted_proxies: trusted.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let h = http(&["10.0.0.0/8"]);
        let xff: [&[u8]; 1] = [b"1.2.3.4"];
        assert_eq!(
            client_ip(&h, ip("203.0.113.9"), xff.into_iter()),
            ip("203.0.113.9")
        );
        let mut s = String::new();
        forwarded_for(&h, ip("203.0.113.9"), xff.into_iter(), &mut s);
        assert_eq!(
            s, "203.0.113.9",
            "a client-sent X-Forwarded-For is replaced"
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_last_untrusted_address() {
        let h = http(&["10.0.0.0/8", "192.168.1.1/32"]);
        let lines: [&[u8]; 2] = [b"198.51.100.7, 10.1.1.1", b"192.168.1.1"];
        assert_eq!(
            client_ip(&h, ip("10.0.0.2"), lines.into_iter()),
            ip("198.51.100.7")
        );
        // A client prepending a fake address does not move the answer.
        let lines: [&[u8]; 1] = [b"6.6.6.6, 198.51.100.7"];
        assert_eq!(
            client_ip(&h, ip("10.0.0.2"), lines.into_iter()),
            ip("198.51.100.7")
        );
        // Garbage stops at the peer; no header at all is the peer.
        let lines: [&[u8]; 1] = [b"unknown"];
        assert_eq!(
            client_ip(&h, ip("10.0.0.2"), lines.into_iter()),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_ip(&h, ip("10.0.0.2"), std::iter::empty()),
            ip("10.0.0.2")
        );
        // [v6]:port forms.
        let lines: [&[u8]; 1] = [b"[2001:db8::1]:4711"];
        assert_eq!(
            client_ip(&h, ip("10.0.0.2"), lines.into_iter()),
            ip("2001:db8::1")
        );
        let mut s = String::new();
        let lines: [&[u8]; 1] = [b"198.51.100.7"];
        forwarded_for(&h, ip("10.0.0.2"), lines.into_iter(), &mut s);
        assert_eq!(s, "198.51.100.7, 10.0.0.2");
    }
}
