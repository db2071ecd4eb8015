#!/usr/bin/env bash
# The tolerance profiles of docs/failover.md ("Tolerance profiles"): one bot runs as primary
# for QS_SECONDS (default 60) under each profile and prints its lease's stall meter (how late
# the lease thread woke, how long its round trips took) and whether it kept the lease at
# QS_TOLERANCE_MS (default 200). Redis runs on this host (appendonly yes, appendfsync
# everysec as docs/deployment.md recommends, QS_FSYNC=always to change it), at normal
# priority and without a CPU limit.
#
#   bash scripts/tolerance_profiles.sh                 # every profile
#   bash scripts/tolerance_profiles.sh idle quota50-2  # some
#
# Profiles:
#   idle              nothing else runs (a dedicated host's stand-in)
#   spin              2 x cores + 1 spinning processes (a VM or container without CPU limits
#                     on a busy host), the bot does nothing else
#   spin-busy3        the same, and the bot runs 3 busy threads of its own
#   quota50-1         the bot in a cgroup with a CFS quota of 50 ms per 100 ms (half a CPU),
#                     1 busy thread of its own (more than its quota: throttled every period)
#   quota50-2         the same, 2 busy threads
#   quota100-3        a quota of one CPU (100 ms per 100 ms), 3 busy threads
#   spin-nice         spin, the bot at nice -10
#   spin-chrt         spin, the bot under SCHED_FIFO 10 (chrt -f 10)
#   spin-busy3-nice   spin-busy3, the bot at nice -10
#
# The quota profiles need a writable cgroup cpu controller (v2 cpu.max, or v1
# cpu.cfs_quota_us); without one they are skipped with a note. Every process started here
# is bounded in time (timeout) and stopped on exit; the cgroup is removed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${QS_SECONDS:-60}
tolerance=${QS_TOLERANCE_MS:-200}
report=${QS_PROFILE_REPORT:-/dev/null}
all=(idle spin spin-busy3 quota50-1 quota50-2 quota100-3 spin-nice spin-chrt spin-busy3-nice)
profiles=("$@")
[ ${#profiles[@]} -gt 0 ] || profiles=("${all[@]}")

cargo build --release --example lease_stalls --quiet
bin=target/release/examples/lease_stalls

work=$(mktemp -d /tmp/qs-tolerance.XXXXXX)
spinners=()
cgroup=""
redis_pid=""
cleanup() {
  for pid in "${spinners[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "$cgroup" ] && rmdir "$cgroup" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
timeout $((seconds * ${#profiles[@]} + 600)) redis-server --port "$port" --bind 127.0.0.1 \
  --save "" --appendonly yes --appendfsync "${QS_FSYNC:-everysec}" --dir "$work" \
  --maxmemory-policy noeviction --latency-monitor-threshold 20 >/dev/null 2>&1 &
redis_pid=$!
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done

cores=$(nproc)
start_spinners() {
  for _ in $(seq $((2 * cores + 1))); do
    timeout $((seconds + 120)) sh -c 'while :; do :; done' &
    spinners+=($!)
  done
}
stop_spinners() {
  for pid in "${spinners[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${spinners[@]}"; do wait "$pid" 2>/dev/null || true; done
  spinners=()
}

# A child cgroup with a CPU quota of $1 µs per 100 ms; prints its directory, or nothing.
make_cgroup() {
  local quota=$1 dir
  if grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    dir=/sys/fs/cgroup/qs-tolerance-$$
    if ! grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; then
      echo "+cpu" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || return 0
    fi
    mkdir -p "$dir" 2>/dev/null && echo "$quota 100000" >"$dir/cpu.max" 2>/dev/null && echo "$dir"
  elif [ -w /sys/fs/cgroup/cpu ]; then
    dir=/sys/fs/cgroup/cpu/qs-tolerance-$$
    mkdir -p "$dir" 2>/dev/null &&
      echo 100000 >"$dir/cpu.cfs_period_us" &&
      echo "$quota" >"$dir/cpu.cfs_quota_us" 2>/dev/null && echo "$dir"
  fi
}

run_bot() { # label busy_threads prefix...
  local label=$1 busy=$2
  shift 2
  QUANTSHIFT_REDIS_URL="redis://127.0.0.1:$port/0" QS_SECONDS=$seconds QS_BUSY_THREADS=$busy \
    QS_TOLERANCE_MS=$tolerance QS_BOT="probe-$$-$label" QS_LABEL="$label" \
    timeout $((seconds + 90)) "$@" "$bin" | tee -a "$report" || true
  # Redis's own slow events (fsync, commands) during this profile, then forgotten.
  echo "  redis: $(redis-cli -p "$port" latency latest | paste -sd' ' -)" | tee -a "$report"
  redis-cli -p "$port" latency reset >/dev/null
}

for profile in "${profiles[@]}"; do
  echo "== $profile ($seconds s, failover_tolerance $tolerance ms, $(date +%T), load $(cut -d' ' -f1-3 /proc/loadavg))"
  case $profile in
    idle) run_bot idle 0 ;;
    spin) start_spinners; run_bot spin 0; stop_spinners ;;
    spin-busy3) start_spinners; run_bot spin-busy3 3; stop_spinners ;;
    spin-nice) start_spinners; run_bot spin-nice 0 nice -n -10; stop_spinners ;;
    spin-chrt) start_spinners; run_bot spin-chrt 0 chrt -f 10; stop_spinners ;;
    spin-busy3-nice) start_spinners; run_bot spin-busy3-nice 3 nice -n -10; stop_spinners ;;
    quota50-1 | quota50-2 | quota100-3)
      quota=${profile#quota}; busy=${quota#*-}; quota=${quota%-*}
      cgroup=$(make_cgroup $((quota * 1000)))
      if [ -z "$cgroup" ]; then
        echo "PROFILE label=\"$profile\" skipped: no writable cgroup cpu controller" | tee -a "$report"
        continue
      fi
      run_bot "$profile" "$busy" sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$cgroup"
      grep -E '^(nr_periods|nr_throttled|throttled_time|throttled_usec)' "$cgroup/cpu.stat" | tr '\n' ' ' | sed 's/^/  cgroup: /' | tee -a "$report"
      echo | tee -a "$report"
      rmdir "$cgroup" 2>/dev/null || true
      cgroup=""
      ;;
    *) echo "unknown profile $profile (known: ${all[*]})" >&2; exit 2 ;;
  esac
done
