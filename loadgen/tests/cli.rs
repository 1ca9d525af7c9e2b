//! The `loadgen` binary end to end against in-process responders: exit codes from `[[assert]]`,
//! JSON and HTML reports, config errors, `bench` (closed loop, pipelined, fixed rate), `prefill`
//! and `keys`. Every child is killed by PID if it overruns.

mod common;

use common::{Behaviour, loadgen_bin, run_with_timeout, start};
use std::process::Command;
use std::time::Duration;

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("loadgen-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

const SCEN: &str = r#"
name = "cli"
duration = "2s"
connections_per_core = 4
[tiers.t]
per_second = 20
[[group]]
tier = "t"
keys = ["CLI1", "CLI2"]
rate = "30/s"
auth = "x-api-key"
[[assert]]
metric = "identity"
scope = "each_key"
[[assert]]
metric = "accuracy"
[[assert]]
metric = "passed_vs_expected"
scope = "each_key"
min = 0.95
max = 1.05
"#;

#[test]
fn run_writes_reports_and_passes_asserts() {
    let r = start(
        Behaviour::Limiter {
            limit: 20,
            window: Duration::from_secs(1),
        },
        None,
    );
    let scen = tmp("pass.toml");
    std::fs::write(&scen, SCEN).unwrap();
    let (json, html) = (tmp("pass.json"), tmp("pass.html"));
    let out = run_with_timeout(
        Command::new(loadgen_bin())
            .arg("run")
            .arg(&scen)
            .args([
                "--target",
                &format!("http://127.0.0.1:{}", r.port),
                "--quiet",
                // Validity (send lag) depends on how busy the machine is; asserts are the point.
                "--allow-invalid",
            ])
            .arg("--json")
            .arg(&json)
            .arg("--html")
            .arg(&html),
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("accuracy: PASS"));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["format"], "loadgen-report");
    assert_eq!(v["version"], 1);
    assert_eq!(v["keys"].as_array().unwrap().len(), 2);
    assert_eq!(v["keys"][0]["sent"], 60);
    assert!(v["timeline"].as_array().unwrap().len() >= 2);
    let h = std::fs::read_to_string(&html).unwrap();
    assert!(h.contains("<svg") && h.contains("<rect") && h.contains("<polyline"));
    assert!(!h.contains("<script") && !h.contains("http://www.w3.org/1999/xhtml\" src"));
}

#[test]
fn failing_assert_sets_exit_code_1() {
    let r = start(
        Behaviour::Limiter {
            limit: 20,
            window: Duration::from_secs(1),
        },
        None,
    );
    let scen = tmp("fail.toml");
    std::fs::write(
        &scen,
        format!("{SCEN}\n[[assert]]\nmetric = \"denied\"\nscope = \"overall\"\nmax = 0\n"),
    )
    .unwrap();
    let out = run_with_timeout(
        Command::new(loadgen_bin()).arg("run").arg(&scen).args([
            "--target",
            &format!("http://127.0.0.1:{}", r.port),
            "-q",
        ]),
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("[FAIL] denied"));
}

#[test]
fn bad_scenario_exits_2_naming_the_field() {
    let scen = tmp("bad.toml");
    std::fs::write(&scen, SCEN.replace("30/s", "30 per second")).unwrap();
    let out = run_with_timeout(
        Command::new(loadgen_bin())
            .arg("run")
            .arg(&scen)
            .args(["--target", "http://127.0.0.1:9"]),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("group[0].rate"));
}

#[test]
fn bench_closed_pipelined_and_fixed_rate() {
    let r = start(Behaviour::Fixed, None);
    let url = format!("http://127.0.0.1:{}/x", r.port);
    for pipeline in ["1", "4"] {
        let json = tmp(&format!("bench{pipeline}.json"));
        let out = run_with_timeout(
            Command::new(loadgen_bin())
                .args([
                    "bench",
                    &url,
                    "-c",
                    "4",
                    "-t",
                    "2",
                    "-d",
                    "1s",
                    "--pipeline",
                    pipeline,
                    "-q",
                    "--json",
                ])
                .arg(&json),
            Duration::from_secs(20),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        assert!(stdout.contains("Requests/sec:"));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let n = v["requests"].as_u64().unwrap();
        assert!(n > 100, "pipeline {pipeline}: {n}");
        assert_eq!(v["status_classes"][2].as_u64().unwrap(), n);
        assert_eq!(v["transport_errors"], 0);
    }
    // Fixed rate: 400/s for 2 s.
    let json = tmp("rate.json");
    let out = run_with_timeout(
        Command::new(loadgen_bin())
            .args([
                "bench", &url, "-c", "8", "-d", "2s", "--rate", "400", "-q", "--json",
            ])
            .arg(&json),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let n = v["requests"].as_u64().unwrap();
    assert!((792..=808).contains(&n), "{n}");
    assert_eq!(v["mode"], "fixed-rate");
}

#[test]
fn prefill_and_keys() {
    let r = start(Behaviour::Fixed, None);
    let scen = tmp("prefill.toml");
    std::fs::write(
        &scen,
        r#"
duration = "1s"
[[group]]
tier = "basic"
key_prefix = "GKPF"
key_count = 2
secret = "s"
auth = "sigv4"
rate = "1/s"
objects = 7
put_sizes = ["20KiB"]
"#,
    )
    .unwrap();
    let out = run_with_timeout(
        Command::new(loadgen_bin())
            .arg("prefill")
            .arg(&scen)
            .args(["--target", &format!("http://127.0.0.1:{}", r.port)]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("7 objects written, 0 failed"));
    assert_eq!(r.arrivals.lock().unwrap()["GKPF0000"].len(), 7);
    let out = run_with_timeout(
        Command::new(loadgen_bin()).arg("keys").arg(&scen),
        Duration::from_secs(10),
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.starts_with("[keys]\n\"GKPF0000\" = \"basic\"\n\"GKPF0001\" = \"basic\"\n"),
        "{s}"
    );
}

#[test]
fn https_with_test_ca_insecure_and_missing_ca() {
    let (cfg, ca_pem) = common::test_tls();
    let r = common::start_with(Behaviour::Fixed, None, Some(cfg));
    let ca = tmp("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let base = "duration = \"1s\"\nconnections_per_core = 2\n[[group]]\nkeys = [\"TLSKEY\"]\nrate = \"50/s\"\nauth = \"x-api-key\"\n";
    let url = format!("https://127.0.0.1:{}", r.port);
    for (name, extra, code) in [
        (
            "ca",
            format!(
                "ca_file = {:?}\nserver_name = \"localhost\"\n",
                ca.to_str().unwrap()
            ),
            0,
        ),
        ("insecure", "insecure = true\n".to_string(), 0),
        ("noca", String::new(), 2),
    ] {
        let scen = tmp(&format!("tls-{name}.toml"));
        std::fs::write(&scen, format!("{extra}{base}")).unwrap();
        let json = tmp(&format!("tls-{name}.json"));
        let out = run_with_timeout(
            Command::new(loadgen_bin())
                .arg("run")
                .arg(&scen)
                .args(["--target", &url, "-q", "--allow-invalid", "--json"])
                .arg(&json),
            Duration::from_secs(20),
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if code == 0 {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
            assert_eq!(v["overall"]["sent"], 50, "{name}");
            assert_eq!(v["overall"]["admitted"], 50, "{name}");
        }
    }
    // A wrong server name fails verification: every request is a transport error.
    let scen = tmp("tls-wrongname.toml");
    std::fs::write(
        &scen,
        format!(
            "ca_file = {:?}\nserver_name = \"other.example\"\n{base}",
            ca.to_str().unwrap()
        ),
    )
    .unwrap();
    let json = tmp("tls-wrongname.json");
    let out = run_with_timeout(
        Command::new(loadgen_bin())
            .arg("run")
            .arg(&scen)
            .args(["--target", &url, "-q", "--allow-invalid", "--json"])
            .arg(&json),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["overall"]["transport"], 50);
    // bench over HTTPS with -k.
    let out = run_with_timeout(
        Command::new(loadgen_bin()).args(["bench", &url, "-c", "2", "-d", "1s", "-k", "-q"]),
        Duration::from_secs(20),
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(!s.contains("non-2xx"), "{s}");
}
