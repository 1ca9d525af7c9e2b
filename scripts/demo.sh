#!/usr/bin/env bash
# tollgate's main job, end to end on one machine:
#   1. installs what is missing (scripts/deps.sh --demo) and builds tollgate + loadgen (release);
#   2. starts Garage 2.5.0 (a real S3 server) on 127.0.0.1 with the five premium keys of
#      bench/scenarios/burst.toml imported as real keys, and bucket `bench`;
#   3. writes the objects the scenario reads (loadgen prefill, straight to Garage);
#   4. starts tollgate with config/demo.toml in front of Garage;
#   5. runs burst.toml (5 premium keys x 60 req/s against a 50/s + 1000/min tier) through tollgate,
#      scaled to about a minute, prints loadgen's report (per tier and per key: sent, admitted,
#      denied, errors, latency percentiles, the expected outcome beside the measured one, the
#      accuracy check) and tollgate's own counters from its admin API;
#   6. stops everything it started, by PID (also on Ctrl-C or failure).
#
#   scripts/demo.sh                 the default run (~1 minute of load)
#   scripts/demo.sh --active-active two tollgate instances in front of the same Garage, each key's
#                                   requests alternating between them (bench/scenarios/
#                                   active-active.toml), first WITHOUT [cluster] (each instance
#                                   limits alone: 2x, the seed's two HAProxy instances), then WITH
#                                   [cluster] on a Redis of its own (one limit: 1x); ends with a
#                                   table of the most admitted per key in any second and minute
#   DEMO_SCALE=0.1 scripts/demo.sh  shorter (scales burst.toml's 2-minute duration)
#   DEMO_KEEP=1                     keep the work dir (logs, configs, JSON + HTML reports)
#
# Exit status: loadgen's (0 = every [[assert]] of the scenario passed, 1 = an assert failed,
# 2 = error, 3 = run invalid because the generator fell behind its schedule).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
SCALE="${DEMO_SCALE:-0.5}"
SCENARIO="bench/scenarios/burst.toml"
ACTIVE_ACTIVE=0
for arg in "$@"; do
  case "$arg" in
    --active-active) ACTIVE_ACTIVE=1 ;;
    -h|--help) awk 'NR>1 && !/^#/{exit} NR>1{print}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "demo: unknown option $arg (--active-active)" >&2; exit 2 ;;
  esac
done

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'demo: ERROR: %s\n' "$*" >&2; exit 2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

say "installing what the demo needs (only what is missing)"
bash scripts/deps.sh --demo

say "building tollgate and loadgen (release)"
cargo build --release --workspace
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
TOLLGATE="$TARGET_DIR/release/tollgate"
LOADGEN="$TARGET_DIR/release/loadgen"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-demo.XXXXXX")"
TG_PIDS=()
stop_tollgates() {
  local pid
  for pid in "${TG_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      echo "[demo] stopping tollgate PID $pid"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  TG_PIDS=()
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_tollgates
  bash scripts/redis.sh stop "$WORK/redis" || true
  bash scripts/garage.sh stop "$WORK/garage" || true
  if [ "${DEMO_KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
    echo "[demo] work dir kept: $WORK (tollgate.log, garage/garage.log, report.json, report.html)"
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The keys tollgate knows (config/demo-keys.toml) must be the scenario's keys.
want="$("$LOADGEN" keys "$SCENARIO" | grep '^"' | sort)"
have="$(grep '^"' config/demo-keys.toml | sed 's/[[:space:]]*#.*//' | sort)"
[ "$want" = "$have" ] || die "config/demo-keys.toml does not list the keys of $SCENARIO:
$want"

say "starting Garage with the scenario's keys (bucket bench)"
"$LOADGEN" keys --format credentials "$SCENARIO" >"$WORK/garage-keys"
GPORT="$(free_port)"
GARAGE_BUCKET=bench GARAGE_EXTRA_KEYS="$WORK/garage-keys" \
  bash scripts/garage.sh start "$WORK/garage" "$GPORT"

say "writing the scenario's objects straight to Garage (loadgen prefill)"
"$LOADGEN" prefill "$SCENARIO" --target "http://127.0.0.1:$GPORT"

# start_tollgate NAME CONFIG: a tollgate in front of Garage on free ports; sets T_PORT, A_PORT.
start_tollgate() {
  local name="$1" cfg="$2"
  T_PORT="$(free_port)"
  A_PORT="$(free_port)"
  while [ "$A_PORT" = "$T_PORT" ]; do A_PORT="$(free_port)"; done
  "$TOLLGATE" check --config "$cfg" --upstream "127.0.0.1:$GPORT" \
    --listen "127.0.0.1:$T_PORT" --admin "127.0.0.1:$A_PORT" | sed "s/^/[tollgate check $name] /"
  RUST_LOG="${RUST_LOG:-info}" "$TOLLGATE" run --config "$cfg" \
    --upstream "127.0.0.1:$GPORT" --listen "127.0.0.1:$T_PORT" --admin "127.0.0.1:$A_PORT" \
    >"$WORK/tollgate-$name.log" 2>&1 </dev/null &
  local pid=$!
  TG_PIDS+=("$pid")
  local deadline=$((SECONDS + 30))
  until curl -fsS -m 2 "http://127.0.0.1:$A_PORT/health" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$WORK/tollgate-$name.log" >&2; die "tollgate $name exited"; }
    [ $SECONDS -lt $deadline ] || { tail -20 "$WORK/tollgate-$name.log" >&2; die "tollgate $name not healthy in 30 s"; }
    sleep 0.2
  done
  echo "[demo] tollgate $name PID $pid on 127.0.0.1:$T_PORT (admin 127.0.0.1:$A_PORT) -> Garage 127.0.0.1:$GPORT"
}

if [ "$ACTIVE_ACTIVE" = 1 ]; then
  # shellcheck source=scripts/demo-active-active.sh
  source scripts/demo-active-active.sh
  exit $?
fi

say "starting tollgate (config/demo.toml) in front of Garage"
start_tollgate main config/demo.toml
TPORT="$T_PORT" APORT="$A_PORT"

say "loadgen run $SCENARIO --scale $SCALE (5 premium keys x 60 req/s; limit 50/s and 1000/min)"
set +e
"$LOADGEN" run "$SCENARIO" --scale "$SCALE" --target "http://127.0.0.1:$TPORT" \
  --json "$WORK/report.json" --html "$WORK/report.html"
rc=$?
set -e

say "tollgate's own counters (admin API /stats)"
curl -fsS -m 5 "http://127.0.0.1:$APORT/stats" | python3 -c '
import json, sys
s = json.load(sys.stdin)
for tier, t in sorted(s.get("tiers", {}).items()):
    for m, c in sorted(t.get("methods", {}).items()):
        if c.get("admitted", 0) or c.get("denied", 0):
            a, d = c.get("admitted", 0), c.get("denied", 0)
            print(f"  tier {tier:<9} {m:<6} admitted {a:>7}  denied {d:>7}")
' || echo "  (admin API did not answer)"

case $rc in
  0) say "demo finished: every assertion of $SCENARIO passed" ;;
  *) say "demo finished with loadgen exit status $rc (see the report above)" ;;
esac
exit $rc
