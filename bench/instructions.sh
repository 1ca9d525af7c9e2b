#!/usr/bin/env bash
# bench/instructions.sh — instructions per proxied request, counted by callgrind: a figure that
# a noisy machine cannot move (timings can; instruction counts do not depend on what else runs).
#
# For each tollgate system (tollgate; tollgate-base = the same config on $TOLLGATE_BASE_BIN, for a
# change's before/after; tollgate-plain = rate limiting off) and each mode (1key, 1000keys): start
# it under `valgrind --tool=callgrind` with one worker, warm up with wrk, zero the counters, drive
# it with wrk (closed loop, keep-alive, -c CONNECTIONS) through to an nginx `return 200` origin,
# dump the counters and divide the instructions (Ir, every thread of the process) by wrk's
# completed requests. Under valgrind the proxy runs ~50× slower, so the load is light and each
# request goes mostly alone through the event loop: the count is the per-request path cost, with
# little batching.
#
# Usage: bench/instructions.sh [--systems a,b,..] [--modes 1key,1000keys] [--duration S]
#          [--connections C] [--rounds N] [--out-dir DIR] [--no-save]
# Defaults: tollgate (and tollgate-base when TOLLGATE_BASE_BIN is set), both modes, 8 s, 8
# connections, 1 round; results to bench/results/<date>-instructions.{md,json}.

set -euo pipefail
source "$(dirname "$0")/lib.sh"

SYSTEMS="tollgate${TOLLGATE_BASE_BIN:+,tollgate-base}"
MODES="1key,1000keys"
DURATION=8
CONNECTIONS=8
ROUNDS=1
OUT_DIR="$BENCH_DIR/results"
SAVE=1
usage() { sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
    case "$1" in
    --systems) SYSTEMS="$2"; shift 2 ;;
    --modes) MODES="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --out-dir) OUT_DIR="$2"; shift 2 ;;
    --no-save) SAVE=0; shift ;;
    -h | --help) usage 0 ;;
    *) bench_log "unknown option $1"; usage 1 ;;
    esac
done
IFS=, read -r -a SYS_LIST <<<"$SYSTEMS"
IFS=, read -r -a MODE_LIST <<<"$MODES"
bench_require valgrind callgrind_control wrk nginx curl python3
tollgate_bin >/dev/null || bench_die "no tollgate build (cargo build --release)"
bench_setup
gen_keys 1000 "$RUN_DIR/keys.txt"
write_maps "$RUN_DIR/keys.txt"
MACHINE="$(machine_json)"
ORIGIN_PORT="$(free_port)"
start_origin "$ORIGIN_PORT" 1
RUNS="$RUN_DIR/runs.jsonl"
: >"$RUNS"
export BENCH_START_TIMEOUT=60

# wrk_requests PORT MODE SECONDS → completed requests on stdout.
wrk_requests() {
    local n=1
    [[ "$2" == 1key ]] || n=1000
    taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${3}s" --timeout 10s -s "$BENCH_DIR/wrk/keys.lua" \
        "http://127.0.0.1:$1/" -- "$RUN_DIR/keys.txt" "$n" >"$RUN_DIR/wrk.out" 2>&1
    sed -n 's/^WRKJSON //p' "$RUN_DIR/wrk.out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])'
}

# dumped_ir FILE → the Ir total of a callgrind dump.
dumped_ir() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }

for ((round = 1; round <= ROUNDS; round++)); do
    for sys in "${SYS_LIST[@]}"; do
        for mode in "${MODE_LIST[@]}"; do
            port="$(free_port)"
            export BENCH_WRAP="valgrind --tool=callgrind --callgrind-out-file=$RUN_DIR/cg.$sys.$mode.%p"
            set +e
            start_system "$sys" "$port" 0 "$ORIGIN_PORT" open
            rc=$?
            set -e
            if ((rc != 0)); then bench_log "$sys: cannot start (rc $rc): skipped"; continue; fi
            wrk_requests "$port" "$mode" 2 >/dev/null
            callgrind_control -z "$SYS_PID" >/dev/null
            reqs="$(wrk_requests "$port" "$mode" "$DURATION")"
            before="$(ls "$RUN_DIR"/cg."$sys"."$mode".* 2>/dev/null | wc -l)"
            callgrind_control -d "$SYS_PID" >/dev/null
            dump="$(ls -t "$RUN_DIR"/cg."$sys"."$mode".* | head -n 1)"
            ((before < $(ls "$RUN_DIR"/cg."$sys"."$mode".* | wc -l))) || bench_die "no callgrind dump"
            ir="$(dumped_ir "$dump")"
            bench_stop_pid "$SYS_PID"
            python3 -c 'import json,sys; s,m,r,req,ir=sys.argv[1:]; print(json.dumps({"system":s,"mode":m,"round":int(r),"requests":int(req),"instructions":int(ir),"instructions_per_req":round(int(ir)/int(req)) if int(req) else None}))' \
                "$sys" "$mode" "$round" "$reqs" "$ir" | tee -a "$RUNS" >&2
        done
    done
done

unset BENCH_WRAP
mkdir -p "$OUT_DIR"
STEM="$OUT_DIR/$(date +%Y-%m-%d-%H%M%S)-instructions"
python3 - "$RUNS" "$MACHINE" "$STEM" "$SAVE" "$DURATION" "$CONNECTIONS" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
machine, stem, save = json.loads(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
rows = {}
for r in runs:
    rows.setdefault((r["system"], r["mode"]), []).append(r["instructions_per_req"])
lines = ["# Instructions per request (callgrind)", "",
         "Machine: %s, %d CPUs, %s; git %s%s." % (machine["cpu_model"], machine["nproc"], machine["kernel"],
                                                  machine["git_rev"], " (dirty)" if machine["git_dirty"] else ""),
         "wrk -c%s for %s s per measurement, one tollgate worker under callgrind, every thread counted." % (sys.argv[6], sys.argv[5]),
         "", "| system | mode | instructions / request (median) | rounds |", "|---|---|---:|---|"]
for (s, m), v in sorted(rows.items()):
    lines.append("| %s | %s | %d | %s |" % (s, m, statistics.median(v), ", ".join(map(str, v))))
base = {m: statistics.median(v) for (s, m), v in rows.items() if s == "tollgate-base"}
if base:
    lines += ["", "| mode | tollgate / tollgate-base |", "|---|---:|"]
    for (s, m), v in sorted(rows.items()):
        if s == "tollgate" and m in base:
            lines.append("| %s | %.3f |" % (m, statistics.median(v) / base[m]))
text = "\n".join(lines) + "\n"
print(text)
if save:
    open(stem + ".md", "w").write(text)
    json.dump({"machine": machine, "runs": runs}, open(stem + ".json", "w"), indent=1)
    print("saved %s.{md,json}" % stem, file=sys.stderr)
PY
