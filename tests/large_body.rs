//! Large response bodies through the relay's two-buffer loop (pieces of up to
//! `BufPool::LARGE` bytes, the next upstream read in flight while the previous piece goes to
//! the client): byte-exact for Content-Length, chunked (kept, and unchunked for an HTTP/1.0
//! client) and close-delimited bodies, with both connections still in step afterwards.
//! The real binary, raw sockets, a scripted upstream.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;

const CFG: &str = r#"
[limits]
methods = []
[upstream.health]
enabled = false
"#;

/// Bytes that differ from piece to piece, so a piece lost, repeated or reordered shows.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(31) ^ (i / 4099)) as u8 ^ seed)
        .collect()
}

/// A chunked encoding of `data` in chunks of varied sizes (1 byte to ~200 KiB).
fn chunked(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut at, mut k) = (0, 0usize);
    while at < data.len() {
        let n = [1, 4096, 70_000, 200_001, 13][k % 5].min(data.len() - at);
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend_from_slice(&data[at..at + n]);
        out.extend_from_slice(b"\r\n");
        at += n;
        k += 1;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

const BIG: usize = 5 * 1024 * 1024 + 17;

fn big_upstream() -> FakeUpstream {
    FakeUpstream::start(Arc::new(|s: &Seen| {
        if s.head.starts_with(b"GET /chunked") {
            let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            r.extend_from_slice(&chunked(&pattern(BIG, 3)));
            return r;
        }
        let n = if s.head.starts_with(b"GET /big") {
            BIG
        } else {
            3
        };
        let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n").into_bytes();
        r.extend_from_slice(&pattern(n, 7));
        r
    }))
}

#[test]
fn large_bodies_arrive_whole_and_both_connections_stay_in_step() {
    let up = big_upstream();
    let p = start_proxy("large-body", &[up.addr], 1, CFG, None);
    let mut c = Client::connect(p.addr);
    for path in ["/big", "/chunked", "/big"] {
        let r = c.request(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200, "{path}");
        let want = pattern(BIG, if path == "/chunked" { 3 } else { 7 });
        assert_eq!(r.body.len(), want.len(), "{path}: length");
        assert!(r.body == want, "{path}: the bytes differ");
    }
    let r = c.request(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.body, pattern(3, 7), "the next response is its own");
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "one upstream connection carried every request"
    );
}

/// Reads a close-delimited response: (head, body).
fn read_to_close(mut s: std::net::TcpStream) -> (String, Vec<u8>) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    (head, all.split_off(end))
}

#[test]
fn a_large_chunked_body_goes_unchunked_to_an_http10_client() {
    let up = big_upstream();
    let p = start_proxy("large-unchunk", &[up.addr], 1, CFG, None);
    let mut s = std::net::TcpStream::connect(p.addr).unwrap();
    s.write_all(b"GET /chunked HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let (head, body) = read_to_close(s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert_eq!(body.len(), BIG);
    assert!(body == pattern(BIG, 3), "the bytes differ");
}

#[test]
fn a_large_close_delimited_body_arrives_whole() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = l.local_addr().unwrap();
    let upstream = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        while line != "\r\n" {
            line.clear();
            assert!(
                r.read_line(&mut line).unwrap() > 0,
                "upstream: head cut short"
            );
        }
        let mut w = s;
        w.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            .unwrap();
        // In pieces with pauses, so the relay sees reads of every size.
        for piece in pattern(BIG, 9).chunks(300_000) {
            w.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let p = start_proxy("large-close", &[up_addr], 1, CFG, None);
    let mut s = std::net::TcpStream::connect(p.addr).unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (head, body) = read_to_close(s);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body.len(), BIG);
    assert!(body == pattern(BIG, 9), "the bytes differ");
    upstream.join().unwrap();
}
