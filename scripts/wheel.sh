#!/usr/bin/env bash
# Builds the portable release wheel: abi3 (one wheel for CPython >= 3.9), linked against
# glibc 2.28 through zig (the `ziglang` package of .venv, no container needed), so it is
# tagged manylinux_2_28 and installs on RHEL 8+, Debian 10+, Ubuntu 18.10+. Built through
# pyproject.toml, the PEP 517 path of `pip install .` (maturin's backend, given --zig and
# the compatibility through MATURIN_PEP517_ARGS; no build isolation, so nothing is
# downloaded). Checked with `auditwheel show` (the tag it reports must be manylinux_2_28 or
# older).
#
#   bash scripts/wheel.sh [--out DIR] [--reuse]   (default DIR: target/wheels-portable)
#
# --reuse keeps the wheel already in DIR when no source file changed since it was built
# (the test command builds it once in 30-python.sh and tests it again in 35-wheel.sh).
# The build has its own target directory (target/portable), so it does not invalidate the
# dev builds (a different C compiler and linker for ring and the extension module).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/wheels-portable
reuse=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="${2:?--out needs a directory}"; shift 2 ;;
    --out=*) OUT="${1#--out=}"; shift ;;
    --reuse) reuse=1; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "wheel.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
  esac
done
export PATH="$HOME/.cargo/bin:$PWD/.venv/bin:$PATH"
export VIRTUAL_ENV="$PWD/.venv"
PY=.venv/bin/python
# The newest glibc symbol version a manylinux_2_28 wheel may need.
COMPATIBILITY=manylinux_2_28

if ! "$PY" -c 'import ziglang' 2>/dev/null || ! "$PY" -c 'import auditwheel' 2>/dev/null; then
  echo "wheel.sh: ziglang or auditwheel missing from .venv; run bash scripts/setup.sh" >&2
  exit 1
fi
mkdir -p "$OUT"
# What the wheel is built from; a wheel older than none of it is current.
SOURCES=(src crates python build.rs Cargo.toml Cargo.lock pyproject.toml README.md LICENSE-MIT LICENSE-APACHE)
stamp="$OUT/.built-from-sources"
if [ "$reuse" = 1 ] && [ -f "$stamp" ] && ls "$OUT"/quantshift_core-*.whl >/dev/null 2>&1 \
    && [ -z "$(find "${SOURCES[@]}" -newer "$stamp" -print -quit 2>/dev/null)" ]; then
  echo "wheel.sh: reusing $OUT/$(basename "$(ls "$OUT"/quantshift_core-*.whl)") (no source changed since it was built)"
  exit 0
fi
rm -f "$stamp" "$OUT"/quantshift_core-*.whl
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
# Touched before the build starts: a source edited during the build makes the wheel stale.
touch "$build/started"
started=$(date +%s)
CARGO_TARGET_DIR="$PWD/target/portable" MATURIN_PEP517_ARGS="--zig --compatibility $COMPATIBILITY" \
  "$PY" -m pip wheel --quiet --no-build-isolation --no-deps --wheel-dir "$build" .
wheel=$(ls "$build"/quantshift_core-*.whl)
echo "wheel.sh: built $(basename "$wheel") in $(( $(date +%s) - started )) s"

case "$(basename "$wheel")" in
  *-cp39-abi3-*manylinux_2_28_*.whl) ;;
  *) echo "wheel.sh: expected an abi3 (cp39) manylinux_2_28 wheel, got $(basename "$wheel")" >&2; exit 1 ;;
esac
report=$("$PY" -m auditwheel show "$wheel")
echo "$report" | sed 's/^/wheel.sh: auditwheel: /' | head -n 4
# auditwheel names the most compatible tag the wheel's symbols allow: it must be 2_28 or older.
tag=$(echo "$report" | grep -o 'manylinux_2_[0-9]*_x86_64' | head -n 1)
minor=${tag#manylinux_2_}; minor=${minor%%_*}
if [ -z "$tag" ] || [ "$minor" -gt 28 ]; then
  echo "wheel.sh: auditwheel does not accept the wheel as manylinux_2_28 or older" >&2
  exit 1
fi
mv -f "$wheel" "$OUT/"
mv "$build/started" "$stamp"
echo "wheel.sh: $OUT/$(basename "$wheel")"
