#!/usr/bin/env bash
# bench/active-active.sh — what [cluster] (one limit per key across tollgate instances through
# Redis) costs and how close it holds, on one machine, 127.0.0.1 only.
#
# Why it exists: the issue's "done when" asks for the over-admission measured against the
# stated bound (src/limit/cluster.rs: admitted <= L + (N-1)·A(D), D = 10 ms + 2·sync_interval
# + 2·R) with 2 and 3 instances, side by side with the seed's N× without [cluster], and for the
# CPU per request with [cluster] on vs off at the same load (target <= 1.1×).
#
#   1. over-admission: N = 2 and 3 instances (1 worker each), one premium key (50/s, 1000/min)
#      offered 150/s (3×) for AA_OVER_SECS, its requests alternating over the instances
#      (loadgen --target … --target …); loadgen's accuracy check gives the most admitted in
#      any second over the union; the bound is computed from each instance's offered rate and
#      the slowest sync call the instances saw (their /stats). Once with [cluster], once without.
#   2. CPU per request: one instance (1 worker, pinned to core 0) in front of nginx
#      `return 200`, AA_CPU_KEYS keys at AA_CPU_RATE req/s in total (limits far above the load,
#      so every key is synced every tick), [cluster] off and on in alternating rounds
#      (AA_ROUNDS each); tollgate's CPU ticks (all its threads, the sync thread included) per
#      admitted request; Redis's own CPU is reported beside it.
#
# Environment: AA_ROUNDS (3), AA_OVER_SECS (10), AA_CPU_SECS (15), AA_CPU_RATE (4000),
# AA_CPU_KEYS (1000), AA_OUT (bench/results/DATE-active-active: .md and .json written there),
# BENCH_KEEP_RUN=1 keeps the scratch directory. Every process it starts is stopped by PID.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_DIR"

ROUNDS="${AA_ROUNDS:-3}"
OVER_SECS="${AA_OVER_SECS:-10}"
CPU_SECS="${AA_CPU_SECS:-15}"
CPU_RATE="${AA_CPU_RATE:-4000}"
CPU_KEYS="${AA_CPU_KEYS:-1000}"
OUT="${AA_OUT:-$REPO_DIR/bench/results/$(date +%F)-active-active}"

bench_setup
bash scripts/deps.sh --bench >&2
cargo build --release --workspace >&2
TOLLGATE="$(tollgate_bin)" || bench_die "tollgate not built"
LOADGEN="$(dirname "$TOLLGATE")/loadgen"
bench_require nginx redis-server taskset python3

REDIS_PORT="$(free_port)"
bash scripts/redis.sh start "$RUN_DIR/redis" "$REDIS_PORT" >&2
REDIS_PID="$(cat "$RUN_DIR/redis/redis.pid")"
bench_track_pid "$REDIS_PID"
ORIGIN_PORT="$(free_port)"
start_origin "$ORIGIN_PORT" 1

# aa_config FILE PORT ADMIN_PORT CLUSTER(0|1) PROFILE(seed|open): one worker, admin on.
aa_config() {
    local file="$1" port="$2" admin="$3" cluster="$4" profile="$5"
    {
        echo "workers = 1"
        echo "pin_workers = false"
        echo "listen = [\"127.0.0.1:$port\"]"
        echo "reload_poll_interval = \"0s\""
        echo "[admin]"
        echo "listen = \"127.0.0.1:$admin\""
        echo "[upstream]"
        echo "[[upstream.servers]]"
        echo "addr = \"127.0.0.1:$ORIGIN_PORT\""
        echo "[upstream.health]"
        echo "enabled = false"
        echo "[limits]"
        echo "keys_file = \"$RUN_DIR/keys.toml\""
        echo "unlisted_keys = \"per_key\""
        echo "default_tier = \"premium\""
        echo "anonymous_tier = \"premium\""
        echo "[tiers.premium]"
        if [[ "$profile" == seed ]]; then
            echo "per_minute = 1000"
            echo "per_second = 50"
        else
            echo "per_minute = 1000000"
            echo "per_second = 100000"
        fi
        if [[ "$cluster" == 1 ]]; then
            echo "[cluster]"
            echo "redis_url = \"redis://127.0.0.1:$REDIS_PORT\""
        fi
    } >"$file"
}
printf '[keys]\n"AAKEY0000001" = "premium"\n' >"$RUN_DIR/keys.toml"

# sync_ticks PID: CPU ticks of the sync thread (tollgate-sync) of PID so far (0 without one).
sync_ticks() {
    local t
    for t in /proc/"$1"/task/*; do
        if [[ "$(cat "$t/comm" 2>/dev/null)" == tollgate-sync ]]; then
            awk '{print $14 + $15}' "$t/stat"
            return 0
        fi
    done
    echo 0
}

# start_instance NAME CLUSTER PROFILE [CORE] → INST_PORT, INST_ADMIN, INST_PID
start_instance() {
    local name="$1" cluster="$2" profile="$3" core="${4:-}"
    INST_PORT="$(free_port)"
    INST_ADMIN="$(free_port)"
    aa_config "$RUN_DIR/$name.toml" "$INST_PORT" "$INST_ADMIN" "$cluster" "$profile"
    if [[ -n "$core" ]]; then
        taskset -c "$core" "$TOLLGATE" run --config "$RUN_DIR/$name.toml" >"$RUN_DIR/$name.log" 2>&1 &
    else
        "$TOLLGATE" run --config "$RUN_DIR/$name.toml" >"$RUN_DIR/$name.log" 2>&1 &
    fi
    INST_PID=$!
    bench_track_pid "$INST_PID"
    wait_http "$INST_PORT" 10 "$INST_PID" || bench_die "$name did not start (see $RUN_DIR/$name.log)"
}

RAW="$RUN_DIR/raw.jsonl"
: >"$RAW"

# ---- 1. over-admission ----------------------------------------------------------------
cat >"$RUN_DIR/over.toml" <<TOML
name = "over"
target = "http://127.0.0.1:1"
duration = "${OVER_SECS}s"
connections_per_core = 4
[tiers.premium]
per_minute = 1000
per_second = 50
[[group]]
name = "k"
tier = "premium"
keys = ["AAKEY0000001"]
rate = "150/s"
auth = "x-api-key"
TOML
for n in 2 3; do
    for cluster in 1 0; do
        pids=() targets=() admins=()
        for i in $(seq 1 "$n"); do
            start_instance "over-$n-$cluster-$i" "$cluster" seed
            pids+=("$INST_PID") admins+=("$INST_ADMIN")
            targets+=(--target "http://127.0.0.1:$INST_PORT")
        done
        sleep 0.5
        bench_log "over-admission: $n instances, cluster=$cluster"
        "$LOADGEN" run "$RUN_DIR/over.toml" "${targets[@]}" --quiet \
            --json "$RUN_DIR/over-$n-$cluster.json" >/dev/null || true
        rmax=0
        for a in "${admins[@]}"; do
            r="$(curl -fsS -m 5 "http://127.0.0.1:$a/stats" | python3 -c \
                'import json,sys; print(json.load(sys.stdin)["cluster"].get("sync_latency_us",{}).get("max",0))')"
            ((r > rmax)) && rmax="$r"
        done
        python3 - "$RUN_DIR/over-$n-$cluster.json" "$n" "$cluster" "$rmax" >>"$RAW" <<'PY'
import json, math, sys
rep, n, cluster, rmax_us = json.load(open(sys.argv[1])), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
acc = rep["accuracy"][0]
w = {round(x["window_ms"]): x for x in acc["windows"]}
d_ms = 10 + 2 * 100 + 2 * rmax_us / 1000
a = math.ceil(150 / n * d_ms / 1000) + 1
print(json.dumps({"part": "over", "instances": n, "cluster": bool(cluster),
    "most_in_1s": w[1000]["max_certain"], "most_in_60s": w[60000]["max_certain"],
    "limit_1s": 50, "bound_1s": min(50 * n, 50 + (n - 1) * a) if cluster else 50 * n,
    "d_ms": round(d_ms, 1), "a_d": a, "sync_max_us": rmax_us, "admitted": acc["admitted"]}))
PY
        for p in "${pids[@]}"; do bench_stop_pid "$p"; done
        redis-cli -p "$REDIS_PORT" flushall >/dev/null
    done
done

# ---- 2. CPU per request ------------------------------------------------------------------
python3 - "$RUN_DIR/cpu.toml" "$CPU_KEYS" "$CPU_RATE" "$CPU_SECS" <<'PY'
import sys
path, keys, rate, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
open(path, "w").write(f'''name = "cpu"
target = "http://127.0.0.1:1"
duration = "{secs}s"
warmup = "2s"
connections_per_core = 32
pin_cores = [1]
[tiers.premium]
per_minute = 1000000
per_second = 100000
[[group]]
name = "k"
tier = "premium"
key_prefix = "AACPU"
key_count = {keys}
rate = "{rate / keys:.6f}/s"
auth = "x-api-key"
''')
PY
for round in $(seq 1 "$ROUNDS"); do
    for cluster in 0 1; do
        start_instance "cpu-$round-$cluster" "$cluster" open 0
        sleep 0.5
        before="$(snapshot "$INST_PID" 0)"
        rbefore="$(snapshot "$REDIS_PID" 1)"
        sbefore="$(sync_ticks "$INST_PID")"
        "$LOADGEN" run "$RUN_DIR/cpu.toml" --target "http://127.0.0.1:$INST_PORT" --quiet \
            --json "$RUN_DIR/cpu-$round-$cluster.json" >/dev/null || true
        after="$(snapshot "$INST_PID" 0)"
        rafter="$(snapshot "$REDIS_PID" 1)"
        sync=$(($(sync_ticks "$INST_PID") - sbefore))
        stats="$(curl -fsS -m 5 "http://127.0.0.1:$INST_ADMIN/stats")"
        python3 - "$RUN_DIR/cpu-$round-$cluster.json" "$cluster" "$round" "$CLK_TCK" \
            "$before" "$after" "$rbefore" "$rafter" "$stats" "$sync" >>"$RAW" <<'PY'
import json, sys
rep = json.load(open(sys.argv[1]))
sync_ticks = int(sys.argv[10])
cluster, rnd, tck = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
b, a, rb, ra = (x.split() for x in sys.argv[5:9])
stats = json.loads(sys.argv[9])
reqs = sum(k["admitted"] for k in rep["keys"])
ticks = int(a[0]) - int(b[0])
rticks = int(ra[0]) - int(rb[0])
c = stats.get("cluster", {})
print(json.dumps({"part": "cpu", "cluster": bool(cluster), "round": rnd, "requests": reqs,
    "us_per_request": round(ticks * 1e6 / tck / max(reqs, 1), 3),
    "sync_thread_us_per_request": round(sync_ticks * 1e6 / tck / max(reqs, 1), 3),
    "redis_us_per_request": round(rticks * 1e6 / tck / max(reqs, 1), 3) if cluster else 0,
    "sync_mean_us": c.get("sync_latency_us", {}).get("mean", 0),
    "sync_max_us": c.get("sync_latency_us", {}).get("max", 0),
    "batch_keys": c.get("batch", {}).get("keys", 0), "ticks": c.get("ticks", 0)}))
PY
        bench_stop_pid "$INST_PID"
        redis-cli -p "$REDIS_PORT" flushall >/dev/null
    done
done

# ---- results -----------------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
# (machine_json reads `wrk -v`, which exits 1: not under this script's -e / pipefail)
(set +e +o pipefail; machine_json) >"$RUN_DIR/machine.json"
python3 - "$RAW" "$RUN_DIR/machine.json" "$OUT" "$CPU_RATE" "$CPU_KEYS" "$CPU_SECS" "$OVER_SECS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
machine = json.load(open(sys.argv[2]))
out, rate, keys, secs, over_secs = sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
json.dump({"machine": machine, "rows": rows}, open(out + ".json", "w"), indent=1)
L = []
L.append("# Active-active: over-admission and CPU cost of [cluster]\n")
L.append(f"Produced by `bench/active-active.sh` ({machine.get('cpu_model', '?')}, "
         f"{machine.get('nproc', '?')} CPUs, {machine.get('kernel', '?')}, git {machine.get('git_rev', '?')}). Raw rows: "
         f"`{out.split('/')[-1]}.json`.\n")
L.append(f"## Over-admission: one premium key (50/s, 1000/min) offered 150/s for {over_secs} s, "
         "round robin over the instances\n")
L.append("| instances | [cluster] | most admitted in any second | bound | D (ms) | A(D) | slowest sync (µs) |")
L.append("|---:|---|---:|---:|---:|---:|---:|")
for r in [r for r in rows if r["part"] == "over"]:
    L.append(f"| {r['instances']} | {'on' if r['cluster'] else 'off'} | {r['most_in_1s']} "
             f"({r['most_in_1s'] / 50:.2f}×) | {r['bound_1s']} | {r['d_ms']} | {r['a_d']} | {r['sync_max_us']} |")
L.append("\nBound with [cluster]: L + (N − 1)·A(D), A(D) = ⌈offered per instance × D⌉ + 1, "
         "D = 10 ms + 2·sync_interval + 2·slowest sync call; without: N·L (each instance alone). "
         "\"Most admitted\" is loadgen's certain count (admissions whose send→response interval lies "
         "inside the window).\n")
L.append(f"## CPU per request: 1 worker (core 0), {keys} keys, {rate} req/s in total, {secs} s rounds\n")
L.append("| round | [cluster] off µs/req | [cluster] on µs/req | of which sync thread | ratio | Redis µs/req | sync call mean / max µs | keys per call |")
L.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
cpu = [r for r in rows if r["part"] == "cpu"]
ratios = []
for rnd in sorted({r["round"] for r in cpu}):
    off = next(r for r in cpu if r["round"] == rnd and not r["cluster"])
    on = next(r for r in cpu if r["round"] == rnd and r["cluster"])
    ratio = on["us_per_request"] / max(off["us_per_request"], 1e-9)
    ratios.append(ratio)
    L.append(f"| {rnd} | {off['us_per_request']} | {on['us_per_request']} | "
             f"{on.get('sync_thread_us_per_request', 0)} | {ratio:.3f} | "
             f"{on['redis_us_per_request']} | {on['sync_mean_us']} / {on['sync_max_us']} | {on['batch_keys']} |")
if ratios:
    L.append(f"\nMedian ratio on / off: **{statistics.median(ratios):.3f}** (target ≤ 1.1). "
             "tollgate's CPU counts all its threads (the sync thread included); Redis's is beside it.\n")
open(out + ".md", "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
bench_log "results: $OUT.md, $OUT.json"
