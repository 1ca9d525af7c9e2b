#!/usr/bin/env bash
# Run tollgate's real-client S3 suite (tests/s3) with the project .venv.
#
#   scripts/run-s3-tests.sh [pytest args...]     e.g. -k presigned, or tests/s3/test_tls.py
#   (the default path tests/s3 is used unless an argument names something under tests/)
# Needs: scripts/deps.sh --tests (garage, s3s-fs, .venv) and a release build of tollgate
# (target/release/tollgate, or $CARGO_TARGET_DIR/release/tollgate, or TOLLGATE_BIN).
# TOLLGATE_DIRECT=1 runs the suite against Garage / s3s-fs without tollgate (self-check).
# TOLLGATE_TEST_RELAY=whole|bytes|mtu|random[:SEED] puts segrelay processes (target/release/
# segrelay, from cargo build --release --workspace) between the clients and tollgate and between
# tollgate and the backends, re-cutting every byte stream (see tests/s3/conftest.py).
# S3_TEST_TIMEOUT overrides the per-test timeout in seconds (default 180).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[ -x .venv/bin/python ] || { echo "run-s3-tests: .venv missing; run scripts/deps.sh --tests" >&2; exit 1; }
# shellcheck disable=SC1091
source .venv/bin/activate
export PATH="$HOME/.cargo/bin:$PATH"
paths=(tests/s3)
for a in "$@"; do case "$a" in tests/*) paths=() ;; esac; done
exec timeout 1200 python -m pytest -q -x --timeout "${S3_TEST_TIMEOUT:-180}" "${paths[@]}" "$@"
