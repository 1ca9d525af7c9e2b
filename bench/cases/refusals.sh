#!/usr/bin/env bash
# bench/cases/refusals.sh — case 10: what one refusal costs. A client that ignores its limit:
# one key at the seed's limits (over them within the first second), 64 connections, closed
# loop, so nearly every request is refused by the proxy itself (tollgate: 429 with its S3
# XML body and rate-limit headers; haproxy-seed: `http-request deny` 429 with the seed's XML
# body and headers; nginx-limit: `limit_req`'s refusal). CPU µs per request and req/s on one
# proxy core; bench/proxy-overhead.sh does the work (`--modes 1key --profile seed`). Systems
# that do not limit (haproxy-plain) are left out: they refuse nothing.
#
# Usage: bench/cases/refusals.sh [--connections 64]
#          [common case options: --rounds --duration --systems --out --quick, see lib.sh]

set -euo pipefail
source "$(dirname "$0")/../lib.sh"
case_opts refusals "$@"
WARMUP=1
((QUICK)) && WARMUP=0
LIMITING=()
for s in "${SYSTEMS[@]}"; do [[ "$s" == haproxy-plain ]] || LIMITING+=("$s"); done
((${#LIMITING[@]})) || bench_die "refusals: no system that limits"
IFS=,
"$BENCH_DIR/proxy-overhead.sh" --client loadgen --modes 1key --profile seed \
    --systems "${LIMITING[*]}" --rounds "$ROUNDS" --duration "$DURATION" --warmup "$WARMUP" \
    --connections "${OPT[connections]:-64}" --proxy-core "$PROXY_CORE" --load-core "$LOAD_CORE" \
    --max-foreign "${BENCH_MAX_FOREIGN:-0}" --retries "${BENCH_RETRIES:-2}" \
    --save-json "$RUN_DIR/overhead.json" >"$RUN_DIR/overhead.md"
unset IFS
python3 "$BENCH_DIR/report.py" import-overhead "$RUN_DIR/overhead.json" --case refusals --refusals >>"$OUT"
case_done
