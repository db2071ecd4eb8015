#!/usr/bin/env bash
# Speed on a Redis Cluster (issue 19, part 7): starts a local cluster of 3 primaries
# (`redis-server --cluster-enabled yes` on free loopback ports in a temporary directory,
# joined by `redis-cli --cluster create --cluster-replicas 0`), waits for cluster_state:ok on
# every node, runs benches/cluster_bench.py against it (quantshift_core beside redis-py's
# RedisCluster and a plain redis-py connection to the bot's owner node, all in one run) and
# prints the table; the servers are stopped on exit, whatever happens.
#
#     bash scripts/bench_cluster.sh [--write BENCHMARKS.md] [other cluster_bench.py options]
#
# The Python is .venv/bin/python with quantshift_core installed (bash scripts/test.d/30-python.sh
# or `.venv/bin/maturin develop --release`); PYTHON=... picks another interpreter. With
# QS_BENCH_RUST=1 the Rust bench (benches/cluster.rs, release build) runs on the same cluster
# afterwards and prints its table.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
command -v redis-server >/dev/null || { echo "redis-server not found: bash scripts/setup.sh" >&2; exit 1; }
command -v redis-cli >/dev/null || { echo "redis-cli not found: bash scripts/setup.sh" >&2; exit 1; }

DIR=$(mktemp -d "${TMPDIR:-/tmp}/qs-cluster-bench.XXXXXX")
PIDS=()
stop() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap stop EXIT
trap 'exit 130' INT TERM

# Six free loopback ports (three client ports, three cluster-bus ports), never 6379.
read -r -a PORTS <<<"$(python3 - <<'EOF'
import socket
socks, ports = [], []
while len(ports) < 6:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    socks.append(s)
    if port != 6379:
        ports.append(port)
print(" ".join(map(str, ports)))
EOF
)"
NODES=()
for i in 0 1 2; do
  port=${PORTS[$i]}
  bus=${PORTS[$((i + 3))]}
  mkdir -p "$DIR/$port"
  redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-port "$bus" --cluster-config-file "$DIR/$port/nodes.conf" \
    --cluster-node-timeout 5000 --save "" --appendonly no --maxmemory-policy noeviction \
    --dir "$DIR/$port" --logfile "$DIR/$port/redis.log" &
  PIDS+=($!)
  NODES+=("127.0.0.1:$port")
done
for node in "${NODES[@]}"; do
  for _ in $(seq 100); do
    redis-cli -p "${node##*:}" ping >/dev/null 2>&1 && break
    sleep 0.05
  done
done
redis-cli --cluster create "${NODES[@]}" --cluster-replicas 0 --cluster-yes >"$DIR/create.log" 2>&1 \
  || { cat "$DIR/create.log" >&2; exit 1; }
for node in "${NODES[@]}"; do
  ok=""
  for _ in $(seq 300); do
    if redis-cli -p "${node##*:}" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; then
      ok=1
      break
    fi
    sleep 0.1
  done
  [ -n "$ok" ] || { echo "cluster node $node never reached cluster_state:ok" >&2; exit 1; }
done
# Every node must also agree on the whole slot map before the bench reads it.
for _ in $(seq 100); do
  redis-cli --cluster check "${NODES[0]}" 2>/dev/null | grep -q 'All 16384 slots covered' && break
  sleep 0.1
done
echo "cluster up: ${NODES[*]} ($(redis-server --version | sed 's/.*v=\([^ ]*\).*/Redis \1/'))" >&2

SEEDS=$(IFS=,; echo "${NODES[*]}")
"$PY" benches/cluster_bench.py --cluster "$SEEDS" "$@"

if [ "${QS_BENCH_RUST:-0}" = 1 ]; then
  echo
  QS_CLUSTER_NODES="$SEEDS" cargo bench --bench cluster 2>/dev/null | grep -E '^\||^Rust'
fi
