#!/usr/bin/env bash
# Single-node Garage (S3 server) on 127.0.0.1 for tollgate's tests and demos.
#
#   scripts/garage.sh start DIR PORT    S3 API on 127.0.0.1:PORT; everything else under DIR
#   scripts/garage.sh stop DIR          stop the Garage started in DIR (by its PID file only)
#   scripts/garage.sh status DIR        exit 0 if it runs and the S3 port answers
#
# start: writes DIR/garage.toml (rpc and admin on free ports), starts `garage server` in the
# background (log DIR/garage.log, PID DIR/garage.pid), assigns and applies a one-node layout,
# imports fixed keys, creates the bucket and allows every key on it, waits (≤30 s) until the S3
# port answers, and writes DIR/keys.env (shell syntax, also read by tests/s3/conftest.py).
# Restarting on an existing DIR reuses its data and skips what is already configured.
#
# Environment: GARAGE_BIN (default: garage on PATH or ~/.cargo/bin/garage),
#              GARAGE_BUCKET (default tollgate-test), GARAGE_REGION (default garage),
#              GARAGE_STOP_GRACE (seconds between SIGTERM and SIGKILL on stop, default 5),
#              GARAGE_EXTRA_KEYS (file of `NAME ACCESS_KEY_ID SECRET` lines, imported and allowed on
#              the bucket like the fixed keys; e.g. a load scenario's keys; # comments allowed).
set -euo pipefail

REGION="${GARAGE_REGION:-garage}"
BUCKET="${GARAGE_BUCKET:-tollgate-test}"
START_TIMEOUT=30

# Fixed test keys: name, access key id (GK + 24 hex), secret (64 hex). Test data only.
KEYS=(
  "premium  GK0000000000000000000000a1 15c3c3f8d058f6e9c322df22cf61c1568282e59a4aa875c0df071c3191d66e45"
  "standard GK0000000000000000000000a2 6d318b4f543a5f64c17a61390c9fa92855e6c2ec62587ef7b810c7d18dc4cca4"
  "basic    GK0000000000000000000000a3 a572545adf886fb618ac526bdc3fdb69b5892e5ba9faf9209213bc6f3c1800a3"
  "unlisted GK0000000000000000000000a4 1824db6334b7cba41b04bc0d86ca60df0b576790f89506d545a6f9dd8f2787f9"
  "spare1   GK0000000000000000000000b1 17b17b752a34c4d97295cf38b8d9dcdc4137ba3409dcfd6aea2ffaf29a054b45"
  "spare2   GK0000000000000000000000b2 294cbf45941a4cecba303d0122d86524ec3122215c7459de495256c80a4442e3"
  "spare3   GK0000000000000000000000b3 a81726845239e76fcc7c3b03d7a6139b2045a6729594b5836a76b6a3ec240b86"
  "spare4   GK0000000000000000000000b4 d72f66b6f4cf8c7cd15e3ea7ccafef8e3ca50fdc4daaa5314fa744cc427ea7a6"
)

say() { printf '[garage] %s\n' "$*"; }
# extra keys from $GARAGE_EXTRA_KEYS, checked before anything starts
load_extra_keys() {
  [ -n "${GARAGE_EXTRA_KEYS:-}" ] || return 0
  [ -r "$GARAGE_EXTRA_KEYS" ] || die "GARAGE_EXTRA_KEYS: cannot read $GARAGE_EXTRA_KEYS"
  local n=0 line name id secret rest
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    line="${line%%#*}"
    [ -n "${line//[[:space:]]/}" ] || continue
    read -r name id secret rest <<<"$line"
    [ -z "$rest" ] && [ -n "$secret" ] || die "$GARAGE_EXTRA_KEYS:$n: expected 'NAME ACCESS_KEY_ID SECRET'"
    [[ "$name" =~ ^[A-Za-z][A-Za-z0-9_]*$ ]] || die "$GARAGE_EXTRA_KEYS:$n: key name '$name' must be letters, digits, _"
    [[ "$id" =~ ^GK[0-9a-f]{24}$ ]] || die "$GARAGE_EXTRA_KEYS:$n: Garage key ids are GK + 24 hex digits, got '$id'"
    [[ "$secret" =~ ^[0-9a-f]{64}$ ]] || die "$GARAGE_EXTRA_KEYS:$n: Garage secrets are 64 hex digits (key $id)"
    KEYS+=("$name $id $secret")
  done <"$GARAGE_EXTRA_KEYS"
}
die() { printf '[garage] ERROR: %s\n' "$*" >&2; exit 1; }
usage() { awk 'NR>1 && !/^#/{exit} NR>1{print}' "${BASH_SOURCE[0]}"; exit 2; }

find_garage() {
  if [ -n "${GARAGE_BIN:-}" ]; then echo "$GARAGE_BIN"; return; fi
  if command -v garage >/dev/null 2>&1; then command -v garage; return; fi
  if [ -x "$HOME/.cargo/bin/garage" ]; then echo "$HOME/.cargo/bin/garage"; return; fi
  die "garage not found (run scripts/deps.sh --tests)"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# 0 if something accepts TCP connections on 127.0.0.1:$1
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# PID from DIR/garage.pid if that process is alive and is a garage server
running_pid() {
  local dir="$1" pid
  [ -f "$dir/garage.pid" ] || return 1
  pid="$(cat "$dir/garage.pid")"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'garage.* server' || return 1
  echo "$pid"
}

g() { timeout 20 "$GARAGE" -c "$CFG" "$@"; }

cmd_start() {
  local dir="$1" port="$2"
  [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number: $port"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  GARAGE="$(find_garage)"
  CFG="$dir/garage.toml"
  local pid
  if pid="$(running_pid "$dir")"; then
    die "a Garage (PID $pid) already runs from $dir; stop it first"
  fi
  if port_open "$port"; then die "port $port is already in use"; fi

  local rpc_port admin_port rpc_secret admin_token
  # rpc/admin ports are chosen once per DIR and kept: the node remembers its RPC address
  if [ -f "$dir/ports" ]; then
    read -r rpc_port admin_port <"$dir/ports"
    for p in "$rpc_port" "$admin_port"; do
      if port_open "$p"; then die "port $p (kept in $dir/ports) is in use"; fi
    done
  else
    rpc_port="$(free_port)"
    admin_port="$(free_port)"
    while [ "$admin_port" = "$rpc_port" ] || [ "$admin_port" = "$port" ]; do admin_port="$(free_port)"; done
    echo "$rpc_port $admin_port" >"$dir/ports"
  fi
  if [ -f "$dir/rpc_secret" ]; then rpc_secret="$(cat "$dir/rpc_secret")"
  else rpc_secret="$(openssl rand -hex 32)"; echo "$rpc_secret" >"$dir/rpc_secret"; fi
  admin_token="$(openssl rand -hex 16)"
  mkdir -p "$dir/meta" "$dir/data"
  chmod 700 "$dir/meta" "$dir/data"

  cat >"$CFG" <<EOF
# generated by scripts/garage.sh for tollgate tests
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
metadata_fsync = false
data_fsync = false
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$rpc_secret"

[s3_api]
s3_region = "$REGION"
api_bind_addr = "127.0.0.1:$port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
admin_token = "$admin_token"
EOF
  chmod 600 "$CFG"

  say "starting $("$GARAGE" --version 2>&1 | head -1) in $dir (S3 127.0.0.1:$port, rpc $rpc_port, admin $admin_port)"
  nohup "$GARAGE" -c "$CFG" server >>"$dir/garage.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/garage.pid"

  # wait for the RPC side (the CLI talks to the daemon over RPC)
  local deadline=$((SECONDS + START_TIMEOUT)) node_id=""
  while [ $SECONDS -lt $deadline ]; do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$dir/garage.log" >&2; die "garage exited during start"; }
    # `node id` only reads the local key file; `status` really talks to the daemon
    if g status >/dev/null 2>&1 && node_id="$(g node id -q 2>/dev/null)"; then break; fi
    node_id=""
    sleep 0.2
  done
  [ -n "$node_id" ] || { tail -20 "$dir/garage.log" >&2; die "garage did not answer on RPC within ${START_TIMEOUT}s"; }
  node_id="${node_id%%@*}"

  if g layout show 2>/dev/null | grep -q "^${node_id:0:16}"; then
    say "layout already has node ${node_id:0:16}"
  else
    say "layout assign + apply for node ${node_id:0:16}"
    g layout assign -z dc1 -c 10G "$node_id" >/dev/null
    local ver
    ver="$(g layout show | sed -n 's/.*layout version:[^0-9]*\([0-9][0-9]*\).*/\1/Ip' | head -1)"
    g layout apply --version "$((${ver:-0} + 1))" >/dev/null
  fi

  local line name id secret
  for line in "${KEYS[@]}"; do
    read -r name id secret <<<"$line"
    if g key info "$id" >/dev/null 2>&1; then
      :
    else
      g key import --yes -n "$name" "$id" "$secret" >/dev/null
    fi
  done
  if ! g bucket info "$BUCKET" >/dev/null 2>&1; then
    g bucket create "$BUCKET" >/dev/null
  fi
  for line in "${KEYS[@]}"; do
    read -r name id secret <<<"$line"
    g bucket allow --read --write --owner "$BUCKET" --key "$id" >/dev/null
  done
  say "bucket $BUCKET, ${#KEYS[@]} keys allowed"

  while ! port_open "$port"; do
    [ $SECONDS -lt $deadline ] || die "S3 port $port did not open within ${START_TIMEOUT}s"
    kill -0 "$pid" 2>/dev/null || die "garage exited"
    sleep 0.1
  done
  # a real S3 answer (an anonymous request gets an XML error), not just an open socket
  local code=""
  while [ $SECONDS -lt $deadline ]; do
    code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$port/$BUCKET" || true)"
    case "$code" in 2??|3??|4??) break ;; esac
    sleep 0.2
  done
  case "$code" in 2??|3??|4??) ;; *) die "S3 API on $port does not answer (last status '$code')" ;; esac

  {
    echo "# generated by scripts/garage.sh; source it or read KEY=VALUE lines"
    echo "GARAGE_DIR=$dir"
    echo "GARAGE_PID=$pid"
    echo "GARAGE_S3_ADDR=127.0.0.1:$port"
    echo "GARAGE_S3_ENDPOINT=http://127.0.0.1:$port"
    echo "GARAGE_REGION=$REGION"
    echo "GARAGE_BUCKET=$BUCKET"
    echo "GARAGE_RPC_ADDR=127.0.0.1:$rpc_port"
    echo "GARAGE_ADMIN_ADDR=127.0.0.1:$admin_port"
    echo "GARAGE_ADMIN_TOKEN=$admin_token"
    local names=()
    for line in "${KEYS[@]}"; do
      read -r name id secret <<<"$line"
      names+=("$name")
      echo "KEY_${name^^}_ID=$id"
      echo "KEY_${name^^}_SECRET=$secret"
    done
    echo "GARAGE_KEY_NAMES=\"${names[*]}\""
  } >"$dir/keys.env"
  say "ready: S3 http://127.0.0.1:$port (HTTP $code to anonymous), PID $pid, keys in $dir/keys.env"
}

cmd_stop() {
  local dir="$1" pid
  if ! pid="$(running_pid "$dir")"; then
    say "no running Garage recorded in $dir"
    rm -f "$dir/garage.pid"
    return 0
  fi
  say "stopping Garage PID $pid"
  kill -TERM "$pid" 2>/dev/null || true
  # Garage waits for open client connections (e.g. idle keep-alive ones) before exiting
  local i grace="${GARAGE_STOP_GRACE:-5}"
  for i in $(seq 1 $((grace * 10))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "PID $pid still alive after ${grace}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/garage.pid"
}

cmd_status() {
  local dir="$1" pid port
  pid="$(running_pid "$dir")" || { say "not running"; return 1; }
  port="$(sed -n 's/^GARAGE_S3_ADDR=127.0.0.1:\([0-9]*\)$/\1/p' "$dir/keys.env" 2>/dev/null)"
  [ -n "$port" ] && port_open "$port" || { say "PID $pid alive but S3 port not answering"; return 1; }
  say "running: PID $pid, S3 127.0.0.1:$port"
}

case "${1:-}" in
  start) [ $# -eq 3 ] || usage; load_extra_keys; cmd_start "$2" "$3" ;;
  stop) [ $# -eq 2 ] || usage; cmd_stop "$2" ;;
  status) [ $# -eq 2 ] || usage; cmd_status "$2" ;;
  *) usage ;;
esac
