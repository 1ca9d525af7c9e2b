#!/usr/bin/env bash
# bench/cases/tls.sh — case 3: HTTPS. Each system terminates TLS with the same fresh certificate
# (made per run with openssl; tollgate: rustls + ring, HAProxy and nginx: the distribution's
# OpenSSL), one worker alone on the proxy core, plain HTTP to the origin, limits out of reach.
# `loadgen bench` (rustls client, TLS 1.3, no certificate check) on the load core measures:
#   keepalive          64 keep-alive connections, closed loop, 1,000 rotating keys:
#                      CPU µs per request
#   handshake-full     a new connection per request (16 at a time), no resumption: full
#                      handshakes per second and CPU µs per handshake (+ its one request)
#   handshake-resumed  the same, resuming the previous session (TLS 1.3 tickets)
# Before the first measurement of each system, `openssl s_client` checks that a saved session
# is resumed ("Reused"): the `resumed` column.
#
# Usage: bench/cases/tls.sh [--cert rsa2048|p256] [--handshake-conns 16]
#          [common case options: --rounds --duration --systems --out --quick, see lib.sh]

set -euo pipefail
source "$(dirname "$0")/../lib.sh"
case_opts tls "$@"
CERT="${OPT[cert]:-rsa2048}"
HS_CONNS="${OPT[handshake-conns]:-16}"
make_tls_certs "$CERT"
export BENCH_TLS=1
case_origin

# tls_resumed PORT → yes/no: does the server resume a session saved by a first connection?
tls_resumed() {
    local req='GET /bench/object HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' out
    # shellcheck disable=SC2059
    printf "$req" | timeout 5 openssl s_client -connect "127.0.0.1:$1" -sess_out \
        "$RUN_DIR/tls/sess.pem" -ign_eof >/dev/null 2>&1 || true
    # shellcheck disable=SC2059
    out="$(printf "$req" | timeout 5 openssl s_client -connect "127.0.0.1:$1" -sess_in \
        "$RUN_DIR/tls/sess.pem" -ign_eof 2>/dev/null || true)"
    if grep -q '^Reused' <<<"$out"; then echo yes; else echo no; fi
}

VARIANTS=("keepalive|-c 64" "handshake-full|-c $HS_CONNS --new-conn --no-tls-resume"
    "handshake-resumed|-c $HS_CONNS --new-conn")

for ((round = 1; round <= ROUNDS; round++)); do
    for sys in $(rotated "$round" "${SYSTEMS[@]}"); do
        case_start "$sys" open || continue
        resumed="$(tls_resumed "$PORT")"
        url="https://127.0.0.1:$PORT/bench/object"
        warm_loadgen "$url" -k -c 64 --keys 1000
        for v in "${VARIANTS[@]}"; do
            IFS='|' read -r name args <<<"$v"
            # shellcheck disable=SC2086
            measure "$SYS_PID" "$PROXY_CORE" "$RUN_DIR/cpu.json" \
                run_loadgen "$RUN_DIR/load.json" "$url" -k -d "${DURATION}s" --keys 1000 $args
            emit "$sys" "$name" "$RUN_DIR/load.json" "$RUN_DIR/cpu.json" "resumed=$resumed" "cert=$CERT"
        done
        bench_stop_pid "$SYS_PID"
    done
done
case_done
