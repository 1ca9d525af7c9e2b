//! What a real network does to the data path and what loopback whole-writes never show:
//! bytes in pieces (every split offset, segments, slow drips, TLS records), peers out of step
//! (pool poisoning, early and late answers, garbage, silence), `Expect: 100-continue`
//! without a `100`, and framing a next hop could read differently (canonical or refused).
//! The real binary, raw sockets, scripted upstreams.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// A representative SigV4 PUT: a few `x-amz-meta-*` fields, a security token, a body.
fn sigv4_put() -> Vec<u8> {
    let token = "FwoGZXIvYXdzEB".repeat(100); // an STS session token is 1.3 KB and more
    format!(
        "PUT /bucket/photos/2026/img%20001.jpg?x-id=PutObject HTTP/1.1\r\nHost: s3.example.com:9000\r\nx-amz-date: 20261201T000000Z\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\nx-amz-security-token: {token}\r\nx-amz-meta-camera: Pixel\r\nx-amz-meta-Owner:  someone  \r\nContent-Type: image/jpeg\r\nContent-Length: 5\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261201/us-east-1/s3/aws4_request, SignedHeaders=content-length;content-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-camera;x-amz-meta-owner;x-amz-security-token, Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n\r\nhello"
    )
    .into_bytes()
}

/// An upstream whose every connection is handled by a script (its own thread).
struct Scripted {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pub connections: Arc<AtomicUsize>,
}

impl Scripted {
    fn start(script: impl Fn(TcpStream, usize) + Send + Sync + 'static) -> Scripted {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let (st, n) = (stop.clone(), connections.clone());
        let script = Arc::new(script);
        std::thread::spawn(move || {
            for c in l.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(c) = c else { continue };
                let _ = c.set_read_timeout(Some(Duration::from_secs(20)));
                let i = n.fetch_add(1, Ordering::SeqCst);
                let s = script.clone();
                std::thread::spawn(move || s(c, i));
            }
        });
        Scripted {
            addr,
            stop,
            connections,
        }
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

/// Reads one request (head + Content-Length body) from an upstream connection.
fn read_request(r: &mut BufReader<TcpStream>) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let cl = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; cl];
    r.read_exact(&mut body).ok()?;
    Some((head, body))
}

fn path_of(head: &str) -> &str {
    head.split_whitespace().nth(1).unwrap_or("")
}

/// An answer naming the request path, so a client can tell its own response from another's.
fn answer_for(path: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}",
        path.len()
    )
    .into_bytes()
}

#[test]
fn a_sigv4_request_split_at_every_offset_reaches_the_upstream_byte_exact() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy("split-all", &[up.addr], 2, NO_LIMITS, None);
    let req = sigv4_put();
    assert!(req.len() > 1000, "a head over one small segment");
    for k in 1..req.len() {
        let mut c = Client::connect(p.addr);
        write_pieces(&mut c.w, &req, &[k], Duration::from_millis(2)).unwrap();
        let r = c.recv();
        assert_eq!(r.status, 200, "split at {k}: {}", r.body_text());
    }
    let seen = up.seen();
    assert_eq!(seen.len(), req.len() - 1);
    for (i, s) in seen.iter().enumerate() {
        let mut got = s.head.clone();
        got.extend_from_slice(&s.body);
        assert_eq!(got, req, "request {i} reached the upstream changed");
    }
}

#[test]
fn long_heads_in_segments_pass_and_oversized_heads_sent_slowly_get_431() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy("segments", &[up.addr], 1, NO_LIMITS, None);
    // A 4 KB head as three segments 1 ms apart (a 1,500-byte MTU path).
    let mut head = b"GET /b/k HTTP/1.1\r\nHost: s3\r\n".to_vec();
    for i in 0..70 {
        head.extend_from_slice(
            format!("x-amz-meta-field-{i:02}: {}\r\n", "v".repeat(40)).as_bytes(),
        );
    }
    head.extend_from_slice(b"\r\n");
    assert!(head.len() > 4000);
    let mut c = Client::connect(p.addr);
    write_pieces(&mut c.w, &head, &[1448, 2896], Duration::from_millis(1)).unwrap();
    assert_eq!(c.recv().status, 200);
    assert_eq!(up.seen()[0].head, head);

    // 60 KB of headers in 3 KB pieces: refused once the head passes max_head_bytes (16 KiB).
    let mut big = b"GET /b/k HTTP/1.1\r\nHost: s3\r\n".to_vec();
    while big.len() < 60 * 1024 {
        big.extend_from_slice(format!("x-pad-{}: {}\r\n", big.len(), "p".repeat(60)).as_bytes());
    }
    let mut c = Client::connect(p.addr);
    let cuts: Vec<usize> = (1..20).map(|i| i * 3072).collect();
    let _ = write_pieces(&mut c.w, &big, &cuts, Duration::from_millis(5)); // may fail once refused
    let r = c.recv();
    assert_eq!(r.status, 431, "{}", r.body_text());
    assert!(r.body_text().contains("RequestHeaderSectionTooLarge"));
    assert_eq!(up.seen().len(), 1, "nothing of the big head went upstream");
}

#[test]
fn a_pipelined_request_split_after_the_first_is_read_whole() {
    let up = FakeUpstream::start(Arc::new(|s: &Seen| {
        answer_for(path_of(&String::from_utf8_lossy(&s.head)))
    }));
    let p = start_proxy("pipe-split", &[up.addr], 1, NO_LIMITS, None);
    let first = b"PUT /b/one HTTP/1.1\r\nHost: s3\r\nContent-Length: 3\r\n\r\nabc".to_vec();
    let second = b"GET /b/two HTTP/1.1\r\nHost: s3\r\nX-Amz-Date: 20261201T000000Z\r\n\r\n";
    for k in 1..second.len() {
        let mut all = first.clone();
        all.extend_from_slice(second);
        let mut c = Client::connect(p.addr);
        write_pieces(&mut c.w, &all, &[first.len() + k], Duration::from_millis(2)).unwrap();
        assert_eq!(c.recv().body, b"/b/one");
        assert_eq!(c.recv().body, b"/b/two", "second request split at {k}");
    }
}

#[test]
fn an_upstream_response_head_split_at_every_offset_is_relayed() {
    const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nETag: \"d41d8cd98f00b204\"\r\nx-amz-request-id: 4442587FB7D0A2F9\r\nLast-Modified: Tue, 01 Dec 2026 00:00:00 GMT\r\n\r\nok";
    let next = Arc::new(AtomicUsize::new(1));
    let n2 = next.clone();
    let up = Scripted::start(move |s, _| {
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        while read_request(&mut r).is_some() {
            let k = n2.fetch_add(1, Ordering::SeqCst).min(RESP.len() - 1);
            if write_pieces(&mut w, RESP, &[k], Duration::from_millis(2)).is_err() {
                return;
            }
        }
    });
    let p = start_proxy("resp-split", &[up.addr], 1, NO_LIMITS, None);
    let mut c = Client::connect(p.addr);
    for k in 1..RESP.len() {
        let r = c.request(b"GET /b/k HTTP/1.1\r\nHost: s3\r\n\r\n");
        assert_eq!(r.status, 200, "response split at {k}");
        assert_eq!(r.body, b"ok");
        assert_eq!(r.header("x-amz-request-id"), Some("4442587FB7D0A2F9"));
    }
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "the pooled connection stayed in step"
    );
}

#[test]
fn a_health_probe_answer_in_pieces_keeps_the_node_up() {
    let probes = Arc::new(AtomicUsize::new(0));
    let p2 = probes.clone();
    let up = Scripted::start(move |s, _| {
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        while let Some((head, _)) = read_request(&mut r) {
            if path_of(&head) == "/minio/health/live" {
                p2.fetch_add(1, Ordering::SeqCst);
                let ans = b"HTTP/1.1 200 OK\r\nServer: MinIO\r\nContent-Length: 0\r\n\r\n";
                let _ = write_pieces(&mut w, ans, &[7, 20], Duration::from_millis(20));
                return; // the probe asked for Connection: close
            }
            if w.write_all(&answer_for(path_of(&head))).is_err() {
                return;
            }
        }
    });
    let cfg = "[limits]\nmethods = []\n[upstream.health]\ninterval = \"100ms\"\ntimeout = \"1s\"\nfall = 1\nrise = 1\n";
    let p = start_proxy("probe-split", &[up.addr], 1, cfg, None);
    let t0 = Instant::now();
    while probes.load(Ordering::SeqCst) < 4 && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(probes.load(Ordering::SeqCst) >= 4, "probes ran");
    let r = Client::connect(p.addr).request(b"GET /b/k HTTP/1.1\r\nHost: s3\r\n\r\n");
    assert_eq!(r.status, 200, "node kept up: {}", r.body_text());
    let log = std::fs::read_to_string(&p.log).unwrap_or_default();
    assert!(!log.contains("is down"), "{log}");
}

#[test]
fn a_header_value_never_becomes_a_request_line() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy("inject", &[up.addr], 1, NO_LIMITS, None);
    let mut c = Client::connect(p.addr);
    c.send(b"GET /x HTTP/1.1\r\nHost: s3\r\nX-Note: ");
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"DELETE /b/obj HTTP/1.1\r\nHost: s3\r\n\r\n");
    let r = c.recv();
    assert_eq!(
        r.status,
        400,
        "one request with two Host fields: {}",
        r.body_text()
    );
    std::thread::sleep(Duration::from_millis(100));
    let seen = up.seen();
    assert!(
        seen.iter().all(|s| !s.head.starts_with(b"DELETE")),
        "the DELETE reached the upstream: {:?}",
        seen.iter()
            .map(|s| String::from_utf8_lossy(&s.head).into_owned())
            .collect::<Vec<_>>()
    );
    assert!(seen.is_empty());
}

/// Point 6 of the wire issue, end to end: for each framing shape, what the upstream
/// receives is canonical, or nothing.
#[test]
fn framing_reaches_the_upstream_canonical_or_not_at_all() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy("canonical", &[up.addr], 1, NO_LIMITS, None);
    let refused: &[(&str, u16)] = &[
        ("Transfer-Encoding: gzip, chunked\r\n", 501),
        ("Transfer-Encoding: identity, chunked\r\n", 501),
        ("Transfer-Encoding: ,chunked\r\n", 400),
        ("Transfer-Encoding: chunked,\r\n", 400),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            400,
        ),
        ("Transfer_Encoding: chunked\r\nContent-Length: 5\r\n", 400),
        ("Content_Length: 9\r\nContent-Length: 5\r\n", 400),
        ("Connection: Upgrade\r\nUpgrade: websocket\r\n", 501),
    ];
    for (fields, status) in refused {
        let raw = format!("PUT /b/k HTTP/1.1\r\nHost: s3\r\n{fields}\r\n5\r\nhello\r\n0\r\n\r\n");
        let r = Client::connect(p.addr).request(raw.as_bytes());
        assert_eq!(r.status, *status, "{fields:?}: {}", r.body_text());
        assert!(r.body_text().contains("<Error><Code>"), "S3 XML");
    }
    // A chunk size followed by whitespace (RFC 9112 §7.1.1): refused whether it comes with the
    // head or after it (then the head is upstream already; that connection is dropped).
    let raw = b"PUT /b/k HTTP/1.1\r\nHost: s3\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n";
    assert_eq!(Client::connect(p.addr).request(raw).status, 400);
    let head_len = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut c = Client::connect(p.addr);
    c.send_pieces(raw, &[head_len], Duration::from_millis(50));
    let r = c.recv();
    assert_eq!(r.status, 400, "{}", r.body_text());
    assert!(r.body_text().contains("IncompleteBody"));
    // CONNECT.
    let r = Client::connect(p.addr).request(b"CONNECT s3:443 HTTP/1.1\r\nHost: s3:443\r\n\r\n");
    assert_eq!(r.status, 501);
    assert!(r.body_text().contains("<Code>NotImplemented</Code>"));
    // A signed hop-by-hop field cannot be both proxied and kept.
    let raw = b"GET /b/k HTTP/1.1\r\nHost: s3\r\nConnection: keep-alive\r\nx-amz-date: 20261201T000000Z\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIA/20261201/us-east-1/s3/aws4_request, SignedHeaders=connection;host;x-amz-date, Signature=00\r\n\r\n";
    let r = Client::connect(p.addr).request(raw);
    assert_eq!(r.status, 400);
    assert!(
        r.body_text().contains("Connection"),
        "names the field: {}",
        r.body_text()
    );
    assert!(
        up.seen().is_empty(),
        "no refused request reached the upstream whole"
    );

    // Forwarded, in one canonical form.
    let sent: &[(&str, &str)] = &[
        ("Content-Length: 5, 5\r\n", "content-length: 5\r\n"),
        (
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "content-length: 5\r\n",
        ),
        (
            "Transfer-Encoding:  CHUNKED \r\n",
            "transfer-encoding: chunked\r\n",
        ),
    ];
    for (i, (fields, want)) in sent.iter().enumerate() {
        let body = if fields.contains("CHUNKED") {
            "5\r\nhello\r\n0\r\n\r\n"
        } else {
            "hello"
        };
        let raw = format!("PUT /b/k{i} HTTP/1.1\r\nHost: s3\r\n{fields}\r\n{body}");
        let r = Client::connect(p.addr).request(raw.as_bytes());
        assert_eq!(r.status, 200, "{fields:?}");
        let s = &up.seen()[i];
        let head = String::from_utf8_lossy(&s.head).to_ascii_lowercase();
        assert!(head.contains(want), "{fields:?} went up as {head:?}");
        let name = want.split(':').next().unwrap();
        assert_eq!(head.matches(name).count(), 1, "one line: {head:?}");
        assert!(
            !head.contains("chunked ") && !head.contains("5, 5"),
            "{head:?}"
        );
    }
}

#[test]
fn expect_on_a_request_without_a_body_costs_no_connection() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy("expect-nobody", &[up.addr], 1, NO_LIMITS, None);
    let mut c = Client::connect(p.addr);
    for _ in 0..3 {
        let r = c.request(b"GET /b/k HTTP/1.1\r\nHost: s3\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Connection"), None, "kept alive");
    }
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        1,
        "upstream connection reused"
    );
}

/// Pool poisoning, shape 1: a backend answers a PUT before reading its body, then reads the
/// body as if it were a request and answers that too. Shape 2: a backend sends bytes after a
/// response. Either way the pooled connection holds an answer to no request; the next
/// client (another user) must get its own response.
#[test]
fn a_pooled_connection_that_is_not_clean_is_never_reused() {
    for shape in ["early answer + extra bytes", "bytes after a response"] {
        let early = shape.starts_with("early");
        let up = Scripted::start(move |s, _| {
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            let mut first = true;
            loop {
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                if first && early {
                    // Answer at once, then read the 5 body bytes "as a request" and answer that.
                    let _ = w.write_all(&answer_for(path_of(&head)));
                    std::thread::sleep(Duration::from_millis(20));
                    let mut junk = [0u8; 5];
                    let _ = r.read_exact(&mut junk);
                    let _ =
                        w.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 6\r\n\r\nPOISON");
                } else {
                    let _ = w.write_all(&answer_for(path_of(&head)));
                    if first {
                        std::thread::sleep(Duration::from_millis(20));
                        let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON");
                    }
                }
                first = false;
            }
        });
        let p = start_proxy("poison", &[up.addr], 1, NO_LIMITS, None);
        let r = Client::connect(p.addr).request(if early {
            &b"PUT /one HTTP/1.1\r\nHost: s3\r\nContent-Length: 5\r\n\r\nhello"[..]
        } else {
            &b"GET /one HTTP/1.1\r\nHost: s3\r\n\r\n"[..]
        });
        assert_eq!(r.body, b"/one", "{shape}");
        std::thread::sleep(Duration::from_millis(150));
        let r = Client::connect(p.addr).request(b"GET /two HTTP/1.1\r\nHost: s3\r\n\r\n");
        assert_eq!(
            r.body_text(),
            "/two",
            "{shape}: the second client got another's answer"
        );
        let (_, stats) = admin_get(p.admin.unwrap(), "/stats");
        let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
        let discarded = v["upstream"]["pool_discarded"].as_u64().unwrap_or(0);
        let t0 = Instant::now();
        // The gauge is published every 250 ms.
        let mut d = discarded;
        while d == 0 && t0.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(100));
            let (_, stats) = admin_get(p.admin.unwrap(), "/stats");
            let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
            d = v["upstream"]["pool_discarded"].as_u64().unwrap_or(0);
        }
        assert!(
            d >= 1 || up.connections.load(Ordering::SeqCst) == 2,
            "{shape}: {stats}"
        );
    }
}

/// An idle pooled connection is closed by tollgate itself, with no request to trigger a
/// check: at once when the upstream closes its side (no socket left half-closed in the
/// pool), and after `upstream.pool_idle_timeout` when it stays quiet. Each upstream answers
/// one request, then waits for tollgate's end of the connection.
#[test]
fn idle_pooled_connections_close_without_traffic() {
    for (shape, ttl_ms) in [("upstream closes", 60_000u64), ("idle timeout", 400)] {
        let (tx, rx) = std::sync::mpsc::channel::<Duration>();
        let tx = Mutex::new(tx);
        let half_close = shape == "upstream closes";
        let up = Scripted::start(move |s, _| {
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            let mut head = String::new();
            while !head.ends_with("\r\n\r\n") {
                if r.read_line(&mut head).unwrap_or(0) == 0 {
                    return;
                }
            }
            let _ = w.write_all(&answer_for(path_of(&head)));
            if path_of(&head) != "/one" {
                return; // a health probe
            }
            let answered = Instant::now();
            if half_close {
                let _ = w.shutdown(std::net::Shutdown::Write);
            }
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest); // tollgate's FIN (or the 20 s read timeout)
            let _ = tx.lock().unwrap().send(answered.elapsed());
        });
        let cfg = format!("[upstream]\npool_idle_timeout = \"{ttl_ms}ms\"\n");
        let p = start_proxy("idle-close", &[up.addr], 1, &cfg, None);
        let r = Client::connect(p.addr).request(b"GET /one HTTP/1.1\r\nHost: s3\r\n\r\n");
        assert_eq!(r.body, b"/one", "{shape}");
        let closed_after = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("tollgate closed the idle connection");
        let bound = Duration::from_millis(ttl_ms.min(1_000) + 1_500);
        assert!(
            closed_after < bound,
            "{shape}: closed after {closed_after:?}"
        );
        if !half_close {
            assert!(
                closed_after >= Duration::from_millis(ttl_ms - 50),
                "{shape}: closed before the idle timeout ({closed_after:?})"
            );
        }
    }
}

/// An upstream that never sends `100 Continue` (RFC 9110 allows it) and waits for the body.
fn expect_ignoring_upstream() -> Scripted {
    Scripted::start(|s, _| {
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        while let Some((head, body)) = read_request(&mut r) {
            let text = format!("{} {}", path_of(&head), body.len());
            let ans = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            );
            if w.write_all(ans.as_bytes()).is_err() {
                return;
            }
        }
    })
}

#[test]
fn expect_without_a_100_from_the_upstream_still_uploads() {
    let up = expect_ignoring_upstream();
    let cfg = "[limits]\nmethods = []\n[upstream]\nexpect_timeout = \"300ms\"\n[upstream.health]\nenabled = false\n";
    let p = start_proxy("expect-ignored", &[up.addr], 1, cfg, None);
    let mut c = Client::connect(p.addr);
    let t0 = Instant::now();
    c.send(b"PUT /b/up HTTP/1.1\r\nHost: s3\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let mut line = String::new();
    c.r.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("HTTP/1.1 100"),
        "tollgate's own 100 after the wait: {line:?}"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "waited for the upstream's 100 first"
    );
    let mut blank = String::new();
    c.r.read_line(&mut blank).unwrap();
    c.send(b"hello");
    let r = c.recv();
    assert_eq!(r.status, 200);
    assert_eq!(r.body_text(), "/b/up 5");
    // Still in step: the next request on both connections works.
    let r = c.request(b"GET /b/next HTTP/1.1\r\nHost: s3\r\n\r\n");
    assert_eq!(r.body_text(), "/b/next 0");
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn expect_from_an_http10_client_is_ignored() {
    let up = expect_ignoring_upstream();
    let p = start_proxy("expect-10", &[up.addr], 1, NO_LIMITS, None);
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t0 = Instant::now();
    s.write_all(b"PUT /b/old HTTP/1.0\r\nHost: s3\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello")
        .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n"),
        "no 1xx to HTTP/1.0: {text}"
    );
    assert!(text.ends_with("/b/old 5"), "{text}");
    assert!(
        t0.elapsed() < Duration::from_millis(900),
        "no wait for a 100: {:?}",
        t0.elapsed()
    );
}

#[test]
fn a_slow_upload_after_100_continue_is_not_cut_by_the_response_deadline() {
    let up = FakeUpstream::start(Arc::new(|s: &Seen| {
        let t = format!("{}", s.body.len());
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{t}", t.len()).into_bytes()
    }));
    let cfg = "[limits]\nmethods = []\n[upstream]\nresponse_head_timeout = \"2s\"\n[upstream.health]\nenabled = false\n";
    let p = start_proxy("expect-slow", &[up.addr], 1, cfg, None);
    let mut c = Client::connect(p.addr);
    c.send(
        b"PUT /b/slow HTTP/1.1\r\nHost: s3\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
    );
    let mut line = String::new();
    c.r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line:?}");
    c.r.read_line(&mut line).unwrap();
    let t0 = Instant::now();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(500));
        c.send(b"x");
    }
    let r = c.recv();
    assert!(t0.elapsed() >= Duration::from_secs(5));
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.body_text(), "10");
}

#[test]
fn http10_clients_get_no_interim_responses_and_chunked_bodies_unchunked() {
    let up = Scripted::start(|s, _| {
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        while let Some((head, _)) = read_request(&mut r) {
            let _ =
                w.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n");
            let resp: &[u8] = if path_of(&head) == "/chunked" {
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-t\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            };
            if w.write_all(resp).is_err() {
                return;
            }
        }
    });
    let p = start_proxy("http10-1xx", &[up.addr], 1, NO_LIMITS, None);
    // HTTP/1.1 clients see the 103.
    let mut c = Client::connect(p.addr);
    c.send(b"GET /plain HTTP/1.1\r\nHost: s3\r\n\r\n");
    let mut line = String::new();
    c.r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 103"), "{line:?}");
    while line != "\r\n" {
        line.clear();
        c.r.read_line(&mut line).unwrap();
    }
    assert_eq!(c.recv().body, b"ok");
    for path in ["/plain", "/chunked"] {
        let mut s = TcpStream::connect(p.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.0\r\nHost: s3\r\nConnection: keep-alive\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let mut got = Vec::new();
        if path == "/chunked" {
            s.read_to_end(&mut got)
                .expect("close-delimited: the proxy closes");
        } else {
            let mut r = BufReader::new(s);
            let resp = read_response(&mut r, false).unwrap();
            assert_eq!(resp.body, b"ok");
            continue;
        }
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\n"),
            "no 103 to HTTP/1.0: {text}"
        );
        let lower = text.to_ascii_lowercase();
        assert!(!lower.contains("transfer-encoding"), "{text}");
        assert!(lower.contains("connection: close"), "{text}");
        assert!(text.ends_with("\r\n\r\nhello world"), "data only: {text:?}");
    }
}

/// Hostile or broken upstreams: garbage, silence, a reset mid-head, a close before any byte.
#[test]
fn broken_upstreams_get_502_or_504_and_nothing_hangs() {
    let behaviours: [(&str, u16); 4] = [
        ("garbage", 502),
        ("silence", 504),
        ("reset mid-head", 502),
        ("close at once", 502),
    ];
    for (what, status) in behaviours {
        let up = Scripted::start(move |s, _| {
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            let Some(_) = read_request(&mut r) else {
                return;
            };
            match what {
                "garbage" => {
                    let _ = w.write_all(b"\x16\x03\x01 this is not HTTP\r\n\r\n");
                    std::thread::sleep(Duration::from_secs(1));
                }
                "silence" => std::thread::sleep(Duration::from_secs(3)),
                "reset mid-head" => {
                    let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Le");
                    let _ = socket2::SockRef::from(&w).set_linger(Some(Duration::ZERO));
                }
                _ => {}
            }
        });
        let cfg = "[limits]\nmethods = []\n[upstream]\nresponse_head_timeout = \"500ms\"\n[upstream.health]\nenabled = false\n";
        let p = start_proxy("broken-up", &[up.addr], 1, cfg, None);
        let t0 = Instant::now();
        let r = Client::connect(p.addr).request(b"GET /b/k HTTP/1.1\r\nHost: s3\r\n\r\n");
        assert_eq!(r.status, status, "{what}: {}", r.body_text());
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{what}: {:?}",
            t0.elapsed()
        );
    }
}

/// Hostile clients: a head dripped a byte at a time within the head timeout is served; one
/// that takes longer is cut off at the timeout, and neither holds up other clients.
#[test]
fn a_dripping_client_is_served_or_cut_off_without_holding_others() {
    let up = FakeUpstream::start(ok_handler());
    let cfg = "[http]\nclient_head_timeout = \"1s\"\n[limits]\nmethods = []\n[upstream.health]\nenabled = false\n";
    let p = start_proxy("drip", &[up.addr], 1, cfg, None);
    let req = b"GET /b/k HTTP/1.1\r\nHost: s3\r\n\r\n";
    let mut c = Client::connect(p.addr);
    let cuts: Vec<usize> = (1..req.len()).collect();
    write_pieces(&mut c.w, req, &cuts, Duration::from_millis(10)).unwrap();
    assert_eq!(c.recv().status, 200, "a byte every 10 ms is fine");

    let slow = Arc::new(Mutex::new(Client::connect(p.addr)));
    let s2 = slow.clone();
    let dripper = std::thread::spawn(move || {
        let mut c = s2.lock().unwrap();
        let mut sent = 0;
        for b in req.iter() {
            if c.w.write_all(&[*b]).is_err() {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(150));
        }
        sent
    });
    // Others are served meanwhile.
    for _ in 0..5 {
        let t0 = Instant::now();
        assert_eq!(Client::connect(p.addr).request(req).status, 200);
        assert!(t0.elapsed() < Duration::from_millis(500));
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent = dripper.join().unwrap();
    assert!(
        sent < req.len(),
        "cut off at the 1 s head timeout after {sent} bytes"
    );
}

mod tls {
    use super::*;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    /// Trusts any certificate: these tests are about records, not about trust.
    #[derive(Debug)]
    struct AnyCert;

    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    #[test]
    fn a_head_in_two_tls_records_is_one_head() {
        let up = FakeUpstream::start(ok_handler());
        let dir = tmpdir("tls-records");
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(dir.join("c.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.join("k.pem"), ck.key_pair.serialize_pem()).unwrap();
        let tls_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let cfg = format!(
            "{NO_LIMITS}\n[tls]\nlisten = [\"{tls_addr}\"]\n[[tls.certs]]\ncert = \"{}\"\nkey = \"{}\"\n",
            dir.join("c.pem").display(),
            dir.join("k.pem").display()
        );
        let _p = start_proxy("tls-records", &[up.addr], 1, &cfg, None);
        assert!(wait_port(tls_addr, Duration::from_secs(5)));
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert))
        .with_no_client_auth();
        let req = sigv4_put();
        for cut in [1, 17, 400, req.len() - 6] {
            let conn = rustls::ClientConnection::new(
                Arc::new(config.clone()),
                ServerName::try_from("localhost").unwrap(),
            )
            .unwrap();
            let tcp = TcpStream::connect(tls_addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            // Each write is its own TLS record.
            s.write_all(&req[..cut]).unwrap();
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(30));
            s.write_all(&req[cut..]).unwrap();
            s.flush().unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 4096];
            while !String::from_utf8_lossy(&got).ends_with("\r\n\r\nok") {
                let n = s.read(&mut b).unwrap();
                assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&b[..n]);
            }
            assert!(
                got.starts_with(b"HTTP/1.1 200 OK\r\n"),
                "cut {cut}: {}",
                String::from_utf8_lossy(&got)
            );
        }
        let seen = up.seen();
        assert_eq!(seen.len(), 4);
        for s in seen {
            let mut got = s.head.clone();
            got.extend_from_slice(&s.body);
            assert_eq!(got, req);
        }
    }
}
