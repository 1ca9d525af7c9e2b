#!/usr/bin/env bash
# bench/cases/fixed-rate.sh — case 2: CPU per request and latency at a fixed offered rate, the
# load production proxies live at.
#
# Each system with one worker alone on the proxy core and limits out of reach (profile `open`:
# every system does its full accounting, nothing is denied); `loadgen bench --rate R` on the
# load core offers R req/s open loop (uniform intended send times over 64 keep-alive
# connections, SigV4 keys rotating over 1,000) after a 1 s warm-up at the same rate. Measured:
# CPU µs per request (the proxy's utime+stime from /proc over the run / requests) and latency
# p50/p99/p99.9 from the intended send time (no coordinated omission). R is each --loads
# fraction of haproxy-seed's saturation rate: --sat-rps (bench/run.sh passes case 1's median),
# or measured here first. Beside them, loadgen's send lag p99 (actual send minus intended time:
# the load core's own lateness, inside every latency figure; on 2 vCPUs the load generator and
# the origin share a core, and a round whose lag is large measured that core as much as the
# proxy).
#
# After each measurement, a separate run of 3 s (1 s with --quick) counts the proxy's syscalls,
# io_uring_enter and epoll_wait calls and context switches per request with `perf stat`
# (tracepoints; not in the CPU figure, the counting costs a little).
#
# Usage: bench/cases/fixed-rate.sh [--loads 0.25,0.5] [--sat-rps R] [--connections 64]
#          [--profile-dir DIR]
#          [common case options: --rounds --duration --systems --out --quick, see lib.sh]

set -euo pipefail
source "$(dirname "$0")/../lib.sh"
case_opts fixed-rate "$@"
LOADS="${OPT[loads]:-0.25,0.5}"
CONNS="${OPT[connections]:-64}"
case_origin
SAT="${OPT[sat-rps]:-}"
if [[ -z "$SAT" ]]; then
    SAT="$(seed_saturation)"
    bench_log "haproxy-seed saturation (reference): $SAT req/s"
fi
mapfile -t RATES < <(load_rates "$LOADS" "$SAT")
URL_PATH=/bench/object
# Diagnostics after each measurement (not in its CPU figure): syscalls and context switches per
# request counted by perf over DIAG seconds; with --profile-dir, a perf profile of each system
# at the highest load, round 1 (perf-SYSTEM-LOAD.txt).
DIAG=$((QUICK ? 1 : 3))
PROFILE_DIR="${OPT[profile-dir]:-}"
[[ -z "$PROFILE_DIR" ]] || mkdir -p "$PROFILE_DIR"

for ((round = 1; round <= ROUNDS; round++)); do
    for sys in $(rotated "$round" "${SYSTEMS[@]}"); do
        case_start "$sys" open || continue
        for lr in "${RATES[@]}"; do
            read -r label rate <<<"$lr"
            warm_loadgen "http://127.0.0.1:$PORT$URL_PATH" -c "$CONNS" --rate "$rate" --keys 1000
            measure "$SYS_PID" "$PROXY_CORE" "$RUN_DIR/cpu.json" \
                run_loadgen "$RUN_DIR/load.json" "http://127.0.0.1:$PORT$URL_PATH" -c "$CONNS" \
                -d "${DURATION}s" --rate "$rate" --keys 1000
            mapfile -t sc < <(syscall_counts "$SYS_PID" "http://127.0.0.1:$PORT$URL_PATH" \
                -c "$CONNS" -d "${DIAG}s" --rate "$rate" --keys 1000)
            emit "$sys" "$label" "$RUN_DIR/load.json" "$RUN_DIR/cpu.json" "rate=$rate" \
                "sat_rps=$SAT" "${sc[@]}"
            if [[ -n "$PROFILE_DIR" && $round == 1 && "$lr" == "${RATES[-1]}" ]]; then
                perf_profile "$SYS_PID" "$DIAG" "$PROFILE_DIR/perf-$sys-$label.txt" \
                    "http://127.0.0.1:$PORT$URL_PATH" -c "$CONNS" --rate "$rate" --keys 1000
            fi
        done
        bench_stop_pid "$SYS_PID"
    done
done
case_done
