# bench/lib.sh — helpers shared by the bench/*.sh scripts (source it; it does nothing by itself).
#
# Owns: a per-run scratch directory, the list of every process a script started (all killed by
# PID on exit), config rendering for the peers (bench/peers/*) and for tollgate (plain or HTTPS,
# table sizes, workers), the generated key lists and tier maps, test certificates, process CPU
# accounting from /proc, running loadgen on the load core, machine details, and the skeleton
# every bench/cases/*.sh script shares (options, rotation of systems, records).
# Must not touch: anything outside its run directory and bench/results/; processes it did not
# start (it never kills by name).

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"
PEERS_DIR="$BENCH_DIR/peers"
CLK_TCK="$(getconf CLK_TCK)"

BENCH_PIDS=()
RUN_DIR=""
DATA_DIR=""

bench_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
bench_die() { bench_log "error: $*"; exit 1; }

# Kill one process we started: TERM, then KILL after 3 s. Its children (nginx workers) follow
# their master; tollgate/haproxy are single processes.
bench_kill_pid() {
    local pid="$1" i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

bench_track_pid() { BENCH_PIDS+=("$1"); }

# Stop a tracked process and forget it.
bench_stop_pid() {
    local pid="$1" p keep=()
    bench_kill_pid "$pid"
    for p in "${BENCH_PIDS[@]}"; do [[ "$p" == "$pid" ]] || keep+=("$p"); done
    BENCH_PIDS=("${keep[@]}")
}

bench_cleanup() {
    local i
    for ((i = ${#BENCH_PIDS[@]} - 1; i >= 0; i--)); do
        bench_kill_pid "${BENCH_PIDS[$i]}"
    done
    BENCH_PIDS=()
    if [[ -n "$DATA_DIR" && -d "$DATA_DIR" && "${BENCH_KEEP_RUN:-0}" != 1 ]]; then
        rm -rf "$DATA_DIR"
    fi
    if [[ -n "$RUN_DIR" && -d "$RUN_DIR" && "${BENCH_KEEP_RUN:-0}" != 1 ]]; then
        rm -rf "$RUN_DIR"
    elif [[ -n "$RUN_DIR" ]]; then
        bench_log "run directory kept: $RUN_DIR"
    fi
}

# Create the run directory and install the cleanup trap (EXIT covers INT/TERM via exit).
bench_setup() {
    RUN_DIR="$(mktemp -d /tmp/tollgate-bench.XXXXXX)"
    # A command that stops the script (set -e) says so: the line, the command, the script.
    set -E
    trap 'bench_log "failed ($?): ${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND"' ERR
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

bench_require() {
    local missing=() c
    for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
    if ((${#missing[@]})); then
        bench_die "missing: ${missing[*]} (install the peers with bench/install-peers.sh)"
    fi
}

# A free TCP port on 127.0.0.1 (closed again before use; a race is possible but harmless here).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# render SRC DST KEY=VALUE...: copy SRC to DST replacing every @KEY@; fails on a leftover @X@.
render() {
    local src="$1" dst="$2" kv
    shift 2
    python3 - "$src" "$dst" "$@" <<'PY'
import re, sys
src, dst, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
text = open(src).read()
for kv in pairs:
    k, v = kv.split("=", 1)
    text = text.replace("@%s@" % k, v)
left = sorted(set(re.findall(r"@[A-Z][A-Z0-9_]*@", text)))
if left:
    sys.exit("render %s: unsubstituted %s" % (src, " ".join(left)))
open(dst, "w").write(text)
PY
}

# Limit profiles, as KEY=VALUE words for `render`: `seed` = the seed's tiers, `open` = limits no
# benchmark reaches (nothing is denied, every system does its full accounting work), `accuracy`
# = the seed's per-second limits with the per-minute ones out of reach (only the 1 s window
# decides: bench/cases/accuracy.sh).
TIERS=(premium standard basic unknown)
declare -A SEED_MIN=([premium]=1000 [standard]=500 [basic]=100 [unknown]=50)
declare -A SEED_SEC=([premium]=50 [standard]=25 [basic]=10 [unknown]=5)
OPEN_MIN=100000000
OPEN_SEC=10000000

# limit_vars PROFILE → prints KEY=VALUE lines (PREMIUM_MIN, PREMIUM_SEC, PREMIUM_MIN_BURST, ...).
limit_vars() {
    local profile="$1" t T min sec
    for t in "${TIERS[@]}"; do
        T="${t^^}"
        case "$profile" in
        seed) min="${SEED_MIN[$t]}" sec="${SEED_SEC[$t]}" ;;
        accuracy) min="$OPEN_MIN" sec="${SEED_SEC[$t]}" ;;
        *) min="$OPEN_MIN" sec="$OPEN_SEC" ;;
        esac
        echo "${T}_MIN=$min"
        echo "${T}_SEC=$sec"
        echo "${T}_MIN_BURST=$((min - 1))"
        echo "${T}_SEC_BURST=$((sec - 1))"
    done
}

# gen_keys N FILE [STYLE]: N deterministic keys "KEY <64hex signature> <tier>", tiers in turn
# premium, standard, basic (so the same keys exist in every map and in the wrk script).
# STYLE (optional): `garage` (default) = 26-byte Garage key ids "GK<24 hex>", `aws` = 20-byte
# AWS/MinIO-style ids "AKIA<16 upper-case hex>".
gen_keys() {
    python3 - "$1" "$2" "${3:-garage}" <<'PY'
import hashlib, sys
n, path, style = int(sys.argv[1]), sys.argv[2], sys.argv[3]
tiers = ["premium", "standard", "basic"]
with open(path, "w") as f:
    for i in range(n):
        h = hashlib.sha256(b"tollgate-bench-key-%d" % i).hexdigest()
        key = "AKIA" + h[:16].upper() if style == "aws" else "GK" + h[:24]
        sig = hashlib.sha256(b"tollgate-bench-sig-%d" % i).hexdigest()
        f.write("%s %s %s\n" % (key, sig, tiers[i % 3]))
PY
}

# Fixed keys used by the behaviour checks and the seed's own examples (key tier).
EXTRA_KEYS="AKIAIOSFODNN7EXAMPLE premium
minioadmin premium
test-standard-key standard
test-basic-key basic
chk-v4-key premium
chk-v2-key premium
chk-v4q-key premium
chk-v2q-key premium
chk-custom-key premium
chk-custom2-key premium
chk-burst-basic basic
chk-pace-basic basic
chk-post-basic basic"

# write_maps KEYS_FILE: from the generated keys plus EXTRA_KEYS write
#   $RUN_DIR/keys.haproxy.map (KEY tier), $RUN_DIR/keys.nginx.map (KEY tier;),
#   $RUN_DIR/keys.toml (tollgate's keys file).
write_maps() {
    local keys="$1"
    {
        awk '{print $1, $3}' "$keys"
        printf '%s\n' "$EXTRA_KEYS"
    } >"$RUN_DIR/keys.pairs"
    cp "$RUN_DIR/keys.pairs" "$RUN_DIR/keys.haproxy.map"
    awk '{print "\"" $1 "\" " $2 ";"}' "$RUN_DIR/keys.pairs" >"$RUN_DIR/keys.nginx.map"
    {
        echo "[keys]"
        awk '{print "\"" $1 "\" = \"" $2 "\""}' "$RUN_DIR/keys.pairs"
    } >"$RUN_DIR/keys.toml"
}

# wait_http PORT [TIMEOUT_S] [PID]: until something answers HTTP (HTTPS when BENCH_TLS=1) on
# 127.0.0.1:PORT; gives up early when PID (the process that should answer) has exited.
wait_http() {
    local port="$1" timeout="${2:-10}" pid="${3:-}" i url="http://127.0.0.1:$1/"
    [[ "${BENCH_TLS:-0}" == 1 ]] && url="https://127.0.0.1:$1/"
    for ((i = 0; i < timeout * 20; i++)); do
        if curl -s -k -o /dev/null --max-time 1 "$url"; then return 0; fi
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        sleep 0.05
    done
    return 1
}

# start_origin PORT CORE → ORIGIN_PID (nginx `return 200`, one worker, pinned to CORE; files
# under /big/ from $DATA_DIR/www/big, PUTs stored in DATA_DIR). BENCH_ORIGIN_LOG=FILE: log each request's arrival time
# and X-Bench-Seq there.
start_origin() {
    local port="$1" core="$2" log="access_log off;"
    [[ -n "${BENCH_ORIGIN_LOG:-}" ]] && log="access_log $BENCH_ORIGIN_LOG arrival;"
    # The origin's data (objects served, PUT bodies stored) lives in memory: a tmpfs directory
    # when /dev/shm is there, removed on exit like the run directory.
    if [[ -z "$DATA_DIR" ]]; then
        DATA_DIR="$(mktemp -d /dev/shm/tollgate-bench.XXXXXX 2>/dev/null || mktemp -d "$RUN_DIR/data.XXXXXX")"
    fi
    mkdir -p "$DATA_DIR/www/big" "$DATA_DIR/body"
    # nginx's workers run as an unprivileged user: they write PUT bodies under DATA_DIR.
    chmod 777 "$DATA_DIR" "$DATA_DIR/body"
    render "$PEERS_DIR/nginx-origin.conf" "$RUN_DIR/nginx-origin.conf" \
        ORIGIN_PORT="$port" RUN_DIR="$RUN_DIR" DATA_DIR="$DATA_DIR" ORIGIN_LOG="$log"
    taskset -c "$core" nginx -p "$RUN_DIR" -e "$RUN_DIR/nginx-origin.error.log" \
        -c "$RUN_DIR/nginx-origin.conf" >"$RUN_DIR/nginx-origin.out" 2>&1 &
    ORIGIN_PID=$!
    bench_track_pid "$ORIGIN_PID"
    BENCH_TLS=0 wait_http "$port" 10 "$ORIGIN_PID" || bench_die "origin nginx did not start (see $RUN_DIR/nginx-origin.*)"
}

# The tollgate binary, if one is built: $TOLLGATE_BIN, ./target/release/tollgate, then
# $CARGO_TARGET_DIR/release/tollgate.
tollgate_bin() {
    local c
    for c in "${TOLLGATE_BIN:-}" "$REPO_DIR/target/release/tollgate" \
        "${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/release/tollgate}"; do
        if [[ -n "$c" && -x "$c" ]]; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

# Settings every system reads from the environment (all optional):
#   BENCH_TLS=1          HTTPS listener with $RUN_DIR/tls/{cert,key,combined}.pem (make_tls_certs)
#   BENCH_TABLE_SIZE=N   tracked-key capacity: tollgate table_cap, HAProxy stick-table size,
#                        nginx zone size (BENCH_ZONE_SIZE, default 16m); default the seed's 100k
#   BENCH_WORKERS=N      tollgate workers (default 1); CORE may then be a list ("0,1")

# write_tollgate_config PORT ORIGIN_PORT PROFILE FILE (admin off, no health checks); PROFILE seed,
# open, accuracy or plain (no rate limiting).
write_tollgate_config() {
    local port="$1" origin="$2" profile="$3" file="$4" t min sec
    {
        echo "# generated by bench/lib.sh for one benchmark run"
        echo "workers = ${BENCH_WORKERS:-1}"
        echo "pin_workers = false"
        if [[ "${BENCH_TLS:-0}" == 1 ]]; then
            echo "listen = []"
        else
            echo "listen = [\"127.0.0.1:$port\"]"
        fi
        echo "reload_poll_interval = \"0s\""
        echo
        echo "[admin]"
        # BENCH_ADMIN_PORT: expose the admin API (memory-per-key reads the table size from it).
        if [[ -n "${BENCH_ADMIN_PORT:-}" ]]; then
            echo "listen = \"127.0.0.1:$BENCH_ADMIN_PORT\""
        else
            echo "listen = \"off\""
        fi
        echo
        echo "[upstream]"
        echo "[[upstream.servers]]"
        echo "addr = \"127.0.0.1:$origin\""
        echo "[upstream.health]"
        echo "enabled = false"
        echo
        echo "[limits]"
        echo "keys_file = \"keys.toml\""
        echo "table_cap = ${BENCH_TABLE_SIZE:-100000}"
        # `plain`: rate limiting off (no method is limited): the data path alone, the
        # counterpart of haproxy-plain.
        if [[ "$profile" == plain ]]; then echo "methods = []"; fi
        for t in "${TIERS[@]}"; do
            echo
            echo "[tiers.$t]"
            if [[ "$profile" == seed ]]; then
                min="${SEED_MIN[$t]}" sec="${SEED_SEC[$t]}"
                echo "per_minute = $min"
                echo "per_second = $sec"
            elif [[ "$profile" == accuracy ]]; then
                echo "per_minute = 65535"
                echo "per_second = ${SEED_SEC[$t]}"
            else
                # tollgate refuses window limits over 1,000,000, and a tier with a limit over
                # 65,535 gets the larger wide state, so "open" is not 1e8/min but two windows
                # of 65,535 (the 48-byte state the seed's tiers use, checked and updated on
                # every request) far above the load: 65,535 per 500 ms = 131k req/s
                # sustained, 65,535 per 100 ms = 655k req/s burst
                echo 'sustained = { limit = 65535, window = "500ms" }'
                echo 'burst = { limit = 65535, window = "100ms" }'
            fi
        done
        if [[ "${BENCH_TLS:-0}" == 1 ]]; then
            printf '\n[tls]\nlisten = ["127.0.0.1:%s"]\n[[tls.certs]]\ncert = "%s"\nkey = "%s"\n' \
                "$port" "$RUN_DIR/tls/cert.pem" "$RUN_DIR/tls/key.pem"
        fi
    } >"$file"
}

# peer_vars → KEY=VALUE lines for the peers' TLS, table-size and map placeholders.
peer_vars() {
    local size="${BENCH_TABLE_SIZE:-100000}" n
    n="$(wc -l <"$RUN_DIR/keys.pairs" 2>/dev/null || echo 0)"
    echo "TABLE_SIZE=$size"
    echo "ZONE_SIZE=${BENCH_ZONE_SIZE:-16m}"
    echo "MAP_HASH_MAX=$((n * 2 > 65536 ? n * 2 : 65536))"
    if [[ "${BENCH_TLS:-0}" == 1 ]]; then
        echo "BIND_TLS= ssl crt $RUN_DIR/tls/combined.pem alpn http/1.1"
        echo "LISTEN_TLS= ssl"
        echo "TLS_CONF=        ssl_certificate $RUN_DIR/tls/cert.pem; ssl_certificate_key $RUN_DIR/tls/key.pem; ssl_session_cache shared:SSL:10m; ssl_session_tickets on;"
    else
        echo "BIND_TLS="
        echo "LISTEN_TLS="
        echo "TLS_CONF="
    fi
}

# start_haproxy NAME PORT CORE VARS...: render bench/peers/NAME.cfg with VARS, check, start.
start_haproxy() {
    local name="$1" port="$2" core="$3"
    shift 3
    render "$PEERS_DIR/$name.cfg" "$RUN_DIR/$name.cfg" LISTEN_PORT="$port" "$@"
    # BENCH_HAPROXY_SOCK: a stats socket (memory-per-key reads the stick tables through it).
    if [[ "$name" == haproxy-seed && -n "${BENCH_HAPROXY_SOCK:-}" ]]; then
        printf 'global\n    stats socket %s mode 600\n' "$BENCH_HAPROXY_SOCK" >>"$RUN_DIR/$name.cfg"
    fi
    haproxy -c -q -f "$RUN_DIR/$name.cfg" || return 1
    taskset -c "$core" haproxy -db -f "$RUN_DIR/$name.cfg" >"$RUN_DIR/$name.out" 2>&1 &
}

# start_tollgate NAME PORT CORE ORIGIN_PORT PROFILE: write its config and start it. Returns 2
# when there is no binary for NAME.
start_tollgate() {
    local name="$1" port="$2" core="$3" origin="$4" profile="$5" bin
    bin="$(tollgate_bin)" || return 2
    # tollgate-base: the same configuration on a baseline build ($TOLLGATE_BASE_BIN), for
    # a change's before/after ratio measured in one run.
    if [[ "$name" == tollgate-base ]]; then
        [[ -x "${TOLLGATE_BASE_BIN:-}" ]] || return 2
        bin="$TOLLGATE_BASE_BIN"
    fi
    if [[ "$name" == tollgate-plain ]]; then profile=plain; fi
    write_tollgate_config "$port" "$origin" "$profile" "$RUN_DIR/tollgate.toml"
    if [[ "$name" == tollgate-log ]]; then
        # tollgate with its access log on (a real file; the previous run's is removed
        # first, ~330 bytes per request)
        rm -f "$RUN_DIR/access.log"
        printf '\n[access_log]\npath = "%s"\n' "$RUN_DIR/access.log" >>"$RUN_DIR/tollgate.toml"
    fi
    # BENCH_WRAP: a command the binary runs under (bench/instructions.sh: callgrind).
    # shellcheck disable=SC2086
    taskset -c "$core" ${BENCH_WRAP:-} "$bin" run --config "$RUN_DIR/tollgate.toml" \
        --workers "${BENCH_WORKERS:-1}" >"$RUN_DIR/$name.out" 2>&1 &
}

# start_system NAME PORT CORE ORIGIN_PORT PROFILE → SYS_PID. Returns 2 when NAME cannot run here
# (tollgate not built), 1 when it failed to start.
start_system() {
    local name="$1" port="$2" core="$3" origin="$4" profile="$5" rc
    local -a vars
    mapfile -t vars < <(limit_vars "$profile")
    mapfile -t -O "${#vars[@]}" vars < <(peer_vars)
    case "$name" in
    haproxy-plain)
        start_haproxy "$name" "$port" "$core" ORIGIN_PORT="$origin" "${vars[@]}" || return 1
        ;;
    haproxy-seed)
        start_haproxy "$name" "$port" "$core" ORIGIN_PORT="$origin" \
            MAP_FILE="$RUN_DIR/keys.haproxy.map" "${vars[@]}" || return 1
        ;;
    nginx-limit)
        render "$PEERS_DIR/nginx-limit.conf" "$RUN_DIR/nginx-limit.conf" \
            LISTEN_PORT="$port" ORIGIN_PORT="$origin" RUN_DIR="$RUN_DIR" \
            MAP_FILE="$RUN_DIR/keys.nginx.map" "${vars[@]}"
        taskset -c "$core" nginx -p "$RUN_DIR" -e "$RUN_DIR/nginx-limit.error.log" \
            -c "$RUN_DIR/nginx-limit.conf" >"$RUN_DIR/$name.out" 2>&1 &
        ;;
    tollgate | tollgate-plain | tollgate-log | tollgate-base)
        rc=0
        start_tollgate "$name" "$port" "$core" "$origin" "$profile" || rc=$?
        ((rc == 0)) || return "$rc"
        ;;
    *)
        bench_die "unknown system: $name"
        ;;
    esac
    SYS_PID=$!
    bench_track_pid "$SYS_PID"
    if ! wait_http "$port" "${BENCH_START_TIMEOUT:-10}" "$SYS_PID"; then
        bench_log "$name did not answer on port $port; its output:"
        tail -n 20 "$RUN_DIR/$name.out" >&2 || true
        bench_stop_pid "$SYS_PID"
        return 1
    fi
    return 0
}

# snapshot PID CORE: "PROC_TICKS CORE_BUSY_TICKS UNIX_TIME" read together in one process, so the
# before/after windows of the three numbers match.
#   PROC_TICKS: utime+stime (clock ticks) of PID and all its descendants (the kernel folds exited
#               threads of a live process into its totals).
#   CORE_BUSY_TICKS: non-idle ticks of CPU CORE (or of a list "0,1") from /proc/stat (user
#               nice system irq softirq steal: everything that ran there, ours or not).
snapshot() {
    python3 - "$1" "$2" <<'PY'
import os, sys, time
def proc(pid):
    try:
        s = open("/proc/%d/stat" % pid).read()
    except OSError:
        return 0, []
    f = s[s.rindex(")") + 2:].split()
    t = int(f[11]) + int(f[12])  # fields 14 and 15 of /proc/PID/stat
    kids = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                kids += [int(x) for x in open("/proc/%d/task/%s/children" % (pid, tid)).read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return t, kids
def core_busy(cores):
    want = set("cpu%s" % c for c in cores.split(","))
    busy = 0
    for line in open("/proc/stat"):
        f = line.split()
        if f[0] in want:
            busy += sum(int(f[i]) for i in (1, 2, 3, 6, 7, 8))
    return busy
total, todo = 0, [int(sys.argv[1])]
while todo:
    t, kids = proc(todo.pop())
    total += t
    todo += kids
print(total, core_busy(sys.argv[2]), "%.6f" % time.time())
PY
}

# machine_busy_pct: percent of all CPUs busy over the next second (everything on the machine).
machine_busy_pct() {
    python3 - <<'PY'
import time
def read():
    f = open("/proc/stat").readline().split()
    v = [int(x) for x in f[1:9]]
    return sum(v), v[3] + v[4]
t0, i0 = read(); time.sleep(1); t1, i1 = read()
print(int(round(100.0 * (1 - (i1 - i0) / max(t1 - t0, 1)))))
PY
}

# wait_idle MAX_S: wait (up to MAX_S seconds) until the machine is below 15% busy.
wait_idle() {
    local max="$1" start busy
    start=$(date +%s)
    while :; do
        busy="$(machine_busy_pct)"
        if ((busy < 15)); then bench_log "machine idle (${busy}% busy)"; return 0; fi
        if (($(date +%s) - start >= max)); then
            bench_log "machine still ${busy}% busy after ${max}s; running anyway (see the noise column)"
            return 1
        fi
        bench_log "machine ${busy}% busy; waiting for it to go idle"
        sleep 10
    done
}

# machine_json: the machine and tool versions, as one JSON object on stdout.
machine_json() {
    # Tool probes may fail or be cut short by `head` (SIGPIPE): never fatal here.
    local -
    set +e +o pipefail
    local model kernel hap ngx wrkv rustv rev dirty ossl mem
    model="$(lscpu | awk -F: '/^Model name/ {sub(/^[ \t]+/, "", $2); print $2; exit}')"
    kernel="$(uname -sr)"
    hap="$(haproxy -v 2>&1 | head -n 1)"
    ngx="$(nginx -v 2>&1 | head -n 1)"
    wrkv="$(wrk -v 2>&1 | head -n 1 | sed 's/ Copyright.*//')"
    rustv="$(rustc -V 2>/dev/null || echo 'rustc: not installed')"
    ossl="$(openssl version 2>/dev/null || echo 'openssl: not installed')"
    mem="$(awk '/^MemTotal/ {printf "%.0f GiB RAM", $2 / 1048576}' /proc/meminfo)"
    rev="$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    dirty="$(git -C "$REPO_DIR" status --porcelain 2>/dev/null | grep -q . && echo true || echo false)"
    python3 - "$model" "$(nproc)" "$kernel" "$hap" "$ngx" "$wrkv" "$rustv" "$rev" "$dirty" \
        "$(cat /proc/loadavg)" "$ossl" "$mem" "$(hostname)" <<'PY'
import json, sys
a = sys.argv[1:]
print(json.dumps({"cpu_model": a[0], "nproc": int(a[1]), "kernel": a[2], "haproxy": a[3],
                  "nginx": a[4], "wrk": a[5], "rustc": a[6], "git_rev": a[7],
                  "git_dirty": a[8] == "true", "loadavg_at_start": a[9], "openssl": a[10],
                  "memory": a[11], "host": a[12]}))
PY
}

# ---- loadgen, CPU accounting, certificates ---------------------------------------------------

PROXY_CORE="${PROXY_CORE:-0}"
LOAD_CORE="${LOAD_CORE:-1}"

# The loadgen binary: $LOADGEN_BIN, ./target/release/loadgen, $CARGO_TARGET_DIR/release/loadgen.
loadgen_bin() {
    local c
    for c in "${LOADGEN_BIN:-}" "$REPO_DIR/target/release/loadgen" \
        "${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/release/loadgen}"; do
        if [[ -n "$c" && -x "$c" ]]; then
            echo "$c"
            return 0
        fi
    done
    return 1
}

# warm_loadgen ARGS...: `loadgen bench ARGS -d WARMs`, the result dropped (nothing when WARM=0).
warm_loadgen() {
    ((${WARM:-1} > 0)) || return 0
    run_loadgen "$RUN_DIR/warm.json" "$@" -d "${WARM:-1}s"
}

# run_loadgen OUT ARGS...: `loadgen bench ARGS` pinned to the load core (tracked by PID, quiet);
# its JSON result in OUT, its text in OUT.txt.
run_loadgen() {
    local out="$1" pid bin
    shift
    bin="$(loadgen_bin)" || bench_die "no loadgen build (cargo build --release -p loadgen)"
    rm -f "$out"
    taskset -c "$LOAD_CORE" "$bin" bench "$@" --pin "$LOAD_CORE" -q --json "$out" \
        >"$out.txt" 2>&1 &
    pid=$!
    bench_track_pid "$pid"
    wait "$pid" || true
    bench_stop_pid "$pid"
    if [[ ! -s "$out" ]]; then
        cat "$out.txt" >&2
        bench_die "loadgen bench $* wrote no result"
    fi
}

# measure PID CORE OUT CMD...: runs CMD, writes to OUT (JSON) the CPU PID's process tree used
# meanwhile and how busy CORE was with other work (bench/report.py cpu). On a shared machine,
# BENCH_MAX_FOREIGN=PCT repeats CMD (up to BENCH_RETRIES times, 2 by default, after waiting up to
# 60 s for quiet) while other processes took more than PCT% of CORE; OUT says how many attempts.
measure() {
    local pid="$1" core="$2" out="$3" c0 k0 t0 c1 k1 t1 attempt foreign
    shift 3
    for ((attempt = 1; ; attempt++)); do
        read -r c0 k0 t0 < <(snapshot "$pid" "$core")
        "$@"
        read -r c1 k1 t1 < <(snapshot "$pid" "$core")
        python3 "$BENCH_DIR/report.py" cpu "$c0" "$k0" "$t0" "$c1" "$k1" "$t1" "$CLK_TCK" \
            "$attempt" >"$out"
        foreign="$(python3 -c 'import json,sys; print(int(100 * json.load(open(sys.argv[1]))["foreign_cpu_on_proxy_core"]))' "$out")"
        # Only the proxy core alone is judged (elsewhere the load generator is "foreign").
        if [[ "$core" != "$PROXY_CORE" ]] || ((${BENCH_MAX_FOREIGN:-0} == 0 ||
            foreign <= BENCH_MAX_FOREIGN || attempt > ${BENCH_RETRIES:-2})); then
            return 0
        fi
        bench_log "other processes took ${foreign}% of CPU $core: measurement repeated"
        wait_idle 60 || true
    done
}

# make_tls_certs KIND: a fresh self-signed certificate for localhost / 127.0.0.1 in
# $RUN_DIR/tls: cert.pem, key.pem (PKCS#8) and combined.pem (HAProxy). KIND rsa2048 or p256.
make_tls_certs() {
    local d="$RUN_DIR/tls" kind="$1"
    local -a alg
    case "$kind" in
    rsa2048) alg=(-newkey rsa:2048) ;;
    p256) alg=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
    *) bench_die "unknown certificate kind $kind (rsa2048, p256)" ;;
    esac
    mkdir -p "$d"
    openssl req -x509 "${alg[@]}" -nodes -days 2 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$d/key.pem" -out "$d/cert.pem" 2>"$d/openssl.log" ||
        bench_die "openssl could not make a certificate (see $d/openssl.log)"
    cat "$d/cert.pem" "$d/key.pem" >"$d/combined.pem"
}

# ---- the skeleton of bench/cases/*.sh --------------------------------------------------------

ALL_SYSTEMS="tollgate,haproxy-seed,haproxy-plain,nginx-limit"
declare -A OPT=()

# case_opts NAME "$@": the options every case takes —
#   --rounds N (3; --quick: 1)   --duration S (10; --quick: 1)   --systems a,b (every system)
#   --out FILE (records as JSON lines, appended; default: the run directory, and a report is
#   printed at the end)   --quick   --proxy-core N (0)   --load-core N (1)
# and every other "--name value" pair into OPT[name] (the case's own options). Sets CASE,
# ROUNDS, DURATION, WARM (warm-up seconds: 1, quick 0), QUICK, OUT, SYSTEMS (runnable ones),
# SKIPPED; creates the run directory.
case_opts() {
    CASE="$1"
    shift
    local rounds="" duration="" systems="${CASE_SYSTEMS:-$ALL_SYSTEMS}" s
    QUICK=0 OUT=""
    while (($#)); do
        case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        --systems) systems="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --proxy-core) PROXY_CORE="$2"; shift 2 ;;
        --load-core) LOAD_CORE="$2"; shift 2 ;;
        -h | --help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --*) OPT["${1#--}"]="$2"; shift 2 ;;
        *) bench_die "unexpected argument: $1" ;;
        esac
    done
    ROUNDS="${rounds:-$((QUICK ? 1 : 3))}"
    DURATION="${duration:-$((QUICK ? 1 : 10))}"
    # Seconds of load before each measurement (connections, caches, rates settled); none quick.
    WARM=$((QUICK ? 0 : 1))
    bench_require haproxy nginx taskset curl python3 openssl
    loadgen_bin >/dev/null || bench_die "no loadgen build (cargo build --release -p loadgen)"
    bench_setup
    if (($(nproc) < 2)); then
        bench_log "only one CPU: proxy and load share it (figures are not comparable)"
        PROXY_CORE=0 LOAD_CORE=0
    fi
    CASE_ALONE=0
    if [[ -z "$OUT" ]]; then OUT="$RUN_DIR/records.jsonl" CASE_ALONE=1; fi
    SYSTEMS=() SKIPPED=()
    IFS=, read -r -a _want <<<"$systems"
    for s in "${_want[@]}"; do
        if [[ "$s" == tollgate* ]] && ! tollgate_bin >/dev/null; then
            skip_record "$s" "not built (cargo build --release)"
            continue
        fi
        SYSTEMS+=("$s")
    done
    ((${#SYSTEMS[@]})) || bench_die "$CASE: nothing to run"
}

# skip_record SYSTEM REASON: a record saying SYSTEM was not measured (shown in the report).
skip_record() {
    bench_log "$CASE/$1: SKIPPED — $2"
    python3 -c 'import json,sys; print(json.dumps({"case":sys.argv[1],"system":sys.argv[2],"round":0,"variant":"","skipped":sys.argv[3]}))' \
        "$CASE" "$1" "$2" >>"$OUT"
}

# rotated ROUND ITEM...: the items rotated left by ROUND-1 (round 1: as given), one per line.
rotated() {
    local r="$1" n i
    shift
    n=$#
    for ((i = 0; i < n; i++)); do
        local j=$(((i + r - 1) % n + 1))
        echo "${!j}"
    done
}

# case_origin: keys (bench/lib.sh gen_keys, KEYS keys, 1,000 by default) in every map, and the
# origin on the load core → ORIGIN_PORT.
case_origin() {
    gen_keys "${KEYS:-1000}" "$RUN_DIR/keys.txt" "${KEY_STYLE:-garage}"
    write_maps "$RUN_DIR/keys.txt"
    ORIGIN_PORT="$(free_port)"
    start_origin "$ORIGIN_PORT" "$LOAD_CORE"
}

# case_start SYSTEM PROFILE [CORE]: start SYSTEM on a free port → PORT, SYS_PID; a skip record
# and status 1 when it cannot run.
case_start() {
    local sys="$1" profile="$2" core="${3:-$PROXY_CORE}" rc=0
    PORT="$(free_port)"
    start_system "$sys" "$PORT" "$core" "$ORIGIN_PORT" "$profile" || rc=$?
    if ((rc != 0)); then
        skip_record "$sys" "failed to start (round ${round:-?})"
        return 1
    fi
}

# emit SYSTEM VARIANT LOAD_JSON CPU_JSON [KEY=VALUE...]: one record into $OUT (round: $round).
emit() {
    local sys="$1" variant="$2" load="$3" cpu="$4" kv
    shift 4
    local -a sets=()
    for kv in "$@"; do sets+=(--set "$kv"); done
    python3 "$BENCH_DIR/report.py" record --case "$CASE" --system "$sys" --round "$round" \
        --variant "$variant" ${load:+--load "$load"} ${cpu:+--cpu "$cpu"} "${sets[@]}" >>"$OUT"
}

# case_done: when the case ran alone, print its report (nothing is saved).
case_done() {
    ((CASE_ALONE)) || return 0
    machine_json >"$RUN_DIR/machine.json"
    echo '{"quick": false, "rounds": '"$ROUNDS"'}' >"$RUN_DIR/params.json"
    python3 "$BENCH_DIR/report.py" render --records "$OUT" --machine "$RUN_DIR/machine.json" \
        --params "$RUN_DIR/params.json"
}

# seed_saturation → haproxy-seed's saturation req/s (median of ROUNDS closed-loop loadgen runs of
# DURATION s, 64 connections, 1,000 keys), for cases run alone without --sat-rps.
seed_saturation() {
    local r i
    local -a got=()
    case_start haproxy-seed open || bench_die "haproxy-seed is needed for the reference rate"
    for ((i = 0; i < ROUNDS; i++)); do
        run_loadgen "$RUN_DIR/sat.json" "http://127.0.0.1:$PORT/bench/object" -c 64 \
            -d "${DURATION}s" --keys 1000
        r="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rps"])' "$RUN_DIR/sat.json")"
        got+=("$r")
    done
    bench_stop_pid "$SYS_PID"
    python3 -c 'import statistics,sys; print(round(statistics.median(map(float, sys.argv[1:]))))' "${got[@]}"
}

# load_rates FRACTIONS SAT → "label rate" lines, e.g. "25% 14500" for each fraction of SAT.
load_rates() {
    local f
    IFS=, read -r -a _fr <<<"$1"
    for f in "${_fr[@]}"; do
        python3 -c 'import sys; f=float(sys.argv[1]); print("%g%% %d" % (f * 100, round(f * float(sys.argv[2]))))' "$f" "$2"
    done
}

# tree_pids PID → PID and its descendants (nginx's workers), comma-separated.
tree_pids() {
    python3 - "$1" <<'PY'
import os, sys
out, todo = [], [int(sys.argv[1])]
while todo:
    p = todo.pop()
    out.append(p)
    try:
        for tid in os.listdir("/proc/%d/task" % p):
            todo += [int(x) for x in open("/proc/%d/task/%s/children" % (p, tid)).read().split()]
    except OSError:
        pass
print(",".join(map(str, out)))
PY
}

# syscall_counts PID LOADGEN_ARGS...: a separate diagnostic run (`loadgen bench LOADGEN_ARGS`)
# while `perf stat` counts the syscalls, io_uring_enter and epoll_wait calls and context
# switches of PID's process tree → key=value lines per request (nothing when perf cannot count
# tracepoints here). Not part of the CPU figures: the counting costs a little.
syscall_counts() {
    local pid="$1" ppid
    shift
    command -v perf >/dev/null 2>&1 || return 0
    perf stat -x, -o "$RUN_DIR/perf-stat.txt" -p "$(tree_pids "$pid")" \
        -e raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_epoll_wait,context-switches \
        >/dev/null 2>&1 &
    ppid=$!
    bench_track_pid "$ppid"
    sleep 0.2
    run_loadgen "$RUN_DIR/perf-load.json" "$@"
    kill -INT "$ppid" 2>/dev/null || true
    wait "$ppid" 2>/dev/null || true
    bench_stop_pid "$ppid"
    python3 - "$RUN_DIR/perf-stat.txt" "$RUN_DIR/perf-load.json" <<'PY'
import json, sys
names = {"raw_syscalls:sys_enter": "syscalls_per_req", "syscalls:sys_enter_io_uring_enter":
         "io_uring_enter_per_req", "syscalls:sys_enter_epoll_wait": "epoll_wait_per_req",
         "context-switches": "cswitch_per_req"}
req = json.load(open(sys.argv[2]))["requests"]
try:
    lines = open(sys.argv[1]).read().splitlines()
except OSError:
    lines = []
for line in lines:
    f = line.split(",")
    if len(f) > 2 and f[2] in names and f[0].strip().isdigit() and req:
        print("%s=%.3f" % (names[f[2]], int(f[0]) / req))
PY
}

# perf_profile PID SECONDS FILE LOADGEN_ARGS...: `perf record` (cpu-clock, call graphs) of PID's
# tree during a `loadgen bench LOADGEN_ARGS` run; its report (self time per symbol) into FILE.
perf_profile() {
    local pid="$1" secs="$2" file="$3" ppid
    shift 3
    command -v perf >/dev/null 2>&1 || return 0
    perf record -e cpu-clock -F 1999 -g -o "$RUN_DIR/perf.data" -p "$(tree_pids "$pid")" \
        >/dev/null 2>&1 &
    ppid=$!
    bench_track_pid "$ppid"
    sleep 0.2
    run_loadgen "$RUN_DIR/perf-load.json" "$@" -d "${secs}s"
    kill -INT "$ppid" 2>/dev/null || true
    wait "$ppid" 2>/dev/null || true
    bench_stop_pid "$ppid"
    perf report -i "$RUN_DIR/perf.data" --stdio --no-children --percent-limit 0.5 \
        -F overhead,dso,sym -g none 2>/dev/null | sed -e 's/ *$//' -e '/^$/d' >"$file.raw" || true
    # perf prints the rows in symbol order here: largest share first.
    { grep '^#' "$file.raw"; grep -v '^#' "$file.raw" | sort -rn; } >"$file" || true
    rm -f "$file.raw"
    rm -f "$RUN_DIR/perf.data"
}
