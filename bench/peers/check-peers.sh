#!/usr/bin/env bash
# bench/peers/check-peers.sh — behaviour check of the rate-limiting peers with curl.
#
# Starts the origin and each rate limiter (haproxy-seed, nginx-limit, and tollgate when built)
# with the SEED's limits (premium 1000/min 50/s, standard 500/25, basic 100/10, unknown 50/5),
# then checks with curl that:
#   1. each of the five key styles is identified (X-API-Key response header), anonymous → unknown;
#   2. a key over its per-second limit gets 429 (20 back-to-back GETs of a basic key: the first
#      10 pass, the rest get 429 with an S3 SlowDown XML body naming the request path);
#   3. non-limited methods (POST, DELETE) still pass for that key;
# and reports (informative, not asserted) how many requests a basic key (10/s) gets through when
# it sends 20 req/s for 3 s: the spec's semantics admit ~30; "track before deny" locks it out.
# Exit status: 0 when every assertion held. Usage: bench/peers/check-peers.sh [SYSTEM...]

set -euo pipefail
source "$(dirname "$0")/../lib.sh"

bench_require haproxy nginx curl taskset python3
bench_setup

SYSTEMS=("$@")
if ((${#SYSTEMS[@]} == 0)); then SYSTEMS=(haproxy-seed nginx-limit tollgate); fi

FAILS=0
PASSES=0
ok() { PASSES=$((PASSES + 1)); echo "  ok    $*"; }
bad() { FAILS=$((FAILS + 1)); echo "  FAIL  $*"; }

# A response header value (case-insensitive name) from a curl -D dump.
hdr_of() { awk -v h="$(echo "$1" | tr 'A-Z' 'a-z')" 'BEGIN{FS=": "} tolower($1)==h {sub(/\r$/,"",$2); print $2}' "$2"; }

gen_keys 3 "$RUN_DIR/keys.txt"
write_maps "$RUN_DIR/keys.txt"
ORIGIN_PORT="$(free_port)"
start_origin "$ORIGIN_PORT" 0

for sys in "${SYSTEMS[@]}"; do
    port="$(free_port)"
    set +e
    start_system "$sys" "$port" 0 "$ORIGIN_PORT" seed
    rc=$?
    set -e
    if ((rc == 2)); then
        echo "== $sys: skipped (no tollgate binary: build with cargo build --release)"
        continue
    elif ((rc != 0)); then
        bad "$sys: did not start"
        continue
    fi
    echo "== $sys (seed limits, port $port)"
    base="http://127.0.0.1:$port"

    # 1. key extraction
    while read -r want args; do
        eval "set -- $args"
        curl -s -o /dev/null -D "$RUN_DIR/h" "$@"
        got="$(hdr_of X-API-Key "$RUN_DIR/h")"
        code="$(head -n 1 "$RUN_DIR/h" | awk '{print $2}')"
        # Anonymous: the peers name it "unknown" (the seed's shared bucket); tollgate counts it per
        # client address and may name it differently or not at all.
        if [[ "$want" == unknown && "$sys" == tollgate && "$code" == 200 ]]; then
            ok "anonymous request passed (X-API-Key '${got}')"
        elif [[ "$got" == "$want" && "$code" == 200 ]]; then
            ok "key $want identified ($(hdr_of X-Auth-Method "$RUN_DIR/h"))"
        else
            bad "key $want: got X-API-Key '$got', status $code"
        fi
    done <<EOF
chk-v4-key -H 'Authorization: AWS4-HMAC-SHA256 Credential=chk-v4-key/20261123/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef' $base/bucket/obj
chk-v2-key -H 'Authorization: AWS chk-v2-key:frJIUN8DYpKDtOLCwo//yllqDzg=' $base/bucket/obj
chk-v4q-key '$base/bucket/obj?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=chk-v4q-key%2F20261123%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261123T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=abc'
chk-v2q-key '$base/bucket/obj?AWSAccessKeyId=chk-v2q-key&Expires=1764000000&Signature=abc'
chk-custom-key -H 'X-API-Key: chk-custom-key' $base/bucket/obj
chk-custom2-key -H 'X-Access-Key-Id: chk-custom2-key' $base/bucket/obj
unknown $base/bucket/obj
EOF

    # 2. burst: 20 back-to-back GETs of a basic key (10/s) on one connection
    args=()
    for i in $(seq 1 20); do args+=(-o /dev/null "$base/bucket/burst-$i"); done
    codes="$(curl -s -w '%{http_code}\n' -H 'X-API-Key: chk-burst-basic' "${args[@]}" | tr '\n' ' ')"
    n200="$(echo "$codes" | tr ' ' '\n' | grep -c '^200$' || true)"
    n429="$(echo "$codes" | tr ' ' '\n' | grep -c '^429$' || true)"
    first10="$(echo "$codes" | cut -d' ' -f1-10)"
    if [[ "$first10" == "200 200 200 200 200 200 200 200 200 200" && "$n429" -ge 8 && $((n200 + n429)) == 20 ]]; then
        ok "basic key over 10/s: $n200 × 200 then $n429 × 429"
    else
        bad "basic key over 10/s: codes $codes"
    fi
    curl -s -D "$RUN_DIR/h" -o "$RUN_DIR/body" -H 'X-API-Key: chk-burst-basic' "$base/bucket/denied-object"
    code="$(head -n 1 "$RUN_DIR/h" | awk '{print $2}')"
    if [[ "$code" == 429 ]] && grep -q '<Code>SlowDown</Code>' "$RUN_DIR/body" &&
        grep -q '<Resource>/bucket/denied-object</Resource>' "$RUN_DIR/body" &&
        [[ "$(hdr_of X-API-Key "$RUN_DIR/h")" == chk-burst-basic ]]; then
        ok "429 body: $(head -c 160 "$RUN_DIR/body")…"
    else
        bad "denied response: status $code, body $(head -c 300 "$RUN_DIR/body")"
    fi

    # 3. methods that are not limited pass for the same (exhausted) key
    c1="$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'X-API-Key: chk-burst-basic' "$base/bucket/x")"
    c2="$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H 'X-API-Key: chk-burst-basic' "$base/bucket/x")"
    if [[ "$c1" == 200 && "$c2" == 200 ]]; then
        ok "POST/DELETE not limited (200, 200)"
    else
        bad "POST/DELETE for an exhausted key: $c1, $c2"
    fi

    # 4. informative: a basic key (10/s, 100/min) paced at 20 req/s for 3 s
    args=()
    for i in $(seq 1 60); do args+=(-o /dev/null "$base/bucket/paced-$i"); done
    codes="$(curl -s --rate 20/s -w '%{http_code}\n' -H 'X-API-Key: chk-pace-basic' "${args[@]}")"
    n200="$(echo "$codes" | grep -c '^200$' || true)"
    echo "  info  basic key at 20 req/s for 3 s: $n200 of 60 admitted (spec semantics: ~30)"

    bench_stop_pid "$SYS_PID"
done

echo "$PASSES passed, $FAILS failed"
((FAILS == 0))
