#!/usr/bin/env bash
# The server matrix, run by the test command (scripts/test.d/55-servers.sh). Besides Debian's
# Redis 7 (every part of the test command), Valkey 9.1 and Redis 6.2 (fetched by scripts/servers.sh,
# pinned and hash-checked) run the paths where servers differ:
# the seed's usage from Python; crash, freeze and a 150 ms stall at the default lock_ttl;
# Redis restarts with and without data and FLUSHALL met by a newcomer; Sentinel (each
# server's own Sentinel mode); a 3+3 cluster's failover, primary kill and live slot
# migration, by MIGRATE and, where the server has it (Valkey 9), by atomic slot migration. The test binaries are the ones 20-rust.sh built; each run has the server's
# bin dir first on PATH, so every redis-server (and Sentinel) the tests start is that one.
# The tests print their figures (--nocapture): docs/deployment.md's rows are read from them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PY="$PWD/.venv/bin/python"

LEASE_TESTS=(
  a_killed_primary_is_replaced_within_half_a_second_at_the_default_ttl
  a_primary_frozen_past_its_deadline_is_replaced_and_wakes_as_standby
  a_redis_stall_shorter_than_the_tolerance_never_moves_the_lease
  restarts_without_persistence_and_flushall_never_make_two_primaries
  with_aof_a_restart_keeps_the_data_and_the_epoch_never_goes_back
)
SENTINEL_TESTS=(
  a_graceful_sentinel_failover_is_followed_at_once
  kill_9_of_the_master_with_wait_replicas_loses_nothing_acknowledged
)
CLUSTER_TESTS=(
  cluster_failover_of_a_running_bots_slot_owner_never_makes_two_primaries
  a_killed_redis_primary_never_makes_two_primaries_on_a_cluster
  migrating_a_running_bots_slot_never_makes_two_primaries
  atomic_slot_migration_of_a_running_bots_slot_never_makes_two_primaries
)

fail() { echo "server_matrix: FAILED: $*" >&2; exit 1; }
mapfile -t servers < <(bash scripts/servers.sh) || fail "scripts/servers.sh could not fetch the servers"
# QS_MATRIX_DEFAULT=1 runs the same subset on the default redis-server first (for figures
# measured side by side; the rest of the test command covers that server already).
if [ "${QS_MATRIX_DEFAULT:-0}" = 1 ]; then
  default_bin=$(dirname "$(command -v redis-server)")
  servers=("default $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') $default_bin" "${servers[@]}")
fi
[ ${#servers[@]} -gt 0 ] || fail "no server to run"
for entry in "${servers[@]}"; do
  read -r name version bin <<<"$entry"
  started=$(date +%s)
  label="$name $version"
  export PATH="$bin:$(echo "$PATH" | sed "s#[^:]*/.cache/servers/[^:]*:##g")"
  [ "$(command -v redis-server)" = "$bin/redis-server" ] || fail "$label: redis-server is not $bin/redis-server"
  echo "server_matrix: $label: $(redis-server --version | cut -d' ' -f1-3) ($(command -v redis-server))"
  (cd tests/python && "$PY" -m pytest -q -p no:cacheprovider "test_seed_usage.py::test_seed_usage_runs_unchanged") \
    || fail "$label: the seed usage"
  cargo test --quiet --test failover -- --nocapture --test-threads=1 --exact "${LEASE_TESTS[@]}" || fail "$label: failover"
  cargo test --quiet --test sentinel -- --nocapture --test-threads=1 --exact "${SENTINEL_TESTS[@]}" || fail "$label: sentinel"
  expect_atomic=0
  [ "$name" = valkey ] && expect_atomic=1
  QS_EXPECT_ATOMIC_MIGRATION=$expect_atomic cargo test --quiet --test cluster -- --nocapture --test-threads=1 --exact "${CLUSTER_TESTS[@]}" || fail "$label: cluster"
  echo "server_matrix: $label: passed in $(( $(date +%s) - started )) s"
done
