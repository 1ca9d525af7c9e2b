#!/usr/bin/env bash
# bench/cases/rules.sh — case 9: what [[rules]] cost (issue 16): tollgate's CPU per request
# with five rules of which two match every request, against the same load with its tier only.
#
# tollgate-tier: the `open` limit profile (bench/lib.sh write_tollgate_config: every tier's two
# windows far above the load). tollgate-rules: the same configuration plus five [[rules]]; every
# benchmark request (GET /bench/object, SigV4 keys of tiers premium, standard and basic) matches
# two of them — `bench-bucket` (subject bucket) and `key-bucket` (subject key+bucket), limits out
# of reach — and none of the other three (op list, PUT to tmp-*, a User-Agent test), so each
# request is tested against all five and charged to two more subjects than its key. Same run:
# both started fresh, one worker alone on the proxy core, alternating in a rotated order round by
# round; load `loadgen bench --rate R` (default 5000 req/s; --quick 2000), 64 connections,
# 1,000 keys; CPU µs per request from /proc; ratio tollgate-rules / tollgate-tier per round,
# median over rounds (target ≤ 1.15, bench/report.py).
# Skips (a record per system, status 0) while `tollgate check` rejects [[rules]], i.e. before
# the rules work is merged.
#
# Usage: bench/cases/rules.sh [--rate R]
#          [common case options: --rounds --duration --out --quick, see lib.sh]

set -euo pipefail
source "$(dirname "$0")/../lib.sh"
CASE_SYSTEMS="tollgate-tier,tollgate-rules" case_opts rules "$@"
# This case compares tollgate with itself, whatever --systems the whole run was given.
VARIANTS=(tollgate-tier tollgate-rules)
RATE="${OPT[rate]:-$((QUICK ? 2000 : 5000))}"
BIN="$(tollgate_bin)" || bench_die "no tollgate build (cargo build --release)"

# The five rules; the first three, and the fourth's header test, never match the load.
RULES='
[[rules]]
name = "lists"
match.ops = ["list"]
subject = "key"
per_second = 5

[[rules]]
name = "no-tmp-writes"
match.methods = ["PUT"]
match.buckets = ["tmp-*"]
action = "deny"

[[rules]]
name = "bench-bucket"
match.buckets = ["bench"]
subject = "bucket"
sustained = { limit = 65535, window = "500ms" }
burst = { limit = 65535, window = "100ms" }

[[rules]]
name = "odd-agents"
match.header = { name = "User-Agent", contains = "bench-no-such-agent" }
subject = "address"
per_second = 1

[[rules]]
name = "key-bucket"
match.tiers = ["premium", "standard", "basic"]
match.buckets = ["bench*"]
subject = "key+bucket"
sustained = { limit = 65535, window = "500ms" }
burst = { limit = 65535, window = "100ms" }
'

# variant_config VARIANT PORT FILE: the `open` configuration, plus the rules for tollgate-rules.
variant_config() {
    write_tollgate_config "$2" "$ORIGIN_PORT" open "$3"
    if [[ "$1" == tollgate-rules ]]; then printf '%s' "$RULES" >>"$3"; fi
}

# start_variant VARIANT → PORT, SYS_PID (status 1 when it did not answer).
start_variant() {
    PORT="$(free_port)"
    variant_config "$1" "$PORT" "$RUN_DIR/$1.toml"
    taskset -c "$PROXY_CORE" "$BIN" run --config "$RUN_DIR/$1.toml" --workers 1 \
        >"$RUN_DIR/$1.out" 2>&1 &
    SYS_PID=$!
    bench_track_pid "$SYS_PID"
    if ! wait_http "$PORT" "${BENCH_START_TIMEOUT:-10}" "$SYS_PID"; then
        tail -n 20 "$RUN_DIR/$1.out" >&2 || true
        bench_stop_pid "$SYS_PID"
        return 1
    fi
}

case_origin
variant_config tollgate-rules "$(free_port)" "$RUN_DIR/check.toml"
if ! "$BIN" check --config "$RUN_DIR/check.toml" >"$RUN_DIR/check.out" 2>&1; then
    if grep -qi 'rules' "$RUN_DIR/check.out"; then
        why="tollgate check rejects [[rules]] (not merged yet?): $(grep -i -m1 'rules' "$RUN_DIR/check.out")"
        for sys in "${VARIANTS[@]}"; do skip_record "$sys" "$why"; done
        case_done
        exit 0
    fi
    cat "$RUN_DIR/check.out" >&2
    bench_die "tollgate check rejects the rules case's configuration"
fi

url="http://127.0.0.1:PORT/bench/object"
for ((round = 1; round <= ROUNDS; round++)); do
    for sys in $(rotated "$round" "${VARIANTS[@]}"); do
        if ! start_variant "$sys"; then
            skip_record "$sys" "failed to start (round $round)"
            continue
        fi
        u="${url/PORT/$PORT}"
        warm_loadgen "$u" -c 64 --rate "$RATE" --keys 1000
        measure "$SYS_PID" "$PROXY_CORE" "$RUN_DIR/cpu.json" \
            run_loadgen "$RUN_DIR/load.json" "$u" -c 64 -d "${DURATION}s" --rate "$RATE" \
            --keys 1000
        rules=0
        [[ "$sys" == tollgate-rules ]] && rules=5
        emit "$sys" "${RATE}/s" "$RUN_DIR/load.json" "$RUN_DIR/cpu.json" "rate=$RATE" \
            "rules=$rules"
        # Every request must pass: a denial would make the two loads unlike.
        python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["status_classes"]; sys.exit(0 if sum(c) == c[2] else 1)' \
            "$RUN_DIR/load.json" || bench_log "$sys: some responses were not 2xx (see the errors column)"
        bench_stop_pid "$SYS_PID"
    done
done
case_done
