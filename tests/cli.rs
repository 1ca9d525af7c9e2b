//! Command-line tests: `tollgate check` (summary, overrides, `FILE:LINE: FIELD: message`
//! errors, the rules in order), `tollgate explain` (which rules match a request) and
//! `tollgate keys` (add/list/remove/backups/restore on a temporary keys file).
//! Every run of the binary has a timeout.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{CmdOut, run_tollgate, tmpdir};

const T: Duration = Duration::from_secs(20);

fn tollgate(args: &[&str]) -> CmdOut {
    run_tollgate(args, T)
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A config that passes `check` without touching the network (IP addresses only).
const VALID: &str = r#"workers = 2
pin_workers = false
listen = ["127.0.0.1:18080"]

[admin]
listen = "127.0.0.1:18404"

[limits]
keys_file = "keys.toml"

[[upstream.servers]]
addr = "127.0.0.1:9000"

[tiers.gold]
per_minute = 120
per_second = 7

[tiers.unknown]
per_minute = 50
per_second = 5
"#;

const VALID_KEYS: &str = "[keys]\n\"AKIAGOLD1\" = \"gold\"\n\"AKIAGOLD2\" = \"gold\"\n";

/// Writes `config` (and `keys`, if any, as keys.toml) into a new directory.
fn setup(tag: &str, config: &str, keys: Option<&str>) -> (PathBuf, PathBuf) {
    let dir = tmpdir(tag);
    let cfg = dir.join("tollgate.toml");
    std::fs::write(&cfg, config).unwrap();
    if let Some(k) = keys {
        std::fs::write(dir.join("keys.toml"), k).unwrap();
    }
    (dir, cfg)
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

#[test]
fn check_valid_config_prints_summary_and_exits_0() {
    let (dir, cfg) = setup("cli-ok", VALID, Some(VALID_KEYS));
    let out = tollgate(&["check", "--config", path_str(&cfg)]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stderr, "", "{out:?}");
    let l = lines(&out.stdout);
    for want in [
        format!("config: {}", cfg.display()),
        "workers: 2".to_string(),
        "listen (http): 127.0.0.1:18080".to_string(),
        "listen (https): none".to_string(),
        "admin: 127.0.0.1:18404 (no token)".to_string(),
        "  127.0.0.1:9000 -> 127.0.0.1:9000".to_string(),
        format!("keys file: {} (2 keys)", dir.join("keys.toml").display()),
    ] {
        assert!(
            l.contains(&want.as_str()),
            "missing {want:?} in:\n{}",
            out.stdout
        );
    }
    let tier = |name: &str| {
        l.iter()
            .find(|x| x.trim_start().starts_with(&format!("{name} ")))
            .map(|x| x.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_else(|| panic!("no tier {name} in:\n{}", out.stdout))
    };
    assert_eq!(
        tier("gold"),
        [
            "gold", "120/1m", "7/1s", "methods", "GET,PUT", "enforce", "keys", "2"
        ]
    );
    assert_eq!(tier("unknown")[1..3], ["50/1m", "5/1s"]);
    assert!(
        !l.iter().any(|x| x.trim_start().starts_with("premium ")),
        "only the configured tiers exist:\n{}",
        out.stdout
    );
    assert_eq!(l.last(), Some(&format!("{}: OK", cfg.display()).as_str()));
}

#[test]
fn check_shows_command_line_overrides_in_summary() {
    let (_dir, cfg) = setup("cli-override", VALID, Some(VALID_KEYS));
    let out = tollgate(&[
        "check",
        "--config",
        path_str(&cfg),
        "--listen",
        "127.0.0.1:1801",
        "--listen",
        "127.0.0.2:1802",
        "--upstream",
        "127.0.0.1:9101",
        "--upstream",
        "127.0.0.1:9102",
        "--workers",
        "3",
        "--admin",
        "off",
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let l = lines(&out.stdout);
    for want in [
        "workers: 3",
        "listen (http): 127.0.0.1:1801, 127.0.0.2:1802",
        "admin: off",
        "  127.0.0.1:9101 -> 127.0.0.1:9101",
        "  127.0.0.1:9102 -> 127.0.0.1:9102",
    ] {
        assert!(l.contains(&want), "missing {want:?} in:\n{}", out.stdout);
    }
    assert!(
        l.iter()
            .any(|x| x.starts_with("upstream: 2 server(s), balance round_robin")),
        "{}",
        out.stdout
    );
    assert!(
        ["127.0.0.1:18080", "127.0.0.1:18404", "127.0.0.1:9000"]
            .iter()
            .all(|a| !out.stdout.contains(a)),
        "file values replaced:\n{}",
        out.stdout
    );
    // A bad override names the flag and the field it replaces.
    let out = tollgate(&["check", "--config", path_str(&cfg), "--admin", "bogus"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(
        out.stderr.trim_end(),
        "--admin: admin.listen: invalid address \"bogus\" (expected IP:PORT, e.g. \"0.0.0.0:8080\")"
    );
    assert_eq!(out.stdout, "");
}

/// `check` on `config` fails with exit 1 and exactly one line
/// `FILE:LINE: FIELD: message` whose message starts with `message`.
fn check_fails(tag: &str, config: &str, keys: Option<&str>, at: (&str, usize, &str, &str)) {
    let (dir, cfg) = setup(tag, config, keys);
    let (file, line, field, message) = at;
    let file = dir.join(file);
    // The line really holds the field (keeps the expectations honest when editing).
    let text = std::fs::read_to_string(&file).unwrap();
    let leaf = field.rsplit('.').next().unwrap().split('[').next().unwrap();
    let src_line = text.lines().nth(line - 1).unwrap_or_default();
    assert!(
        src_line.contains(leaf.trim_matches('"')),
        "line {line} of the test input is {src_line:?}"
    );
    let out = tollgate(&["check", "--config", path_str(&cfg)]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.stdout, "", "no summary for a bad config");
    let prefix = format!("{}:{line}: {field}: {message}", file.display());
    assert!(
        out.stderr.starts_with(&prefix) && out.stderr.lines().count() == 1,
        "expected {prefix:?}..., got {:?}",
        out.stderr
    );
}

#[test]
fn check_unknown_field_names_file_line_and_field() {
    let cfg = VALID.replace(
        "keys_file = \"keys.toml\"\n",
        "keys_file = \"keys.toml\"\ncolour = \"red\"\n",
    );
    check_fails(
        "cli-unknown",
        &cfg,
        Some(VALID_KEYS),
        (
            "tollgate.toml",
            10,
            "limits.colour",
            "unknown field `colour`, expected one of `keys_file`,",
        ),
    );
    // In a tier table (a dotted path through a user-named table).
    let cfg = VALID.replace("per_second = 7\n", "per_second = 7\nburts = 5\n");
    check_fails(
        "cli-unknown-tier",
        &cfg,
        Some(VALID_KEYS),
        (
            "tollgate.toml",
            17,
            "tiers.gold.burts",
            "unknown field `burts`, expected one of `per_minute`,",
        ),
    );
}

#[test]
fn check_bad_values_name_file_line_and_field() {
    let cfg = VALID.replace(
        "keys_file = \"keys.toml\"\n",
        "keys_file = \"keys.toml\"\ndeny_status = 404\n",
    );
    check_fails(
        "cli-bad-status",
        &cfg,
        Some(VALID_KEYS),
        (
            "tollgate.toml",
            10,
            "limits.deny_status",
            "404 is not allowed (must be 429 or 503)",
        ),
    );
    let cfg = VALID.replace(
        "addr = \"127.0.0.1:9000\"\n",
        "addr = \"127.0.0.1:9000\"\n\n[[upstream.servers]]\naddr = \"nohost\"\n",
    );
    check_fails(
        "cli-bad-addr",
        &cfg,
        Some(VALID_KEYS),
        (
            "tollgate.toml",
            15,
            "upstream.servers[1].addr",
            "invalid address \"nohost\" (expected HOST:PORT",
        ),
    );
    let cfg = VALID.replace(
        "per_second = 7\n",
        "burst = { limit = 7, window = \"2m\" }\n",
    );
    check_fails(
        "cli-bad-window",
        &cfg,
        Some(VALID_KEYS),
        (
            "tollgate.toml",
            16,
            "tiers.gold.burst.window",
            "the burst window (2m) must be shorter than the sustained window (1m)",
        ),
    );
}

#[test]
fn check_bad_keys_file_names_keys_file_line_and_key() {
    check_fails(
        "cli-keys-tier",
        VALID,
        Some("# keys\n[keys]\n\"AKIAGOLD1\" = \"gold\"\n\"AKIAPLATINUM\" = \"platinum\"\n"),
        (
            "keys.toml",
            4,
            "keys.AKIAPLATINUM",
            "unknown tier \"platinum\" (tiers: gold, unknown)",
        ),
    );
    check_fails(
        "cli-keys-malformed",
        VALID,
        Some("[keys]\n\"AKIAGOLD1\" = \"gold\"\n\n\"AKIA GOLD\" = \"gold\"\n"),
        (
            "keys.toml",
            4,
            "keys.\"AKIA GOLD\"",
            "malformed key \"AKIA GOLD\": byte 0x20 is not printable ASCII",
        ),
    );
}

#[test]
fn keys_add_list_remove_round_trip_with_atomic_writes_and_backups() {
    let original = "# our keys\n\n[keys]\n\"AKIAGOLD1\" = \"gold\"\n";
    let (dir, cfg) = setup("cli-keys", VALID, Some(original));
    let keys = dir.join("keys.toml");
    let c = path_str(&cfg);
    let backups = || -> Vec<PathBuf> {
        let out = tollgate(&["keys", "--config", c, "backups"]);
        assert_eq!(out.code, Some(0), "{out:?}");
        out.stdout.lines().map(PathBuf::from).collect()
    };
    assert_eq!(backups(), Vec::<PathBuf>::new());
    // A hard link keeps the old inode: an atomic replace (rename) leaves it untouched,
    // an in-place rewrite would change it.
    let link = dir.join("keys.link");
    std::fs::hard_link(&keys, &link).unwrap();

    let out = tollgate(&["keys", "--config", c, "add", "AKIAGOLD0", "gold"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "added AKIAGOLD0 -> gold\n");
    assert_eq!(std::fs::read_to_string(&link).unwrap(), original);
    assert_eq!(
        std::fs::read_to_string(&keys).unwrap(),
        "# our keys\n\n[keys]\n\"AKIAGOLD0\" = \"gold\"\n\"AKIAGOLD1\" = \"gold\"\n",
        "sorted, top comment kept"
    );
    let b = backups();
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0].parent(), Some(dir.as_path()));
    assert!(
        b[0].file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("keys.toml.bak."),
        "{b:?}"
    );
    assert_eq!(std::fs::read_to_string(&b[0]).unwrap(), original);

    let out = tollgate(&["keys", "--config", c, "list"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "AKIAGOLD0\tgold\nAKIAGOLD1\tgold\n");

    // Refused changes leave the file and the backups alone.
    let before = std::fs::read_to_string(&keys).unwrap();
    for (args, msg) in [
        (
            ["add", "AKIAGOLD0", "gold"],
            "key \"AKIAGOLD0\" already exists (tier \"gold\")",
        ),
        (
            ["add", "AKIAGOLD9", "platinum"],
            "key \"AKIAGOLD9\": unknown tier \"platinum\" (tiers: gold, unknown)",
        ),
    ] {
        let mut a = vec!["keys", "--config", c];
        a.extend(args);
        let out = tollgate(&a);
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(
            out.stderr
                .starts_with(&format!("error: {}: {msg}", keys.display())),
            "{out:?}"
        );
    }
    assert_eq!(std::fs::read_to_string(&keys).unwrap(), before);
    assert_eq!(backups().len(), 1);

    let out = tollgate(&["keys", "--config", c, "remove", "AKIAGOLD1"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "removed AKIAGOLD1 (was gold)\n");
    let out = tollgate(&["keys", "--config", c, "list"]);
    assert_eq!(out.stdout, "AKIAGOLD0\tgold\n");
    let b = backups();
    assert_eq!(b.len(), 2, "one backup per change: {b:?}");
    assert_eq!(
        std::fs::read_to_string(&b[0]).unwrap(),
        before,
        "newest first"
    );
    let out = tollgate(&["keys", "--config", c, "remove", "AKIAGOLD1"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("key \"AKIAGOLD1\" not found"),
        "{out:?}"
    );

    // Restore the original from the oldest backup; the file is valid for `check` again.
    let out = tollgate(&["keys", "--config", c, "restore", path_str(&b[1])]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(std::fs::read_to_string(&keys).unwrap(), original);
    assert_eq!(
        backups().len(),
        3,
        "restoring backs up the current file too"
    );
    let out = tollgate(&["check", "--config", c]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("(1 keys)"), "{}", out.stdout);
    // No temporary files are left behind.
    let stray: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

/// `VALID` with three rules.
fn with_rules() -> String {
    format!(
        "{VALID}\n[[rules]]\nname = \"ci\"\nmatch.header = {{ name = \"X-Team\", equals = \"ci\" }}\naction = \"allow\"\n\
         [[rules]]\nname = \"lists\"\nmatch.ops = [\"list\"]\nmatch.tiers = [\"gold\"]\nsubject = \"key+bucket\"\ncost = 5\nper_minute = 100\n\
         [[rules]]\nname = \"bw\"\nmatch.buckets = [\"media-*\"]\nmax_in_flight = 2\nbytes_per_window = {{ bytes = 1048576, window = \"10s\" }}\n"
    )
}

#[test]
fn check_prints_the_rules_in_order_with_what_each_matches() {
    let (_d, cfg) = setup("cli-rules", &with_rules(), Some(VALID_KEYS));
    let out = tollgate(&["check", "--config", path_str(&cfg)]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let l = lines(&out.stdout);
    let at = l
        .iter()
        .position(|x| x.starts_with("rules: 3"))
        .expect(&out.stdout);
    assert_eq!(
        &l[at + 1..at + 4],
        [
            "  1. ci: header x-team equals \"ci\" → allow (exempt from the rules after it and the tier)",
            "  2. lists: ops list; tiers gold → per key+bucket: 100 per 1m, cost 5",
            "  3. bw: buckets media-* → per key: at most 2 in flight, 1048576 body bytes per 10s",
        ]
    );
    let (_d, plain) = setup("cli-norules", VALID, Some(VALID_KEYS));
    let out = tollgate(&["check", "--config", path_str(&plain)]);
    assert!(out.stdout.contains("rules: none"), "{}", out.stdout);
    // A bad rule names its field and line.
    let bad = with_rules().replace("match.ops = [\"list\"]", "match.ops = [\"lsit\"]");
    let (_d, cfg) = setup("cli-badrule", &bad, Some(VALID_KEYS));
    let out = tollgate(&["check", "--config", path_str(&cfg)]);
    assert_eq!(out.code, Some(1));
    let line = bad.lines().position(|x| x.contains("lsit")).unwrap() + 1;
    assert!(
        out.stderr.contains(&format!(
            "tollgate.toml:{line}: rules[1].match.ops[0]: unknown operation class \"lsit\""
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn explain_prints_which_rules_match_a_request_and_why() {
    let (_d, cfg) = setup("cli-explain", &with_rules(), Some(VALID_KEYS));
    let auth = "Authorization: AWS4-HMAC-SHA256 Credential=AKIAGOLD1/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00";
    let out = tollgate(&[
        "explain",
        path_str(&cfg),
        "GET /bucket?list-type=2",
        "-H",
        auth,
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let l = lines(&out.stdout);
    assert!(
        l[0].contains("operation list, bucket \"bucket\""),
        "{}",
        out.stdout
    );
    assert!(
        l[0].contains("key \"AKIAGOLD1\", tier gold"),
        "{}",
        out.stdout
    );
    assert_eq!(
        l[1],
        "1. ci: does not match — header x-team equals \"ci\" (NO)"
    );
    assert_eq!(
        l[2],
        "2. lists: matches — ops list (yes); tiers gold (yes) → limit"
    );
    assert_eq!(l[3], "3. bw: does not match — buckets media-* (NO)");
    assert!(
        l[4].contains("counted by each: lists, tier gold"),
        "{}",
        out.stdout
    );
    let out = tollgate(&[
        "explain",
        path_str(&cfg),
        "GET /media-1/a.mp4",
        "-H",
        "X-Team: ci",
    ]);
    assert!(out.stdout.contains("1. ci: matches"), "{}", out.stdout);
    assert!(
        out.stdout.contains("exempted by rule ci, nothing counted"),
        "{}",
        out.stdout
    );
    let out = tollgate(&["explain", path_str(&cfg), "GET"]);
    assert_eq!(out.code, Some(1));
}
