#!/usr/bin/env bash
# The operator tool from the installed Python package (30-python.sh installs it into .venv):
# the `quantshift-state` console script and `python -m quantshift_core` run the tool compiled
# into the extension module, with the arguments, output and exit code of the Rust binary,
# against a real redis-server on a free loopback port. The tool's own behaviour tests are
# tests/cli.rs (run by 20-rust.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="$PWD/.venv/bin/python"
SCRIPT="$PWD/.venv/bin/quantshift-state"

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
[ -x "$SCRIPT" ] || fail "the package did not install the quantshift-state console script"
# Outside the source tree, with a PATH without cargo's output, so the installed package runs.
cd "$work"
export PATH="/usr/bin:/bin"
for form in script module; do
  if [ "$form" = script ]; then tool=("$SCRIPT"); else tool=("$PY" -m quantshift_core); fi
  qs() { "${tool[@]}" "$@"; }

  out=$(qs --url "$url" positions cli-bot --json) || fail "$form: positions exited $?"
  echo "$out" | "$PY" -c 'import json, sys; d = json.load(sys.stdin); assert d["ES:FUT"]["quantity"] == -2, d' \
    || fail "$form: unexpected positions output: $out"

  rc=0; out=$(qs --url "$url" status cli-bot --check --json) || rc=$?
  [ "$rc" -eq 2 ] || fail "$form: status --check of a bot without a primary exited $rc, expected 2: $out"
  echo "$out" | "$PY" -c 'import json, sys; d = json.load(sys.stdin); assert d["bots"][0]["health"] == "no primary", d' \
    || fail "$form: unexpected status output: $out"

  rc=0; qs --url "redis://:hunter2@127.0.0.1:1/0" status >"$work/out" 2>&1 || rc=$?
  [ "$rc" -eq 3 ] || fail "$form: an unreachable Redis exited $rc, expected 3"
  grep -q 'cannot reach Redis at redis://:\*\*\*@127.0.0.1:1/0' "$work/out" || fail "$form: unexpected error: $(cat "$work/out")"
  if grep -q hunter2 "$work/out"; then fail "$form: the password was printed"; fi

  rc=0; qs status --jsn >"$work/out" 2>&1 || rc=$?
  [ "$rc" -eq 64 ] && grep -q "quantshift-state: error: unexpected argument '--jsn'" "$work/out" \
    || fail "$form: a usage error: exit $rc, $(cat "$work/out")"

  qs completions bash | grep -q 'handover' || fail "$form: no bash completions"

  # Ctrl-C (SIGINT) ends `watch` cleanly with exit code 0, as in the native binary.
  # (Not through the function: $! must be the tool's own process.)
  "${tool[@]}" --url "$url" watch cli-bot --interval 0.1 >"$work/watch" 2>&1 &
  watch_pid=$!
  for _ in $(seq 100); do
    grep -q 'health' "$work/watch" && break
    sleep 0.1
  done
  kill -INT "$watch_pid"
  for _ in $(seq 100); do
    kill -0 "$watch_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$watch_pid" 2>/dev/null; then
    kill -KILL "$watch_pid"
    fail "$form: watch did not end within 10 s of SIGINT"
  fi
  rc=0; wait "$watch_pid" || rc=$?
  [ "$rc" -eq 0 ] || fail "$form: watch after SIGINT exited $rc: $(cat "$work/watch")"
  grep -q 'health     no primary' "$work/watch" || fail "$form: unexpected watch output: $(cat "$work/watch")"

  # The Prometheus exporter: a scrape on a free port, then SIGTERM ends it with exit code 0.
  "${tool[@]}" --url "$url" metrics --listen 127.0.0.1:0 cli-bot 2>"$work/metrics" &
  metrics_pid=$!
  metrics_url=""
  for _ in $(seq 100); do
    metrics_url=$(grep -o 'http://127.0.0.1:[0-9]*/metrics' "$work/metrics" || true)
    [ -n "$metrics_url" ] && break
    sleep 0.1
  done
  [ -n "$metrics_url" ] || { kill -KILL "$metrics_pid"; fail "$form: metrics did not start: $(cat "$work/metrics")"; }
  out=$("$PY" -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' "$metrics_url") \
    || { kill -KILL "$metrics_pid"; fail "$form: the scrape failed"; }
  kill -TERM "$metrics_pid"
  rc=0; wait "$metrics_pid" || rc=$?
  [ "$rc" -eq 0 ] || fail "$form: metrics after SIGTERM exited $rc: $(cat "$work/metrics")"
  echo "$out" | grep -qx 'quantshift_redis_up 1' \
    && echo "$out" | grep -qx 'quantshift_bot_has_primary{bot="cli-bot"} 0' \
    || fail "$form: unexpected metrics: $out"
done
echo "50-cli: the quantshift-state console script and python -m quantshift_core ($(qs --version))"
