#!/usr/bin/env bash
# Installs what building, the demo and the tests need, only when missing; safe to re-run.
# Debian packages via apt (redis-server, compilers, valgrind), Python tools into .venv,
# and the pinned cbindgen through cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

CBINDGEN_VERSION=0.29.4

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v cc >/dev/null || missing+=(build-essential)
command -v c++ >/dev/null || missing+=(g++)
command -v valgrind >/dev/null || missing+=(valgrind)
# The C install test (scripts/test.d/45-c-install.sh) builds consumers with both.
command -v cmake >/dev/null || missing+=(cmake)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v python3 >/dev/null || missing+=(python3)
command -v openssl >/dev/null || missing+=(openssl)
if command -v python3 >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  missing+=(python3-venv python3-pip)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} with apt"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# promtool tests the example alert rules (tests/python/test_metrics.py). Only the tool is
# wanted: no recommended extras, and the Prometheus service the package installs is not left
# running where systemd would start it.
if ! command -v promtool >/dev/null; then
  echo "setup: installing prometheus (for promtool) with apt"
  [ ${#missing[@]} -gt 0 ] || as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if [ -d /run/systemd/system ]; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install the Rust toolchain (rustup) first" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import maturin, pytest' 2>/dev/null \
   || ! cmp -s python/requirements-dev.txt .venv/.requirements-dev.txt; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r python/requirements-dev.txt
  cp python/requirements-dev.txt .venv/.requirements-dev.txt
fi

if ! cbindgen --version 2>/dev/null | grep -q "$CBINDGEN_VERSION"; then
  echo "setup: installing cbindgen $CBINDGEN_VERSION"
  cargo install --quiet --locked cbindgen --version "$CBINDGEN_VERSION"
fi
