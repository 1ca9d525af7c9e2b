#!/usr/bin/env bash
# bench/test-quick.sh — the harness cannot rot: runs `bench/run.sh --quick` (every case of
# run.sh's list, every system, one short round) into a scratch directory and checks that the
# JSON it wrote has every case, a row for every system each case measures, numbers in every row
# (for accuracy: the certain-criterion figures from origin arrivals; for scenarios: admitted and
# expected per tier), same-round ratios and headline figures (bench/report.py check). Exit 0 =
# all there. Needs the release builds (cargo build --release -p tollgate -p loadgen) and the
# peers (installed from the distribution when missing). Nothing is written under bench/results/.
#
# Usage: bench/test-quick.sh [extra bench/run.sh options, e.g. --cases a,b]

set -euo pipefail
BENCH_DIR="$(cd "$(dirname "$0")" && pwd)"
OUT="$(mktemp -d /tmp/tollgate-bench-test.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT
json="$("$BENCH_DIR/run.sh" --quick --out-dir "$OUT" "$@" | tail -n 1)"
[[ -s "$json" ]] || { echo "bench/run.sh --quick wrote no result" >&2; exit 1; }
python3 "$BENCH_DIR/report.py" check "$json"
