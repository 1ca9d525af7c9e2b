#!/usr/bin/env bash
# bench/cases/accuracy.sh — case 7: how exact each limiter is, judged by the certain criterion.
#
# Every limiter runs the seed's per-second limits (basic tier: 10 per second) with the
# per-minute ones out of reach (profile `accuracy`: only the 1 s window decides). bench/accuracy.py
# sends, for each of --keys basic keys (staggered), a burst of --burst requests (30, one per
# keep-alive connection, all at once) every --every seconds (0.9: bursts timed near the window
# length expose a two-period estimate) for --duration seconds (at least 3, --quick too: a
# two-period estimate shows only once bursts span more than two windows); every request is
# numbered and its send time logged. The origin logs each request's arrival (nginx $msec). A
# window counts as over the limit only if all its admissions were sent after it opened and
# reached the origin before it closed (the certain criterion, bench/accuracy.py). Every limiter
# is run (tollgate, haproxy-seed, nginx-limit); haproxy-plain has no limiter and is not.
#
# Usage: bench/cases/accuracy.sh [--keys 3] [--burst 30] [--every 0.9]
#          [common case options: --rounds --duration --systems --out --quick, see lib.sh]

set -euo pipefail
source "$(dirname "$0")/../lib.sh"
CASE_SYSTEMS="tollgate,haproxy-seed,nginx-limit" case_opts accuracy "$@"
NKEYS="${OPT[keys]:-3}"
BURST="${OPT[burst]:-30}"
EVERY="${OPT[every]:-0.9}"
SECS=$((DURATION < 3 ? 3 : DURATION))
export BENCH_ORIGIN_LOG="$RUN_DIR/arrivals.log"
case_origin
# gen_keys assigns premium, standard, basic in turn: keys 3, 6, 9, ... (1-based) are basic.
BASIC="$(awk -v n="$NKEYS" '$3 == "basic" && c < n {print $1; c++}' "$RUN_DIR/keys.txt" | paste -sd,)"
LIMIT="${SEED_SEC[basic]}"

for ((round = 1; round <= ROUNDS; round++)); do
    for sys in $(rotated "$round" "${SYSTEMS[@]}"); do
        if [[ "$sys" == haproxy-plain || "$sys" == tollgate-plain ]]; then
            skip_record "$sys" "no limiter"
            continue
        fi
        case_start "$sys" accuracy || continue
        : >"$BENCH_ORIGIN_LOG"
        taskset -c "$LOAD_CORE" python3 "$BENCH_DIR/accuracy.py" send \
            --url "http://127.0.0.1:$PORT/bench/acc" --keys "$BASIC" --burst "$BURST" \
            --every "$EVERY" --duration "$SECS" --out "$RUN_DIR/client.jsonl" &
        pid=$!
        bench_track_pid "$pid"
        wait "$pid" || bench_die "accuracy.py send failed against $sys"
        bench_stop_pid "$pid"
        bench_stop_pid "$SYS_PID"
        mapfile -t kv < <(python3 "$BENCH_DIR/accuracy.py" analyse --client "$RUN_DIR/client.jsonl" \
            --origin "$BENCH_ORIGIN_LOG" --limit "$LIMIT" --window 1)
        emit "$sys" "burst $BURST every ${EVERY}s, limit $LIMIT/s" "" "" "${kv[@]}" \
            "keys=$NKEYS" "duration_s=$SECS"
    done
done
case_done
