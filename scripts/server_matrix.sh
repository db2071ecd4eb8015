#!/usr/bin/env bash
# The server matrix (issue 26, not yet in the test command). Where it stands: Valkey 9.1.2
# passes all of it; Redis 6.2.5 passes all but the cluster's CLUSTER FAILOVER test, where the
# harness's owner read through CLUSTER SLOTS disagrees with the owner its failover waited
# for (under investigation: the harness or the library's CLUSTER SLOTS path). Besides Debian's Redis 7
# (every part of the test command), Valkey 9.1 and Redis 6.2 (fetched by scripts/servers.sh,
# pinned and hash-checked) run the paths where servers differ:
# the seed's usage from Python; crash, freeze and a 150 ms stall at the default lock_ttl;
# Redis restarts with and without data and FLUSHALL met by a newcomer; Sentinel (each
# server's own Sentinel mode); a 3+3 cluster's failover, primary kill and live slot
# migration. The test binaries are the ones 20-rust.sh built; each run has the server's
# bin dir first on PATH, so every redis-server (and Sentinel) the tests start is that one.
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
)

fail() { echo "server_matrix: FAILED: $*" >&2; exit 1; }
mapfile -t servers < <(bash scripts/servers.sh) || fail "scripts/servers.sh could not fetch the servers"
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
  cargo test --quiet --test failover -- --exact "${LEASE_TESTS[@]}" || fail "$label: failover"
  cargo test --quiet --test sentinel -- --exact "${SENTINEL_TESTS[@]}" || fail "$label: sentinel"
  cargo test --quiet --test cluster -- --exact "${CLUSTER_TESTS[@]}" || fail "$label: cluster"
  echo "server_matrix: $label: passed in $(( $(date +%s) - started )) s"
done
