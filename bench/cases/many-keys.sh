#!/usr/bin/env bash
# bench/cases/many-keys.sh — case 5: 100k and 1M tracked keys. bench/memory-per-key.sh does the
# work: each limiter (tollgate, haproxy-seed, nginx-limit; tables sized for the keys) gets every
# key twice, its memory growth per key is read (Pss), then `loadgen bench --keys N` drives it for
# --duration seconds over all N keys (closed loop, 64 connections): req/s and CPU µs per request
# with that table. One round (filling a million-key table is the expensive part).
#
# Usage: bench/cases/many-keys.sh [--keys 100000,1000000] [--style garage]
#          [common case options: --duration --systems --out --quick, see lib.sh]

set -euo pipefail
source "$(dirname "$0")/../lib.sh"
CASE_SYSTEMS="tollgate,haproxy-seed,nginx-limit" case_opts many-keys "$@"
COUNTS="${OPT[keys]:-$( ((QUICK)) && echo 5000,20000 || echo 100000,1000000)}"
PASSES=2
((QUICK)) && PASSES=1
IFS=,
"$BENCH_DIR/memory-per-key.sh" --keys "$COUNTS" --passes "$PASSES" --systems "${SYSTEMS[*]}" \
    --styles "${OPT[style]:-garage}" --rps-duration "$DURATION" --warmup "$((WARM + 1))s" --proxy-core "$PROXY_CORE" \
    --load-core "$LOAD_CORE" --save-json "$RUN_DIR/memory.json" >"$RUN_DIR/memory.md"
unset IFS
python3 "$BENCH_DIR/report.py" import-memory "$RUN_DIR/memory.json" --case many-keys >>"$OUT"
case_done
