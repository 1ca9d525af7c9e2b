#!/usr/bin/env bash
# bench/cases/workers.sh — case 6: tollgate with two workers against one, the cost of
# cross-core key ownership (a request for a key another core owns is decided by that core,
# asked through the mesh).
#
# tollgate-1w: one worker alone on the proxy core (as in every other case). tollgate-2w: two
# workers, one per core (proxy core and load core: on a 2-core machine the second worker shares
# its core with the load generator and the origin). Both get the same load: `loadgen bench
# --rate R`, 64 connections (spread over the workers by the kernel), SigV4 keys rotating over
# 1,000, so about half the requests of each worker are for keys the other one owns. Measured:
# CPU µs per request of the whole process (both workers, their mesh) and p99 from the intended
# send time. R = each --loads fraction of haproxy-seed's saturation (--sat-rps, else measured
# here first), so that one worker is not saturated either.
#
# --profile plain runs both with rate limiting off (no limited method: no key, no cross-core
# message), which separates the cost of ownership from that of the second worker sharing a
# core with the load generator and the origin.
#
# Usage: bench/cases/workers.sh [--loads 0.25,0.5] [--sat-rps R] [--profile open|plain]
#          [common case options: --rounds --duration --out --quick, see lib.sh]

set -euo pipefail
source "$(dirname "$0")/../lib.sh"
CASE_SYSTEMS="tollgate-1w,tollgate-2w" case_opts workers "$@"
LOADS="${OPT[loads]:-0.25,0.5}"
PROFILE="${OPT[profile]:-open}"
case_origin
SAT="${OPT[sat-rps]:-}"
if [[ -z "$SAT" ]]; then
    SAT="$(seed_saturation)"
    bench_log "haproxy-seed saturation (reference): $SAT req/s"
fi
mapfile -t RATES < <(load_rates "$LOADS" "$SAT")
BOTH_CORES="$PROXY_CORE,$LOAD_CORE"
[[ "$PROXY_CORE" == "$LOAD_CORE" ]] && BOTH_CORES="$PROXY_CORE"

for ((round = 1; round <= ROUNDS; round++)); do
    for sys in $(rotated "$round" "${SYSTEMS[@]}"); do
        workers="${sys#tollgate-}"
        workers="${workers%w}"
        cores="$PROXY_CORE"
        ((workers == 1)) || cores="$BOTH_CORES"
        PORT="$(free_port)"
        if ! BENCH_WORKERS="$workers" start_system tollgate "$PORT" "$cores" "$ORIGIN_PORT" "$PROFILE"; then
            skip_record "$sys" "failed to start (round $round)"
            continue
        fi
        for lr in "${RATES[@]}"; do
            read -r label rate <<<"$lr"
            url="http://127.0.0.1:$PORT/bench/object"
            warm_loadgen "$url" -c 64 --rate "$rate" --keys 1000
            measure "$SYS_PID" "$cores" "$RUN_DIR/cpu.json" \
                run_loadgen "$RUN_DIR/load.json" "$url" -c 64 -d "${DURATION}s" --rate "$rate" \
                --keys 1000
            emit "$sys" "$label" "$RUN_DIR/load.json" "$RUN_DIR/cpu.json" "rate=$rate" \
                "workers=$workers" "cores=$cores" "profile=$PROFILE"
        done
        bench_stop_pid "$SYS_PID"
    done
done
case_done
