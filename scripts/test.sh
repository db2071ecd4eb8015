#!/usr/bin/env bash
# The whole test suite: lint, Rust, Python and C. Every part that needs Redis starts its own
# redis-server processes on free loopback ports. Parts live in scripts/test.d/, run in order.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PWD/.venv/bin:$PATH"
export CARGO_TERM_COLOR=never
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
