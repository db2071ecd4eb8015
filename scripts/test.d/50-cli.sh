#!/usr/bin/env bash
# The operator tool through the installed Python package (30-python.sh installs it):
# `python -m quantshift_core` must find the quantshift-state binary on PATH and pass the
# arguments, output and exit code through, against a real redis-server on a free loopback
# port. The tool's own behaviour tests are tests/cli.rs (run by 20-rust.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
PY="$PWD/.venv/bin/python"
cargo build --quiet --bin quantshift-state
TOOL_DIR="$PWD/target/debug"

work=$(mktemp -d)
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
  --maxmemory-policy noeviction >/dev/null &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break
  sleep 0.1
done
url="redis://127.0.0.1:$port/0"
redis-cli -p "$port" SET 'bot:cli-bot:position:ES:FUT' '{"quantity": -2, "last_update": "2026-01-02T03:04:05.000000"}' >/dev/null

fail() { echo "50-cli: $*" >&2; exit 1; }
# Outside the source tree, so the installed package is the one run.
cd "$work"
qs() { PATH="$TOOL_DIR:$PATH" "$PY" -m quantshift_core "$@"; }

out=$(qs --url "$url" positions cli-bot --json) || fail "positions exited $?"
echo "$out" | "$PY" -c 'import json, sys; d = json.load(sys.stdin); assert d["ES:FUT"]["quantity"] == -2, d' \
  || fail "unexpected positions output: $out"

rc=0; out=$(qs --url "$url" status cli-bot --check --json) || rc=$?
[ "$rc" -eq 2 ] || fail "status --check of a bot without a primary exited $rc, expected 2: $out"
echo "$out" | "$PY" -c 'import json, sys; d = json.load(sys.stdin); assert d["bots"][0]["health"] == "no primary", d' \
  || fail "unexpected status output: $out"

rc=0; qs --url "redis://:hunter2@127.0.0.1:1/0" status >"$work/out" 2>&1 || rc=$?
[ "$rc" -eq 3 ] || fail "an unreachable Redis exited $rc, expected 3"
grep -q 'cannot reach Redis at redis://:\*\*\*@127.0.0.1:1/0' "$work/out" || fail "unexpected error: $(cat "$work/out")"
if grep -q hunter2 "$work/out"; then fail "the password was printed"; fi

rc=0; PATH="/usr/bin:/bin" "$PY" -m quantshift_core status >"$work/out" 2>&1 || rc=$?
[ "$rc" -eq 3 ] && grep -q 'binary was not found' "$work/out" || fail "without the binary: exit $rc, $(cat "$work/out")"
echo "50-cli: python -m quantshift_core runs quantshift-state ($(qs --version))"
