#!/usr/bin/env bash
# Install what tollgate's tests, demo and benchmarks need, and only what is missing.
#
#   scripts/deps.sh [--tests] [--demo] [--bench]     (no flag = --tests)
#
#   --tests  curl, openssl, tmux, redis-server (apt); garage 2.5.0 and s3s-fs 0.14.1 (cargo install);
#            the project-local .venv with boto3, awscli, pytest (scripts/requirements.txt)
#   --demo   curl, redis-server (apt); garage; .venv (awscli, boto3)
#   --bench  curl, nginx, haproxy, wrk, redis-server (apt); garage; .venv
#
# redis-server (Debian's 7.0) is only installed, never started as a service: the tests, the
# demo and the benchmarks start their own on a free port with their own directory.
#
# Idempotent: every step checks first and says what it does. `apt-get update` runs only when a
# package must be installed. Works without a terminal (CI=true). Environment:
#   DEPS_SKIP_GARAGE=1   do not install garage (e.g. it is being installed by another process)
#   PYTHON=python3       interpreter used to create .venv
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GARAGE_VERSION="2.5.0"
S3SFS_VERSION="0.14.1"
VENV="$ROOT/.venv"
REQS="$ROOT/scripts/requirements.txt"
PYTHON="${PYTHON:-python3}"
export DEBIAN_FRONTEND=noninteractive
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '[deps] %s\n' "$*"; }
die() { printf '[deps] ERROR: %s\n' "$*" >&2; exit 1; }

want_tests=0 want_demo=0 want_bench=0
[ $# -eq 0 ] && want_tests=1
for arg in "$@"; do
  case "$arg" in
    --tests) want_tests=1 ;;
    --demo) want_demo=1 ;;
    --bench) want_bench=1 ;;
    -h|--help) awk 'NR>1 && !/^#/{exit} NR>1{print}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown option: $arg (use --tests, --demo, --bench)" ;;
  esac
done

# ---------- apt packages: command name -> Debian package ----------
declare -A APT_FOR=([curl]=curl [openssl]=openssl [tmux]=tmux [nginx]=nginx [haproxy]=haproxy [wrk]=wrk [redis-server]=redis-server)
cmds=(curl redis-server)
# tmux: tests/ops.rs drives `tollgate top` in a tmux pane.
[ $want_tests = 1 ] && cmds+=(openssl tmux)
[ $want_bench = 1 ] && cmds+=(nginx haproxy wrk)

have_cmd() {
  command -v "$1" >/dev/null 2>&1 && return 0
  # nginx and haproxy live in /usr/sbin, which a non-login PATH may lack
  [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

missing_pkgs=()
for c in "${cmds[@]}"; do
  if have_cmd "$c"; then
    say "apt: $c present"
  else
    missing_pkgs+=("${APT_FOR[$c]}")
  fi
done

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
fi

apt_updated=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: $*"
  if [ $apt_updated = 0 ]; then
    say "apt-get update (something must be installed)"
    $SUDO apt-get update -q
    apt_updated=1
  fi
  say "apt-get install $*"
  $SUDO apt-get install -y -q --no-install-recommends "$@"
}

if [ ${#missing_pkgs[@]} -gt 0 ]; then
  apt_install "${missing_pkgs[@]}"
fi

# ---------- cargo-installed servers ----------
need_cargo() { command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust with rustup)"; }

garage_ok() {
  command -v garage >/dev/null 2>&1 && garage --version 2>/dev/null | grep -q "v\?$GARAGE_VERSION"
}

# PID of a `cargo install garage` already running (by anyone), if any.
garage_install_running() {
  local p
  for p in /proc/[0-9]*; do
    [ -r "$p/cmdline" ] || continue
    if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -Eq '(^|/)cargo install garage([@ ]|$)'; then
      basename "$p"
      return 0
    fi
  done
  return 1
}

install_garage() {
  if garage_ok; then
    say "garage $GARAGE_VERSION present ($(command -v garage))"
    return
  fi
  if command -v garage >/dev/null 2>&1; then
    say "garage present but not $GARAGE_VERSION: $(garage --version 2>&1 | head -1); reinstalling"
  fi
  if [ "${DEPS_SKIP_GARAGE:-0}" = 1 ]; then
    say "garage missing; DEPS_SKIP_GARAGE=1 so not installing it"
    return
  fi
  local pid
  if pid="$(garage_install_running)"; then
    say "garage is already being installed by PID $pid; waiting for it (up to 30 min)"
    local i
    for i in $(seq 1 360); do
      [ -d "/proc/$pid" ] || break
      sleep 5
    done
    garage_ok && { say "garage $GARAGE_VERSION now present"; return; }
    die "the running garage install (PID $pid) did not produce garage $GARAGE_VERSION"
  fi
  need_cargo
  say "cargo install garage@$GARAGE_VERSION --locked (compiles from source: ~11+ minutes on 2 cores)"
  cargo install "garage@$GARAGE_VERSION" --locked
  garage_ok || die "garage $GARAGE_VERSION not found after install"
}

install_s3sfs() {
  if command -v s3s-fs >/dev/null 2>&1; then
    say "s3s-fs present ($(command -v s3s-fs))"
    return
  fi
  need_cargo
  say "cargo install s3s-fs@$S3SFS_VERSION --features binary --locked (a few minutes)"
  cargo install "s3s-fs@$S3SFS_VERSION" --features binary --locked
  command -v s3s-fs >/dev/null 2>&1 || die "s3s-fs not found after install"
}

install_garage
[ $want_tests = 1 ] && install_s3sfs

# ---------- project-local virtualenv ----------
install_venv() {
  local hash stamp="$VENV/.requirements.sha256"
  hash="$(sha256sum "$REQS" | cut -d' ' -f1)"
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$hash" ] \
     && "$VENV/bin/python" -c 'import boto3, pytest' 2>/dev/null; then
    say "venv $VENV up to date (requirements $hash)"
    return
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
      say "$PYTHON lacks venv/ensurepip"
      apt_install python3-venv
    fi
    say "creating venv $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
  else
    say "venv $VENV exists but requirements changed; updating"
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS"
  echo "$hash" >"$stamp"
  say "venv ready: $("$VENV/bin/python" -c 'import boto3, botocore, pytest; print("boto3", boto3.__version__, "botocore", botocore.__version__, "pytest", pytest.__version__)')"
}
install_venv

say "done"
