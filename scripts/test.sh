#!/usr/bin/env bash
# The whole test suite: lint, Rust, Python and C. Every part that needs Redis starts its own
# redis-server processes on free loopback ports. Parts live in scripts/test.d/, run in order.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PWD/.venv/bin:$PATH"
export CARGO_TERM_COLOR=never
# A test that needs a program it cannot find fails here instead of skipping (every program
# the suite needs is installed by scripts/setup.sh above).
export QS_REQUIRE_ALL=1
# Builds from scratch, as in CI: no incremental caches to write, and line tables only as debug
# information (panics and sanitizer reports keep their file:line; compiling and linking the
# test binaries take less). A developer's own cargo commands keep the Cargo.toml profiles.
export CARGO_INCREMENTAL=0
export CARGO_PROFILE_DEV_DEBUG=line-tables-only
export CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
failed=0
passed=0
for part in scripts/test.d/*.sh; do
  echo "=== ${part}"
  started=$(date +%s)
  if bash "$part"; then
    passed=$((passed + 1))
    echo "=== ${part}: passed in $(( $(date +%s) - started )) s"
  else
    failed=$((failed + 1))
    echo "=== ${part}: FAILED after $(( $(date +%s) - started )) s"
  fi
done
echo "test parts: ${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ]
