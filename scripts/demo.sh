#!/usr/bin/env bash
# The README's first command: installs what is missing, builds the Python package into .venv,
# starts a throwaway redis-server on a free loopback port (stopped on exit) and runs the
# failover demo: two bot processes, the primary killed with SIGKILL, then a graceful SIGTERM
# handover, with the takeover timeline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PWD/.venv/bin:$PATH"
export VIRTUAL_ENV="$PWD/.venv"

echo "demo: building the Python package into .venv (maturin develop --release)"
log=$(mktemp)
if ! maturin develop --release >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
rm -f "$log"

dir=$(mktemp -d)
redis_pid=""
cleanup() {
  if [ -n "$redis_pid" ]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for _ in $(seq 20); do
  port=$((20000 + RANDOM % 40000))
  [ "$port" -eq 6379 ] || port_in_use "$port" || break
done
# Persistence on (appendonly) and noeviction: the settings the library recommends.
redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --appendonly yes --save '' \
  --maxmemory-policy noeviction >"$dir/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 100); do
  redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null | grep -q PONG && break
  sleep 0.05
done
redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null | grep -q PONG || {
  cat "$dir/redis.log" >&2
  echo "demo: redis-server did not start" >&2
  exit 1
}

QUANTSHIFT_REDIS_URL="redis://127.0.0.1:$port/0" python examples/failover_demo.py
