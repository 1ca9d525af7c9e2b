//! Hostile clients against the data path: connection floods under a low open-file limit,
//! forged `X-Forwarded-For`. The real binary, raw sockets.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

fn stats(p: &Proxy) -> serde_json::Value {
    let (code, body) = admin_get(p.admin.unwrap(), "/stats");
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

/// A flood of connections against a process with 128 file descriptors: the connections
/// beyond what fits are closed at once, clients already connected keep being served, the
/// upstream is never marked down, and new clients are served again right after the flood.
#[test]
fn a_connection_flood_under_a_low_open_file_limit_degrades_nothing_else() {
    let up = FakeUpstream::start(ok_handler());
    let cfg =
        "[limits]\nmethods = []\n[upstream.health]\ninterval = \"100ms\"\nfall = 1\nrise = 1\n";
    let p = start_proxy_limited("flood", &[up.addr], 1, cfg, None, Some(128));
    let log = std::fs::read_to_string(&p.log).unwrap();
    assert!(log.contains("does not fit the open-file limit"), "{log}");
    let req = b"GET /b/k HTTP/1.1\r\nHost: s3\r\n\r\n";
    let mut existing: Vec<Client> = (0..4).map(|_| Client::connect(p.addr)).collect();
    for c in &mut existing {
        assert_eq!(c.request(req).status, 200);
    }
    // The flood: far more connections than the process has descriptors, held open.
    let flood: Vec<TcpStream> = (0..400)
        .filter_map(|_| TcpStream::connect_timeout(&p.addr, Duration::from_secs(2)).ok())
        .collect();
    assert!(flood.len() > 100, "the flood connected ({})", flood.len());
    std::thread::sleep(Duration::from_millis(300));
    for round in 0..3 {
        for (i, c) in existing.iter_mut().enumerate() {
            let r = c.request(req);
            assert_eq!(
                r.status, 200,
                "existing client {i} during the flood, round {round}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let v = stats(&p);
    assert!(v["connections"]["refused"].as_u64().unwrap() > 0, "{v}");
    drop(flood);
    let t0 = Instant::now();
    let mut served = false;
    while t0.elapsed() < Duration::from_secs(1) {
        if let Ok(mut s) = TcpStream::connect(p.addr) {
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let _ = std::io::Write::write_all(&mut s, b"GET /b/k HTTP/1.0\r\nHost: s3\r\n\r\n");
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            if got.starts_with(b"HTTP/1.1 200") {
                served = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        served,
        "a new client was served within 1 s of the flood ending"
    );
    let log = std::fs::read_to_string(&p.log).unwrap();
    assert!(
        !log.contains("is down"),
        "the upstream was never marked down:\n{log}"
    );
    let v = stats(&p);
    assert_eq!(v["upstream"]["errors_503"], 0, "{v}");
}

/// A client's own X-Forwarded-For names any address it likes: with `x_forwarded_for = true`
/// it is replaced, unless the client is a trusted proxy; then it is kept and extended, and
/// per-address limits count the address it forwarded.
#[test]
fn a_forged_x_forwarded_for_is_replaced_unless_the_peer_is_trusted() {
    let up = FakeUpstream::start(ok_handler());
    let cfg = r#"
[http]
x_forwarded_for = true
trusted_proxies = ["127.0.0.2"]
[limits]
anonymous_tier = "tiny"
default_tier = "tiny"
[tiers.tiny]
per_minute = 100
per_second = 2
[upstream.health]
enabled = false
"#;
    let p = start_proxy("xff", &[up.addr], 1, cfg, None);
    let forged = b"GET /b/k HTTP/1.1\r\nHost: s3\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";
    let r = Client::connect_from(p.addr, Some("127.0.0.1")).request(forged);
    assert_eq!(r.status, 200);
    let (xff, n) = seen_header(&up.seen()[0], "x-forwarded-for");
    assert_eq!((xff.as_deref(), n), (Some("127.0.0.1"), 1), "replaced");

    let via_lb = |client: &str| {
        format!("GET /b/k HTTP/1.1\r\nHost: s3\r\nX-Forwarded-For: {client}\r\n\r\n").into_bytes()
    };
    let mut lb = Client::connect_from(p.addr, Some("127.0.0.2"));
    assert_eq!(lb.request(&via_lb("198.51.100.1")).status, 200);
    let (xff, n) = seen_header(&up.seen()[1], "x-forwarded-for");
    assert_eq!(
        (xff.as_deref(), n),
        (Some("198.51.100.1, 127.0.0.2"), 1),
        "kept and extended"
    );
    // Per-address counting behind the trusted proxy: each forwarded client has its own 2/s.
    assert_eq!(lb.request(&via_lb("198.51.100.1")).status, 200);
    assert_eq!(
        lb.request(&via_lb("198.51.100.1")).status,
        429,
        "third in the second"
    );
    assert_eq!(
        lb.request(&via_lb("198.51.100.2")).status,
        200,
        "another client"
    );
    // An untrusted client cannot escape its own budget by forging addresses.
    let mut c = Client::connect_from(p.addr, Some("127.0.0.3"));
    let statuses: Vec<u16> = (0..3)
        .map(|i| c.request(&via_lb(&format!("203.0.113.{i}"))).status)
        .collect();
    assert_eq!(statuses, vec![200, 200, 429]);
}

/// IPv6 clients rotating source addresses inside their own /64 (here forwarded by a trusted
/// proxy): by default they are one client to the per-address limits and to the penalty
/// window, and the admin API shows the network; with `ipv6_prefix = 128` the same rotation
/// buys a fresh budget per address — the attack the default prevents.
#[test]
fn ipv6_clients_rotating_inside_their_64_count_as_one() {
    let up = authenticating_upstream_for(|head| !head.contains("Signature="));
    let via_lb = |client: &str, auth: &str| {
        format!("GET /b/private HTTP/1.1\r\nHost: s3\r\nX-Forwarded-For: {client}\r\n{auth}\r\n")
            .into_bytes()
    };
    let anonymous = |client: &str| via_lb(client, "");
    let forged = |client: &str| {
        let sig = String::from_utf8(signed_get("AKIAVICTIM0000000000", "forged")).unwrap();
        let auth = sig
            .lines()
            .find(|l| l.starts_with("Authorization"))
            .unwrap();
        via_lb(
            client,
            &format!("x-amz-date: 20261201T000000Z\r\n{auth}\r\n"),
        )
    };
    for (prefix, want) in [
        ("", [200, 200, 429, 429]),
        ("ipv6_prefix = 128\n", [200; 4]),
    ] {
        let cfg = format!(
            "[http]\nx_forwarded_for = true\ntrusted_proxies = [\"127.0.0.2\"]\n[limits]\n{prefix}anonymous_tier = \"tiny\"\ndefault_tier = \"tiny\"\n[limits.penalty]\nfailures = 3\nwindow = \"60s\"\n[tiers.tiny]\nper_minute = 100\nper_second = 2\n[upstream.health]\nenabled = false\n"
        );
        let p = start_proxy("v6-net", &[up.addr], 1, &cfg, None);
        let mut lb = Client::connect_from(p.addr, Some("127.0.0.2"));
        let rotating: Vec<u16> = (1..=4)
            .map(|i| {
                lb.request(&anonymous(&format!("2001:db8:1:2::{i:x}")))
                    .status
            })
            .collect();
        assert_eq!(
            rotating, want,
            "anonymous, rotating inside one /64 ({prefix:?})"
        );
        assert_eq!(
            lb.request(&anonymous("2001:db8:1:3::1")).status,
            200,
            "the next /64"
        );
        // Failed authentications: 3 from one address each, then a 4th address of the /64.
        let failures: Vec<u16> = (0x10..0x13)
            .map(|i| lb.request(&forged(&format!("2001:db8:7:7::{i:x}"))).status)
            .collect();
        assert_eq!(failures, [403; 3], "the store's answers ({prefix:?})");
        let next = lb.request(&forged("2001:db8:7:7::99")).status;
        if prefix.is_empty() {
            assert_eq!(next, 429, "the /64 is over its failure window");
            let (code, body) = admin_get(p.admin.unwrap(), "/table?addr=2001:db8:1:2::abc");
            assert_eq!(code, 200, "{body}");
            assert!(body.contains("\"addr\":\"2001:db8:1:2::/64\""), "{body}");
        } else {
            assert_eq!(next, 403, "per address: a fresh failure window");
        }
    }
}

const KEY_TIER: &str = r#"
[limits]
keys_file = "keys.toml"
default_tier = "small"
anonymous_tier = "small"
[tiers.small]
per_minute = 100
per_second = 5
[upstream.health]
enabled = false
"#;

fn keys_small(keys: &[&str]) -> String {
    let mut s = String::from("[keys]\n");
    for k in keys {
        s.push_str(&format!("{k} = \"small\"\n"));
    }
    s
}

/// Every shape of "tollgate charges one key, the store authenticates another" is refused
/// with 400 InvalidArgument, and nothing reaches the upstream.
#[test]
fn requests_naming_two_keys_are_refused_before_the_upstream() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy(
        "two-keys",
        &[up.addr],
        1,
        KEY_TIER,
        Some(&keys_small(&["AKIAVICTIM0000000000"])),
    );
    let auth = |cred: &str| {
        format!(
            "Authorization: AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;x-amz-date, Signature=00\r\n"
        )
    };
    let v4 = "Credential=AKIAVICTIM0000000000/20261201/us-east-1/s3/aws4_request";
    let decoy = "Credential=AKIADECOY00000000000/20261201/us-east-1/s3/aws4_request";
    let presigned = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIADECOY00000000000%2F20261201%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261201T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=00";
    let shapes: Vec<(&str, String)> = vec![
        (
            "two Credential= in one header",
            format!(
                "GET /b/o HTTP/1.1\r\nHost: s3\r\n{}\r\n",
                auth(&format!("{v4}, {decoy}"))
            ),
        ),
        (
            "header + presigned query",
            format!(
                "GET /b/o?{presigned} HTTP/1.1\r\nHost: s3\r\n{}\r\n",
                auth(v4)
            ),
        ),
        (
            "lower-case presigned names + header",
            format!(
                "GET /b/o?{} HTTP/1.1\r\nHost: s3\r\n{}\r\n",
                presigned.to_ascii_lowercase(),
                auth(v4)
            ),
        ),
        (
            "percent-encoded presigned name + header",
            format!(
                "GET /b/o?X%2DAmz%2DCredential=AKIADECOY00000000000%2F20261201%2Fus-east-1%2Fs3%2Faws4_request HTTP/1.1\r\nHost: s3\r\n{}\r\n",
                auth(v4)
            ),
        ),
        (
            "presigned V2 + V4 header",
            format!(
                "GET /b/o?AWSAccessKeyId=AKIADECOY00000000000&Expires=1900000000&Signature=00 HTTP/1.1\r\nHost: s3\r\n{}\r\n",
                auth(v4)
            ),
        ),
        (
            "presigned V2 + presigned V4",
            format!(
                "GET /b/o?{presigned}&AWSAccessKeyId=AKIAVICTIM0000000000&Expires=1900000000&Signature=00 HTTP/1.1\r\nHost: s3\r\n\r\n"
            ),
        ),
        (
            "X-Amz-Credential twice",
            format!(
                "GET /b/o?{presigned}&x-amz-credential=AKIAVICTIM0000000000%2F20261201%2Fus-east-1%2Fs3%2Faws4_request HTTP/1.1\r\nHost: s3\r\n\r\n"
            ),
        ),
    ];
    let mut c = Client::connect(p.addr);
    for (what, raw) in &shapes {
        let r = c.request(raw.as_bytes());
        assert_eq!(r.status, 400, "{what}: {}", r.body_text());
        let body = r.body_text();
        assert!(
            body.contains("<Code>InvalidArgument</Code>"),
            "{what}: {body}"
        );
        assert!(
            body.contains("Only one auth mechanism allowed"),
            "{what}: {body}"
        );
    }
    assert!(up.seen().is_empty(), "nothing reached the upstream");
    // One mechanism still works on the same connection.
    let r = c.request(format!("GET /b/o HTTP/1.1\r\nHost: s3\r\n{}\r\n", auth(v4)).as_bytes());
    assert_eq!(r.status, 200);
}

/// An upstream that authenticates: requests signed "good" pass, others get S3's 403.
fn authenticating_upstream() -> FakeUpstream {
    authenticating_upstream_for(|_| false)
}

/// 200 for a request signed `good` or one `anonymous_ok` accepts, else 403
/// SignatureDoesNotMatch.
fn authenticating_upstream_for(anonymous_ok: fn(&str) -> bool) -> FakeUpstream {
    FakeUpstream::start(std::sync::Arc::new(move |s: &Seen| {
        let head = String::from_utf8_lossy(&s.head);
        if head.contains("Signature=good") || anonymous_ok(&head) {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
        } else {
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided.</Message></Error>";
            format!("HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
        }
    }))
}

fn signed_get(key: &str, sig: &str) -> Vec<u8> {
    format!("GET /b/private HTTP/1.1\r\nHost: s3\r\nx-amz-date: 20261201T000000Z\r\nAuthorization: AWS4-HMAC-SHA256 Credential={key}/20261201/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}\r\n\r\n").into_bytes()
}

/// Quota burn: requests naming a victim's key with a wrong signature are refunded when the
/// store rejects them, so the victim keeps its full rate; the forger's address is refused
/// after its penalty limit without reaching the store.
#[test]
fn a_stranger_naming_a_victims_key_burns_nothing_and_is_refused_after_its_penalty() {
    let up = authenticating_upstream();
    let cfg = format!("{KEY_TIER}\n[limits.penalty]\nfailures = 8\nwindow = \"60s\"\n");
    let p = start_proxy(
        "quota-burn",
        &[up.addr],
        1,
        &cfg,
        Some(&keys_small(&["AKIAVICTIM0000000000"])),
    );
    let mut forger = Client::connect_from(p.addr, Some("127.0.0.5"));
    let forged: Vec<u16> = (0..8)
        .map(|_| {
            forger
                .request(&signed_get("AKIAVICTIM0000000000", "forged"))
                .status
        })
        .collect();
    assert_eq!(forged, vec![403; 8], "the store's answers, each refunded");
    let mut victim = Client::connect_from(p.addr, Some("127.0.0.6"));
    let own: Vec<u16> = (0..5)
        .map(|_| {
            victim
                .request(&signed_get("AKIAVICTIM0000000000", "good"))
                .status
        })
        .collect();
    assert_eq!(own, vec![200; 5], "the victim has its whole 5/s");
    assert_eq!(
        victim
            .request(&signed_get("AKIAVICTIM0000000000", "good"))
            .status,
        429,
        "and no more"
    );
    let seen_before = up.seen().len();
    let r = forger.request(&signed_get("AKIAOTHER00000000000", "forged"));
    assert_eq!(
        r.status, 429,
        "the forger's address is over its failure window"
    );
    assert!(
        r.body_text().contains("failed authentications"),
        "{}",
        r.body_text()
    );
    assert_eq!(up.seen().len(), seen_before, "refused before the store");
    let (_, stats) = admin_get(p.admin.unwrap(), "/stats");
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(v["auth_failures"], 8, "{stats}");
    assert!(v["penalty_denials"].as_u64().unwrap() >= 1, "{stats}");
}

/// Made-up keys are counted per client address by default: inventing a key per request buys
/// nothing.
#[test]
fn made_up_keys_from_one_address_share_one_budget() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy(
        "made-up",
        &[up.addr],
        2,
        "[upstream.health]\nenabled = false\n",
        None,
    );
    let mut c = Client::connect(p.addr);
    let statuses: Vec<u16> = (0..40)
        .map(|i| {
            c.request(
                format!("GET /b/o HTTP/1.1\r\nHost: s3\r\nX-API-Key: invented-{i:03}\r\n\r\n")
                    .as_bytes(),
            )
            .status
        })
        .collect();
    let admitted = statuses.iter().filter(|&&s| s == 200).count();
    assert_eq!(admitted, 5, "the unknown tier's 5/s, once: {statuses:?}");
}

/// A full table never forgets a key that is over its limit: a flood of fresh keys fills it,
/// and the denied key is still denied.
#[test]
fn a_denied_key_survives_a_flood_of_fresh_keys() {
    let up = FakeUpstream::start(ok_handler());
    let cfg = "[limits]\ntable_cap = 16\nunlisted_keys = \"per_key\"\n[upstream.health]\nenabled = false\n";
    let p = start_proxy("table-flood", &[up.addr], 1, cfg, None);
    let mut c = Client::connect(p.addr);
    let key =
        |k: &str| format!("GET /b/o HTTP/1.1\r\nHost: s3\r\nX-API-Key: {k}\r\n\r\n").into_bytes();
    let first: Vec<u16> = (0..6)
        .map(|_| c.request(&key("victim-key")).status)
        .collect();
    assert_eq!(first, vec![200, 200, 200, 200, 200, 429]);
    for i in 0..400 {
        let _ = c.request(&key(&format!("fresh-{i:04}")));
    }
    assert_eq!(
        c.request(&key("victim-key")).status,
        429,
        "still denied after the flood"
    );
}

/// A request head signed by the project's own signer (loadgen) for `key`/`secret`.
fn loadgen_signed(
    key: &str,
    secret: &str,
    style: loadgen::scenario::AuthStyle,
    host: SocketAddr,
) -> Vec<u8> {
    let target = loadgen::request::Target::parse(&format!("http://{host}")).unwrap();
    let mut b = loadgen::request::RequestBuilder::new(
        key,
        secret,
        style,
        &target,
        "bench",
        "garage",
        "obj-",
        vec![0],
        3600,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut out = Vec::new();
    b.build(loadgen::plan::Op::Get, 1, 0, now, &mut out);
    out
}

/// With `[limits.verify]`, tollgate checks signatures itself: forged requests naming a
/// victim's key never reach the store (403 SignatureDoesNotMatch from tollgate) and never
/// touch the victim's counters; they count against the forger's address.
#[test]
fn with_verify_forged_requests_never_reach_the_store() {
    use loadgen::scenario::AuthStyle;
    const KEY: &str = "GKvictim00000000000000000";
    const SECRET: &str = "victim-secret-0123456789abcdef0123456789abcdef";
    let up = FakeUpstream::start(ok_handler());
    let dir = tmpdir("verify-secrets");
    let secrets = dir.join("secrets.toml");
    std::fs::write(&secrets, format!("[secrets]\n\"{KEY}\" = '{SECRET}'\n")).unwrap();
    std::fs::set_permissions(
        &secrets,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let cfg = format!(
        "{KEY_TIER}\n[limits.penalty]\nfailures = 4\nwindow = \"60s\"\n[limits.verify]\nsecrets_file = \"{}\"\n",
        secrets.display()
    );
    let p = start_proxy("verify", &[up.addr], 2, &cfg, Some(&keys_small(&[KEY])));
    let mut forger = Client::connect_from(p.addr, Some("127.0.0.7"));
    for style in [
        AuthStyle::Sigv4,
        AuthStyle::Sigv2,
        AuthStyle::PresignV4,
        AuthStyle::PresignV2,
    ] {
        let r = forger.request(&loadgen_signed(KEY, "wrong-secret", style, p.addr));
        assert_eq!(r.status, 403, "{style:?}: {}", r.body_text());
        assert!(
            r.body_text().contains("<Code>SignatureDoesNotMatch</Code>"),
            "{style:?}"
        );
    }
    assert!(up.seen().is_empty(), "no forgery reached the store");
    let r = forger.request(&loadgen_signed(
        KEY,
        "wrong-secret",
        AuthStyle::Sigv4,
        p.addr,
    ));
    assert_eq!(
        r.status,
        429,
        "the forger's address is over its penalty: {}",
        r.body_text()
    );
    // The victim has its whole 5/s, with every signature style.
    let mut victim = Client::connect_from(p.addr, Some("127.0.0.8"));
    let styles = [
        AuthStyle::Sigv4,
        AuthStyle::Sigv2,
        AuthStyle::PresignV4,
        AuthStyle::PresignV2,
        AuthStyle::Sigv4,
    ];
    for style in styles {
        let r = victim.request(&loadgen_signed(KEY, SECRET, style, p.addr));
        assert_eq!(r.status, 200, "{style:?}: {}", r.body_text());
    }
    assert_eq!(
        victim
            .request(&loadgen_signed(KEY, SECRET, AuthStyle::Sigv4, p.addr))
            .status,
        429
    );
    assert_eq!(up.seen().len(), 5);
    // An X-API-Key cannot be verified: it is counted per address, not against the key.
    let mut other = Client::connect_from(p.addr, Some("127.0.0.9"));
    let custom = format!("GET /bench/x HTTP/1.1\r\nHost: s3\r\nX-API-Key: {KEY}\r\n\r\n");
    assert_eq!(
        other.request(custom.as_bytes()).status,
        200,
        "the victim's budget is not touched"
    );
    let (_, stats) = admin_get(p.admin.unwrap(), "/stats");
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(
        v["signature_failures"], 4,
        "the fifth was refused by the penalty: {stats}"
    );
}

/// Heads built to make the parser work: a 16 KiB `Connection` list of one-letter options
/// (each option is looked up among every field name, so unbounded it cost ~100 times the
/// parse of a plain head) is refused with 400 naming the bound, whole or in pieces, and the
/// upstream sees nothing; a head at the bound (32 options) is served.
#[test]
fn a_head_that_lists_thousands_of_connection_options_is_refused() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy("connopts", &[up.addr], 1, NO_LIMITS, None);
    let mut flood = b"GET /b/k HTTP/1.1\r\nHost: s3\r\nConnection: ".to_vec();
    while flood.len() < 15_000 {
        flood.extend_from_slice(b"a,");
    }
    flood.extend_from_slice(b"a\r\n\r\n");
    let cuts: Vec<usize> = (1..flood.len() / 1000).map(|i| i * 1000 - 7).collect();
    for pieces in [false, true] {
        let mut c = Client::connect(p.addr);
        if pieces {
            c.send_pieces(&flood, &cuts, Duration::from_millis(2));
        } else {
            c.send(&flood);
        }
        let r = c.recv();
        assert_eq!(r.status, 400, "pieces {pieces}");
        assert!(
            r.body_text()
                .contains("Connection lists more than 32 options"),
            "{}",
            r.body_text()
        );
    }
    assert!(up.seen().is_empty(), "nothing went upstream");
    let options: Vec<String> = (0..32).map(|i| format!("x-o{i}")).collect();
    let at = format!(
        "GET /b/k HTTP/1.1\r\nHost: s3\r\nConnection: {}\r\nX-O1: hop\r\n\r\n",
        options.join(", ")
    );
    assert_eq!(Client::connect(p.addr).request(at.as_bytes()).status, 200);
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let head = String::from_utf8_lossy(&seen[0].head).to_ascii_lowercase();
    assert!(
        !head.contains("x-o1:"),
        "a listed option is not sent on: {head}"
    );
}
