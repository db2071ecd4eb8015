#!/usr/bin/env bash
# Runs the Rust benchmarks (criterion, real redis-server on loopback) and prints the tables
# written into BENCHMARKS.md: each operation's median beside a bare PING on the same
# connection, measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
rm -rf target/criterion
cargo bench --bench operations -- --noplot >/dev/null
python3 scripts/bench_report.py target/criterion
cargo bench --bench failover 2>/dev/null | grep -v '^$' | grep -E '^\||^bound'
