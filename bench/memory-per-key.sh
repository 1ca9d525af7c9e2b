#!/usr/bin/env bash
# bench/memory-per-key.sh — memory each limiter spends per tracked API key, side by side.
#
# For each system (tollgate, haproxy-seed, nginx-limit) and each key style (`aws`: 20-byte
# AWS/MinIO-style ids, `garage`: 26-byte Garage ids): start it with one worker and the seed's
# limits (1 min and 1 s windows: entries outlive the run; each key sends a few requests, far
# below every tier's limit, so nothing is denied), warm it with one key (connections, buffers), read its memory, then send
# requests carrying N distinct SigV4 keys (loadgen, every key exactly --passes times), read its
# memory again. Memory = proportional set size (Pss, /proc/PID/smaps_rollup) summed over the
# process and its children, so nginx's shared zones are counted once.
#   bytes per key         (Pss after − Pss before) / N
#   beyond the key        bytes per key − key length
#   tracked               entries the system reports holding (tollgate /stats, HAProxy
#                         `show table`; nginx cannot tell — its zones are preallocated and
#                         pages are only counted once touched)
# N defaults to 100,000, the seed's table size (`size 100k`). --keys takes a list; for an N above
# 100,000 every system's table is sized to hold them all (tollgate table_cap, HAProxy stick-table
# size N + 10%, nginx zones big enough for a third of them each), so the figure is memory, not
# eviction. With --rps-duration S, the system is then driven for S seconds by `loadgen bench
# --keys N` (closed loop, 64 connections: every request for another of the N keys, the table as
# cold as it gets) and its req/s and CPU µs per request recorded. Requests are sent by loadgen
# (`--keys N --key-style STYLE`: the same keys as gen_keys).
#
# Usage: bench/memory-per-key.sh [--keys N[,N2..]] [--passes P] [--systems a,b]
#          [--styles aws,garage] [--rps-duration S] [--warmup 2s] [--proxy-core N] [--load-core N]
#          [--out-dir DIR] [--no-save] [--save-json PATH]
# Defaults: 100000 keys, 2 passes, every system, both styles, no req/s run, cores 0/1, results
# to bench/results/<date>-memory-per-key.{md,json} (--save-json: the JSON there instead). ≈2 min.
# Every process started is killed by PID on exit.

set -euo pipefail
source "$(dirname "$0")/lib.sh"

NKEYS=100000
PASSES=2
SYSTEMS="tollgate,haproxy-seed,nginx-limit"
STYLES="aws,garage"
PROXY_CORE=0
LOAD_CORE=1
OUT_DIR="$BENCH_DIR/results"
SAVE=1
RPS_DURATION=0
SAVE_JSON=""
WARM_S=2s

usage() { sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
    case "$1" in
    --keys) NKEYS="$2"; shift 2 ;;
    --passes) PASSES="$2"; shift 2 ;;
    --systems) SYSTEMS="$2"; shift 2 ;;
    --styles) STYLES="$2"; shift 2 ;;
    --proxy-core) PROXY_CORE="$2"; shift 2 ;;
    --load-core) LOAD_CORE="$2"; shift 2 ;;
    --out-dir) OUT_DIR="$2"; shift 2 ;;
    --no-save) SAVE=0; shift ;;
    --rps-duration) RPS_DURATION="$2"; shift 2 ;;
    --warmup) WARM_S="$2"; shift 2 ;;
    --save-json) SAVE_JSON="$2"; SAVE=0; shift 2 ;;
    -h | --help) usage 0 ;;
    *) echo "unknown option: $1" >&2; usage 2 ;;
    esac
done
IFS=, read -r -a KEY_COUNTS <<<"$NKEYS"
for n in "${KEY_COUNTS[@]}"; do
    [[ "$n" =~ ^[0-9]+$ ]] && ((n >= 1000)) || bench_die "--keys: numbers >= 1000"
done
[[ "$PASSES" =~ ^[0-9]+$ ]] && ((PASSES >= 1)) || bench_die "--passes must be >= 1"

bench_require haproxy nginx curl taskset python3
loadgen_bin >/dev/null || bench_die "no loadgen build (cargo build --release -p loadgen)"
bench_setup
NCPU="$(nproc)"
if ((NCPU < 2)); then PROXY_CORE=0 LOAD_CORE=0; fi
IFS=, read -r -a SYS_LIST <<<"$SYSTEMS"
IFS=, read -r -a STYLE_LIST <<<"$STYLES"
for st in "${STYLE_LIST[@]}"; do
    [[ "$st" == aws || "$st" == garage ]] || bench_die "unknown key style $st (aws, garage)"
done

# pss_kib PID: Pss of PID and its descendants, KiB.
pss_kib() {
    python3 - "$1" <<'PY'
import os, sys
def tree(pid):
    out = [pid]
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            kids = open("/proc/%d/task/%s/children" % (pid, tid)).read().split()
        except OSError:
            kids = []
        for k in kids:
            out += tree(int(k))
    return out
total = 0
for p in tree(int(sys.argv[1])):
    for line in open("/proc/%d/smaps_rollup" % p):
        if line.startswith("Pss:"):
            total += int(line.split()[1])
print(total)
PY
}

# tracked NAME: entries the system says it holds (or "n/a").
tracked() {
    case "$1" in
    tollgate)
        curl -s --max-time 5 "http://127.0.0.1:$BENCH_ADMIN_PORT/stats" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["table"]["entries"])'
        ;;
    haproxy-seed)
        python3 - "$BENCH_HAPROXY_SOCK" <<'PY'
import re, socket, sys
used = []
for t in ("api_key_rates_1m", "api_key_rates_1s"):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sys.argv[1])
    s.sendall(b"show table %s\n" % t.encode())
    first = b""
    while b"\n" not in first:
        chunk = s.recv(4096)
        if not chunk:
            break
        first += chunk
    s.close()
    m = re.search(rb"used:(\d+)", first)
    used.append(m.group(1).decode() if m else "?")
print("+".join(used))
PY
        ;;
    *) echo n/a ;;
    esac
}

MACHINE="$(machine_json)"
ORIGIN_PORT="$(free_port)"
start_origin "$ORIGIN_PORT" "$LOAD_CORE"
RUNS="$RUN_DIR/runs.jsonl"
: >"$RUNS"

# table_env N: size every system's table for N keys (above the seed's 100k only).
table_env() {
    local n="$1"
    unset BENCH_TABLE_SIZE BENCH_ZONE_SIZE
    ((n > 100000)) || return 0
    export BENCH_TABLE_SIZE=$((n + n / 10))
    # nginx: each key lives in one tier's two zones; ~200 bytes per state with slab rounding.
    export BENCH_ZONE_SIZE="$(((n / 3 * 200) / 1048576 + 16))m"
}

# rps_run SYSTEM PORT STYLE N → JSON of a closed-loop run over all N keys (or {} when off).
rps_run() {
    if ((RPS_DURATION == 0)); then echo '{}'; return; fi
    measure "$SYS_PID" "$PROXY_CORE" "$RUN_DIR/rps.cpu.json" \
        run_loadgen "$RUN_DIR/rps.json" "http://127.0.0.1:$2/bench/object" -c 64 \
        -d "${RPS_DURATION}s" --keys "$4" --key-style "$3"
    python3 - "$RUN_DIR/rps.json" "$RUN_DIR/rps.cpu.json" <<'PY'
import json, sys
lg, cpu = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
cls = lg["status_classes"]
print(json.dumps(dict(cpu, requests=lg["requests"], rps=round(lg["rps"], 1),
                      elapsed_s=round(lg["elapsed_s"], 3), p99_us=round(lg["latency_ms"]["p99"] * 1000, 1),
                      errors=sum(cls) - cls[2] + lg["transport_errors"] + lg["timeouts"])))
PY
}

# one_system SYSTEM STYLE N KEYLEN: memory per key (and req/s) of one system → a line in RUNS.
one_system() {
    local sys="$1" style="$2" n="$3" keylen="$4" port rc=0 before after t_before t_after sent rps
    port="$(free_port)"
    export BENCH_ADMIN_PORT BENCH_HAPROXY_SOCK
    BENCH_ADMIN_PORT="$(free_port)"
    BENCH_HAPROXY_SOCK="$RUN_DIR/haproxy.sock"
    # The seed's limits: windows of 1 min / 1 s, so entries outlive the run; each key sends
    # PASSES requests in a few seconds, far below every tier's limits (nothing denied).
    BENCH_START_TIMEOUT=120 start_system "$sys" "$port" "$PROXY_CORE" "$ORIGIN_PORT" seed || rc=$?
    if ((rc != 0)); then
        bench_log "$sys: did not start (rc $rc); skipped"
        return 0
    fi
    # Warm-up with one key: connections, buffers and allocator arenas exist before "before".
    run_loadgen "$RUN_DIR/warm.json" "http://127.0.0.1:$port/bench/object" -c 64 -d "$WARM_S" --keys 1
    before="$(pss_kib "$SYS_PID")"
    t_before="$(tracked "$sys")"
    # Every key exactly PASSES times (loadgen --requests), in key order.
    run_loadgen "$RUN_DIR/fill.json" "http://127.0.0.1:$port/bench/object" -c 64 -d 600s \
        --keys "$n" --key-style "$style" --requests "$((n * PASSES))"
    sent="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["status_classes"][2])' "$RUN_DIR/fill.json")"
    # tollgate's /stats are published by its cores periodically: let the last fill show.
    sleep 1
    after="$(pss_kib "$SYS_PID")"
    t_after="$(tracked "$sys")"
    rps="$(rps_run "$sys" "$port" "$style" "$n")"
    bench_stop_pid "$SYS_PID"
    rec="$(python3 - "$sys" "$style" "$keylen" "$n" "$before" "$after" "$t_before" "$t_after" "$sent" "$rps" <<'PY'
import json, sys
a = sys.argv[1:]
n, kl, before, after = int(a[3]), int(a[2]), int(a[4]), int(a[5])
per = (after - before) * 1024 / n
print(json.dumps({"system": a[0], "style": a[1], "key_len": kl, "keys": n,
                  "pss_before_kib": before, "pss_after_kib": after,
                  "bytes_per_key": round(per, 1), "beyond_key": round(per - kl, 1),
                  "tracked_before": a[6], "tracked_after": a[7], "requests": int(a[8]),
                  "rps_run": json.loads(a[9])}))
PY
)"
    echo "$rec" >>"$RUNS"
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); q=r["rps_run"]; print("%-13s %-7s %7d keys: Pss %7d -> %7d KiB  %6.1f B/key (%5.1f beyond the %d-byte key)  tracked %s -> %s%s" % (r["system"], r["style"], r["keys"], r["pss_before_kib"], r["pss_after_kib"], r["bytes_per_key"], r["beyond_key"], r["key_len"], r["tracked_before"], r["tracked_after"], "  then %.0f req/s, %.2f µs CPU/req" % (q["rps"], q["proxy_cpu_s"] * 1e6 / max(q["requests"], 1)) if q else ""), file=sys.stderr)' "$rec"
}

for style in "${STYLE_LIST[@]}"; do
    for n in "${KEY_COUNTS[@]}"; do
        gen_keys "$n" "$RUN_DIR/keys.txt" "$style"
        write_maps "$RUN_DIR/keys.txt"
        table_env "$n"
        keylen="$(awk 'NR == 1 {print length($1)}' "$RUN_DIR/keys.txt")"
        for sys in "${SYS_LIST[@]}"; do
            one_system "$sys" "$style" "$n" "$keylen"
        done
    done
done

DATE="$(date +%Y-%m-%d)"
STEM="$DATE-memory-per-key"
if ((SAVE)); then
    mkdir -p "$OUT_DIR"
    if [[ -e "$OUT_DIR/$STEM.json" ]]; then STEM="$DATE-$(date +%H%M%S)-memory-per-key"; fi
fi
python3 - "$RUNS" "$MACHINE" "$SAVE" "$OUT_DIR/$STEM" "$NKEYS" "$PASSES" "$SAVE_JSON" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
m, save, stem = json.loads(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
n, passes = sys.argv[5], int(sys.argv[6])
lines = ["# Memory per tracked key: %s distinct SigV4 keys, each sent %d times" % (n, passes), "",
         "Machine: %s, %d CPUs, %s; git %s%s. Tools: %s; %s; %s." % (
             m["cpu_model"], m["nproc"], m["kernel"], m["git_rev"], " (dirty)" if m["git_dirty"] else "",
             m["haproxy"], m["nginx"], m["rustc"]),
         "Memory = Pss of the process tree after minus before (one-key warm-up first); "
         "the seed's limits (1 min / 1 s windows), each key far below them: nothing denied.", "",
         "| system | keys | key style | key bytes | Pss before → after (KiB) | bytes per key | beyond the key | entries tracked | then req/s | CPU µs/req |",
         "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
for r in runs:
    q = r.get("rps_run") or {}
    lines.append("| %s | %d | %s | %d | %d → %d | %.1f | %.1f | %s | %s | %s |" % (
        r["system"], r["keys"], r["style"], r["key_len"], r["pss_before_kib"], r["pss_after_kib"],
        r["bytes_per_key"], r["beyond_key"], r["tracked_after"],
        "%.0f" % q["rps"] if q else "–",
        "%.2f" % (q["proxy_cpu_s"] * 1e6 / max(q["requests"], 1)) if q else "–"))
lines += ["", "HAProxy `entries tracked` = used entries of its two stick tables (1 min + 1 s); "
          "the 1 s table expires entries after 10 s, so it may hold fewer than the keys sent. "
          "nginx preallocates its `limit_req` zones; only touched pages count.", ""]
md = "\n".join(lines)
print(md)
if save:
    open(stem + ".md", "w").write(md)
    json.dump({"benchmark": "memory-per-key", "machine": m, "keys": n, "passes": passes,
               "runs": runs}, open(stem + ".json", "w"), indent=1)
    print("saved %s.md and %s.json" % (stem, stem), file=sys.stderr)
if sys.argv[7]:
    json.dump({"benchmark": "memory-per-key", "machine": m, "keys": n, "passes": passes,
               "runs": runs}, open(sys.argv[7], "w"), indent=1)
PY
