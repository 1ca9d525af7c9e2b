#!/usr/bin/env bash
# bench/cases/saturation.sh — case 1: saturation req/s and CPU µs per request, one worker,
# 1,000 keys. bench/proxy-overhead.sh does the work (its `1000keys` mode, driven by
# `loadgen bench --keys 1000`, 64 connections, closed loop, systems rotated round by round);
# this wrapper turns its rounds into the harness's records.
#
# Usage: bench/cases/saturation.sh [--connections 64]
#          [common case options: --rounds --duration --systems --out --quick, see lib.sh]

set -euo pipefail
source "$(dirname "$0")/../lib.sh"
case_opts saturation "$@"
WARMUP=1
((QUICK)) && WARMUP=0
IFS=,
"$BENCH_DIR/proxy-overhead.sh" --client loadgen --modes 1000keys --systems "${SYSTEMS[*]}" \
    --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" \
    --connections "${OPT[connections]:-64}" --proxy-core "$PROXY_CORE" --load-core "$LOAD_CORE" \
    --max-foreign "${BENCH_MAX_FOREIGN:-0}" --retries "${BENCH_RETRIES:-2}" \
    --save-json "$RUN_DIR/overhead.json" >"$RUN_DIR/overhead.md"
unset IFS
python3 "$BENCH_DIR/report.py" import-overhead "$RUN_DIR/overhead.json" --case saturation >>"$OUT"
case_done
