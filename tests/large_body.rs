//! Large bodies through the relay's two-buffer loops (pieces of up to `BufPool::LARGE`
//! bytes, the next read in flight while the previous piece is written), both ways.
//!
//! Responses: byte-exact for Content-Length, chunked (kept, and unchunked for an HTTP/1.0
//! client) and close-delimited bodies, with both connections still in step afterwards.
//!
//! Requests (uploads), three ways: written whole; re-cut by the client into random small
//! pieces with pauses (and, under `TOLLGATE_TEST_RELAY`, by segrelay besides); and against
//! broken peers — an upstream that answers 413 mid-upload and stops reading, one that resets
//! mid-body, one that stops reading without answering, a client that stops mid-body. The
//! origin answers with the SHA-256 of what it received, so every body is checked byte-exact
//! end to end, and requests pipelined right behind a body must get their own answers.
//! The real binary, raw sockets, a scripted upstream.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

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

// ---- request bodies ----

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What the hashing upstream answers for a request to `path` whose body (as sent on the
/// wire, chunk framing included) is `body`.
fn digest_answer(path: &str, body: &[u8]) -> String {
    format!("{path} {} {}", body.len(), sha(body))
}

/// An origin that answers every request with [`digest_answer`] of what it received.
fn hashing_upstream() -> FakeUpstream {
    FakeUpstream::start(Arc::new(|s: &Seen| {
        let head = String::from_utf8_lossy(&s.head);
        let path = head.split(' ').nth(1).unwrap_or("?");
        let answer = digest_answer(path, &s.body);
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        )
        .into_bytes()
    }))
}

/// One request of a keep-alive conversation: its bytes and the answer it must get.
struct Req {
    raw: Vec<u8>,
    /// Offsets in `raw` where its head and its body end.
    ends: [usize; 2],
    want: String,
}

impl Req {
    fn new(path: &str, fields: &str, body: Vec<u8>) -> Req {
        let head = format!("PUT {path} HTTP/1.1\r\nHost: x\r\n{fields}\r\n");
        let want = digest_answer(path, &body);
        let mut raw = head.into_bytes();
        let hl = raw.len();
        raw.extend_from_slice(&body);
        Req {
            ends: [hl, raw.len()],
            raw,
            want,
        }
    }

    fn put(path: &str, body: Vec<u8>) -> Req {
        Self::new(path, &format!("Content-Length: {}\r\n", body.len()), body)
    }

    fn put_chunked(path: &str, data: &[u8]) -> Req {
        Self::new(path, "Transfer-Encoding: chunked\r\n", chunked(data))
    }

    fn get(path: &str) -> Req {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();
        Req {
            ends: [raw.len(), raw.len()],
            raw,
            want: digest_answer(path, b""),
        }
    }
}

/// Reads one answer per request, in order, and checks each.
fn expect_answers(c: &mut Client, reqs: &[Req], what: &str) {
    for (i, q) in reqs.iter().enumerate() {
        let r = c.recv();
        assert_eq!(r.status, 200, "{what}: request {i}: {}", r.body_text());
        assert_eq!(r.body_text(), q.want, "{what}: request {i}: body differs");
    }
}

/// A large body, then small requests pipelined right behind it (a GET, a small PUT, a GET),
/// then a chunked upload and a GET after it: (the bytes, the requests, their boundaries).
fn conversation(big: usize, seed: u8) -> (Vec<u8>, Vec<Req>, Vec<usize>) {
    let reqs = vec![
        Req::put("/up/big", pattern(big, seed)),
        Req::get("/after/big"),
        Req::put("/up/small", pattern(1000, seed ^ 1)),
        Req::put_chunked("/up/chunked", &pattern(big / 3, seed ^ 2)),
        Req::get("/after/chunked"),
    ];
    let (mut raw, mut bounds) = (Vec::new(), Vec::new());
    for q in &reqs {
        bounds.extend(q.ends.iter().map(|e| raw.len() + e));
        raw.extend_from_slice(&q.raw);
    }
    (raw, reqs, bounds)
}

#[test]
fn large_uploads_arrive_byte_exact_and_both_connections_stay_in_step() {
    let up = hashing_upstream();
    let p = start_proxy("large-put", &[up.addr], 1, CFG, None);
    let mut c = Client::connect(p.addr);
    // One by one, each written whole.
    let (_, reqs, _) = conversation(BIG, 11);
    for q in &reqs {
        c.send(&q.raw);
        expect_answers(&mut c, std::slice::from_ref(q), "one by one");
    }
    // All in one write: the requests behind each body come in the read that ends it.
    let (raw, reqs, _) = conversation(BIG, 12);
    c.send(&raw);
    expect_answers(&mut c, &reqs, "pipelined");
    // Held for `100 Continue`: the body is pumped once the upstream's 100 arrives.
    let q = Req::new(
        "/up/expect",
        &format!("Content-Length: {BIG}\r\nExpect: 100-continue\r\n"),
        pattern(BIG, 13),
    );
    c.send(&q.raw[..q.ends[0]]);
    let mut line = String::new();
    c.r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line}");
    c.r.read_line(&mut line).unwrap();
    c.send(&q.raw[q.ends[0]..]);
    expect_answers(&mut c, std::slice::from_ref(&q), "expect");
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "one upstream connection carried every request"
    );
}

/// Cut offsets for `len` bytes: pieces of 1..=16 KiB (log-uniform, so pieces of a few bytes
/// are common), plus cuts at and next to every boundary in `bounds`.
fn random_cuts(len: usize, bounds: &[usize], rng: &mut u64) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut at = 0;
    while at < len {
        let scale = 1usize << (next(rng) % 15);
        at += 1 + (next(rng) as usize) % scale;
        cuts.push(at);
    }
    for &b in bounds {
        cuts.extend([b.saturating_sub(7), b - 1, b, b + 1, b + 7]);
    }
    cuts.retain(|&c| c > 0 && c < len);
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// SplitMix64: a reproducible stream of pseudo-random numbers.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes `raw` cut at `cuts`, pausing 0..=2 ms before about one piece in four.
fn send_cut(w: &mut impl Write, raw: &[u8], cuts: &[usize], rng: &mut u64) {
    let mut from = 0;
    for &at in cuts.iter().chain([raw.len()].iter()) {
        if next(rng) % 4 == 0 {
            std::thread::sleep(Duration::from_micros(next(rng) % 2001));
        }
        w.write_all(&raw[from..at]).unwrap();
        from = at;
    }
}

#[test]
fn uploads_in_random_small_pieces_with_pauses_arrive_byte_exact_and_in_order() {
    let up = hashing_upstream();
    let p = start_proxy("large-put-cut", &[up.addr], 1, CFG, None);
    for seed in 1..=3u64 {
        let mut rng = seed;
        let (raw, reqs, bounds) = conversation(3 * 1024 * 1024 + 5, seed as u8);
        let cuts = random_cuts(raw.len(), &bounds, &mut rng);
        let mut c = Client::connect(p.addr);
        // The client writes while its answers are read: nothing waits on a full socket.
        let mut w = c.w.try_clone().unwrap();
        let sender = std::thread::spawn(move || send_cut(&mut w, &raw, &cuts, &mut rng));
        expect_answers(&mut c, &reqs, &format!("seed {seed}"));
        sender.join().unwrap();
    }
}

// ---- broken peers during an upload ----

/// An upstream run by `script` on its own thread, given the listener.
fn scripted_upstream<T: Send + 'static>(
    script: impl FnOnce(TcpListener) -> T + Send + 'static,
) -> (std::net::SocketAddr, std::thread::JoinHandle<T>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (addr, std::thread::spawn(move || script(l)))
}

/// Accepts a connection and reads a request head and the first `body` bytes of its body.
fn accept_and_read(l: &TcpListener, body: usize) -> (TcpStream, String, Vec<u8>) {
    let (mut s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = read_head_bytes(&mut s);
    let mut got = vec![0u8; body];
    s.read_exact(&mut got).unwrap();
    (s, String::from_utf8(head).unwrap(), got)
}

/// Sends a PUT head for `len` body bytes, then the body (`pattern(len, 5)`) from a thread
/// in 256 KiB writes until done or tollgate closes the connection: the bytes sent.
fn upload(c: &Client, len: usize) -> std::thread::JoinHandle<usize> {
    let mut w = c.w.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    std::thread::spawn(move || {
        let head = format!("PUT /b/big HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n");
        w.write_all(head.as_bytes()).unwrap();
        let body = pattern(len, 5);
        let mut sent = 0;
        for piece in body.chunks(256 * 1024) {
            if w.write_all(piece).is_err() {
                break;
            }
            sent += piece.len();
        }
        sent
    })
}

/// Asserts that tollgate did not read the whole upload from the client (its own byte count:
/// how much the uploading thread managed to write depends on the kernel's socket buffers,
/// which can hold a whole `UPLOAD` where `tcp_rmem` allows 32 MiB).
fn assert_not_all_read(p: &Proxy, sender: std::thread::JoinHandle<usize>) {
    sender.join().unwrap();
    let read = stats(p)["bytes"]["from_client"].as_u64().unwrap();
    assert!(
        read < UPLOAD as u64,
        "the body was not all read ({read} bytes)"
    );
}

fn stats(p: &Proxy) -> serde_json::Value {
    let (code, text) = admin_get(p.admin.unwrap(), "/stats");
    assert_eq!(code, 200);
    serde_json::from_str(&text).unwrap()
}

const UPLOAD: usize = 32 * 1024 * 1024;
const MIB: usize = 1024 * 1024;

/// The upstream reads 3 MiB, answers 413 and then neither reads nor closes: the answer
/// reaches the client at once (the stalled write is probed), not as a 504 after
/// `upstream.idle_timeout`, and what the upstream read is the body's first bytes, exactly.
#[test]
fn an_upstream_that_answers_413_mid_upload_and_stops_reading_is_relayed_at_once() {
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (addr, upstream) = scripted_upstream(move |l| {
        let (mut s, head, body) = accept_and_read(&l, 3 * MIB);
        s.write_all(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 21\r\n\r\n<Error>tooBig</Error>",
        )
        .unwrap();
        let _ = done_rx.recv_timeout(Duration::from_secs(40));
        (head, body)
    });
    let cfg = format!("{CFG}[upstream]\nidle_timeout = \"30s\"\n");
    let p = start_proxy("put-413", &[addr], 1, &cfg, None);
    let mut c = Client::connect(p.addr);
    let t0 = Instant::now();
    let sender = upload(&c, UPLOAD);
    let r = c.recv();
    let took = t0.elapsed();
    assert_eq!(r.status, 413, "the upstream's early answer, not a 504");
    assert_eq!(r.body, b"<Error>tooBig</Error>");
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(took < Duration::from_secs(10), "answer took {took:?}");
    assert_not_all_read(&p, sender);
    let _ = done_tx.send(());
    let (head, body) = upstream.join().unwrap();
    assert!(head.starts_with("PUT /b/big HTTP/1.1\r\n"), "{head}");
    assert!(body == pattern(UPLOAD, 5)[..3 * MIB], "the bytes differ");
    let v = stats(&p);
    assert_eq!(v["upstream"]["early_responses"], 1, "{v}");
    assert_eq!(v["upstream"]["errors_504"], 0, "{v}");
}

/// The upstream reads 2 MiB and resets the connection: the client gets a 502 (and a
/// closed connection), and the next upload, on a fresh upstream connection, arrives whole.
#[test]
fn an_upstream_that_resets_mid_body_gets_a_502_and_the_next_upload_goes_through() {
    let (addr, upstream) = scripted_upstream(|l| {
        let (s, _, first) = accept_and_read(&l, 2 * MIB);
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s); // with unread data and linger 0: a reset
        let (mut s, head, body) = accept_and_read(&l, MIB + 3);
        let answer = digest_answer("/b/next", &body);
        let r = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        s.write_all(r.as_bytes()).unwrap();
        (first, head)
    });
    let p = start_proxy("put-reset", &[addr], 1, CFG, None);
    let mut c = Client::connect(p.addr);
    let sender = upload(&c, UPLOAD);
    let r = c.recv();
    assert_eq!(r.status, 502, "{}", r.body_text());
    assert_eq!(r.header("Connection"), Some("close"));
    assert_not_all_read(&p, sender);
    let q = Req::put("/b/next", pattern(MIB + 3, 6));
    let mut c = Client::connect(p.addr);
    c.send(&q.raw);
    expect_answers(&mut c, std::slice::from_ref(&q), "after the reset");
    let (first, head) = upstream.join().unwrap();
    assert!(first == pattern(UPLOAD, 5)[..2 * MIB], "the bytes differ");
    assert!(head.starts_with("PUT /b/next HTTP/1.1\r\n"), "{head}");
    assert_eq!(stats(&p)["upstream"]["errors_502"], 1);
}

/// The upstream reads 1 MiB and then neither reads, answers nor closes: after
/// `upstream.idle_timeout` the client gets a 504.
#[test]
fn an_upstream_that_stops_reading_without_answering_times_out_with_504() {
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (addr, upstream) = scripted_upstream(move |l| {
        let (s, _, _) = accept_and_read(&l, MIB);
        let _ = done_rx.recv_timeout(Duration::from_secs(40));
        drop(s);
    });
    let cfg = format!("{CFG}[upstream]\nidle_timeout = \"1s\"\n");
    let p = start_proxy("put-stall", &[addr], 1, &cfg, None);
    let mut c = Client::connect(p.addr);
    let t0 = Instant::now();
    let sender = upload(&c, UPLOAD);
    let r = c.recv();
    let took = t0.elapsed();
    assert_eq!(r.status, 504, "{}", r.body_text());
    assert!(
        (Duration::from_secs(1)..Duration::from_secs(10)).contains(&took),
        "504 after {took:?}"
    );
    assert_not_all_read(&p, sender);
    let _ = done_tx.send(());
    upstream.join().unwrap();
    let v = stats(&p);
    assert_eq!(v["upstream"]["errors_504"], 1, "{v}");
    assert_eq!(v["upstream"]["early_responses"], 0, "{v}");
}

/// The client sends 2 MiB of an 8 MiB body and stops: after `client_idle_timeout` tollgate
/// closes both connections without an answer, and every byte the client did send reached
/// the upstream (the piece being written when the read timed out is not lost).
#[test]
fn a_client_that_stops_mid_body_is_cut_off_and_what_it_sent_reaches_the_upstream() {
    let sent = 2 * MIB + 5;
    let (addr, upstream) = scripted_upstream(move |l| {
        let (mut s, _, mut body) = accept_and_read(&l, 0);
        s.read_to_end(&mut body).map(|_| body)
    });
    let cfg = format!("[http]\nclient_idle_timeout = \"1s\"\n{CFG}");
    let p = start_proxy("put-client-stops", &[addr], 1, &cfg, None);
    let mut c = Client::connect(p.addr);
    let body = pattern(8 * MIB, 5);
    c.send(
        format!(
            "PUT /b/cut HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(&body[..sent]);
    let t0 = Instant::now();
    let mut got = Vec::new();
    let end = c.r.read_to_end(&mut got);
    let took = t0.elapsed();
    assert!(
        end.as_ref().map_or_else(
            |e| e.kind() == std::io::ErrorKind::ConnectionReset,
            |_| true
        ),
        "closed, not timed out: {end:?} after {took:?}"
    );
    assert!(
        got.is_empty(),
        "no answer: {}",
        String::from_utf8_lossy(&got)
    );
    assert!(took >= Duration::from_millis(900), "cut after {took:?}");
    let up_body = upstream
        .join()
        .unwrap()
        .expect("the upstream connection closed");
    assert_eq!(up_body.len(), sent);
    assert!(up_body == body[..sent], "the bytes differ");
}
