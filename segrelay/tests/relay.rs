//! The relay end to end over loopback: bytes intact both ways in every mode, streams really
//! cut, cuts reproducible from the seed, half-closes and resets passed on, a dropped relay
//! refusing and cutting like a dead node, and the client's source address kept.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use segrelay::{Cut, Cutter, Dir, Relay};

const TIMEOUT: Duration = Duration::from_secs(10);

fn random(seed: u64) -> Cut {
    Cut::Random {
        seed,
        max_piece: 4096,
        max_delay: Duration::from_millis(5),
    }
}

fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| ((i * 31 + i / 251) as u8).wrapping_add(salt))
        .collect()
}

fn timed(s: TcpStream) -> TcpStream {
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// A target serving each accepted connection with `serve` on its own thread; the peer
/// address of every accepted connection goes to the returned channel.
fn target<F>(serve: F) -> (SocketAddr, mpsc::Receiver<SocketAddr>)
where
    F: Fn(TcpStream) + Send + Sync + Clone + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            if tx.send(s.peer_addr().unwrap()).is_err() {
                return; // the test is over
            }
            let f = serve.clone();
            std::thread::spawn(move || f(timed(s)));
        }
    });
    (addr, rx)
}

/// Echoes until EOF, then half-closes.
fn echo(mut s: TcpStream) {
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = s.shutdown(Shutdown::Write);
}

/// Sends `data` (in one write) then half-closes, on another thread, while this thread reads
/// everything that comes back.
fn exchange(relay: SocketAddr, data: Vec<u8>) -> Vec<u8> {
    let s = timed(TcpStream::connect(relay).unwrap());
    let mut w = s.try_clone().unwrap();
    let writer: JoinHandle<()> = std::thread::spawn(move || {
        w.write_all(&data).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    (&s).read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    back
}

#[test]
fn bytes_arrive_intact_and_in_order_both_ways_in_every_mode() {
    let (to, _peers) = target(echo);
    for (cut, n) in [
        (Cut::Whole, 1 << 20),
        (Cut::Bytes, 20_000),
        (random(11), 1 << 20),
        (Cut::Mtu, 100_000),
    ] {
        let relay = Relay::start(to, cut).unwrap();
        let data = pattern(n, 7);
        let t0 = Instant::now();
        let back = exchange(relay.addr(), data.clone());
        assert!(
            back == data,
            "{cut:?}: {} of {n} bytes back, or reordered",
            back.len()
        );
        let st = relay.stats();
        assert_eq!(
            (st.bytes_up, st.bytes_down),
            (n as u64, n as u64),
            "{cut:?}"
        );
        assert_eq!(st.connections, 1);
        eprintln!("{cut:?}: {n} bytes each way in {:?}, {st:?}", t0.elapsed());
    }
}

#[test]
fn a_large_write_arrives_in_many_pieces() {
    let (to, _peers) = target(echo);
    let n = 1 << 20;
    let relay = Relay::start(to, random(3)).unwrap();
    exchange(relay.addr(), pattern(n, 1));
    let st = relay.stats();
    // Log-uniform pieces up to 4 KiB average ~790 bytes: about 1,300 pieces for 1 MiB.
    assert!(st.pieces_up > 1000, "{st:?}");
    assert!(st.pieces_down > 1000, "{st:?}");
    let bytes = Relay::start(to, Cut::Bytes).unwrap();
    exchange(bytes.addr(), pattern(3000, 2));
    assert_eq!(
        (bytes.stats().pieces_up, bytes.stats().pieces_down),
        (3000, 3000)
    );
    // MTU: one 3,000-byte write (one read) is 1448 + 1448 + 104; then each small write of
    // a ping-pong starts its own segment, wherever it falls in the stream.
    let mtu = Relay::start(to, Cut::Mtu).unwrap();
    let mut c = timed(TcpStream::connect(mtu.addr()).unwrap());
    c.write_all(&pattern(3000, 3)).unwrap();
    let mut back = vec![0u8; 3000];
    c.read_exact(&mut back).unwrap();
    assert_eq!(mtu.stats().pieces_up, 3);
    for i in 0..4 {
        c.write_all(&[b'x'; 1000]).unwrap();
        c.read_exact(&mut back[..1000]).unwrap();
        assert_eq!(mtu.stats().pieces_up, 4 + i, "a small write is one segment");
    }
    let whole = Relay::start(to, Cut::Whole).unwrap();
    exchange(whole.addr(), pattern(3000, 2));
    assert!(whole.stats().pieces_up <= 3, "{:?}", whole.stats());
}

/// The pieces the cutter gives to cover `n` bytes.
fn expected_pieces(cut: Cut, conn: u64, dir: Dir, n: usize) -> u64 {
    let (mut c, mut covered, mut count) = (Cutter::new(cut, conn, dir), 0, 0);
    while covered < n {
        covered += c.next_piece().len;
        count += 1;
    }
    count
}

#[test]
fn the_same_seed_gives_the_same_cuts() {
    // A 3,000-byte write over loopback is one segment, read by the relay in one read, so
    // its writes are exactly the cutter's pieces for (seed, connection, direction).
    let (to, _peers) = target(echo);
    let n = 3000;
    for seed in [1, 2, 3] {
        let mut counts = Vec::new();
        for _ in 0..2 {
            let relay = Relay::start(to, random(seed)).unwrap();
            for conn in 0..2 {
                exchange(relay.addr(), pattern(n, conn as u8));
                let up = relay.stats().pieces_up;
                let want: u64 = (0..=conn)
                    .map(|c| expected_pieces(random(seed), c, Dir::Up, n))
                    .sum();
                assert_eq!(up, want, "seed {seed}, connection {conn}");
            }
            counts.push(relay.stats().pieces_up);
        }
        assert_eq!(
            counts[0], counts[1],
            "seed {seed}: same cuts on a fresh relay"
        );
    }
    let distinct: std::collections::BTreeSet<u64> = (0..20)
        .map(|seed| expected_pieces(random(seed), 0, Dir::Up, n))
        .collect();
    assert!(distinct.len() > 3, "seeds cut differently: {distinct:?}");
}

#[test]
fn a_half_close_is_passed_on_both_ways() {
    // Client → target: the client half-closes, the target reads to EOF, then answers.
    let (to, _peers) = target(|mut s: TcpStream| {
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got.extend_from_slice(b" / pong");
        s.write_all(&got).unwrap();
    });
    let relay = Relay::start(to, random(5)).unwrap();
    assert_eq!(exchange(relay.addr(), b"ping".to_vec()), b"ping / pong");

    // Target → client: the target speaks and half-closes first; the client still gets
    // through afterwards.
    let (tx, rx) = mpsc::channel();
    let (to, _peers) = target(move |mut s: TcpStream| {
        s.write_all(b"hello").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        tx.send(got).unwrap();
    });
    let relay = Relay::start(to, random(6)).unwrap();
    let mut c = timed(TcpStream::connect(relay.addr()).unwrap());
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"hello", "the target's EOF reached the client");
    c.write_all(b"after the half-close").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), b"after the half-close");
}

#[test]
fn a_reset_is_passed_on_after_the_bytes_ahead_of_it() {
    let (to, _peers) = target(|mut s: TcpStream| {
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        s.write_all(b"bye").unwrap();
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s); // RST
    });
    let relay = Relay::start(to, Cut::Bytes).unwrap();
    let mut c = timed(TcpStream::connect(relay.addr()).unwrap());
    c.write_all(b"ping").unwrap();
    let mut got = [0u8; 3];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"bye");
    let mut rest = [0u8; 1];
    let end = c.read(&mut rest);
    assert!(
        matches!(&end, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "the client sees the reset: {end:?}"
    );
}

#[test]
fn bytes_ahead_of_a_reset_arrive_while_the_client_keeps_sending() {
    // The target answers, then resets with the client's upload unread. Each of its 2,000
    // bytes is a piece of its own, so some still wait in the relay's send queue when the
    // reset is seen there; they must reach the client before the reset does.
    let answer = pattern(2000, 9);
    let a = answer.clone();
    let (to, _peers) = target(move |mut s: TcpStream| {
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        s.write_all(&a).unwrap();
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    });
    let relay = Relay::start(to, Cut::Bytes).unwrap();
    let c = timed(TcpStream::connect(relay.addr()).unwrap());
    let mut w = c.try_clone().unwrap();
    let total = 64 << 20;
    let uploader = std::thread::spawn(move || {
        let chunk = vec![b'u'; 64 * 1024];
        let mut sent = 0;
        while sent < total && w.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
        sent
    });
    let mut got = vec![0u8; answer.len()];
    (&c).read_exact(&mut got).unwrap();
    assert!(got == answer, "the answer ahead of the reset arrived whole");
    let sent = uploader.join().unwrap();
    assert!(
        sent < total,
        "the upload was cut by the reset ({sent} bytes)"
    );
}

#[test]
fn drop_refuses_new_connections_and_cuts_live_ones() {
    let (tx, rx) = mpsc::channel();
    let (to, _peers) = target(move |mut s: TcpStream| {
        let mut b = [0u8; 2];
        s.read_exact(&mut b).unwrap();
        s.write_all(b"ok").unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest); // until the relay cuts the connection
        tx.send(rest.len()).unwrap();
    });
    let relay = Relay::start(to, random(9)).unwrap();
    let addr = relay.addr();
    let mut c = timed(TcpStream::connect(addr).unwrap());
    c.write_all(b"hi").unwrap();
    let mut b = [0u8; 2];
    c.read_exact(&mut b).unwrap();
    let t0 = Instant::now();
    drop(relay);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        t0.elapsed()
    );
    let e = TcpStream::connect(addr).expect_err("a dropped relay accepts nothing");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    let mut rest = [0u8; 1];
    match c.read(&mut rest) {
        Ok(0) => {}
        Err(e) => assert_ne!(e.kind(), ErrorKind::WouldBlock, "not cut: timed out"),
        Ok(n) => panic!("{n} bytes after the relay died"),
    }
    assert_eq!(
        rx.recv_timeout(TIMEOUT).unwrap(),
        0,
        "the target side was cut too"
    );
}

#[test]
fn a_failed_outbound_connect_closes_the_client_at_once() {
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let relay = Relay::start(dead, Cut::Whole).unwrap();
    let mut c = timed(TcpStream::connect(relay.addr()).unwrap());
    let t0 = Instant::now();
    let mut b = [0u8; 1];
    let r = c.read(&mut b);
    assert!(matches!(r, Ok(0)), "closed, not timed out: {r:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(relay.stats().failed_connects, 1);
    assert_eq!(relay.stats().connections, 0);
}

#[test]
fn the_outbound_connection_comes_from_the_clients_ip() {
    let (to, peers) = target(echo);
    let relay = Relay::start(to, Cut::Whole).unwrap();
    for ip in ["127.0.0.2", "127.0.0.1", "127.0.0.3"] {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let local: SocketAddr = format!("{ip}:0").parse().unwrap();
        sock.bind(&local.into()).unwrap();
        sock.connect(&relay.addr().into()).unwrap();
        let c: TcpStream = sock.into();
        let seen = peers.recv_timeout(TIMEOUT).unwrap();
        assert_eq!(seen.ip().to_string(), ip);
        drop(c);
    }
}

#[test]
fn start_on_listens_on_the_given_port_again_after_a_drop() {
    let (to, _peers) = target(echo);
    let first = Relay::start(to, Cut::Whole).unwrap();
    let addr = first.addr();
    assert_eq!(exchange(addr, b"one".to_vec()), b"one");
    drop(first);
    let second = Relay::start_on(addr, to, random(1)).unwrap();
    assert_eq!(second.addr(), addr);
    assert_eq!(exchange(addr, b"two".to_vec()), b"two");
}
