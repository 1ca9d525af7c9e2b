//! Data-path integration tests: the real binary, a fake upstream, raw sockets.

mod common;

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use common::*;

#[test]
fn forwards_request_line_and_headers_byte_exact() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy("exact", &[up.addr], 2, NO_LIMITS, None);
    let mut c = Client::connect(p.addr);
    let req = b"GET /bucket/a%2Fb%20c?list-type=2&prefix=x%2Fy&Z=1 HTTP/1.1\r\nHost: S3.Example.COM:9000\r\nX-Amz-Date: 20261123T000000Z\r\nx-amz-meta-CaSe:  Mixed  \r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIA/20261123/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=ab\r\n\r\n";
    let r = c.request(req);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok");
    assert!(r.header("X-Request-ID").is_some());
    let seen = up.seen();
    let head = String::from_utf8(seen[0].head.clone()).unwrap();
    assert!(
        head.starts_with("GET /bucket/a%2Fb%20c?list-type=2&prefix=x%2Fy&Z=1 HTTP/1.1\r\nHost: S3.Example.COM:9000\r\nX-Amz-Date: 20261123T000000Z\r\nx-amz-meta-CaSe:  Mixed  \r\n"),
        "head changed: {head:?}"
    );
    assert!(head.contains("Authorization: AWS4-HMAC-SHA256 Credential=AKIA/20261123/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=ab\r\n"));
    let lower = head.to_ascii_lowercase();
    assert!(
        !lower.contains("x-hop:"),
        "header named in Connection removed"
    );
    assert!(!lower.contains("keep-alive: timeout"), "Keep-Alive removed");
    assert!(
        !lower.contains("x-forwarded-for"),
        "XFF only when configured"
    );
}

#[test]
fn keep_alive_pipelining_and_pooling() {
    let up = FakeUpstream::start(Arc::new(|s: &Seen| {
        let path = String::from_utf8_lossy(&s.head)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}",
            path.len(),
            path
        )
        .into_bytes()
    }));
    let p = start_proxy("pipe", &[up.addr], 1, NO_LIMITS, None);
    let mut c = Client::connect(p.addr);
    let mut batch = Vec::new();
    for i in 0..10 {
        batch.extend_from_slice(format!("GET /o{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    c.send(&batch);
    for i in 0..10 {
        let r = c.recv();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, format!("/o{i}").as_bytes(), "responses in order");
    }
    for i in 0..5 {
        let r = c.request(format!("GET /k{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(r.body, format!("/k{i}").as_bytes());
    }
    assert_eq!(
        up.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one pooled upstream connection for 15 sequential requests"
    );
}

#[test]
fn bodies_streamed_both_ways_content_length_and_chunked() {
    let up = FakeUpstream::start(Arc::new(|s: &Seen| {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x};ext=1\r\n",
            s.body.len()
        )
        .into_bytes();
        r.extend_from_slice(&s.body);
        r.extend_from_slice(b"\r\n0\r\nX-Trailer: t\r\n\r\n");
        r
    }));
    let p = start_proxy("bodies", &[up.addr], 2, NO_LIMITS, None);
    let mut c = Client::connect(p.addr);
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut req = format!(
        "PUT /b/big HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let r = c.request(&req);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body, "echoed body equal");
    // Chunked request body with extensions and trailers passes through unchanged.
    let chunked = b"PUT /b/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;name=v\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32: AAAAAA==\r\n\r\n";
    let r = c.request(chunked);
    assert_eq!(r.status, 200);
    let seen = up.seen();
    assert_eq!(
        seen.last().unwrap().body,
        b"5;name=v\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32: AAAAAA==\r\n\r\n"
    );
}

#[test]
fn head_204_304_framing() {
    let up = FakeUpstream::start(Arc::new(|s: &Seen| {
        let h = String::from_utf8_lossy(&s.head);
        if h.starts_with("HEAD") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\nETag: \"x\"\r\n\r\n".to_vec()
        } else if h.contains("/nc") {
            b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()
        } else {
            b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n".to_vec()
        }
    }));
    let p = start_proxy("head", &[up.addr], 1, NO_LIMITS, None);
    let mut c = Client::connect(p.addr);
    c.send(b"HEAD /b/o HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = c.recv_head();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), Some("12345"));
    let r = c.request(b"DELETE /b/nc HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 204);
    let r = c.request(b"GET /b/o HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"x\"\r\n\r\n");
    assert_eq!(r.status, 304);
    // The connection is still in sync (no stray body bytes were sent).
    let r = c.request(b"DELETE /b/nc HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 204);
}

#[test]
fn expect_100_continue_is_relayed() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy("expect", &[up.addr], 1, NO_LIMITS, None);
    let mut c = Client::connect(p.addr);
    c.send(b"PUT /b/o HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut c.r, &mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "got {line:?}");
    let mut blank = String::new();
    std::io::BufRead::read_line(&mut c.r, &mut blank).unwrap();
    c.send(b"hello");
    let r = c.recv();
    assert_eq!(r.status, 200);
    assert_eq!(up.seen()[0].body, b"hello");
}

#[test]
fn smuggling_shapes_and_oversized_heads_rejected() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy("smuggle", &[up.addr], 1, NO_LIMITS, None);
    let cases: [&[u8]; 4] = [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n folded\r\n\r\n",
    ];
    for raw in cases {
        let mut c = Client::connect(p.addr);
        let r = c.request(raw);
        assert_eq!(r.status, 400, "for {:?}", String::from_utf8_lossy(raw));
        assert!(String::from_utf8_lossy(&r.body).contains("<Error><Code>"));
    }
    let mut c = Client::connect(p.addr);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    c.send(big.as_bytes());
    let r = c.recv();
    assert_eq!(r.status, 431);
    assert!(up.seen().is_empty(), "nothing reached the upstream");
}

fn node_handler(name: &'static str) -> Handler {
    Arc::new(move |_s: &Seen| {
        format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Node: {name}\r\n\r\nok").into_bytes()
    })
}

/// One GET on a new connection (so both workers take part); the answering node's name,
/// or the error status and body.
fn get_node(p: &Proxy) -> Result<String, Resp> {
    let mut c = Client::connect(p.addr);
    let r = c.request(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
    match r.header("X-Node") {
        Some(n) if r.status == 200 => Ok(n.to_string()),
        _ => Err(r),
    }
}

#[test]
fn failover_503_and_504() {
    let a = FakeUpstream::start(node_handler("a"));
    let b = FakeUpstream::start(node_handler("b"));
    let a_addr = a.addr;
    let cfg = r#"
[limits]
methods = []
[upstream]
balance = "round_robin"
connect_timeout = "500ms"
response_head_timeout = "1s"
passive_fail_threshold = 1
[upstream.health]
enabled = true
path = "/"
interval = "100ms"
timeout = "200ms"
rise = 2
fall = 2
"#;
    let p = start_proxy("failover", &[a.addr, b.addr], 2, cfg, None);
    let count = |n: usize| {
        let (mut na, mut nb) = (0, 0);
        for i in 0..n {
            match get_node(&p) {
                Ok(name) if name == "a" => na += 1,
                Ok(_) => nb += 1,
                Err(r) => panic!(
                    "request {i}: {} {:?}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ),
            }
        }
        (na, nb)
    };
    let (na, nb) = count(20);
    assert!(
        na >= 5 && nb >= 5,
        "round robin over both nodes: a {na}, b {nb}"
    );

    // Node a dies mid-test (listener closed, its keep-alive connections cut): every request
    // still succeeds, on b, from the first one on (pooled connections to a are stale).
    drop(a);
    let (na, nb) = count(30);
    assert_eq!((na, nb), (0, 30), "all on the healthy node");

    // a comes back on the same address: the health checks bring it back (rise = 2; a core
    // that ejected it passively takes it back on those checks too), round robin over both.
    let a = FakeUpstream::start_on(a_addr, node_handler("a"));
    let t0 = std::time::Instant::now();
    loop {
        let (na, nb) = count(20);
        if na >= 5 && nb >= 5 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "node a not fully taken back: a {na}, b {nb}"
        );
    }

    // Both die. Until a core has seen it (a refused connect ejects a node, passive
    // threshold 1; the health checks take it down after two failed probes) its request
    // fails on both nodes: 502. From then on: 503 ServiceUnavailable as S3 XML, every time.
    drop(a);
    drop(b);
    let t0 = std::time::Instant::now();
    let mut streak = 0;
    while streak < 6 {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "no steady 503 after 3 s"
        );
        let r = get_node(&p).expect_err("dead nodes answered");
        if r.status == 502 {
            streak = 0; // a core that has not seen it yet (passive ejection is per core)
            continue;
        }
        assert_eq!(r.status, 503);
        assert_eq!(r.header("Content-Type"), Some("application/xml"));
        assert!(r.header("X-Request-ID").is_some_and(|v| !v.is_empty()));
        let body = String::from_utf8_lossy(&r.body);
        assert!(body.contains("<Code>ServiceUnavailable</Code>"), "{body}");
        assert!(body.contains("<Resource>/x</Resource>"), "{body}");
        streak += 1;
    }
    let (_, stats) = admin_get(p.admin.unwrap(), "/stats");
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("stats JSON");
    let n503 = stats["upstream"]["errors_503"]
        .as_u64()
        .expect("upstream.errors_503");
    assert!(n503 >= 6, "503s counted: {n503}");

    // Slow upstream → 504.
    let slow = FakeUpstream::start(Arc::new(|_s: &Seen| {
        std::thread::sleep(Duration::from_secs(3));
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()
    }));
    let cfg = r#"
[limits]
methods = []
[upstream]
response_head_timeout = "500ms"
[upstream.health]
enabled = false
"#;
    let p = start_proxy("slow", &[slow.addr], 1, cfg, None);
    let mut c = Client::connect(p.addr);
    let r = c.request(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 504);
    assert!(String::from_utf8_lossy(&r.body).contains("<Code>GatewayTimeout</Code>"));
}

#[test]
fn graceful_shutdown_finishes_in_flight_request() {
    let slow = FakeUpstream::start(Arc::new(|_s: &Seen| {
        std::thread::sleep(Duration::from_millis(700));
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone".to_vec()
    }));
    let mut p = start_proxy("grace", &[slow.addr], 1, NO_LIMITS, None);
    let mut c = Client::connect(p.addr);
    c.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n");
    std::thread::sleep(Duration::from_millis(200));
    let pid = p.child.id() as i32;
    // SAFETY-free: use the kill command to send SIGTERM to our own child.
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let r = c.recv();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"done");
    let t0 = std::time::Instant::now();
    loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            assert!(st.success(), "clean exit");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "exits after the request"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut buf = [0u8; 1];
    assert_eq!(c.r.read(&mut buf).unwrap_or(0), 0, "connection closed");
}

/// An upstream that answers before the request body is in (here 413 on the head alone) and
/// closes without reading the body: the client gets that answer, not a 502, and the
/// connection is closed (the rest of its body was never read).
/// An upstream that answers early and then neither reads nor closes: the answer reaches the
/// client within a fraction of a second, not after `upstream.idle_timeout` as a 504.
#[test]
fn early_answer_from_an_upstream_that_stops_reading_but_stays_open_is_relayed() {
    use std::io::Write;
    use std::net::TcpListener;
    use std::sync::mpsc;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = l.local_addr().unwrap();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let upstream = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        read_head_bytes(&mut s);
        s.write_all(
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: 27\r\n\r\n<Error>AccessDenied</Error>",
        )
        .unwrap();
        // Keep the connection open without reading until the test is over (bounded).
        let _ = done_rx.recv_timeout(Duration::from_secs(40));
        drop(s);
    });
    let cfg = r#"
[limits]
methods = []
[upstream]
idle_timeout = "30s"
[upstream.health]
enabled = false
"#;
    let p = start_proxy("early-open", &[up_addr], 1, cfg, None);
    let body_len = 64 * 1024 * 1024;
    let mut c = Client::connect(p.addr);
    c.send(
        format!("PUT /b/big HTTP/1.1\r\nHost: x\r\nContent-Length: {body_len}\r\n\r\n").as_bytes(),
    );
    let mut writer = c.w.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'z'; 256 * 1024];
        let mut sent = 0usize;
        while sent < body_len {
            if writer.write_all(&chunk).is_err() {
                break; // tollgate closed the connection after relaying the answer
            }
            sent += chunk.len();
        }
        sent
    });
    let t0 = std::time::Instant::now();
    let r = c.recv();
    let took = t0.elapsed();
    assert_eq!(r.status, 403, "the upstream's early answer, not a 504");
    assert_eq!(r.body, b"<Error>AccessDenied</Error>");
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(took < Duration::from_secs(5), "answer took {took:?}");
    let sent = sender.join().unwrap();
    assert!(
        sent < body_len,
        "tollgate must not have read the whole body: {sent}"
    );
    let _ = done_tx.send(());
    upstream.join().unwrap();
    let (code, stats) = admin_get(p.admin.unwrap(), "/stats");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(v["upstream"]["early_responses"], 1, "{stats}");
    assert_eq!(v["upstream"]["errors_504"], 0, "{stats}");
}

#[test]
fn early_upstream_answer_while_body_streams_is_relayed() {
    use std::io::Write;
    use std::net::{Shutdown, TcpListener};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = l.local_addr().unwrap();
    let upstream = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = read_head_bytes(&mut s);
        s.write_all(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/xml\r\nContent-Length: 21\r\nConnection: close\r\n\r\n<Error>tooBig</Error>",
        )
        .unwrap();
        // Close with most of the body unread: the kernel resets the connection.
        let _ = s.shutdown(Shutdown::Both);
        drop(s);
        String::from_utf8(head).unwrap()
    });
    let cfg = r#"
[limits]
methods = []
[upstream.health]
enabled = false
"#;
    let p = start_proxy("early", &[up_addr], 1, cfg, None);
    let body_len = 32 * 1024 * 1024;
    let mut c = Client::connect(p.addr);
    c.send(
        format!("PUT /b/big HTTP/1.1\r\nHost: x\r\nContent-Length: {body_len}\r\n\r\n").as_bytes(),
    );
    let mut writer = c.w.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'z'; 256 * 1024];
        let mut sent = 0usize;
        while sent < body_len {
            if writer.write_all(&chunk).is_err() {
                break; // tollgate closed the connection after relaying the answer
            }
            sent += chunk.len();
        }
        sent
    });
    let r = c.recv();
    assert_eq!(r.status, 413, "the upstream's early answer, not a 502");
    assert_eq!(r.body, b"<Error>tooBig</Error>");
    assert_eq!(r.header("Connection"), Some("close"));
    let head = upstream.join().unwrap();
    assert!(head.starts_with("PUT /b/big HTTP/1.1\r\n"), "{head}");
    let sent = sender.join().unwrap();
    assert!(
        sent < body_len,
        "tollgate must not have read the whole body: {sent}"
    );
    let (code, stats) = admin_get(p.admin.unwrap(), "/stats");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(v["upstream"]["early_responses"], 1, "{stats}");
    assert_eq!(v["upstream"]["errors_502"], 0, "{stats}");
}

#[test]
fn http10_clients_close_by_default_and_keep_alive_on_request() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy("http10", &[up.addr], 1, NO_LIMITS, None);

    // No keep-alive asked (and no Host, which HTTP/1.0 allows): one answer, then the proxy
    // closes the connection.
    let mut s = std::net::TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::io::Write::write_all(&mut s, b"GET /a HTTP/1.0\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all)
        .expect("closed by the proxy, not timed out");
    let text = String::from_utf8_lossy(&all).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200 ok\r\n"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nok"), "exactly one body: {text}");
    // Upstream: the request line as sent; the proxy keeps its own connection alive.
    let head = String::from_utf8(up.seen()[0].head.clone()).unwrap();
    assert!(head.starts_with("GET /a HTTP/1.0\r\n"), "{head}");
    assert!(head.contains("\r\nConnection: keep-alive\r\n"), "{head}");

    // Keep-alive asked: the answer says so and the connection serves a second request.
    let mut c = Client::connect(p.addr);
    for path in ["/b", "/c"] {
        let r = c.request(
            format!("GET {path} HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"ok");
        assert_eq!(r.header("Connection"), Some("keep-alive"));
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen[2].head.starts_with(b"GET /c HTTP/1.0\r\n"));
    assert_eq!(
        up.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "pooled"
    );
}

#[test]
fn refused_connections_on_every_node_give_502_not_503() {
    // Health checks off: both nodes count as usable, both refuse (nothing listens).
    let dead: Vec<std::net::SocketAddr> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap())
        .collect();
    let cfg = "[limits]\nmethods = []\n[upstream]\npassive_fail_threshold = 100\n[upstream.health]\nenabled = false\n";
    let p = start_proxy("refused", &dead, 1, cfg, None);
    let mut c = Client::connect(p.addr);
    let r = c.request(b"GET /b/k HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 502);
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.contains("<Code>BadGateway</Code>"), "{body}");
    assert!(body.contains("<Resource>/b/k</Resource>"), "{body}");
    let (_, stats) = admin_get(p.admin.unwrap(), "/stats");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["upstream"]["errors_502"], 1);
    assert_eq!(stats["upstream"]["errors_503"], 0);
    assert_eq!(
        stats["upstream"]["retries"], 1,
        "the other node was tried once"
    );
}

#[test]
fn one_core_probes_each_node_and_every_core_follows_its_checks() {
    // Node a answers its health path with 200, node b with 503 (requests get 200 on both).
    let probes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handler = |healthy: bool,
                   name: &'static str,
                   probes: Arc<std::sync::atomic::AtomicUsize>|
     -> Handler {
        Arc::new(move |s: &Seen| {
            if s.head.starts_with(b"GET /probe ") {
                probes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let st = if healthy { "200 OK" } else { "503 Busy" };
                return format!("HTTP/1.1 {st}\r\nContent-Length: 0\r\n\r\n").into_bytes();
            }
            format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Node: {name}\r\n\r\nok").into_bytes()
        })
    };
    let a = FakeUpstream::start(handler(true, "a", probes.clone()));
    let b = FakeUpstream::start(handler(false, "b", Arc::new(Default::default())));
    let cfg = r#"
[limits]
methods = []
[upstream]
balance = "round_robin"
[upstream.health]
enabled = true
path = "/probe"
interval = "100ms"
timeout = "500ms"
rise = 1
fall = 1
"#;
    let p = start_proxy("probes", &[a.addr, b.addr], 2, cfg, None);
    let n0 = probes.load(std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1500));
    let n = probes.load(std::sync::atomic::Ordering::SeqCst) - n0;
    // One prober: ~15 probes of node a in 1.5 s; one per core would be ~30.
    assert!((8..=20).contains(&n), "{n} probes of node a in 1.5 s");
    // b failed its checks on the core that probes it; both cores leave it out.
    for _ in 0..20 {
        assert_eq!(get_node(&p).expect("answer").as_str(), "a");
    }
}
