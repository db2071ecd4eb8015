#!/usr/bin/env bash
# The lease simulator (tests/lease_sim.rs): the lease state machine under seeded random
# schedules of faults (crashes, freezes, Redis restarts and rollbacks, flushes, evictions,
# half-closed connections, partitions, lossy networks) against a model of Redis that runs
# the shipped Lua scripts, itself held to a real redis-server (model_matches_redis_server).
# 100 000 schedules on 2 threads by default; more: LEASE_SIM_SCHEDULES=1000000; replay and
# shrink one failing seed: LEASE_SIM_SEED=<seed> (the failure report prints the command).
set -euo pipefail
cd "$(dirname "$0")/../.."
export LEASE_SIM_THREADS="${LEASE_SIM_THREADS:-2}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# One test at a time: the simulator uses its own threads.
if cargo test --release --test lease_sim -- --nocapture --test-threads=1 >"$log" 2>&1; then
  grep -oE '(lease simulator|model vs redis-server|clocks beyond the bound|test result).*' "$log"
else
  grep -v '^\s*[0-9]*: \|^\s*at ' "$log" | tail -n 400
  echo "25-lease-sim: FAILED (the report above names the seed and the shrunk schedule)"
  exit 1
fi
