#!/usr/bin/env bash
# bench/cases/large.sh — case 4: large objects through each proxy and direct to the origin.
#
# The origin (nginx, one worker, on the load core) serves one --size object (64 MiB; 4 MiB with
# --quick) from memory (tmpfs) with sendfile for GET, and stores a PUT body of the same size
# whole (WebDAV PUT into tmpfs, overwriting one file) before answering. `loadgen bench -c 1`
# (one connection, closed loop, one key header) on the load core GETs it, then PUTs one, over
# and over for --duration seconds, through each system
# (one worker alone on the proxy core, limits out of reach) and — as `direct` — straight to the
# origin. Measured: GB/s (bytes of bodies and heads moved / elapsed) and CPU seconds per GB of
# the proxy (for `direct`: of the origin, which shares the load core with the client).
#
# With --profile-dir, a perf profile of each proxy during 3 s of GETs (round 1).
#
# Usage: bench/cases/large.sh [--size 64MiB] [--profile-dir DIR]
#          [common case options: --rounds --duration --systems --out --quick, see lib.sh]

set -euo pipefail
source "$(dirname "$0")/../lib.sh"
case_opts large "$@"
SIZE="${OPT[size]:-$((QUICK ? 4 : 64))MiB}"
case_origin
BYTES="$(python3 -c 'import re,sys; n,u=re.fullmatch(r"(\d+)(KiB|MiB|GiB|)",sys.argv[1]).groups(); print(int(n)*{"":1,"KiB":1<<10,"MiB":1<<20,"GiB":1<<30}[u])' "$SIZE")"
head -c "$BYTES" /dev/urandom >"$DATA_DIR/www/big/obj"
PROFILE_DIR="${OPT[profile-dir]:-}"
[[ -z "$PROFILE_DIR" ]] || mkdir -p "$PROFILE_DIR"

# one_size SYSTEM PID CORE PORT: the GET and the PUT measurement of one system.
one_size() {
    local sys="$1" pid="$2" core="$3" port="$4"
    warm_loadgen "http://127.0.0.1:$port/big/obj" -c 1 --keys 1
    measure "$pid" "$core" "$RUN_DIR/cpu.json" \
        run_loadgen "$RUN_DIR/load.json" "http://127.0.0.1:$port/big/obj" -c 1 \
        -d "${DURATION}s" --keys 1
    emit "$sys" GET "$RUN_DIR/load.json" "$RUN_DIR/cpu.json" "object_bytes=$BYTES"
    if [[ -n "$PROFILE_DIR" && $round == 1 && "$sys" != direct ]]; then
        perf_profile "$pid" 3 "$PROFILE_DIR/perf-$sys-GET-$SIZE.txt" \
            "http://127.0.0.1:$port/big/obj" -c 1 --keys 1
    fi
    measure "$pid" "$core" "$RUN_DIR/cpu.json" \
        run_loadgen "$RUN_DIR/load.json" "http://127.0.0.1:$port/big/put" -c 1 \
        -d "${DURATION}s" --keys 1 -m PUT --body "$SIZE"
    emit "$sys" PUT "$RUN_DIR/load.json" "$RUN_DIR/cpu.json" "object_bytes=$BYTES"
}

for ((round = 1; round <= ROUNDS; round++)); do
    for sys in $(rotated "$round" "${SYSTEMS[@]}" direct); do
        if [[ "$sys" == direct ]]; then
            one_size direct "$ORIGIN_PID" "$LOAD_CORE" "$ORIGIN_PORT"
            continue
        fi
        case_start "$sys" open || continue
        one_size "$sys" "$SYS_PID" "$PROXY_CORE" "$PORT"
        bench_stop_pid "$SYS_PID"
    done
done
case_done
