#!/usr/bin/env bash
# bench/run.sh — the benchmark comparison in one command: tollgate, HAProxy with the seed's
# configuration (haproxy-seed), plain HAProxy and nginx `limit_req` side by side on this machine,
# every case (bench/cases/NAME.sh, each runnable alone), results with the machine in
# bench/results/<date>-<host>.{json,md}.
#
# Cases, in order (ALL_CASES below; the table's method text is each script's header):
#   saturation  1. req/s and CPU µs/request at saturation, 1 worker, 1,000 keys
#   fixed-rate  2. CPU µs/request and p50/p99/p99.9 at 25% and 50% of haproxy-seed's saturation
#               (measured by case 1 of the same run), open loop
#   tls         3. HTTPS keep-alive CPU/request, full and resumed handshakes per second
#   large       4. 64 MiB GET and PUT: GB/s and CPU per GB, against direct to the origin
#   many-keys   5. 100k and 1M tracked keys: memory per key, req/s over all of them
#   workers     6. tollgate 2 workers vs 1 (CPU/request at fixed rate)
#   accuracy    7. bursts of 30 every 0.9 s at a 10/s key: most admitted in any window, by
#               arrival at the origin (the certain criterion)
#   scenarios   8. the seed's burst and mixed scenarios, scaled: admitted per tier vs expected
#   rules       9. tollgate only: CPU µs/request with 5 [[rules]] (2 matching) vs one tier
#   refusals   10. CPU µs/request when nearly every request is refused (one key far over its
#               limit: a client that ignores 429s)
# Method common to all: each proxy runs one worker (HAProxy nbthread 1, nginx worker_processes
# 1, tollgate --workers 1) pinned alone on the proxy core (CPU 0); loadgen and the origin (nginx
# `return 200`) share the load core (CPU 1); systems are started fresh for each case and round
# and alternate in a rotated order round by round; CPU is the proxy's utime+stime from /proc;
# ratios are taken between systems of the same round, then their median over rounds.
#
# Usage: bench/run.sh [--quick] [--rounds N] [--duration S] [--cases a,b,..] [--systems a,b,..]
#          [--out-dir DIR] [--wait-idle MAX_S] [--max-foreign PCT] [--no-install] [--no-build]
#   --quick      1 round, 1 s measurements, fewer keys, 4 MiB objects, short scenarios: a few
#                minutes at most; results to /tmp/tollgate-bench-quick unless --out-dir
#   --wait-idle  wait up to MAX_S seconds for the machine to go below 15% busy first
#   --max-foreign  repeat a measurement (up to 2 times, after waiting for quiet) during which
#                other processes took more than PCT% of the proxy core (a shared machine)
# Defaults: 3 rounds of 10 s, every case and system; ≈35–40 min on a 2-core VM. Peers are
# installed from the distribution (bench/install-peers.sh) when missing, tollgate and loadgen
# built (cargo build --release) when missing. Every process started is killed by PID on exit.

set -euo pipefail
source "$(dirname "$0")/lib.sh"

QUICK=0 ROUNDS="" DURATION="" OUT_DIR="" WAIT_IDLE=0 INSTALL=1 BUILD=1
# The cases, in order: each NAME is bench/cases/NAME.sh. A new case is its script plus its name
# here (and, for its own options, a line in case_args below).
ALL_CASES="saturation,fixed-rate,tls,large,many-keys,workers,accuracy,scenarios,rules,refusals"
CASES="$ALL_CASES"
SYSTEMS="$ALL_SYSTEMS"
usage() { sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
    case "$1" in
    --quick) QUICK=1; shift ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --cases) CASES="$2"; shift 2 ;;
    --systems) SYSTEMS="$2"; shift 2 ;;
    --out-dir) OUT_DIR="$2"; shift 2 ;;
    --wait-idle) WAIT_IDLE="$2"; shift 2 ;;
    --max-foreign) export BENCH_MAX_FOREIGN="$2"; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) usage 0 ;;
    *) echo "unknown option: $1" >&2; usage 1 ;;
    esac
done
ROUNDS="${ROUNDS:-$((QUICK ? 1 : 3))}"
DURATION="${DURATION:-$((QUICK ? 1 : 10))}"
OUT_DIR="${OUT_DIR:-$( ((QUICK)) && echo /tmp/tollgate-bench-quick || echo "$BENCH_DIR/results")}"

# ---- what the run needs ---------------------------------------------------------------------
need_peers() {
    local c
    for c in haproxy nginx curl taskset python3 openssl lscpu; do
        command -v "$c" >/dev/null 2>&1 || return 0
    done
    return 1
}
if need_peers; then
    ((INSTALL)) || bench_die "peers missing and --no-install given (bench/install-peers.sh)"
    bench_log "installing the peers from the distribution's packages"
    "$BENCH_DIR/install-peers.sh"
fi
if ! tollgate_bin >/dev/null || ! loadgen_bin >/dev/null; then
    ((BUILD)) || bench_die "tollgate/loadgen not built and --no-build given"
    bench_log "building tollgate and loadgen (cargo build --release)"
    (cd "$REPO_DIR" && cargo build --release -p tollgate -p loadgen)
fi
bench_setup
if ((WAIT_IDLE > 0)); then wait_idle "$WAIT_IDLE" || true; fi

# ---- the cases --------------------------------------------------------------------------------
RECORDS="$RUN_DIR/records.jsonl"
: >"$RECORDS"
STARTED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
T0="$(date +%s)"
BUSY0="$(machine_busy_pct)"
machine_json >"$RUN_DIR/machine.json"
declare -A CASE_SECONDS=()

# systems_for CASE → the --systems of CASE: workers compares tollgate with itself (none), the
# limiter-only cases drop the systems that do not limit.
systems_for() {
    case "$1" in
    workers) ;;
    accuracy | many-keys) tr , '\n' <<<"$SYSTEMS" | grep -v -x -e haproxy-plain -e tollgate-plain | paste -sd, ;;
    *) echo "$SYSTEMS" ;;
    esac
}

# run_case NAME ARGS...: bench/cases/NAME.sh with the common options, records into RECORDS.
run_case() {
    local name="$1" t sys pid
    shift
    sys="$(systems_for "$name")"
    local -a common=(--out "$RECORDS" --rounds "$ROUNDS" --duration "$DURATION" ${sys:+--systems "$sys"})
    ((QUICK)) && common+=(--quick)
    t="$(date +%s)"
    bench_log "=== case $name (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    # In the background and tracked, so that stopping run.sh stops the case (and its processes).
    "$BENCH_DIR/cases/$name.sh" "${common[@]}" "$@" &
    pid=$!
    bench_track_pid "$pid"
    wait "$pid" || bench_die "case $name failed"
    bench_stop_pid "$pid"
    CASE_SECONDS[$name]=$(($(date +%s) - t))
}

# seed_rps → haproxy-seed's median saturation req/s from case 1's records (empty if none).
seed_rps() {
    python3 - "$RECORDS" <<'PY'
import json, statistics, sys
v = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
v = [r["rps"] for r in v if r["case"] == "saturation" and r["system"] == "haproxy-seed" and "rps" in r]
print(round(statistics.median(v)) if v else "")
PY
}

# case_args NAME → the options run.sh adds to case NAME beyond the common ones, one a line:
# the reference rate SAT (haproxy-seed's saturation, measured by case 1 of this run; without
# it the case measures it first) for the fixed-rate cases; in a full run, perf profiles of each
# system at the highest fixed load and of each proxy relaying large GETs.
case_args() {
    case "$1" in
    fixed-rate | workers) [[ -z "$SAT" ]] || printf '%s\n' --sat-rps "$SAT" ;;
    esac
    case "$1" in
    fixed-rate | large) ((QUICK)) || printf '%s\n' --profile-dir "$RUN_DIR/profiles" ;;
    esac
}

IFS=, read -r -a CASE_LIST <<<"$CASES"
for c in "${CASE_LIST[@]}"; do
    [[ -x "$BENCH_DIR/cases/$c.sh" ]] || bench_die "unknown case $c (no bench/cases/$c.sh)"
done
SAT=""
for c in "${CASE_LIST[@]}"; do
    # SAT is set here, not in case_args (a subshell): seed_rps reads case 1's records.
    if [[ "$c" == fixed-rate || "$c" == workers ]] && [[ -z "$SAT" ]]; then SAT="$(seed_rps)"; fi
    mapfile -t extra < <(case_args "$c")
    run_case "$c" "${extra[@]+"${extra[@]}"}"
done

# ---- the report -------------------------------------------------------------------------------
python3 - "$RUN_DIR/params.json" "$QUICK" "$ROUNDS" "$DURATION" "$CASES" "$SYSTEMS" "$STARTED" \
    "$(($(date +%s) - T0))" "$(cat /proc/loadavg)" "$BUSY0" "$SAT" "$(uptime)" \
    "$(declare -p CASE_SECONDS)" "${BENCH_MAX_FOREIGN:-}" <<'PY'
import json, re, sys
a = sys.argv[1:]
secs = dict(re.findall(r'\[([\w-]+)\]="(\d+)"', a[12]))
json.dump({"quick": a[1] == "1", "rounds": int(a[2]), "duration_s": float(a[3]),
           "cases": a[4].split(","), "systems": a[5].split(","), "started": a[6],
           "elapsed_s": int(a[7]), "loadavg_at_end": a[8], "machine_busy_pct_at_start": int(a[9]),
           "haproxy_seed_saturation_rps": int(a[10]) if a[10] else None, "uptime_at_end": a[11],
           "case_seconds": {k: int(v) for k, v in secs.items()},
           "layout": "proxy alone on CPU %s, loadgen + origin on CPU %s" % (0, 1),
           "max_foreign_pct": int(a[13]) if a[13] else 0},
          open(a[0], "w"), indent=1)
PY
# Each case's method: its script's header, as written there.
python3 - "$RUN_DIR/methods.json" "$BENCH_DIR/cases" <<'PY'
import json, os, sys
out = {}
for f in sorted(os.listdir(sys.argv[2])):
    lines = []
    for line in open(os.path.join(sys.argv[2], f)).read().splitlines()[1:]:
        if not line.startswith("#") or line[2:].startswith("Usage:"):
            break
        lines.append(line[1:].strip())
    text = " ".join(lines).split(" — ", 1)[-1]
    out[f[:-3]] = " ".join(text.split())
json.dump(out, open(sys.argv[1], "w"))
PY
mkdir -p "$OUT_DIR"
STEM="$OUT_DIR/$(date +%Y-%m-%d)-$(hostname -s)"
[[ -e "$STEM.json" ]] && STEM="$OUT_DIR/$(date +%Y-%m-%d-%H%M%S)-$(hostname -s)"
if [[ -d "$RUN_DIR/profiles" ]]; then
    cp -r "$RUN_DIR/profiles" "$STEM-perf"
    python3 -c 'import json,sys; p=json.load(open(sys.argv[1])); p["profiles"]=sys.argv[2]; json.dump(p, open(sys.argv[1], "w"), indent=1)' \
        "$RUN_DIR/params.json" "$(basename "$STEM")-perf/"
fi
python3 "$BENCH_DIR/report.py" render --records "$RECORDS" --machine "$RUN_DIR/machine.json" \
    --params "$RUN_DIR/params.json" --methods "$RUN_DIR/methods.json" --out "$STEM"
echo "$STEM.json"
