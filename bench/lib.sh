# bench/lib.sh — helpers shared by the bench/*.sh scripts (source it; it does nothing by itself).
#
# Owns: a per-run scratch directory, the list of every process a script started (all killed by
# PID on exit), config rendering for the peers (bench/peers/*) and for tollgate, the generated
# key lists and tier maps, process CPU accounting from /proc, machine details.
# Must not touch: anything outside its run directory and bench/results/; processes it did not
# start (it never kills by name).

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"
PEERS_DIR="$BENCH_DIR/peers"
CLK_TCK="$(getconf CLK_TCK)"

BENCH_PIDS=()
RUN_DIR=""

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
    if [[ -n "$RUN_DIR" && -d "$RUN_DIR" && "${BENCH_KEEP_RUN:-0}" != 1 ]]; then
        rm -rf "$RUN_DIR"
    elif [[ -n "$RUN_DIR" ]]; then
        bench_log "run directory kept: $RUN_DIR"
    fi
}

# Create the run directory and install the cleanup trap (EXIT covers INT/TERM via exit).
bench_setup() {
    RUN_DIR="$(mktemp -d /tmp/tollgate-bench.XXXXXX)"
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
# benchmark reaches (nothing is denied, every system does its full accounting work).
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
        if [[ "$profile" == seed ]]; then
            min="${SEED_MIN[$t]}" sec="${SEED_SEC[$t]}"
        else
            min="$OPEN_MIN" sec="$OPEN_SEC"
        fi
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

# wait_http PORT [TIMEOUT_S] [PID]: until something answers HTTP on 127.0.0.1:PORT; gives up
# early when PID (the process that should answer) has exited.
wait_http() {
    local port="$1" timeout="${2:-10}" pid="${3:-}" i
    for ((i = 0; i < timeout * 20; i++)); do
        if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/"; then return 0; fi
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        sleep 0.05
    done
    return 1
}

# start_origin PORT CORE → ORIGIN_PID (nginx `return 200`, one worker, pinned to CORE).
start_origin() {
    local port="$1" core="$2"
    render "$PEERS_DIR/nginx-origin.conf" "$RUN_DIR/nginx-origin.conf" \
        ORIGIN_PORT="$port" RUN_DIR="$RUN_DIR"
    taskset -c "$core" nginx -p "$RUN_DIR" -e "$RUN_DIR/nginx-origin.error.log" \
        -c "$RUN_DIR/nginx-origin.conf" >"$RUN_DIR/nginx-origin.out" 2>&1 &
    ORIGIN_PID=$!
    bench_track_pid "$ORIGIN_PID"
    wait_http "$port" 10 "$ORIGIN_PID" || bench_die "origin nginx did not start (see $RUN_DIR/nginx-origin.*)"
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

# write_tollgate_config PORT ORIGIN_PORT PROFILE FILE (admin off, no health checks); PROFILE seed,
# open or plain (no rate limiting).
write_tollgate_config() {
    local port="$1" origin="$2" profile="$3" file="$4" t min sec
    {
        echo "# generated by bench/lib.sh for one benchmark run"
        echo "workers = 1"
        echo "pin_workers = false"
        echo "listen = [\"127.0.0.1:$port\"]"
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
            else
                # tollgate's window limits are 1..=65535, so "open" cannot be 1e8/min: two
                # windows still checked and updated on every request, each far above the load
                # (65535 per 500 ms = 131k req/s sustained, 65535 per 100 ms = 655k req/s burst)
                echo 'sustained = { limit = 65535, window = "500ms" }'
                echo 'burst = { limit = 65535, window = "100ms" }'
            fi
        done
    } >"$file"
}

# start_system NAME PORT CORE ORIGIN_PORT PROFILE → SYS_PID. Returns 2 when NAME cannot run here
# (tollgate not built), 1 when it failed to start.
start_system() {
    local name="$1" port="$2" core="$3" origin="$4" profile="$5" bin
    local -a vars
    mapfile -t vars < <(limit_vars "$profile")
    case "$name" in
    haproxy-plain)
        render "$PEERS_DIR/haproxy-plain.cfg" "$RUN_DIR/haproxy-plain.cfg" \
            LISTEN_PORT="$port" ORIGIN_PORT="$origin"
        haproxy -c -q -f "$RUN_DIR/haproxy-plain.cfg" || return 1
        taskset -c "$core" haproxy -db -f "$RUN_DIR/haproxy-plain.cfg" \
            >"$RUN_DIR/$name.out" 2>&1 &
        ;;
    haproxy-seed)
        render "$PEERS_DIR/haproxy-seed.cfg" "$RUN_DIR/haproxy-seed.cfg" \
            LISTEN_PORT="$port" ORIGIN_PORT="$origin" MAP_FILE="$RUN_DIR/keys.haproxy.map" \
            "${vars[@]}"
        # BENCH_HAPROXY_SOCK: a stats socket (memory-per-key reads the stick tables through it).
        if [[ -n "${BENCH_HAPROXY_SOCK:-}" ]]; then
            printf 'global\n    stats socket %s mode 600\n' "$BENCH_HAPROXY_SOCK" \
                >>"$RUN_DIR/haproxy-seed.cfg"
        fi
        haproxy -c -q -f "$RUN_DIR/haproxy-seed.cfg" || return 1
        taskset -c "$core" haproxy -db -f "$RUN_DIR/haproxy-seed.cfg" \
            >"$RUN_DIR/$name.out" 2>&1 &
        ;;
    nginx-limit)
        render "$PEERS_DIR/nginx-limit.conf" "$RUN_DIR/nginx-limit.conf" \
            LISTEN_PORT="$port" ORIGIN_PORT="$origin" RUN_DIR="$RUN_DIR" \
            MAP_FILE="$RUN_DIR/keys.nginx.map" "${vars[@]}"
        taskset -c "$core" nginx -p "$RUN_DIR" -e "$RUN_DIR/nginx-limit.error.log" \
            -c "$RUN_DIR/nginx-limit.conf" >"$RUN_DIR/$name.out" 2>&1 &
        ;;
    tollgate | tollgate-plain | tollgate-log | tollgate-base)
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
            --workers 1 >"$RUN_DIR/$name.out" 2>&1 &
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
#   CORE_BUSY_TICKS: non-idle ticks of CPU CORE from /proc/stat (user nice system irq softirq
#               steal: everything that ran there, ours or not).
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
def core_busy(c):
    for line in open("/proc/stat"):
        f = line.split()
        if f[0] == "cpu%s" % c:
            return sum(int(f[i]) for i in (1, 2, 3, 6, 7, 8))
    return 0
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
    local model kernel hap ngx wrkv rustv rev dirty
    model="$(lscpu | awk -F: '/^Model name/ {sub(/^[ \t]+/, "", $2); print $2; exit}')"
    kernel="$(uname -sr)"
    hap="$(haproxy -v 2>&1 | head -n 1)"
    ngx="$(nginx -v 2>&1 | head -n 1)"
    wrkv="$(wrk -v 2>&1 | head -n 1 | sed 's/ Copyright.*//')"
    rustv="$(rustc -V 2>/dev/null || echo 'rustc: not installed')"
    rev="$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    dirty="$(git -C "$REPO_DIR" status --porcelain 2>/dev/null | grep -q . && echo true || echo false)"
    python3 - "$model" "$(nproc)" "$kernel" "$hap" "$ngx" "$wrkv" "$rustv" "$rev" "$dirty" \
        "$(cat /proc/loadavg)" <<'PY'
import json, sys
a = sys.argv[1:]
print(json.dumps({"cpu_model": a[0], "nproc": int(a[1]), "kernel": a[2], "haproxy": a[3],
                  "nginx": a[4], "wrk": a[5], "rustc": a[6], "git_rev": a[7],
                  "git_dirty": a[8] == "true", "loadavg_at_start": a[9]}))
PY
}
