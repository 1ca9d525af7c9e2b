#!/usr/bin/env bash
# bench/test-quick.sh — the harness cannot rot: runs `bench/run.sh --quick` (every case, every
# system, one short round: ≈2–3 min on a 2-core VM) into a scratch directory and checks that
# the JSON it wrote has every case, a row for every system each case measures, numbers in every
# row, same-round ratios and headline figures (bench/report.py check). Exit 0 = all there.
# Needs the release builds (cargo build --release -p tollgate -p loadgen) and the peers
# (installed from the distribution when missing). Nothing is written under bench/results/.
#
# Usage: bench/test-quick.sh [extra bench/run.sh options]

set -euo pipefail
BENCH_DIR="$(cd "$(dirname "$0")" && pwd)"
OUT="$(mktemp -d /tmp/tollgate-bench-test.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT
CASES="saturation,fixed-rate,tls,large,many-keys,workers,accuracy,scenarios"
json="$("$BENCH_DIR/run.sh" --quick --cases "$CASES" --out-dir "$OUT" "$@" | tail -n 1)"
[[ -s "$json" ]] || { echo "bench/run.sh --quick wrote no result" >&2; exit 1; }
python3 "$BENCH_DIR/report.py" check "$json" --cases "$CASES"
