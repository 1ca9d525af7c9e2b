#!/usr/bin/env bash
# bench/install-peers.sh — install the benchmark peers and tools from the distribution's packages
# (Debian/Ubuntu): haproxy, nginx, wrk, curl, openssl, taskset (util-linux), python3. Installs only what is
# missing; does not enable or start any service (the benchmarks run their own instances).
set -euo pipefail
declare -A PKG=([haproxy]=haproxy [nginx]=nginx [wrk]=wrk [curl]=curl [openssl]=openssl [taskset]=util-linux
    [python3]=python3 [lscpu]=util-linux)
need=()
for c in "${!PKG[@]}"; do command -v "$c" >/dev/null 2>&1 || need+=("${PKG[$c]}"); done
if ((${#need[@]} == 0)); then
    echo "all present: $(haproxy -v | head -n 1); $(nginx -v 2>&1); $(wrk -v 2>&1 | head -n 1)"
    exit 0
fi
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
echo "installing: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# policy-rc.d 101: the packages' maintainer scripts must not start the system services.
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -q --no-install-recommends "${need[@]}"
