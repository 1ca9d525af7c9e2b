"""The bundled load generator against the real thing: bench/scenarios/burst.toml (5 premium keys
x 60 req/s against the default premium tier, 50/s and 1000/min), scaled to a few seconds, through
tollgate in front of Garage with real SigV4 signatures.

Checked from loadgen's versioned JSON report and, independently, from tollgate's admin API:
  * per key, sent = admitted + denied + errors exactly, and no errors at all;
  * the accuracy check passes (no key ever had more than its limit admitted in a trailing window);
  * the limit bites (each key denied) and admits close to what exact windows would (>= 90 %);
  * tollgate's own admitted / denied counters equal what loadgen saw.
"""

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from conftest import DIRECT, ROOT, run

pytestmark = pytest.mark.skipif(DIRECT, reason="rate limits need tollgate")

SCENARIO = ROOT / "bench" / "scenarios" / "burst.toml"
SCALE = "0.05"  # 2 minutes x 0.05 = 6 s
PREMIUM = {"premium": (1000, 50), "standard": (500, 25), "basic": (100, 10), "unknown": (50, 5)}


def loadgen_binary() -> Path:
    if os.environ.get("LOADGEN_BIN"):
        p = Path(os.environ["LOADGEN_BIN"])
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        p = target / "release" / "loadgen"
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(f"loadgen binary not found at {p} (cargo build --release --workspace)")
    return p


def garage_cmd(garage, *args) -> list:
    exe = shutil.which("garage") or str(Path.home() / ".cargo" / "bin" / "garage")
    return [exe, "-c", str(garage.dir / "garage.toml"), *map(str, args)]


def garage_cli(garage, *args) -> str:
    return run(garage_cmd(garage, *args), timeout=30).stdout


def test_burst_scenario_through_tollgate(garage, tollgate_factory, workdir):
    loadgen = loadgen_binary()
    # The scenario's keys become real Garage keys with read/write on bucket "bench".
    creds = run([loadgen, "keys", "--format", "credentials", SCENARIO], timeout=30).stdout
    lines = [ln.split() for ln in creds.splitlines() if ln.strip()]
    assert len(lines) == 5 and all(len(f) == 3 for f in lines), creds
    existing = garage_cli(garage, "bucket", "list")
    if "bench" not in existing.split():
        garage_cli(garage, "bucket", "create", "bench")
    for name, key_id, secret in lines:
        info = subprocess.run(garage_cmd(garage, "key", "info", key_id), capture_output=True,
                              text=True, timeout=30)
        if info.returncode != 0:
            garage_cli(garage, "key", "import", "--yes", "-n", f"burst-{name}", key_id, secret)
        garage_cli(garage, "bucket", "allow", "--read", "--write", "bench", "--key", key_id)
    run([loadgen, "prefill", SCENARIO, "--target", f"http://{garage.addr}"], timeout=120)

    # tollgate with the scenario's keys in the premium tier and the default tier limits.
    key_tiers = {key_id: "premium" for _, key_id, _ in lines}
    # A run whose sends lagged (send lag p99 > 1 ms: the machine was busy, loadgen marks the
    # run invalid) says nothing about how many tollgate should have admitted: up to four more
    # tries, each on a fresh tollgate (the last one's windows hold its run's requests). If
    # every try lagged, only what does not depend on the schedule is checked (the certain
    # accuracy criterion uses actual send and answer times; the accounting; tollgate's own
    # counts), and the skip is printed. Any other failure fails at once.
    attempts = (1, 2, 3, 4, 5)
    for attempt in attempts:
        tg = tollgate_factory([garage.addr], key_tiers, tiers=PREMIUM)
        report_path = workdir / f"burst-report-{attempt}.json"
        p = subprocess.run([str(loadgen), "run", str(SCENARIO), "--scale", SCALE, "-q",
                            "--target", f"http://127.0.0.1:{tg.port}", "--json", str(report_path)],
                           capture_output=True, text=True, timeout=120)
        rep = json.loads(report_path.read_text()) if report_path.exists() else None
        lagged = rep is not None and not rep["valid"] and "send lag" in (rep["invalid_reason"] or "")
        if lagged and attempt < attempts[-1]:
            print(f"attempt {attempt} invalid ({rep['invalid_reason']}); retrying")
            tg.stop()
            continue
        break
    if lagged:
        print(f"every attempt lagged ({rep['invalid_reason']}): the checks that depend on "
              "the schedule (expected admissions) are skipped")
        assert p.returncode == 3, f"loadgen exited {p.returncode}\n{p.stdout[-4000:]}"
    else:
        assert p.returncode == 0, f"loadgen exited {p.returncode}\n{p.stdout[-4000:]}\n{p.stderr[-2000:]}"
    assert rep is not None, "no JSON report"
    assert rep["format"] == "loadgen-report" and rep["version"] == 1
    assert rep["valid"] or lagged, rep["invalid_reason"]

    keys = rep["keys"]
    assert sorted(k["name"] for k in keys) == sorted(key_tiers)
    for k in keys:
        assert k["sent"] == k["admitted"] + k["denied"] + k["errors"], k
        assert k["errors"] == 0, k
        # 60/s offered for 6 s: 360 sent; the 50/s window must deny some of them
        assert 340 <= k["sent"] <= 380, k
        assert k["denied"] > 0, k
        exp = k["expected"]["admitted"]
        assert lagged or 0.9 * exp <= k["admitted"] <= exp, (k["admitted"], exp)
        assert k["statuses"].get("200", 0) == k["admitted"], k["statuses"]
        assert k["statuses"].get("429", 0) == k["denied"], k["statuses"]
    assert rep["accuracy_pass"] is True
    assert len(rep["accuracy"]) == 5 and all(a["pass"] for a in rep["accuracy"])
    assert all(a["pass"] for a in rep["asserts"]), rep["asserts"]

    # tollgate counted the same requests on its side.
    with urllib.request.urlopen(f"http://127.0.0.1:{tg.admin_port}/stats", timeout=5) as r:
        stats = json.loads(r.read())
    get = stats["tiers"]["premium"]["methods"]["GET"]
    assert get["admitted"] == sum(k["admitted"] for k in keys), get
    assert get["denied"] == sum(k["denied"] for k in keys), get
