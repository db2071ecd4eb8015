#!/usr/bin/env bash
# Installs the C library into a prefix, as a C / C++ user expects to find it:
#   bash scripts/install-c.sh [--prefix DIR] [--static-only] [--no-build]
#   DIR/include/quantshift_core.h, quantshift_core.hpp (the C++ wrapper)
#   DIR/lib/libquantshift_core.so.MAJOR.MINOR.PATCH (SONAME libquantshift_core.so.MAJOR),
#       libquantshift_core.so.MAJOR and libquantshift_core.so (symlinks)
#   DIR/lib/libquantshift_core.a
#   DIR/lib/pkgconfig/quantshift_core.pc (Libs.private: what a static link needs)
#   DIR/lib/cmake/quantshift_core/ (find_package(quantshift_core CONFIG), target
#       quantshift_core::quantshift_core, and quantshift_core::quantshift_core_static)
# --prefix: default /usr/local. --static-only: no shared library (a static link then needs
# no flag to choose the .a). --no-build: install what the last run of this script built.
# A short script rather than cargo-c: see README "Use from C/C++".
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

ARGS=("$@")
PREFIX=/usr/local
SHARED=1
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
    --prefix=*) PREFIX=${1#--prefix=}; shift ;;
    --static-only) SHARED=0; shift ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-c: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$PREFIX"
PREFIX=$(cd "$PREFIX" && pwd)

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
MAJOR=${VERSION%%.*}
BUILT="${CARGO_TARGET_DIR:-$PWD/target}/release"
# What a static link needs besides the .a, as rustc reports it (printed only when the
# crate is compiled, so kept beside the build).
NATIVE_LIBS_FILE="$BUILT/quantshift_core.native-static-libs"

if [ "$BUILD" = 1 ]; then
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  cargo rustc --release --lib --quiet -- --print native-static-libs 2>"$log" \
    || { cat "$log" >&2; exit 1; }
  native=$(sed -n 's/^note: native-static-libs: //p' "$log" | tail -n1)
  [ -n "$native" ] && echo "$native" >"$NATIVE_LIBS_FILE"
fi
[ -s "$NATIVE_LIBS_FILE" ] || { touch src/lib.rs; exec "$0" "${ARGS[@]}"; }
NATIVE_LIBS=$(cat "$NATIVE_LIBS_FILE")

readelf -d "$BUILT/libquantshift_core.so" | grep -q "SONAME.*\[libquantshift_core.so.$MAJOR\]" \
  || { echo "install-c: $BUILT/libquantshift_core.so lacks the SONAME (built with --features python?)" >&2; exit 1; }

install -d "$PREFIX/include" "$PREFIX/lib/pkgconfig" "$PREFIX/lib/cmake/quantshift_core"
install -m 644 include/quantshift_core.h bindings/cpp/quantshift_core.hpp "$PREFIX/include/"
install -m 644 "$BUILT/libquantshift_core.a" "$PREFIX/lib/"
if [ "$SHARED" = 1 ]; then
  install -m 755 "$BUILT/libquantshift_core.so" "$PREFIX/lib/libquantshift_core.so.$VERSION"
  ln -sfn "libquantshift_core.so.$VERSION" "$PREFIX/lib/libquantshift_core.so.$MAJOR"
  ln -sfn "libquantshift_core.so.$MAJOR" "$PREFIX/lib/libquantshift_core.so"
fi

cat >"$PREFIX/lib/pkgconfig/quantshift_core.pc" <<EOF
prefix=$PREFIX
exec_prefix=\${prefix}
libdir=\${exec_prefix}/lib
includedir=\${prefix}/include

Name: quantshift_core
Description: Trading-bot state, positions and a fenced primary/standby lease in Redis
Version: $VERSION
Libs: -L\${libdir} -lquantshift_core
Libs.private: $NATIVE_LIBS
Cflags: -I\${includedir}
EOF

# The CMake package finds its files relative to itself, so the prefix can be moved.
# Both tokens are written unexpanded: only the version and the native libraries are baked in.
cat >"$PREFIX/lib/cmake/quantshift_core/quantshift_coreConfig.cmake" <<EOF
# quantshift_core $VERSION: find_package(quantshift_core CONFIG REQUIRED), then link
# quantshift_core::quantshift_core (shared when installed, else static) or
# quantshift_core::quantshift_core_static.
get_filename_component(_quantshift_prefix "\${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET quantshift_core::quantshift_core_static)
  add_library(quantshift_core::quantshift_core_static STATIC IMPORTED)
  set_target_properties(quantshift_core::quantshift_core_static PROPERTIES
    IMPORTED_LOCATION "\${_quantshift_prefix}/lib/libquantshift_core.a"
    INTERFACE_INCLUDE_DIRECTORIES "\${_quantshift_prefix}/include")
  set(_quantshift_native_libs $NATIVE_LIBS)
  list(TRANSFORM _quantshift_native_libs REPLACE "^-l" "")
  set_property(TARGET quantshift_core::quantshift_core_static PROPERTY
    INTERFACE_LINK_LIBRARIES \${_quantshift_native_libs})
  if(EXISTS "\${_quantshift_prefix}/lib/libquantshift_core.so.$VERSION")
    add_library(quantshift_core::quantshift_core SHARED IMPORTED)
    set_target_properties(quantshift_core::quantshift_core PROPERTIES
      IMPORTED_LOCATION "\${_quantshift_prefix}/lib/libquantshift_core.so.$VERSION"
      IMPORTED_SONAME "libquantshift_core.so.$MAJOR"
      INTERFACE_INCLUDE_DIRECTORIES "\${_quantshift_prefix}/include")
  else()
    add_library(quantshift_core::quantshift_core INTERFACE IMPORTED)
    set_property(TARGET quantshift_core::quantshift_core PROPERTY
      INTERFACE_LINK_LIBRARIES quantshift_core::quantshift_core_static)
  endif()
endif()
unset(_quantshift_prefix)
unset(_quantshift_native_libs)
EOF

# Same major version: compatible (the ABI only grows within a major version).
cat >"$PREFIX/lib/cmake/quantshift_core/quantshift_coreConfigVersion.cmake" <<EOF
set(PACKAGE_VERSION "$VERSION")
if(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION
   OR NOT PACKAGE_FIND_VERSION_MAJOR STREQUAL "$MAJOR")
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
EOF
echo "install-c: quantshift_core $VERSION installed into $PREFIX"
