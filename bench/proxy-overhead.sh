#!/usr/bin/env bash
# bench/proxy-overhead.sh — what one proxy core costs per request: tollgate vs its peers.
#
# For each system under test (tollgate when built, tollgate-plain = tollgate with rate limiting
# off, haproxy-plain, haproxy-seed, nginx-limit; and, only when named in --systems,
# tollgate-log = tollgate with its access log written to a file; tollgate-base = tollgate's
# configuration on the baseline build $TOLLGATE_BASE_BIN, for a change's before/after ratio in
# one run):
# start it with ONE worker pinned to the proxy core, drive it with wrk (or `loadgen bench` with
# --client loadgen; closed loop, keep-alive, one thread, 64 connections) through to an nginx
# `return 200` origin, and measure
#   req/s                      wrk's completed requests / wrk's duration
#   CPU µs per request         (utime+stime of the proxy's processes, from /proc, after - before)
#                              × 1e6 / requests
#   proxy core utilisation     proxy CPU seconds / wall seconds (≈100% = the proxy was the limit)
#   foreign CPU on proxy core  busy time of the proxy core not spent by the proxy (noise gauge)
# in two modes: `1key` (every request carries the same SigV4 key) and `1000keys` (rotating
# through 1,000 SigV4 keys: the limiters keep 1,000 entries hot). Limits are set so high that
# nothing is denied: every system does its full accounting work and forwards every request.
# Rounds alternate the order of the systems; the table shows medians over rounds.
# --profile seed sets the seed's limits instead: with --modes 1key the one key is over its
# limit within the first second, so nearly every request is refused (429 or the system's deny
# status, counted under non-2xx): what one refusal costs, the load of a client that ignores
# its limit.
#
# Core layout (2 cores): the proxy alone on --proxy-core (0); wrk and the origin share
# --load-core (1). With the load generator and the origin on one core, req/s can be bounded by
# that core rather than by the proxy: read req/s together with the proxy core utilisation. The
# CPU µs per request figure does not depend on who is the bottleneck.
#
# Usage: bench/proxy-overhead.sh [--rounds N] [--duration S] [--connections C] [--warmup S]
#          [--systems a,b,..] [--modes 1key,1000keys] [--proxy-core N] [--load-core N]
#          [--out-dir DIR] [--no-save] [--wait-idle MAX_S] [--max-foreign PCT [--retries N]]
#          [--client wrk|loadgen] [--save-json PATH] [--profile open|seed]
# Defaults: 3 rounds, 10 s, 64 connections, 1 s warm-up, every system, both modes, cores 0/1,
# results to bench/results/<date>-proxy-overhead.{md,json}; --wait-idle waits up to MAX_S seconds
# for the machine to go below 15% busy before starting (default 0: start at once);
# --max-foreign PCT repeats a measurement (up to --retries, default 2, after waiting up to 60 s for
# the machine to go idle) when other processes took more than PCT% of the proxy core during it
# (default 0: off). Both only lengthen the run on a busy machine. Default run: ≈ 5.5 min with five
# systems. --client loadgen drives the load with `loadgen bench --keys N` instead of wrk (the
# same requests); --save-json PATH writes the JSON there instead of results/ (bench/run.sh).
# Every process started is killed by PID on exit.

set -euo pipefail
source "$(dirname "$0")/lib.sh"

ROUNDS=3
DURATION=10
CONNECTIONS=64
WARMUP=1
SYSTEMS="tollgate,tollgate-plain,haproxy-plain,haproxy-seed,nginx-limit"
MODES="1key,1000keys"
PROXY_CORE=0
LOAD_CORE=1
OUT_DIR="$BENCH_DIR/results"
SAVE=1
WAIT_IDLE=0
MAX_FOREIGN=0
RETRIES=2
CLIENT=wrk
SAVE_JSON=""
PROFILE=open

usage() { sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
    case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --systems) SYSTEMS="$2"; shift 2 ;;
    --modes) MODES="$2"; shift 2 ;;
    --proxy-core) PROXY_CORE="$2"; shift 2 ;;
    --load-core) LOAD_CORE="$2"; shift 2 ;;
    --out-dir) OUT_DIR="$2"; shift 2 ;;
    --no-save) SAVE=0; shift ;;
    --wait-idle) WAIT_IDLE="$2"; shift 2 ;;
    --max-foreign) MAX_FOREIGN="$2"; shift 2 ;;
    --retries) RETRIES="$2"; shift 2 ;;
    --client) CLIENT="$2"; shift 2 ;;
    --save-json) SAVE_JSON="$2"; SAVE=0; shift 2 ;;
    --profile)
        PROFILE="$2"
        [[ "$PROFILE" == open || "$PROFILE" == seed ]] || { echo "--profile: open or seed, not $PROFILE" >&2; exit 2; }
        shift 2
        ;;
    -h | --help) usage 0 ;;
    *) echo "unknown option: $1" >&2; usage 1 ;;
    esac
done

case "$CLIENT" in
wrk) bench_require haproxy nginx wrk taskset curl python3 lscpu ;;
loadgen)
    bench_require haproxy nginx taskset curl python3 lscpu
    loadgen_bin >/dev/null || bench_die "--client loadgen: no loadgen build (cargo build --release -p loadgen)"
    ;;
*) bench_die "--client wrk or loadgen" ;;
esac
bench_setup

NCPU="$(nproc)"
if ((NCPU < 2)); then
    bench_log "only $NCPU CPU: proxy, origin and wrk all share CPU 0 (figures are not comparable)"
    PROXY_CORE=0 LOAD_CORE=0
fi
IFS=, read -r -a SYS_LIST <<<"$SYSTEMS"
IFS=, read -r -a MODE_LIST <<<"$MODES"
for m in "${MODE_LIST[@]}"; do
    [[ "$m" == 1key || "$m" == 1000keys ]] || bench_die "unknown mode $m (1key, 1000keys)"
done

# Systems that cannot run here are dropped up front, with a line saying why.
RUNNABLE=()
SKIPPED=()
for s in "${SYS_LIST[@]}"; do
    if [[ "$s" == tollgate* ]] && ! tollgate_bin >/dev/null; then
        bench_log "$s: SKIPPED — no binary (looked for \$TOLLGATE_BIN, $REPO_DIR/target/release/tollgate, \$CARGO_TARGET_DIR/release/tollgate); build it with cargo build --release"
        SKIPPED+=("$s: not built")
        continue
    fi
    if [[ "$s" == tollgate-base && ! -x "${TOLLGATE_BASE_BIN:-}" ]]; then
        bench_log "$s: SKIPPED — set TOLLGATE_BASE_BIN to a baseline build of tollgate"
        SKIPPED+=("$s: no TOLLGATE_BASE_BIN")
        continue
    fi
    RUNNABLE+=("$s")
done
((${#RUNNABLE[@]})) || bench_die "nothing to run"

gen_keys 1000 "$RUN_DIR/keys.txt"
write_maps "$RUN_DIR/keys.txt"
if ((WAIT_IDLE > 0)); then wait_idle "$WAIT_IDLE" || true; fi
MACHINE="$(machine_json)"
ORIGIN_PORT="$(free_port)"
start_origin "$ORIGIN_PORT" "$LOAD_CORE"
bench_log "origin nginx pid $ORIGIN_PID on core $LOAD_CORE, port $ORIGIN_PORT"
bench_log "systems: ${RUNNABLE[*]}; modes: ${MODE_LIST[*]}; $ROUNDS rounds × ${DURATION}s; proxy core $PROXY_CORE, wrk+origin core $LOAD_CORE"

RUNS="$RUN_DIR/runs.jsonl"
: >"$RUNS"
FIRST_KEY="$(awk 'NR == 1 {print $1}' "$RUN_DIR/keys.txt")"

mode_nkeys() { [[ "$1" == 1key ]] && echo 1 || echo 1000; }

# run_wrk PORT MODE SECONDS: runs wrk (or loadgen) on the load core (in this shell, so its PID
# is tracked for the EXIT trap) and leaves wrk's WRKJSON payload (loadgen's result in that
# shape) in $RUN_DIR/wrk.json.
run_wrk() {
    local port="$1" mode="$2" secs="$3" pid
    if [[ "$CLIENT" == loadgen ]]; then
        run_loadgen "$RUN_DIR/loadgen.json" "http://127.0.0.1:$port/bench/object" -t 1 \
            -c "$CONNECTIONS" -d "${secs}s" --timeout 5s --keys "$(mode_nkeys "$mode")"
        python3 "$BENCH_DIR/report.py" wrkshape "$RUN_DIR/loadgen.json" >"$RUN_DIR/wrk.json"
        return 0
    fi
    taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNECTIONS" -d"${secs}s" --timeout 5s \
        -s "$BENCH_DIR/wrk/keys.lua" "http://127.0.0.1:$port/" \
        -- "$RUN_DIR/keys.txt" "$(mode_nkeys "$mode")" >"$RUN_DIR/wrk.out" 2>&1 &
    pid=$!
    bench_track_pid "$pid"
    wait "$pid" || true
    bench_stop_pid "$pid"
    if ! grep '^WRKJSON ' "$RUN_DIR/wrk.out" | sed 's/^WRKJSON //' >"$RUN_DIR/wrk.json" ||
        [[ ! -s "$RUN_DIR/wrk.json" ]]; then
        cat "$RUN_DIR/wrk.out" >&2
        bench_die "wrk printed no result"
    fi
}

# identity_check NAME PORT: does the system see the key wrk sends? (not for haproxy-plain)
identity_check() {
    local name="$1" port="$2" got
    [[ "$name" == haproxy-plain || "$name" == tollgate-plain ]] && { echo n/a; return; }
    got="$(curl -s -o /dev/null -D - -H "Authorization: AWS4-HMAC-SHA256 Credential=$FIRST_KEY/20261123/garage/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=00" \
        "http://127.0.0.1:$port/bench/object" | tr -d '\r' | awk 'tolower($1) == "x-api-key:" {print $2}')"
    if [[ "$got" == "$FIRST_KEY" ]]; then echo ok; else echo "mismatch:${got:-none}"; fi
}

for ((round = 1; round <= ROUNDS; round++)); do
    n=${#RUNNABLE[@]}
    for ((j = 0; j < n; j++)); do
        sys="${RUNNABLE[$(((j + round - 1) % n))]}"
        port="$(free_port)"
        set +e
        start_system "$sys" "$port" "$PROXY_CORE" "$ORIGIN_PORT" "$PROFILE"
        rc=$?
        set -e
        if ((rc != 0)); then
            bench_log "$sys: failed to start (round $round); skipped"
            SKIPPED+=("$sys round $round: failed to start")
            continue
        fi
        idc="$(identity_check "$sys" "$port")"
        [[ "$idc" == ok || "$idc" == n/a ]] || bench_log "$sys: key not identified ($idc)"
        if ((WARMUP > 0)); then run_wrk "$port" "${MODE_LIST[-1]}" "$WARMUP"; fi
        for mode in "${MODE_LIST[@]}"; do
            for ((attempt = 1; ; attempt++)); do
                read -r c0 k0 t0 < <(snapshot "$SYS_PID" "$PROXY_CORE")
                run_wrk "$port" "$mode" "$DURATION"
                w="$(cat "$RUN_DIR/wrk.json")"
                read -r c1 k1 t1 < <(snapshot "$SYS_PID" "$PROXY_CORE")
                rec="$(python3 - "$w" "$sys" "$mode" "$round" "$c0" "$c1" "$k0" "$k1" "$t0" "$t1" "$CLK_TCK" "$idc" "$(cat /proc/loadavg)" "$attempt" <<'PY'
import json, sys
w = json.loads(sys.argv[1])
sysname, mode, rnd = sys.argv[2], sys.argv[3], int(sys.argv[4])
c0, c1, k0, k1 = map(int, sys.argv[5:9])
t0, t1, tck = float(sys.argv[9]), float(sys.argv[10]), int(sys.argv[11])
wall = t1 - t0
cpu = (c1 - c0) / tck
core = (k1 - k0) / tck
req = w["requests"]
dur = w["duration_us"] / 1e6
print(json.dumps({
    "system": sysname, "mode": mode, "round": rnd, "requests": req,
    "wrk_duration_s": round(dur, 3), "wall_s": round(wall, 3),
    "rps": round(req / dur, 1),
    "proxy_cpu_s": round(cpu, 3),
    "cpu_us_per_req": round(cpu * 1e6 / req, 3) if req else None,
    "proxy_core_util": round(cpu / wall, 4),
    "foreign_cpu_on_proxy_core": round(max(core - cpu, 0.0) / wall, 4),
    "non_2xx_3xx": w["errors"]["status"],
    "status_4xx": w.get("status_4xx"),
    "socket_errors": {k: v for k, v in w["errors"].items() if k != "status"},
    "latency_us": w["latency_us"], "identity_check": sys.argv[12],
    "loadavg_after": sys.argv[13], "attempt": int(sys.argv[14]),
}))
PY
)"
                foreign="$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("[round %d] %-14s %-9s %9.0f req/s  %7.2f µs CPU/req  proxy core %3.0f%%  foreign %3.0f%%  non-2xx %d" % (r["round"], r["system"], r["mode"], r["rps"], r["cpu_us_per_req"] or 0, 100*r["proxy_core_util"], 100*r["foreign_cpu_on_proxy_core"], r["non_2xx_3xx"]), file=sys.stderr); print(int(100 * r["foreign_cpu_on_proxy_core"]))' "$rec")"
                if ((MAX_FOREIGN > 0 && foreign > MAX_FOREIGN && attempt <= RETRIES)); then
                    bench_log "foreign CPU ${foreign}% > ${MAX_FOREIGN}%: measurement discarded, repeating"
                    echo "$rec" >>"$RUN_DIR/discarded.jsonl"
                    wait_idle 60 || true
                    continue
                fi
                echo "$rec" >>"$RUNS"
                break
            done
        done
        bench_stop_pid "$SYS_PID"
        if [[ "$sys" == tollgate-log ]]; then
            # every request of the round (warm-ups included) should be there after the stop
            bench_log "tollgate-log: $(wc -l <"$RUN_DIR/access.log" 2>/dev/null || echo 0) access-log lines written"
            rm -f "$RUN_DIR/access.log"
        fi
    done
done

# ---- summary: medians per (system, mode), markdown + JSON --------------------------------
DATE="$(date +%Y-%m-%d)"
STEM="$DATE-proxy-overhead"
if ((SAVE)); then
    mkdir -p "$OUT_DIR"
    if [[ -e "$OUT_DIR/$STEM.json" ]]; then STEM="$DATE-$(date +%H%M%S)-proxy-overhead"; fi
fi
PARAMS="$(python3 -c 'import json,sys; print(json.dumps({"rounds":int(sys.argv[1]),"duration_s":int(sys.argv[2]),"connections":int(sys.argv[3]),"wrk_threads":1,"warmup_s":int(sys.argv[4]),"modes":sys.argv[5].split(","),"proxy_core":int(sys.argv[6]),"load_core":int(sys.argv[7]),"workers":1,"limits":"open (far above the load: nothing denied); tollgate-plain and haproxy-plain do not limit","max_foreign_pct":int(sys.argv[8]),"retries":int(sys.argv[9]),"skipped":sys.argv[10:]}))' \
    "$ROUNDS" "$DURATION" "$CONNECTIONS" "$WARMUP" "$MODES" "$PROXY_CORE" "$LOAD_CORE" "$MAX_FOREIGN" "$RETRIES" "${SKIPPED[@]+"${SKIPPED[@]}"}")"
PARAMS="$(python3 -c 'import json,sys; p=json.loads(sys.argv[1]); p["client"]=sys.argv[2]
if sys.argv[3] != "open": p["limits"] = "seed (the limits of the seed configuration: an over-limit key is refused)"
print(json.dumps(p))' "$PARAMS" "$CLIENT" "$PROFILE")"
touch "$RUN_DIR/discarded.jsonl"
python3 - "$RUNS" "$MACHINE" "$PARAMS" "$SAVE" "$OUT_DIR/$STEM" "$RUN_DIR/discarded.jsonl" "$SAVE_JSON" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
discarded = [json.loads(l) for l in open(sys.argv[6]) if l.strip()]
machine, params = json.loads(sys.argv[2]), json.loads(sys.argv[3])
save, stem = sys.argv[4] == "1", sys.argv[5]
order = []
for r in runs:
    if (r["system"], r["mode"]) not in order:
        order.append((r["system"], r["mode"]))
summary = []
for sysname, mode in order:
    rs = [r for r in runs if r["system"] == sysname and r["mode"] == mode]
    med = lambda k: statistics.median(r[k] for r in rs)
    summary.append({
        "system": sysname, "mode": mode, "rounds": len(rs),
        "rps_median": round(med("rps"), 1),
        "cpu_us_per_req_median": round(med("cpu_us_per_req"), 2),
        "cpu_us_per_req_min": round(min(r["cpu_us_per_req"] for r in rs), 2),
        "cpu_us_per_req_max": round(max(r["cpu_us_per_req"] for r in rs), 2),
        "proxy_core_util_median": round(med("proxy_core_util"), 3),
        "foreign_cpu_on_proxy_core_median": round(med("foreign_cpu_on_proxy_core"), 3),
        "non_2xx_3xx_total": sum(r["non_2xx_3xx"] for r in rs),
        "socket_errors_total": sum(sum(r["socket_errors"].values()) for r in rs),
        "wrk_p50_us_median": statistics.median(r["latency_us"]["p50"] for r in rs),
        "wrk_p99_us_median": statistics.median(r["latency_us"]["p99"] for r in rs),
    })
modes = []
for s in summary:
    if s["mode"] not in modes:
        modes.append(s["mode"])
lines = ["# Proxy overhead: one worker core, %s -t1 -c%d, %d s × %d rounds (medians)" %
         (params["client"], params["connections"], params["duration_s"], params["rounds"]), ""]
m = machine
lines += ["Machine: %s, %d CPUs, %s; git %s%s; load average at start %s." %
          (m["cpu_model"], m["nproc"], m["kernel"], m["git_rev"], " (dirty)" if m["git_dirty"] else "",
           m["loadavg_at_start"]),
          "Tools: %s; %s; %s; %s." % (m["haproxy"], m["nginx"], m["wrk"], m["rustc"]),
          "Layout: proxy alone on CPU %d; wrk and the origin (nginx `return 200`, 1 worker) on CPU %d. "
          "Limits %s." % (params["proxy_core"], params["load_core"], params["limits"]), ""]
for mode in modes:
    lines += ["## mode `%s`" % mode, "",
              "| system | req/s | CPU µs/req (min–max) | proxy core busy | foreign CPU on proxy core | wrk p50 / p99 µs | non-2xx | socket errors |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        if s["mode"] != mode:
            continue
        lines.append("| %s | %.0f | %.2f (%.2f–%.2f) | %.0f%% | %.0f%% | %d / %d | %d | %d |" % (
            s["system"], s["rps_median"], s["cpu_us_per_req_median"], s["cpu_us_per_req_min"],
            s["cpu_us_per_req_max"], 100 * s["proxy_core_util_median"],
            100 * s["foreign_cpu_on_proxy_core_median"], s["wrk_p50_us_median"],
            s["wrk_p99_us_median"], s["non_2xx_3xx_total"], s["socket_errors_total"]))
    lines.append("")
noisy = [s for s in summary if s["foreign_cpu_on_proxy_core_median"] > 0.05]
if noisy:
    lines += ["**Noise warning:** other processes used more than 5%% of the proxy core during: %s. "
              "CPU µs/req is inflated by contention (cache, scheduling); rerun on an idle machine."
              % ", ".join("%s/%s (%.0f%%)" % (s["system"], s["mode"], 100 * s["foreign_cpu_on_proxy_core_median"])
                          for s in noisy), ""]
if discarded:
    lines += ["%d measurement(s) were discarded and repeated because other processes took more than "
              "%d%% of the proxy core (kept in the .json as `discarded`)." % (len(discarded), params["max_foreign_pct"]), ""]
# Ratios of CPU µs/req between systems measured in the same round (side by side), then their
# median: less sensitive to a machine that drifts between rounds than a ratio of medians.
pairs = [("tollgate", "haproxy-seed"), ("tollgate", "haproxy-plain"),
         ("tollgate-plain", "haproxy-plain"), ("tollgate", "nginx-limit"),
         ("tollgate-log", "tollgate"), ("tollgate-log", "haproxy-seed"),
         ("tollgate", "tollgate-base"), ("tollgate-base", "haproxy-seed")]
by = {(r["system"], r["mode"], r["round"]): r["cpu_us_per_req"] for r in runs}
ratios = []
for mode in modes:
    for a, b in pairs:
        per = [by[(a, mode, k)] / by[(b, mode, k)] for k in range(1, params["rounds"] + 1)
               if by.get((a, mode, k)) and by.get((b, mode, k))]
        if per:
            ratios.append({"mode": mode, "a": a, "b": b, "per_round": [round(x, 3) for x in per],
                           "median": round(statistics.median(per), 3)})
if ratios:
    lines += ["## CPU µs/req ratios, same round", "",
              "| mode | ratio | median | per round |", "|---|---|---:|---|"]
    for q in ratios:
        lines.append("| %s | %s / %s | %.3f | %s |" % (q["mode"], q["a"], q["b"], q["median"],
                                                     " ".join("%.2f" % x for x in q["per_round"])))
    lines.append("")
if params["skipped"]:
    lines += ["Skipped: " + "; ".join(params["skipped"]) + ".", ""]
lines += ["wrk latencies are closed-loop (coordinated omission): context only, not the latency figure.",
          "Raw per-round numbers: the .json file beside this one.", ""]
md = "\n".join(lines)
print(md)
doc = {"benchmark": "proxy-overhead", "machine": machine, "params": params,
       "summary": summary, "ratios": ratios, "runs": runs, "discarded": discarded}
if save:
    open(stem + ".md", "w").write(md)
    json.dump(doc, open(stem + ".json", "w"), indent=1)
    print("saved %s.md and %s.json" % (stem, stem), file=sys.stderr)
if sys.argv[7]:
    json.dump(doc, open(sys.argv[7], "w"), indent=1)
PY
