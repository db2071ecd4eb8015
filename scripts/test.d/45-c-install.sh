#!/usr/bin/env bash
# The installed C library (scripts/install-c.sh into temporary prefixes), used the ways a
# C / C++ project would, each run against a real redis-server on a free loopback port:
#   - the SONAME, the symlinks, and a dynamic symbol table holding only quantshift_*;
#   - examples/c built with `pkg-config --cflags --libs` (shared) and `pkg-config --static`
#     (a --static-only prefix: nothing of the library needed at run time);
#   - a CMake project with find_package(quantshift_core CONFIG REQUIRED) (C and C++);
#   - a program compiled against the previous header (frozen v1 options struct), under
#     valgrind, and the growable options builder test under ASan + UBSan.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"

OUT="$PWD/target/c-install"
PREFIX="$OUT/prefix"
STATIC_PREFIX="$OUT/prefix-static"
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
MAJOR=${VERSION%%.*}
CFLAGS=(-std=c11 -Wall -Wextra -Werror -pedantic -g)
SANITIZE=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
VALGRIND=(valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect --num-callers=40
  --error-exitcode=97 --suppressions=tests/c/valgrind.supp)
fail() { echo "45-c-install: FAILED: $*" >&2; exit 1; }
for tool in pkg-config cmake readelf nm; do
  command -v "$tool" >/dev/null || fail "$tool is missing (bash scripts/setup.sh installs it)"
done

# ---- install ----------------------------------------------------------------------------
rm -rf "$OUT"
mkdir -p "$OUT/bin"
started=$(date +%s)
bash scripts/install-c.sh --prefix "$PREFIX"
bash scripts/install-c.sh --prefix "$STATIC_PREFIX" --static-only --no-build
echo "45-c-install: release build and install in $(( $(date +%s) - started )) s"

lib="$PREFIX/lib"
for f in include/quantshift_core.h include/quantshift_core.hpp lib/libquantshift_core.a \
  "lib/libquantshift_core.so.$VERSION" lib/pkgconfig/quantshift_core.pc \
  lib/cmake/quantshift_core/quantshift_coreConfig.cmake \
  lib/cmake/quantshift_core/quantshift_coreConfigVersion.cmake; do
  [ -f "$PREFIX/$f" ] || fail "$f not installed"
done
[ "$(readlink "$lib/libquantshift_core.so.$MAJOR")" = "libquantshift_core.so.$VERSION" ] || fail "libquantshift_core.so.$MAJOR symlink"
[ "$(readlink "$lib/libquantshift_core.so")" = "libquantshift_core.so.$MAJOR" ] || fail "libquantshift_core.so symlink"
! ls "$STATIC_PREFIX"/lib/libquantshift_core.so* >/dev/null 2>&1 || fail "--static-only installed a shared library"
soname=$(readelf -d "$lib/libquantshift_core.so.$VERSION" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libquantshift_core.so.$MAJOR" ] || fail "SONAME is '$soname', expected libquantshift_core.so.$MAJOR"
exported=$(nm -D --defined-only "$lib/libquantshift_core.so.$VERSION" | awk '{print $3}')
foreign=$(grep -v '^quantshift_' <<<"$exported" || true)
[ -z "$foreign" ] || fail "the shared library exports symbols other than quantshift_*: $(head -5 <<<"$foreign")"
grep -qx quantshift_manager_new_with_builder <<<"$exported" || fail "quantshift_manager_new_with_builder is not exported"
echo "45-c-install: SONAME $soname; $(wc -l <<<"$exported") exported symbols, all quantshift_*"

# ---- build the consumers ----------------------------------------------------------------
# Shared, found by pkg-config (the rpath stands in for ldconfig in a system prefix).
PKG_CONFIG_PATH="$lib/pkgconfig" pkg-config --exists "quantshift_core = $VERSION" || fail "pkg-config does not find quantshift_core $VERSION"
read -ra shared_flags <<<"$(PKG_CONFIG_PATH="$lib/pkgconfig" pkg-config --cflags --libs quantshift_core)"
cc "${CFLAGS[@]}" examples/c/bot_example.c -o "$OUT/bin/example_shared" "${shared_flags[@]}" -Wl,-rpath,"$lib"
cc "${CFLAGS[@]}" tests/c/previous_abi.c -o "$OUT/bin/previous_abi" "${shared_flags[@]}" -Wl,-rpath,"$lib"
ldd "$OUT/bin/example_shared" | grep -q "libquantshift_core.so.$MAJOR => $lib/" || fail "example_shared does not load $lib/libquantshift_core.so.$MAJOR"
# Static, from the --static-only prefix: Libs.private completes the link.
read -ra static_flags <<<"$(PKG_CONFIG_PATH="$STATIC_PREFIX/lib/pkgconfig" pkg-config --static --cflags --libs quantshift_core)"
cc "${CFLAGS[@]}" examples/c/bot_example.c -o "$OUT/bin/example_static" "${static_flags[@]}"
cc "${CFLAGS[@]}" "${SANITIZE[@]}" tests/c/test_options_builder.c -o "$OUT/bin/test_options_builder" "${static_flags[@]}"
for bin in example_static test_options_builder; do
  ! readelf -d "$OUT/bin/$bin" | grep -q 'NEEDED.*quantshift' || fail "$bin needs the shared library"
done
# CMake: a C and a C++ program in a project of their own.
mkdir -p "$OUT/cmake-src"
cat >"$OUT/cmake-src/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.16)
project(quantshift_consumer C CXX)
find_package(quantshift_core $VERSION CONFIG REQUIRED)
add_executable(example_cmake_c "$PWD/examples/c/bot_example.c")
target_link_libraries(example_cmake_c PRIVATE quantshift_core::quantshift_core)
add_executable(example_cmake_cpp "$PWD/examples/cpp/bot_example.cpp")
set_property(TARGET example_cmake_cpp PROPERTY CXX_STANDARD 17)
target_link_libraries(example_cmake_cpp PRIVATE quantshift_core::quantshift_core)
add_executable(example_cmake_static "$PWD/examples/c/bot_example.c")
target_link_libraries(example_cmake_static PRIVATE quantshift_core::quantshift_core_static)
EOF
cmake -S "$OUT/cmake-src" -B "$OUT/cmake-build" -DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_BUILD_TYPE=Debug >"$OUT/cmake.log" 2>&1 \
  || { cat "$OUT/cmake.log" >&2; fail "cmake configure"; }
cmake --build "$OUT/cmake-build" -j 2 >>"$OUT/cmake.log" 2>&1 || { cat "$OUT/cmake.log" >&2; fail "cmake build"; }
! readelf -d "$OUT/cmake-build/example_cmake_static" | grep -q 'NEEDED.*quantshift' || fail "example_cmake_static needs the shared library"
echo "45-c-install: built with pkg-config (shared, static) and CMake (C, C++, static)"

# ---- run against a real Redis -----------------------------------------------------------
REDIS_PID=
cleanup() { [ -z "$REDIS_PID" ] || { kill -9 "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; }; }
trap cleanup EXIT
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for _ in 1 2 3 4 5; do
  port=$((20000 + RANDOM % 40000))
  { [ "$port" -eq 6379 ] || port_in_use "$port"; } && continue
  mkdir -p "$OUT/redis"
  redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes --save '' --appendonly no \
    --maxmemory-policy noeviction --dir "$OUT/redis" >"$OUT/redis/log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 100); do
    redis-cli -h 127.0.0.1 -p "$port" PING 2>/dev/null | grep -q PONG && break 2
    sleep 0.05
  done
  kill -9 "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; REDIS_PID=
done
[ -n "$REDIS_PID" ] || fail "could not start redis-server on a free loopback port"
export QUANTSHIFT_REDIS_URL="redis://127.0.0.1:$port/0"

run_example() {  # <label> <binary>: the seed usage, twice (the second run recovers the state)
  "$2" >"$OUT/$1.out" 2>&1 && "$2" >>"$OUT/$1.out" 2>&1 || { cat "$OUT/$1.out" >&2; fail "$1"; }
  grep -q '^Recovered state: .*"strategy"' "$OUT/$1.out" || { cat "$OUT/$1.out" >&2; fail "$1 did not recover its state"; }
  grep -q '^This instance is primary' "$OUT/$1.out" || fail "$1 output"
  echo "45-c-install: $1 passed"
}
run_example example_shared "$OUT/bin/example_shared"
# The static programs run with no library directory at all.
mv "$lib" "$lib.hidden"
run_example example_static "$OUT/bin/example_static"
mv "$lib.hidden" "$lib"
run_example example_cmake_c "$OUT/cmake-build/example_cmake_c"
run_example example_cmake_static "$OUT/cmake-build/example_cmake_static"
"$OUT/cmake-build/example_cmake_cpp" >"$OUT/example_cmake_cpp.out" 2>&1 || { cat "$OUT/example_cmake_cpp.out" >&2; fail "example_cmake_cpp"; }
grep -q '^This instance is primary' "$OUT/example_cmake_cpp.out" || fail "example_cmake_cpp output"
echo "45-c-install: example_cmake_cpp passed"

"${VALGRIND[@]}" "$OUT/bin/previous_abi" "previous-abi-$$" || fail "the program built against the previous header"
ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  "$OUT/bin/test_options_builder" "builder-$$" || fail "test_options_builder"
echo "45-c-install: all passed"
