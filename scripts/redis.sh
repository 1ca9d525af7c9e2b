#!/usr/bin/env bash
# A redis-server of its own (Debian's, installed by scripts/deps.sh) for tollgate's demo and
# benchmarks: 127.0.0.1 only, no persistence, everything under DIR.
#
#   scripts/redis.sh start DIR PORT    listen on 127.0.0.1:PORT; PID in DIR/redis.pid, log DIR/redis.log
#   scripts/redis.sh stop DIR          stop the redis-server started in DIR (by its PID file only)
#
# Never touches a system Redis service: the server runs in the foreground of a background job
# (no --daemonize), and stop sends SIGTERM (then SIGKILL after 5 s) to that PID only.
set -euo pipefail

say() { printf '[redis] %s\n' "$*"; }
die() { printf '[redis] ERROR: %s\n' "$*" >&2; exit 1; }

cmd="${1:-}"; dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || die "usage: $0 start DIR PORT | stop DIR"

case "$cmd" in
  start)
    port="${3:-}"; [ -n "$port" ] || die "usage: $0 start DIR PORT"
    command -v redis-server >/dev/null 2>&1 || die "redis-server not found (bash scripts/deps.sh)"
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
      >"$dir/redis.log" 2>&1 </dev/null &
    echo $! >"$dir/redis.pid"
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        say "redis-server PID $(cat "$dir/redis.pid") on 127.0.0.1:$port (dir $dir)"
        exit 0
      fi
      kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null || { tail -5 "$dir/redis.log" >&2; die "redis-server exited"; }
      sleep 0.05
    done
    die "redis-server did not listen on 127.0.0.1:$port within 5 s"
    ;;
  stop)
    [ -f "$dir/redis.pid" ] || exit 0
    pid="$(cat "$dir/redis.pid")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -CONT "$pid" 2>/dev/null || true
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
      say "stopped redis-server PID $pid"
    fi
    rm -f "$dir/redis.pid"
    ;;
  *) die "unknown command $cmd (start, stop)" ;;
esac
