#!/usr/bin/env bash
# The per-operation benchmark (benches/operations.rs) on each server of the matrix in one
# run: Debian's Redis 7, then Valkey 9.1 and Redis 6.2 (scripts/servers.sh), each with its
# bin dir first on PATH. Prints one table per server (medians and ratios to a PING on the
# same connection, as BENCHMARKS.md gives them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
export PATH="$HOME/.cargo/bin:$PATH"
cargo bench --bench operations --no-run >/dev/null 2>&1
run() {
  echo "### $(redis-server --version | cut -d' ' -f1-3)"
  rm -rf target/criterion
  cargo bench --bench operations -- --noplot >/dev/null 2>&1
  python3 scripts/bench_report.py target/criterion
  echo
}
run
mapfile -t servers < <(bash scripts/servers.sh)
for entry in "${servers[@]}"; do
  read -r _name _version bin <<<"$entry"
  (export PATH="$bin:$PATH"; run)
done
