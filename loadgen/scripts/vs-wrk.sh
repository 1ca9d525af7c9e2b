#!/usr/bin/env bash
# loadgen bench vs wrk, side by side, against the same nginx `return 200`.
# Why: loadgen must be at least as fast as wrk -t1 -c64 so nobody reaches for wrk to benchmark
# tollgate. nginx: 1 worker pinned to core 1; both generators pinned to core 0; runs alternate
# (wrk, loadgen, wrk, …) ROUNDS times; medians reported. nginx is stopped by its PID.
# Usage: loadgen/scripts/vs-wrk.sh [OUT_PREFIX]   (env: LOADGEN, DUR=10s, ROUNDS=3, CONNS=64)
set -euo pipefail
LOADGEN=${LOADGEN:-${CARGO_TARGET_DIR:-target}/release/loadgen}
DUR=${DUR:-10s}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
OUT=${1:-}
dir=$(mktemp -d /tmp/vs-wrk.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$dir/nginx.conf" <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:$port;
    location / { return 200; }
  }
}
EOF
taskset -c 1 nginx -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;' &
NGX=$!
trap 'kill $NGX 2>/dev/null; wait $NGX 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 50); do
  curl -s -o /dev/null "http://127.0.0.1:$port/" && break
  sleep 0.1
done
url="http://127.0.0.1:$port/"
wrk_r=(); lg_r=(); wrk_cpu=(); lg_cpu=()
log="$dir/runs.txt"
secs=$(echo "$DUR" | sed 's/s$//')
# CPU µs per request of the generator (user+sys from /usr/bin/time).
cpu_per_req() { awk -v r="$2" -v d="$secs" '{printf "%.2f", ($1+$2)/(r*d)*1e6}' "$1"; }
for i in $(seq "$ROUNDS"); do
  w=$(/usr/bin/time -f "%U %S" -o "$dir/tw" taskset -c 0 wrk -t1 -c"$CONNS" -d"$DUR" "$url" | tee -a "$log" | awk '/Requests\/sec/ {print $2}')
  l=$(/usr/bin/time -f "%U %S" -o "$dir/tl" taskset -c 0 "$LOADGEN" bench "$url" -c "$CONNS" -t 1 -d "$DUR" -q | tee -a "$log" | awk '/Requests\/sec/ {print $2}')
  wc=$(cpu_per_req "$dir/tw" "$w"); lc=$(cpu_per_req "$dir/tl" "$l")
  echo "round $i: wrk $w req/s ($wc us CPU/req), loadgen $l req/s ($lc us CPU/req)" | tee -a "$log"
  wrk_r+=("$w"); lg_r+=("$l"); wrk_cpu+=("$wc"); lg_cpu+=("$lc")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mw=$(median "${wrk_r[@]}"); ml=$(median "${lg_r[@]}")
mwc=$(median "${wrk_cpu[@]}"); mlc=$(median "${lg_cpu[@]}")
echo "median: wrk $mw req/s ($mwc us CPU/req), loadgen $ml req/s ($mlc us CPU/req) (req/s ratio $(awk -v a="$ml" -v b="$mw" 'BEGIN{printf "%.3f", a/b}'))" | tee -a "$log"
if [ -n "$OUT" ]; then
  cp "$log" "$OUT.txt"
  {
    echo "{\"format\":\"loadgen-vs-wrk\",\"version\":1,\"duration\":\"$DUR\",\"connections\":$CONNS,"
    echo "\"wrk\":[$(IFS=,; echo "${wrk_r[*]}")],\"loadgen\":[$(IFS=,; echo "${lg_r[*]}")],"
    echo "\"wrk_cpu_us_per_req\":[$(IFS=,; echo "${wrk_cpu[*]}")],\"loadgen_cpu_us_per_req\":[$(IFS=,; echo "${lg_cpu[*]}")],"
    echo "\"median_wrk\":$mw,\"median_loadgen\":$ml,\"median_wrk_cpu_us\":$mwc,\"median_loadgen_cpu_us\":$mlc}"
  } > "$OUT.json"
fi
