#!/usr/bin/env bash
# The C ABI: builds the library, fails when include/quantshift_core.h differs from what the
# pinned cbindgen generates, compiles the C / C++ tests and examples with warnings as errors,
# and runs them against real redis-server processes on free loopback ports:
#   1. under AddressSanitizer + UBSan (C / C++ instrumented, linked to the static library),
#   2. under valgrind memcheck (linked to the shared library): zero errors, zero leaks.
# Each pass runs every-function tests, the C++ wrapper tests, both examples, a failover of
# two C processes after kill -9, and SIGTERM / SIGINT on C processes (library-installed
# handlers and host-handled signals). Then two C bots whose log callback blocks a second per
# record keep the lease with no fault and fail over once after kill -9 (shared library at full
# speed only). Last, both examples (the seed's usage) run unchanged on a Redis Cluster of 3
# primaries through QUANTSHIFT_REDIS_URL=redis+cluster://..., built with ASan + UBSan and
# against the shared library.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

CBINDGEN_VERSION=0.29.4
OUT="$PWD/target/c-abi"
LIB="$OUT/lib"
RUN="$OUT/run"
# The link lines of docs/c.md "Build and link" (without installing).
SHARED_LINK=(-L"$LIB" -lquantshift_core -Wl,-rpath,"$LIB")
STATIC_LINK=("$LIB/libquantshift_core.a" -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc)
CFLAGS=(-std=c11 -Wall -Wextra -Werror -pedantic -g -Iinclude -Itests/c)
CXXFLAGS=(-std=c++17 -Wall -Wextra -Werror -g -Iinclude -Ibindings/cpp -Itests/c)
SANITIZE=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
VALGRIND=(valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect --num-callers=40
  --error-exitcode=97 --suppressions=tests/c/valgrind.supp)

now_ms() { date +%s%3N; }
fail() { echo "40-c: FAILED: $*" >&2; exit 1; }

# ---- build and header drift -------------------------------------------------------------
rm -rf "$OUT"
mkdir -p "$LIB" "$RUN" "$OUT/plain" "$OUT/asan"
cargo build --lib --quiet
BUILT="${CARGO_TARGET_DIR:-target}/debug"
cp "$BUILT/libquantshift_core.so" "$BUILT/libquantshift_core.a" "$LIB/"
# Programs linked with -lquantshift_core load it by its SONAME (scripts/install-c.sh makes
# the same link in a prefix).
ln -s libquantshift_core.so "$LIB/libquantshift_core.so.$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2 | cut -d. -f1)"
# target/ is shared: make sure what we copied is a build with the C ABI in it.
nm -D --defined-only "$LIB/libquantshift_core.so" | grep -q ' quantshift_manager_new$' \
  || fail "$BUILT/libquantshift_core.so has no C ABI (built without the ffi feature?)"

if ! cbindgen --version 2>/dev/null | grep -q " $CBINDGEN_VERSION\$"; then
  fail "cbindgen $CBINDGEN_VERSION is required (bash scripts/setup.sh installs it)"
fi
cbindgen --quiet --config cbindgen.toml --output "$OUT/quantshift_core.h" src/ffi/mod.rs
if ! diff -u include/quantshift_core.h "$OUT/quantshift_core.h"; then
  fail "include/quantshift_core.h is stale; regenerate it with:
  cbindgen --config cbindgen.toml --output include/quantshift_core.h src/ffi/mod.rs"
fi
echo "40-c: header matches cbindgen $CBINDGEN_VERSION"

# ---- compile ----------------------------------------------------------------------------
C_PROGRAMS=(tests/c/test_api.c tests/c/bot.c examples/c/bot_example.c)
# Built only (run by hand for latency numbers, see README "Use from C/C++").
cc "${CFLAGS[@]}" -O2 tests/c/bench.c -o "$OUT/plain/bench" "${SHARED_LINK[@]}" &
CXX_PROGRAMS=(tests/c/test_wrapper.cpp examples/cpp/bot_example.cpp)
name_of() { local base; base=$(basename "$1"); case "$1" in
  examples/c/*) echo "${base%.c}_c" ;; examples/cpp/*) echo "${base%.cpp}_cpp" ;;
  *) base=${base%.c}; echo "${base%.cpp}" ;; esac; }
# Two compilers at a time (two shared cores); any failure fails the part.
throttle() { while [ "$(jobs -rp | wc -l)" -ge "$1" ]; do wait -n || fail "a C / C++ program did not compile"; done; }
for src in "${C_PROGRAMS[@]}"; do
  throttle 2; cc "${CFLAGS[@]}" "$src" -o "$OUT/plain/$(name_of "$src")" "${SHARED_LINK[@]}" -lm -pthread &
  throttle 2; cc "${CFLAGS[@]}" "${SANITIZE[@]}" "$src" -o "$OUT/asan/$(name_of "$src")" "${STATIC_LINK[@]}" &
done
for src in "${CXX_PROGRAMS[@]}"; do
  throttle 2; c++ "${CXXFLAGS[@]}" "$src" -o "$OUT/plain/$(name_of "$src")" "${SHARED_LINK[@]}" -pthread &
  throttle 2; c++ "${CXXFLAGS[@]}" "${SANITIZE[@]}" "$src" -o "$OUT/asan/$(name_of "$src")" "${STATIC_LINK[@]}" &
done
throttle 1
echo "40-c: compiled ${#C_PROGRAMS[@]} C and ${#CXX_PROGRAMS[@]} C++ programs, twice"

# ---- redis-server on free loopback ports ------------------------------------------------
children=()
cleanup() {
  for pid in "${children[@]}"; do
    kill -CONT "$pid" 2>/dev/null || true
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$OUT/redis"
}
trap cleanup EXIT

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 40000))
    [ "$port" -ne 6379 ] && ! port_in_use "$port" && { echo "$port"; return; }
  done
}
start_redis() {  # [extra redis-server arguments]: sets REDIS_PORT, REDIS_PID
  local port dir attempt
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    dir="$OUT/redis/$port"
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes --save '' \
      --appendonly no --maxmemory-policy noeviction --dir "$dir" "$@" >"$dir/log" 2>&1 &
    REDIS_PID=$!
    children+=("$REDIS_PID")
    for _ in $(seq 100); do
      if redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null | grep -q PONG; then
        REDIS_PORT=$port
        return
      fi
      sleep 0.05
    done
  done
  fail "could not start redis-server on a free loopback port"
}
start_redis
MASTER_PORT=$REDIS_PORT
# A replica of it, which test_api pauses to see a write fail with NOT_REPLICATED.
start_redis --replicaof 127.0.0.1 "$MASTER_PORT"
export QS_REPLICA_PID=$REDIS_PID
REDIS_PORT=$MASTER_PORT
replica_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" INFO replication | grep -q '^slave0:.*state=online'; }
for _ in $(seq 200); do replica_up && break; sleep 0.05; done
replica_up || fail "the replica did not come online"
export QS_REDIS_PORT=$REDIS_PORT
export QS_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export QS_DEAD_URL="redis://127.0.0.1:$(free_port)/0"
export QUANTSHIFT_REDIS_URL="$QS_REDIS_URL"
rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

# ---- helpers for bot processes ----------------------------------------------------------
# start_bot <label> <bot-name> <ttl-ms> <library|host>: sets BOT_PID; output in $RUN/<label>.*
start_bot() {
  "${RUNNER[@]}" "$BIN/bot" "$QS_REDIS_URL" "$2" "$3" "$4" >"$RUN/$1.out" 2>"$RUN/$1.err" &
  BOT_PID=$!
  children+=("$BOT_PID")
}
show() { for f in "$@"; do echo "--- $f"; cat "$f"; done >&2; }
wait_line() {  # <file> <regex> <timeout-ms>
  local start; start=$(now_ms)
  until grep -q -- "$2" "$1"; do
    if (( $(now_ms) - start > $3 )); then show "$1" "${1%.out}.err"; fail "no line /$2/ in $1 within $3 ms"; fi
    sleep 0.01
  done
}
wait_exit() {  # <pid> <timeout-ms>: sets EXIT_CODE
  local start; start=$(now_ms)
  while kill -0 "$1" 2>/dev/null; do
    if (( $(now_ms) - start > $2 )); then fail "process $1 did not exit within $2 ms"; fi
    sleep 0.01
  done
  EXIT_CODE=0
  wait "$1" 2>/dev/null || EXIT_CODE=$?
}
expect_clean_exit() {  # <label> <pid> <timeout-ms>
  wait_exit "$2" "$3"
  if [ "$EXIT_CODE" -ne 0 ]; then show "$RUN/$1.out" "$RUN/$1.err"; fail "$1 exited with $EXIT_CODE, expected 0"; fi
  if [ -s "$RUN/$1.err" ] && grep -q "ERROR SUMMARY\|Sanitizer\|runtime error\|definitely lost" "$RUN/$1.err"; then
    show "$RUN/$1.err"; fail "$1: sanitizer or valgrind report"
  fi
}
check_handlers_ran() {  # <label>: both shutdown handlers, in order
  [ "$(grep '^handler ' "$RUN/$1.out" | tr '\n' ' ')" = "handler 0 handler 1 " ] \
    || { show "$RUN/$1.out"; fail "$1: shutdown handlers did not run in order"; }
}
epoch_of() { awk '/^primary /{print $2; exit}' "$RUN/$1.out"; }
promoted_at() { awk '/^primary /{print $3; exit}' "$RUN/$1.out"; }

# ---- one pass ---------------------------------------------------------------------------
run_pass() {  # <label> <bin-dir> <ttl-ms> <slack-ms> <runner...>
  local pass=$1 ttl=$3 slack=$4 poll bot started elapsed bound a b
  BIN=$2
  shift 4
  RUNNER=("$@")
  poll=$(( ttl / 10 < 1000 ? ttl / 10 : 1000 ))
  export QS_TTL_MS=$ttl
  echo "40-c: [$pass] test_api"
  "${RUNNER[@]}" "$BIN/test_api" || fail "[$pass] test_api"
  echo "40-c: [$pass] test_wrapper"
  "${RUNNER[@]}" "$BIN/test_wrapper" || fail "[$pass] test_wrapper"
  echo "40-c: [$pass] examples"
  "${RUNNER[@]}" "$BIN/bot_example_c" >"$RUN/$pass-example-c.out" || fail "[$pass] examples/c"
  "${RUNNER[@]}" "$BIN/bot_example_c" >>"$RUN/$pass-example-c.out" || fail "[$pass] examples/c, second run"
  grep -q '^Recovered state: .*"shutdown_time"' "$RUN/$pass-example-c.out" || fail "[$pass] examples/c did not recover its state"
  "${RUNNER[@]}" "$BIN/bot_example_cpp" >"$RUN/$pass-example-cpp.out" || fail "[$pass] examples/cpp"
  # The example runs at the default fast failover: a holder is primary 300 ms past its last
  # renewal, which valgrind's slowdown (every call 20-50x slower) can outlast; there the
  # example must still run to its end and say which role it ended in.
  if [ "$pass" = valgrind ]; then
    grep -qE '^This instance is (primary|standby)' "$RUN/$pass-example-cpp.out" \
      || fail "[$pass] examples/cpp output"
  else
    grep -q '^This instance is primary' "$RUN/$pass-example-cpp.out" || fail "[$pass] examples/cpp output"
  fi

  # Failover: kill -9 the primary; the standby promotes within lock_ttl + poll_interval.
  bot="c-failover-$pass-$$"
  start_bot "$pass-a" "$bot" "$ttl" library; a=$BOT_PID
  wait_line "$RUN/$pass-a.out" '^primary ' 20000
  start_bot "$pass-b" "$bot" "$ttl" library; b=$BOT_PID
  wait_line "$RUN/$pass-b.out" '^standby' 20000
  sleep "$(awk "BEGIN{print 3 * $poll / 1000}")"
  ! grep -q '^primary' "$RUN/$pass-b.out" || fail "[$pass] two primaries: b promoted while a held the lease"
  kill -9 "$a"
  started=$(now_ms)
  wait_exit "$a" 5000
  wait_line "$RUN/$pass-b.out" '^primary ' $(( 3 * ttl + 5000 ))
  elapsed=$(( $(promoted_at "$pass-b") - started ))
  bound=$(( ttl + poll + slack ))
  echo "40-c: [$pass] failover after kill -9: standby primary in $elapsed ms (lock_ttl $ttl + poll $poll + slack $slack = $bound)"
  (( elapsed <= bound )) || fail "[$pass] failover took $elapsed ms, over $bound ms"
  (( $(epoch_of "$pass-b") > $(epoch_of "$pass-a") )) || fail "[$pass] the epoch did not grow"

  # SIGTERM on the primary (library-installed handlers): handlers, state, release, exit 0;
  # a new standby takes over at once through the release notice.
  start_bot "$pass-c" "$bot" "$ttl" library
  wait_line "$RUN/$pass-c.out" '^standby' 20000
  kill -TERM "$b"
  started=$(now_ms)
  expect_clean_exit "$pass-b" "$b" 30000
  check_handlers_ran "$pass-b"
  wait_line "$RUN/$pass-c.out" '^primary ' 5000
  echo "40-c: [$pass] SIGTERM of the primary: standby primary in $(( $(promoted_at "$pass-c") - started )) ms"
  rcli GET "bot:$bot:state" | grep -q '"strategy":"c-bot".*"shutdown_time"' \
    || fail "[$pass] SIGTERM did not save the last state with shutdown_time"

  # SIGINT on the last one: handlers, exit 0, lease released (no one else to take it).
  kill -INT "$BOT_PID"
  expect_clean_exit "$pass-c" "$BOT_PID" 30000
  check_handlers_ran "$pass-c"
  [ "$(rcli EXISTS "bot:$bot:primary_lock")" = 0 ] || fail "[$pass] SIGINT left the lease in Redis"

  # A second signal during a slow shutdown ends the process at once (status 130), without
  # waiting for the rest of the handlers.
  bot="c-second-$pass-$$"
  QS_HANDLER_SLEEP_MS=30000 start_bot "$pass-second" "$bot" "$ttl" library
  wait_line "$RUN/$pass-second.out" '^primary ' 20000
  kill -TERM "$BOT_PID"
  wait_line "$RUN/$pass-second.out" '^handler 0' 10000
  kill -TERM "$BOT_PID"
  started=$(now_ms)
  wait_exit "$BOT_PID" 5000
  [ "$EXIT_CODE" -eq 130 ] || { show "$RUN/$pass-second.out" "$RUN/$pass-second.err"; fail "[$pass] second signal: exit $EXIT_CODE, expected 130"; }
  ! grep -q '^handler 1' "$RUN/$pass-second.out" || fail "[$pass] second signal: handlers went on"
  ! grep -q "ERROR SUMMARY\|Sanitizer\|runtime error" "$RUN/$pass-second.err" || { show "$RUN/$pass-second.err"; fail "[$pass] second signal: sanitizer or valgrind report"; }
  echo "40-c: [$pass] second SIGTERM during shutdown: exit 130 after $(( $(now_ms) - started )) ms"

  # The host handles SIGTERM itself (install_signal_handlers = false) and calls shutdown.
  bot="c-host-$pass-$$"
  start_bot "$pass-host" "$bot" "$ttl" host
  wait_line "$RUN/$pass-host.out" '^primary ' 20000
  kill -TERM "$BOT_PID"
  expect_clean_exit "$pass-host" "$BOT_PID" 30000
  grep -q '^host shutdown 15$' "$RUN/$pass-host.out" || { show "$RUN/$pass-host.out"; fail "[$pass] the host's own handler did not run"; }
  check_handlers_ran "$pass-host"
  grep -q '^host done$' "$RUN/$pass-host.out" || fail "[$pass] the host did not finish its shutdown"
  [ "$(rcli EXISTS "bot:$bot:primary_lock")" = 0 ] || fail "[$pass] host shutdown left the lease in Redis"
  rcli GET "bot:$bot:state" | grep -q '"shutdown_time"' || fail "[$pass] host shutdown did not save the state"
}

export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
run_pass asan "$OUT/asan" 1000 300 env
unset ASAN_OPTIONS UBSAN_OPTIONS
# Under valgrind everything runs ~20x slower and its threads take turns: a longer lease keeps
# renewals within their deadline on a loaded machine.
run_pass valgrind "$OUT/plain" 4000 1000 "${VALGRIND[@]}"

# ---- a log callback that blocks (issue 24) ----------------------------------------------
# Two bots whose log callback sleeps a second per record (QS_LOG_SLEEP_MS; role changes are
# info records), at the default fast failover (a holder is primary until 300 ms past its last
# renewal): were the callback run on the lease thread, one record would stall the renewals
# past that and the two would trade the lease with no fault at all. Counted in Redis, on the
# lease record (a take is a new epoch). Only the shared-library build at full speed: under
# valgrind every call is 20-50x slower and such a lease lapses with or without a logger (see
# the example above), and ASan's slowdown on two shared cores would blur a bound of 1 s;
# the ASan pass already runs the bot.
wall_ms() { local t=${EPOCHREALTIME//[!0-9]/}; echo $(( t / 1000 )); }  # no fork, unlike date
lease_samples() {  # <bot> <ms> <file>: "<wall-ms> <epoch> <seq> <token>" every ~10 ms
  local until t
  until=$(( $(wall_ms) + $2 ))
  : >"$3"
  while t=$(wall_ms); (( t < until )); do
    echo "$t $(rcli HMGET "bot:$1:lease_record" epoch seq token | paste -sd' ')" >>"$3"
    sleep 0.01
  done
}
distinct_epochs() { awk 'NF >= 2 && $2 != last { print; last = $2 }' "$1"; }
busy_logger_check() {
  local bot="c-busy-log-$$" a b epoch token holder survivor killed n took
  BIN="$OUT/plain"
  RUNNER=(env)
  QS_LOG_SLEEP_MS=1000 start_bot busy-a "$bot" 30000 library; a=$BOT_PID
  QS_LOG_SLEEP_MS=1000 start_bot busy-b "$bot" 30000 library; b=$BOT_PID
  wait_line "$RUN/busy-a.out" '^standby' 20000
  wait_line "$RUN/busy-b.out" '^standby' 20000
  # Started together: the winner's "is now primary" record is logged inside the window.
  for _ in $(seq 2000); do [ -n "$(rcli HGET "bot:$bot:lease_record" epoch)" ] && break; sleep 0.01; done
  [ -n "$(rcli HGET "bot:$bot:lease_record" epoch)" ] || fail "[busy log] no bot took the lease within 20 s"
  lease_samples "$bot" 8000 "$RUN/busy-quiet.lease"
  n=$(distinct_epochs "$RUN/busy-quiet.lease" | wc -l)
  echo "40-c: [busy log] no fault, two bots logging 1 s per record: $n epoch(s) in 8 s"
  (( n == 1 )) || { distinct_epochs "$RUN/busy-quiet.lease" >&2; show "$RUN/busy-a.out" "$RUN/busy-b.out"; fail "[busy log] the lease moved $(( n - 1 )) time(s) with no fault"; }
  [ "$(awk '{print $4}' "$RUN/busy-quiet.lease" | sort -u | wc -l)" = 1 ] || fail "[busy log] the lease changed hands with no fault"
  (( $(awk '{print $2, $3}' "$RUN/busy-quiet.lease" | sort -u | wc -l) >= 8000 / 300 )) \
    || fail "[busy log] the holder did not renew every 100 ms"
  read -r _ epoch _ token < <(tail -n 1 "$RUN/busy-quiet.lease")
  holder=$(echo "$token" | cut -d: -f2)
  case "$holder" in "$a") survivor=$b ;; "$b") survivor=$a ;; *) fail "[busy log] holder $token is neither bot" ;; esac
  killed=$(wall_ms)
  kill -9 "$holder"
  lease_samples "$bot" 6000 "$RUN/busy-kill.lease"
  wait_exit "$holder" 5000
  distinct_epochs "$RUN/busy-kill.lease" | awk -v old="$epoch" '$2 != old' >"$RUN/busy-kill.takes"
  n=$(wc -l <"$RUN/busy-kill.takes")
  took=$(( $(awk 'NR == 1 {print $1}' "$RUN/busy-kill.takes") - killed ))
  echo "40-c: [busy log] kill -9 of the primary: $n take(s) in 6 s, the first $took ms after the kill"
  (( n == 1 )) || { cat "$RUN/busy-kill.takes" >&2; fail "[busy log] $n takes after the kill, expected exactly 1"; }
  (( took <= 1000 )) || fail "[busy log] the take came $took ms after the kill, over 1000 ms"
  # The survivor keeps it: one token from the take on, and renewing (every 100 ms) to the end.
  awk -v at="$(awk '{print $1}' "$RUN/busy-kill.takes")" '$1 >= at' "$RUN/busy-kill.lease" >"$RUN/busy-kept.lease"
  [ "$(awk '{print $4}' "$RUN/busy-kept.lease" | sort -u)" = "$(awk '{print $4}' "$RUN/busy-kill.takes")" ] \
    || { show "$RUN/busy-kept.lease"; fail "[busy log] the new primary lost the lease"; }
  [ "$(awk '{print $4}' "$RUN/busy-kill.takes" | cut -d: -f2)" = "$survivor" ] || fail "[busy log] the take was not the survivor's"
  (( $(awk '{print $3}' "$RUN/busy-kept.lease" | sort -u | wc -l) >= ($(tail -n 1 "$RUN/busy-kept.lease" | cut -d' ' -f1) - killed - took) / 300 )) \
    || fail "[busy log] the new primary did not renew every 100 ms"
  kill -9 "$survivor"
  wait_exit "$survivor" 5000
}
busy_logger_check
# ---- the seed's usage on a Redis Cluster ------------------------------------------------
# Three cluster-enabled primaries (client and bus ports free), every slot assigned by
# redis-cli --cluster create; the examples get the cluster URL from the environment alone.
cluster_ports=()
used_ports=()
start_cluster_node() {  # appends to cluster_ports; a few attempts on other free ports
  local port bus dir attempt
  for attempt in 1 2 3 4 5; do
    port=$(free_port); bus=$(free_port)
    [[ "$port" != "$bus" && " ${used_ports[*]} " != *" $port "* && " ${used_ports[*]} " != *" $bus "* ]] || continue
    used_ports+=("$port" "$bus")
    dir="$OUT/redis/cluster-$port"
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes --save '' --appendonly no \
      --maxmemory-policy noeviction --dir "$dir" --cluster-enabled yes --cluster-port "$bus" \
      --cluster-config-file nodes.conf --cluster-node-timeout 2000 >"$dir/log" 2>&1 &
    children+=("$!")
    for _ in $(seq 100); do
      if redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null | grep -q PONG; then
        cluster_ports+=("$port")
        return
      fi
      sleep 0.05
    done
    cat "$dir/log" >&2
  done
  fail "could not start a cluster node on free loopback ports"
}
for _ in 1 2 3; do start_cluster_node; done
redis-cli --cluster create $(printf '127.0.0.1:%s ' "${cluster_ports[@]}") --cluster-replicas 0 \
  --cluster-yes >"$OUT/redis/cluster-create.log" 2>&1 || { cat "$OUT/redis/cluster-create.log" >&2; fail "redis-cli --cluster create"; }
cluster_ok() {
  local port
  for port in "${cluster_ports[@]}"; do
    redis-cli -h 127.0.0.1 -p "$port" CLUSTER INFO | grep -q '^cluster_state:ok' || return 1
  done
}
for _ in $(seq 300); do cluster_ok && break; sleep 0.05; done
cluster_ok || fail "the cluster did not reach cluster_state:ok"
CLUSTER_URL="redis+cluster://127.0.0.1:${cluster_ports[0]},127.0.0.1:${cluster_ports[1]}"
ccli() { redis-cli -c -h 127.0.0.1 -p "${cluster_ports[0]}" "$@"; }
run_on_cluster() {  # <label> <runner...>: the C example twice (recovering its state), the C++ one
  local label=$1 dir
  shift
  case "$label" in asan) dir="$OUT/asan" ;; *) dir="$OUT/plain" ;; esac
  QUANTSHIFT_REDIS_URL="$CLUSTER_URL" "$@" "$dir/bot_example_c" >"$RUN/cluster-$label-c.out" 2>&1 \
    && QUANTSHIFT_REDIS_URL="$CLUSTER_URL" "$@" "$dir/bot_example_c" >>"$RUN/cluster-$label-c.out" 2>&1 \
    || { show "$RUN/cluster-$label-c.out"; fail "[$label] examples/c on the cluster"; }
  grep -q '^Recovered state: .*"shutdown_time"' "$RUN/cluster-$label-c.out" \
    || { show "$RUN/cluster-$label-c.out"; fail "[$label] examples/c did not recover its state on the cluster"; }
  grep -q '^This instance is primary' "$RUN/cluster-$label-c.out" || fail "[$label] examples/c output on the cluster"
  ccli GET 'bot:{equity-bot}:state' | grep -q '"strategy":"moving_average"' \
    || fail "[$label] no bot:{equity-bot}:state on the cluster"
  ccli GET 'bot:{equity-bot}:position:AAPL' | grep -q '"quantity":10' \
    || fail "[$label] no bot:{equity-bot}:position:AAPL on the cluster"
  QUANTSHIFT_REDIS_URL="$CLUSTER_URL" "$@" "$dir/bot_example_cpp" >"$RUN/cluster-$label-cpp.out" 2>&1 \
    || { show "$RUN/cluster-$label-cpp.out"; fail "[$label] examples/cpp on the cluster"; }
  grep -q '^This instance is primary' "$RUN/cluster-$label-cpp.out" || fail "[$label] examples/cpp output on the cluster"
  echo "40-c: [$label] the examples ran unchanged on a 3-primary cluster ($CLUSTER_URL)"
}
run_on_cluster asan env ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# The shared-library build at full speed (under valgrind the example's fast-failover lease,
# 300 ms past its last renewal, lapses as in the passes above; ASan checks memory here).
run_on_cluster shared env

echo "40-c: all C / C++ tests passed under ASan+UBSan and valgrind, and on a cluster"
