#!/usr/bin/env python3
"""bench/report.py — records and reports of the benchmark harness (bench/run.sh, bench/cases/).

Owns: turning one measurement (a loadgen JSON + the proxy's CPU from /proc) into a record (one
JSON line), the per-case tables (medians over rounds), the same-round ratios, the headline
figures against the issue's targets, the run's .json/.md files, and the check that a run's JSON
has every case with numbers in it (bench/test-quick.sh). Must not touch: processes, the network,
anything but the files it is given.

Subcommands:
  cpu C0 K0 T0 C1 K1 T1 CLK_TCK [ATTEMPT]     → CPU JSON of one measurement (lib.sh `measure`)
  record --case C --system S --round R [--variant V] [--load LOADGEN.json] [--cpu CPU.json]
         [--set key=value]...                 → one record on stdout, a progress line on stderr
  import-overhead FILE.json --case C           → proxy-overhead.sh rounds as records
  import-memory FILE.json --case C             → memory-per-key.sh results as records
  scenario REPORT.json --system S --round R --variant NAME → loadgen run tiers as records
  wrkshape LOADGEN.json                        → the wrk summary proxy-overhead.sh reads
  render --records FILE... --machine M.json --params P.json [--out STEM]
                                               → tables, ratios, headline; STEM.{json,md}
  check FILE.json [--cases a,b,..]             → exit 1 unless every case (default: every case
                                                 the run was asked for) has numeric rows
"""
import argparse
import json
import math
import statistics
import sys

# Per case: title, the metrics shown (key, column, format), the ratios taken between systems of
# the same round (metric, numerator, denominators), and a line on the method.
CASES = {
    "saturation": {
        "title": "1. Saturation: one worker core, 1,000 keys, closed loop",
        "metrics": [("rps", "req/s", "%.0f"), ("cpu_us_per_req", "CPU µs/req", "%.2f"),
                    ("proxy_core_util", "proxy core busy", "pct"),
                    ("foreign_cpu_on_proxy_core", "foreign CPU on proxy core", "pct"),
                    ("p99_us", "p99 µs (closed loop)", "%.0f"), ("errors", "errors", "%d")],
        "ratios": [("cpu_us_per_req", "tollgate", ["haproxy-seed", "haproxy-plain", "nginx-limit"])],
    },
    "refusals": {
        "title": "10. Refusals: one key far over its limit (the seed's), closed loop",
        "metrics": [("rps", "req/s", "%.0f"), ("cpu_us_per_req", "CPU µs/req", "%.2f"),
                    ("refused_share", "refused (4xx) share", "pct"),
                    ("proxy_core_util", "proxy core busy", "pct"),
                    ("foreign_cpu_on_proxy_core", "foreign CPU on proxy core", "pct"),
                    ("errors", "errors (not 2xx or 4xx)", "%d")],
        "ratios": [("cpu_us_per_req", "tollgate", ["haproxy-seed", "nginx-limit"])],
    },
    "fixed-rate": {
        "title": "2. Fixed offered rate (open loop, latency from the intended send time), 1,000 keys",
        "metrics": [("rps", "req/s", "%.0f"), ("cpu_us_per_req", "CPU µs/req", "%.2f"),
                    ("p50_us", "p50 µs", "%.0f"), ("p99_us", "p99 µs", "%.0f"),
                    ("p999_us", "p99.9 µs", "%.0f"),
                    ("send_lag_p99_us", "loadgen send lag p99 µs", "%.0f"),
                    ("proxy_core_util", "proxy core busy", "pct"),
                    ("foreign_cpu_on_proxy_core", "foreign CPU on proxy core", "pct"),
                    ("syscalls_per_req", "syscalls/req", "%.2f"),
                    ("io_uring_enter_per_req", "io_uring_enter/req", "%.2f"),
                    ("epoll_wait_per_req", "epoll_wait/req", "%.2f"),
                    ("cswitch_per_req", "context switches/req", "%.2f"),
                    ("errors", "errors", "%d")],
        "ratios": [("cpu_us_per_req", "tollgate", ["haproxy-seed", "haproxy-plain", "nginx-limit"]),
                   ("p99_us", "tollgate", ["haproxy-seed", "haproxy-plain", "nginx-limit"])],
    },
    "tls": {
        "title": "3. HTTPS: keep-alive requests, new connections (full handshake, resumed)",
        "metrics": [("rps", "req/s (new-conn: connections/s)", "%.0f"),
                    ("cpu_us_per_req", "CPU µs per request/connection", "%.2f"),
                    ("proxy_core_util", "proxy core busy", "pct"),
                    ("client_util", "load generator busy", "pct"),
                    ("resumed", "resumption (openssl check)", "%s"), ("errors", "errors", "%d")],
        "ratios": [("cpu_us_per_req", "tollgate", ["haproxy-seed", "haproxy-plain", "nginx-limit"]),
                   ("rps", "tollgate", ["haproxy-seed", "haproxy-plain", "nginx-limit"])],
    },
    "large": {
        "title": "4. Large objects: one connection, GET and PUT of one object over and over",
        "metrics": [("gb_per_s", "GB/s", "%.3f"), ("cpu_s_per_gb", "CPU s per GB", "%.3f"),
                    ("proxy_core_util", "proxy core busy", "pct"),
                    ("client_util", "load generator busy", "pct"), ("errors", "errors", "%d")],
        "ratios": [("gb_per_s", "tollgate", ["direct", "haproxy-seed", "haproxy-plain", "nginx-limit"]),
                   ("gb_per_s", "haproxy-seed", ["direct"]), ("gb_per_s", "haproxy-plain", ["direct"]),
                   ("gb_per_s", "nginx-limit", ["direct"]),
                   ("cpu_s_per_gb", "tollgate", ["haproxy-seed", "haproxy-plain", "nginx-limit"])],
    },
    "many-keys": {
        "title": "5. Many tracked keys: memory per key, then req/s rotating over all of them",
        "metrics": [("pss_before_mib", "MiB before (key list loaded)", "%.0f"),
                    ("bytes_per_key", "bytes per key (Pss)", "%.1f"),
                    ("beyond_key", "beyond the key", "%.1f"), ("tracked", "entries tracked", "%s"),
                    ("rps", "req/s", "%.0f"), ("cpu_us_per_req", "CPU µs/req", "%.2f"),
                    ("proxy_core_util", "proxy core busy", "pct"), ("errors", "errors", "%d")],
        "ratios": [("bytes_per_key", "tollgate", ["haproxy-seed", "nginx-limit"]),
                   ("cpu_us_per_req", "tollgate", ["haproxy-seed", "nginx-limit"])],
    },
    "workers": {
        "title": "6. tollgate with 2 workers vs 1 (cross-core key ownership), fixed rate, 1,000 keys",
        "metrics": [("rps", "req/s", "%.0f"), ("cpu_us_per_req", "CPU µs/req (all workers)", "%.2f"),
                    ("p99_us", "p99 µs", "%.0f"), ("errors", "errors", "%d")],
        "ratios": [("cpu_us_per_req", "tollgate-2w", ["tollgate-1w"]),
                   ("p99_us", "tollgate-2w", ["tollgate-1w"])],
    },
    "accuracy": {
        "title": "7. Accuracy: bursts against a 10/s key, admissions placed by arrival at the origin",
        "metrics": [("sent", "sent", "%d"), ("admitted", "admitted", "%d"),
                    ("exact_admitted", "exact limiter would admit", "%d"), ("limit", "limit", "%d"),
                    ("max_certain", "most in a window (certain)", "%d"),
                    ("over_windows_certain", "windows over the limit (certain)", "%d"),
                    ("max_by_arrival", "most in a window (origin arrival)", "%d"),
                    ("max_by_response", "most in a window (client response)", "%d"),
                    ("unmatched", "2xx not seen at the origin", "%d")],
        "ratios": [],
    },
    "rules": {
        "title": "9. tollgate with 5 [[rules]] (2 matching) vs its tier only, fixed rate, 1,000 keys",
        "metrics": [("rps", "req/s", "%.0f"), ("cpu_us_per_req", "CPU µs/req", "%.2f"),
                    ("p99_us", "p99 µs", "%.0f"), ("errors", "errors", "%d")],
        "ratios": [("cpu_us_per_req", "tollgate-rules", ["tollgate-tier"])],
    },
    "scenarios": {
        "title": "8. The seed's scenarios, scaled: admitted per tier vs the exact rule's expectation",
        "metrics": [("sent", "sent", "%d"), ("admitted", "admitted", "%d"),
                    ("expected_admitted", "expected admitted", "%d"),
                    ("admitted_vs_expected", "admitted / expected", "%.3f"),
                    ("denied", "denied", "%d"), ("errors", "errors", "%d")],
        "ratios": [],
    },
}

# A case without an entry above (a new bench/cases/NAME.sh) is shown with the common metrics
# its records have, and no ratios.
GENERIC = [("rps", "req/s", "%.0f"), ("cpu_us_per_req", "CPU µs/req", "%.2f"),
           ("p50_us", "p50 µs", "%.0f"), ("p99_us", "p99 µs", "%.0f"),
           ("proxy_core_util", "proxy core busy", "pct"), ("sent", "sent", "%d"),
           ("admitted", "admitted", "%d"), ("expected_admitted", "expected admitted", "%d"),
           ("admitted_vs_expected", "admitted / expected", "%.3f"), ("denied", "denied", "%d"),
           ("errors", "errors", "%d")]


def spec_of(case):
    """CASES[case], or the generic spec of a case this file does not know."""
    return CASES.get(case) or {"title": case, "metrics": GENERIC, "ratios": []}


# The targets: (label, case, metric, a, b, variant, bound, "le"/"ge", what it reads).
TARGETS = [
    ("CPU/req at saturation", "saturation", "cpu_us_per_req", "tollgate", "haproxy-seed", None, 0.5, "le"),
    ("CPU/req at 50% load", "fixed-rate", "cpu_us_per_req", "tollgate", "haproxy-seed", "50%", 0.6, "le"),
    ("CPU/req at 25% load", "fixed-rate", "cpu_us_per_req", "tollgate", "haproxy-seed", "25%", 0.6, "le"),
    ("p99 at 50% load", "fixed-rate", "p99_us", "tollgate", "haproxy-seed", "50%", 0.7, "le"),
    ("p99 at 25% load", "fixed-rate", "p99_us", "tollgate", "haproxy-seed", "25%", 0.7, "le"),
    ("HTTPS keep-alive CPU/req vs HAProxy+OpenSSL (seed)", "tls", "cpu_us_per_req", "tollgate", "haproxy-seed", "keepalive", 0.8, "le"),
    ("HTTPS keep-alive CPU/req vs HAProxy+OpenSSL (plain)", "tls", "cpu_us_per_req", "tollgate", "haproxy-plain", "keepalive", 0.8, "le"),
    ("full handshakes/s vs HAProxy", "tls", "rps", "tollgate", "haproxy-seed", "handshake-full", 1.0, "ge"),
    ("resumed handshakes/s vs HAProxy", "tls", "rps", "tollgate", "haproxy-seed", "handshake-resumed", 1.0, "ge"),
    ("64 MiB GET vs direct", "large", "gb_per_s", "tollgate", "direct", "GET", 0.9, "ge"),
    ("64 MiB PUT vs direct", "large", "gb_per_s", "tollgate", "direct", "PUT", 0.9, "ge"),
    ("2 workers vs 1: CPU/req at 50% load", "workers", "cpu_us_per_req", "tollgate-2w", "tollgate-1w", "50%", 1.15, "le"),
    ("2 workers vs 1: CPU/req at 25% load", "workers", "cpu_us_per_req", "tollgate-2w", "tollgate-1w", "25%", 1.15, "le"),
    ("5 rules (2 matching) vs one tier: CPU/req", "rules", "cpu_us_per_req", "tollgate-rules", "tollgate-tier", None, 1.15, "le"),
]


def num(v):
    """v as a float when it is a finite number, else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def parse_value(v):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v, v)


# ---- one measurement ---------------------------------------------------------------------

def cmd_cpu(a):
    c0, k0, c1, k1 = int(a[0]), int(a[1]), int(a[3]), int(a[4])
    t0, t1, tck = float(a[2]), float(a[5]), int(a[6])
    wall = max(t1 - t0, 1e-9)
    cpu, core = (c1 - c0) / tck, (k1 - k0) / tck
    print(json.dumps({"proxy_cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
                      "proxy_core_util": round(cpu / wall, 4),
                      "foreign_cpu_on_proxy_core": round(max(core - cpu, 0.0) / wall, 4),
                      "attempts": int(a[7]) if len(a) > 7 else 1}))


def from_loadgen(lg):
    """The record fields a loadgen bench JSON gives."""
    classes = lg.get("status_classes", [0] * 6)
    lat = lg.get("latency_ms", {})
    elapsed = lg.get("elapsed_s") or lg.get("duration_s") or 0
    r = {"requests": lg["requests"], "rps": round(lg["rps"], 1), "elapsed_s": round(elapsed, 3),
         "ok": classes[2], "non_2xx": sum(classes) - classes[2],
         "transport_errors": lg.get("transport_errors", 0), "timeouts": lg.get("timeouts", 0),
         "dropped": lg.get("dropped", 0), "late": lg.get("late", 0),
         "bytes_in": lg.get("bytes_in", 0), "bytes_out": lg.get("bytes_out", 0),
         "client_cpu_s": lg.get("client_cpu_s"), "connections_opened": lg.get("connections_opened")}
    for k in ("p50", "p90", "p99", "p999", "max"):
        if k in lat:
            r[k + "_us"] = round(lat[k] * 1000.0, 1)
    if lg.get("send_lag_ms"):
        r["send_lag_p99_us"] = round(lg["send_lag_ms"]["p99"] * 1000.0, 1)
    r["errors"] = r["non_2xx"] + r["transport_errors"] + r["timeouts"] + r["dropped"]
    if elapsed and r["client_cpu_s"] is not None:
        r["client_util"] = round(r["client_cpu_s"] / elapsed, 3)
    return r


def derive(r):
    """Per-request and per-GB figures from the counts and the CPU."""
    cpu, req = num(r.get("proxy_cpu_s")), num(r.get("requests"))
    if cpu is not None and req:
        r["cpu_us_per_req"] = round(cpu * 1e6 / req, 3)
    moved = (r.get("bytes_in") or 0) + (r.get("bytes_out") or 0)
    if moved >= 1e8 and r.get("elapsed_s"):
        r["gb_per_s"] = round(moved / r["elapsed_s"] / 1e9, 4)
        if cpu is not None:
            r["cpu_s_per_gb"] = round(cpu / (moved / 1e9), 4)
    return r


def progress_line(r):
    parts = ["[round %s] %-6s %-13s %-18s" % (r.get("round"), r["case"][:6], r["system"],
                                             r.get("variant", ""))]
    for k, fmt in (("rps", "%.0f req/s"), ("cpu_us_per_req", "%.2f µs CPU/req"),
                   ("p99_us", "p99 %.0f µs"), ("gb_per_s", "%.3f GB/s"),
                   ("proxy_core_util", "core %.0f%%"), ("errors", "errors %d")):
        v = num(r.get(k))
        if v is not None:
            parts.append(fmt % (v * 100 if k == "proxy_core_util" else v))
    return "  ".join(parts)


def cmd_record(argv):
    p = argparse.ArgumentParser(prog="report.py record")
    p.add_argument("--case", required=True)
    p.add_argument("--system", required=True)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--variant", default="")
    p.add_argument("--load")
    p.add_argument("--cpu")
    p.add_argument("--set", action="append", default=[])
    a = p.parse_args(argv)
    r = {"case": a.case, "system": a.system, "round": a.round, "variant": a.variant}
    if a.load:
        r.update(from_loadgen(json.load(open(a.load))))
    if a.cpu:
        r.update(json.load(open(a.cpu)))
    for kv in a.set:
        k, v = kv.split("=", 1)
        r[k] = parse_value(v)
    r["loadavg"] = open("/proc/loadavg").read().split()[0]
    derive(r)
    print(json.dumps(r))
    print(progress_line(r), file=sys.stderr)


def cmd_wrkshape(argv):
    lg = json.load(open(argv[0]))
    r = from_loadgen(lg)
    lat = lg["latency_ms"]
    print(json.dumps({
        "duration_us": int(r["elapsed_s"] * 1e6), "requests": r["requests"],
        "bytes": r["bytes_in"],
        "errors": {"connect": 0, "read": r["transport_errors"], "write": 0,
                   "status": r["non_2xx"], "timeout": r["timeouts"]},
        "status_4xx": lg.get("status_classes", [0] * 6)[4],
        "latency_us": {k: int(lat[k] * 1000) for k in ("p50", "p90", "p99", "p999", "max")} |
                      {"mean": lat["mean"] * 1000}}))


def cmd_import_overhead(argv):
    """--refusals: 4xx answers are the refusals measured (`refused_share`), not errors."""
    doc = json.load(open(argv[0]))
    case = argv[argv.index("--case") + 1]
    refusals = "--refusals" in argv
    for run in doc["runs"]:
        refused = (run.get("status_4xx") or 0) if refusals else 0
        errors = run["non_2xx_3xx"] - refused + sum(run["socket_errors"].values())
        r = {"case": case, "system": run["system"], "round": run["round"], "variant": "",
             "requests": run["requests"], "rps": run["rps"], "elapsed_s": run["wrk_duration_s"],
             "proxy_cpu_s": run["proxy_cpu_s"], "wall_s": run["wall_s"],
             "proxy_core_util": run["proxy_core_util"],
             "foreign_cpu_on_proxy_core": run["foreign_cpu_on_proxy_core"],
             "p50_us": run["latency_us"]["p50"], "p99_us": run["latency_us"]["p99"],
             "errors": errors, "loadavg": run["loadavg_after"].split()[0]}
        if refusals:
            r["refused_share"] = round(refused / run["requests"], 4) if run["requests"] else None
        print(json.dumps(derive(r)))


def cmd_import_memory(argv):
    doc = json.load(open(argv[0]))
    case = argv[argv.index("--case") + 1]
    for run in doc["runs"]:
        r = {"case": case, "system": run["system"], "round": run.get("round", 1),
             "variant": "%d keys" % run["keys"], "keys": run["keys"],
             "bytes_per_key": run["bytes_per_key"], "beyond_key": run["beyond_key"],
             "tracked": run["tracked_after"], "fill_requests": run["requests"],
             "pss_before_mib": round(run["pss_before_kib"] / 1024, 1)}
        for k, v in (run.get("rps_run") or {}).items():
            r.setdefault(k, v)
        print(json.dumps(derive(r)))


def cmd_scenario(argv):
    p = argparse.ArgumentParser(prog="report.py scenario")
    p.add_argument("report")
    p.add_argument("--system", required=True)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--variant", required=True)
    a = p.parse_args(argv)
    rep = json.load(open(a.report))
    for t in rep["tiers"]:
        exp = t.get("expected") or {}
        r = {"case": "scenarios", "system": a.system, "round": a.round,
             "variant": "%s/%s" % (a.variant, t["name"]), "sent": t["sent"],
             "admitted": t["admitted"], "denied": t["denied"], "errors": t["errors"],
             "expected_admitted": exp.get("admitted"), "expected_denied": exp.get("denied"),
             "valid": rep["valid"], "accuracy_pass": rep["accuracy_pass"]}
        if exp.get("admitted"):
            r["admitted_vs_expected"] = round(t["admitted"] / exp["admitted"], 4)
        print(json.dumps(r))
        print(progress_line(r) + "  admitted %d, expected %s" % (t["admitted"], exp.get("admitted")),
              file=sys.stderr)


# ---- tables, ratios, headline --------------------------------------------------------------

def load_records(paths):
    out = []
    for p in paths:
        for line in open(p):
            if line.strip():
                out.append(json.loads(line))
    return out


def summarise(case, recs):
    """Median of every shown metric per (variant, system), in order of first appearance."""
    spec, rows = spec_of(case), []
    keys = []
    for r in recs:
        if "skipped" not in r and (r["variant"], r["system"]) not in keys:
            keys.append((r["variant"], r["system"]))
    for variant, system in keys:
        rs = [r for r in recs if r["variant"] == variant and r["system"] == system and "skipped" not in r]
        row = {"variant": variant, "system": system, "rounds": len(rs)}
        for m, _, _ in spec["metrics"]:
            vals = [num(r.get(m)) for r in rs]
            vals = [v for v in vals if v is not None]
            if vals:
                row[m] = round(statistics.median(vals), 4)
                if len(vals) > 1:
                    row[m + "_range"] = [round(min(vals), 4), round(max(vals), 4)]
            elif rs and m in rs[0]:
                row[m] = rs[0][m]
        rows.append(row)
    return rows


def same_round_ratios(case, recs):
    by = {}
    for r in recs:
        if "skipped" not in r:
            by[(r["variant"], r["system"], r["round"])] = r
    variants = []
    for r in recs:
        if r["variant"] not in variants:
            variants.append(r["variant"])
    rounds = sorted({r["round"] for r in recs})
    out = []
    for metric, a, bs in spec_of(case)["ratios"]:
        for b in bs:
            for v in variants:
                per = []
                for k in rounds:
                    x, y = by.get((v, a, k), {}).get(metric), by.get((v, b, k), {}).get(metric)
                    if num(x) is not None and num(y):
                        per.append(x / y)
                if per:
                    out.append({"metric": metric, "a": a, "b": b, "variant": v,
                                "per_round": [round(x, 3) for x in per],
                                "median": round(statistics.median(per), 3)})
    return out


def headline(cases):
    out = []
    for label, case, metric, a, b, variant, bound, sense in TARGETS:
        rs = [q for q in cases.get(case, {}).get("ratios", [])
              if q["metric"] == metric and q["a"] == a and q["b"] == b and
              (variant is None or q["variant"].startswith(variant))]
        if not rs:
            continue
        q = rs[0]
        ok = q["median"] <= bound if sense == "le" else q["median"] >= bound
        out.append({"label": label, "case": case, "metric": metric, "a": a, "b": b,
                    "variant": q["variant"], "ratio": q["median"], "per_round": q["per_round"],
                    "target": ("≤ %g" if sense == "le" else "≥ %g") % bound, "met": ok})
    # Accuracy: the target is tollgate's; each peer's figure follows it.
    acc = sorted(cases.get("accuracy", {}).get("summary", []), key=lambda r: r["system"] != "tollgate")
    for row in acc:
        if num(row.get("max_certain")) is not None:
            out.append({"label": "accuracy: %s never over the limit (certain)" % row["system"],
                        "case": "accuracy", "metric": "max_certain", "a": row["system"], "b": "limit",
                        "variant": row["variant"], "ratio": row["max_certain"],
                        "target": "≤ %d" % row["limit"],
                        "met": row["max_certain"] <= row["limit"]})
    return out


def fmt(v, f):
    if v is None:
        return "–"
    if f == "pct":
        return "%.0f%%" % (100 * v) if num(v) is not None else str(v)
    if f == "%s" or num(v) is None:
        return str(v)
    return f % v


def md_case(case, data):
    spec = spec_of(case)
    lines = ["## %s" % spec["title"], ""]
    if data.get("method"):
        lines += [data["method"], ""]
    cols = [m for m in spec["metrics"] if any(m[0] in r for r in data["summary"])]
    lines.append("| variant | system | " + " | ".join(c[1] for c in cols) + " |")
    lines.append("|---|---|" + "---:|" * len(cols))
    for r in data["summary"]:
        cells = []
        for m, _, f in cols:
            c = fmt(r.get(m), f)
            if m + "_range" in r and f not in ("pct", "%d", "%s"):
                c += " (%s–%s)" % (fmt(r[m + "_range"][0], f), fmt(r[m + "_range"][1], f))
            cells.append(c)
        lines.append("| %s | %s | %s |" % (r["variant"] or "–", r["system"], " | ".join(cells)))
    lines.append("")
    if data["ratios"]:
        lines += ["Same-round ratios (median; per round):", "",
                  "| metric | variant | ratio | median | per round |", "|---|---|---|---:|---|"]
        for q in data["ratios"]:
            lines.append("| %s | %s | %s / %s | %.3f | %s |" % (
                q["metric"], q["variant"] or "–", q["a"], q["b"], q["median"],
                " ".join("%.2f" % x for x in q["per_round"])))
        lines.append("")
    if data.get("skipped"):
        lines += ["Skipped: " + "; ".join(data["skipped"]) + ".", ""]
    return lines


def md_report(doc):
    m, p = doc["machine"], doc["params"]
    lines = ["# tollgate benchmarks, side by side", "",
             "Machine: %s, %d CPUs, %s, %s; git %s%s; host %s." % (
                 m.get("cpu_model"), m.get("nproc", 0), m.get("kernel"), m.get("memory", "?"),
                 m.get("git_rev"), " (dirty)" if m.get("git_dirty") else "", m.get("host")),
             "Tools: %s; %s; %s; %s." % (m.get("haproxy"), m.get("nginx"), m.get("openssl"), m.get("rustc")),
             "Run: %s; %s round(s); started %s, %.0f s; load average at start %s, at end %s; %s." % (
                 "quick" if p.get("quick") else "full", p.get("rounds"), p.get("started"),
                 p.get("elapsed_s", 0), m.get("loadavg_at_start"), p.get("loadavg_at_end"),
                 p.get("layout", "")), ""]
    if p.get("profiles"):
        lines += ["perf profiles (cpu-clock, self time per symbol) of each system at the highest "
                  "fixed load and of each proxy relaying large GETs: `%s`." % p["profiles"], ""]
    if doc["headline"]:
        lines += ["## Headline: same-run ratios against the issue's targets", "",
                  "| figure | ratio (median) | target | met | per round |", "|---|---:|---|---|---|"]
        for h in doc["headline"]:
            # accuracy's figure is a count (most admissions in one window), not a ratio
            f = "%d" if h["metric"] == "max_certain" else "%.3f"
            lines.append("| %s | %s | %s | %s | %s |" % (
                h["label"], fmt(h["ratio"], f), h["target"], "yes" if h["met"] else "**no**",
                " ".join("%.2f" % x for x in h.get("per_round", []))))
        lines.append("")
    for case in doc["cases"]:
        lines += md_case(case, doc["cases"][case])
    lines += ["Raw records (every round): the .json file beside this one.", ""]
    return "\n".join(lines)


def cmd_render(argv):
    p = argparse.ArgumentParser(prog="report.py render")
    p.add_argument("--records", nargs="+", required=True)
    p.add_argument("--machine", required=True)
    p.add_argument("--params", required=True)
    p.add_argument("--methods", help="JSON {case: method text}")
    p.add_argument("--out")
    a = p.parse_args(argv)
    recs = load_records(a.records)
    methods = json.load(open(a.methods)) if a.methods else {}
    cases = {}
    order = list(CASES) + [r["case"] for r in recs if r["case"] not in CASES]
    for case in dict.fromkeys(order):
        rs = [r for r in recs if r["case"] == case]
        if not rs:
            continue
        cases[case] = {"method": methods.get(case, ""), "summary": summarise(case, rs),
                       "ratios": same_round_ratios(case, rs),
                       "skipped": sorted({"%s: %s" % (r["system"], r["skipped"]) for r in rs if "skipped" in r}),
                       "records": rs}
    doc = {"format": "tollgate-bench", "version": 1, "machine": json.load(open(a.machine)),
           "params": json.load(open(a.params)), "cases": cases}
    doc["headline"] = headline(cases)
    md = md_report(doc)
    print(md)
    if a.out:
        json.dump(doc, open(a.out + ".json", "w"), indent=1)
        open(a.out + ".md", "w").write(md)
        print("saved %s.json and %s.md" % (a.out, a.out), file=sys.stderr)


# ---- the quick test's check ------------------------------------------------------------------

# Per case, the metrics every row of the quick check must have as numbers (beyond "two of the
# shown ones"): the figures the case exists for.
REQUIRED = {
    "accuracy": ["admitted", "max_certain", "over_windows_certain", "max_by_arrival",
                 "exact_admitted"],
    "scenarios": ["admitted", "expected_admitted", "admitted_vs_expected"],
    "refusals": ["cpu_us_per_req", "refused_share"],
}


def check_case(case, data, systems):
    """Problems of one case: missing systems, rows without numbers."""
    problems = []
    rows = data.get("summary", [])
    if not rows:
        return ["%s: no rows" % case]
    seen = {r["system"] for r in rows}
    for s in systems.get(case, []):
        if s not in seen:
            problems.append("%s: no row for %s" % (case, s))
    for r in rows:
        metrics = [m for m, _, f in spec_of(case)["metrics"] if f not in ("%s",)]
        have = [m for m in metrics if num(r.get(m)) is not None]
        if len(have) < 2:
            problems.append("%s/%s/%s: numbers missing (%s)" % (case, r["variant"], r["system"], have))
        missing = [m for m in REQUIRED.get(case, []) if num(r.get(m)) is None]
        if missing:
            problems.append("%s/%s/%s: no %s" % (case, r["variant"], r["system"], ", ".join(missing)))
    if case == "accuracy":
        problems += ["accuracy/%s: %d 2xx responses never seen at the origin" % (r["system"], r["unmatched"])
                     for r in rows if num(r.get("unmatched")) and r["unmatched"] > 0.05 * r.get("admitted", 0)]
    if case == "refusals":
        # The case measures refusals only if nearly every request was one.
        problems += ["refusals/%s: only %.1f%% of requests refused" % (r["system"], 100 * r["refused_share"])
                     for r in rows if num(r.get("refused_share")) is not None and r["refused_share"] < 0.9]
    if spec_of(case)["ratios"] and not data.get("ratios"):
        problems.append("%s: no same-round ratio" % case)
    return problems


def cmd_check(argv):
    doc = json.load(open(argv[0]))
    if "--cases" in argv:
        cases = argv[argv.index("--cases") + 1].split(",")
    else:
        cases = doc.get("params", {}).get("cases", [])
    peers = ["tollgate", "haproxy-seed", "haproxy-plain", "nginx-limit"]
    systems = {c: peers for c in cases}
    systems.update({"large": peers + ["direct"], "many-keys": ["tollgate", "haproxy-seed", "nginx-limit"],
                    "refusals": ["tollgate", "haproxy-seed", "nginx-limit"],
                    "accuracy": ["tollgate", "haproxy-seed", "nginx-limit"],
                    "workers": ["tollgate-1w", "tollgate-2w"],
                    "rules": ["tollgate-tier", "tollgate-rules"]})
    problems = []
    for c in cases:
        if c not in doc.get("cases", {}):
            problems.append("%s: missing" % c)
        else:
            problems += check_case(c, doc["cases"][c], systems)
    # Every case with a target has its headline figure (tollgate's accuracy is one).
    heads = {h["case"] for h in doc.get("headline", [])}
    for c in dict.fromkeys([t[1] for t in TARGETS] + ["accuracy"]):
        if c in cases and c not in heads:
            problems.append("%s: no headline figure" % c)
    for pr in problems:
        print("check: " + pr, file=sys.stderr)
    print("check: %d case(s), %d problem(s)" % (len(cases), len(problems)), file=sys.stderr)
    sys.exit(1 if problems else 0)


def main():
    cmd, argv = sys.argv[1], sys.argv[2:]
    {"cpu": cmd_cpu, "record": cmd_record, "import-overhead": cmd_import_overhead,
     "import-memory": cmd_import_memory, "scenario": cmd_scenario, "wrkshape": cmd_wrkshape,
     "render": cmd_render, "check": cmd_check}[cmd](argv)


if __name__ == "__main__":
    main()
