#!/usr/bin/env bash
# bench/cases/scenarios.sh — case 8: the seed's stress scenarios on every system.
#
# bench/scenarios/burst.toml (5 premium keys at 60/s, burst limit 50/s) and mixed.toml (25 keys,
# 3 tiers, rates above and below their limits, 70% GET / 30% PUT) run with `loadgen run
# --scale F` (every duration × F, rates unchanged: --scale-burst 0.1 = 12 s, --scale-mixed
# 0.04 = 12 s) against each system started fresh with the seed's limits (profile `seed`), the
# scenarios' keys in every key map, nginx `return 200` / PUT-storing origin (signatures are
# not checked). Per tier: admitted against what the exact trailing-window rule admits of the
# same intended schedule (loadgen's expectation), denied, errors. Scaled down, the 1-minute
# windows do not fill: the per-second limits decide.
#
# Usage: bench/cases/scenarios.sh [--scale-burst 0.1] [--scale-mixed 0.04]
#          [common case options: --rounds --systems --out --quick, see lib.sh]

set -euo pipefail
source "$(dirname "$0")/../lib.sh"
case_opts scenarios "$@"
SCALE_BURST="${OPT[scale-burst]:-$( ((QUICK)) && echo 0.0125 || echo 0.1)}"
SCALE_MIXED="${OPT[scale-mixed]:-$( ((QUICK)) && echo 0.005 || echo 0.04)}"
LOADGEN="$(loadgen_bin)"
SCENARIOS=("burst|$BENCH_DIR/scenarios/burst.toml|$SCALE_BURST"
    "mixed|$BENCH_DIR/scenarios/mixed.toml|$SCALE_MIXED")

# The scenarios' keys join the generated ones in every map (KEY SIGNATURE TIER lines).
gen_keys 30 "$RUN_DIR/keys.txt"
for s in "${SCENARIOS[@]}"; do
    IFS='|' read -r _ file _ <<<"$s"
    "$LOADGEN" keys "$file" | awk -F'"' 'NF >= 4 {print $2, "-", $4}' >>"$RUN_DIR/keys.txt"
done
write_maps "$RUN_DIR/keys.txt"
ORIGIN_PORT="$(free_port)"
start_origin "$ORIGIN_PORT" "$LOAD_CORE"

for ((round = 1; round <= ROUNDS; round++)); do
    for sys in $(rotated "$round" "${SYSTEMS[@]}"); do
        for s in "${SCENARIOS[@]}"; do
            IFS='|' read -r name file scale <<<"$s"
            case_start "$sys" seed || continue
            taskset -c "$LOAD_CORE" "$LOADGEN" run "$file" --target "http://127.0.0.1:$PORT" \
                --scale "$scale" --json "$RUN_DIR/scenario.json" -q --allow-invalid \
                >"$RUN_DIR/scenario.txt" 2>&1 &
            pid=$!
            bench_track_pid "$pid"
            wait "$pid" || true # exit 1 = an [[assert]] failed: the figures still count
            bench_stop_pid "$pid"
            bench_stop_pid "$SYS_PID"
            [[ -s "$RUN_DIR/scenario.json" ]] || { cat "$RUN_DIR/scenario.txt" >&2; bench_die "loadgen run $name wrote no report"; }
            python3 "$BENCH_DIR/report.py" scenario "$RUN_DIR/scenario.json" --system "$sys" \
                --round "$round" --variant "$name ×$scale" >>"$OUT"
            rm -f "$RUN_DIR/scenario.json"
        done
    done
done
case_done
