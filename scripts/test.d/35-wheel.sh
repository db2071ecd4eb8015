#!/usr/bin/env bash
# The portable release wheel as users get it: built by scripts/wheel.sh (abi3, manylinux_2_28
# through zig, checked with auditwheel; the one 30-python.sh built when no source changed
# since), installed with its `redis` extra and pytest from PyPI
# into fresh venvs of the oldest and newest CPython >= 3.9 present (pyenv's, else the system
# python3), where the smoke suite tests/python_smoke runs: import, the seed usage block, a
# failover between two processes, the operator tool. Then the sdist: it carries the licence
# files, and `pip install` of it builds and installs a working package.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
ROOT=$PWD
OUT=target/wheels-portable
fail() { echo "35-wheel: $*" >&2; exit 1; }

# The interpreters: the lowest and the highest 3.x (x >= 9) version under pyenv.
pythons=()
if [ -d "$HOME/.pyenv/versions" ]; then
  mapfile -t versions < <(ls "$HOME/.pyenv/versions" | grep -E '^3\.[0-9]+\.[0-9]+$' \
    | awk -F. '$2 >= 9' | sort -t. -k1,1n -k2,2n -k3,3n)
  if [ ${#versions[@]} -gt 0 ]; then
    pythons+=("$HOME/.pyenv/versions/${versions[0]}/bin/python3")
    [ ${#versions[@]} -gt 1 ] && pythons+=("$HOME/.pyenv/versions/${versions[-1]}/bin/python3")
  fi
fi
[ ${#pythons[@]} -gt 0 ] || pythons=("$(command -v python3)")

bash scripts/wheel.sh --out "$OUT" --reuse
wheel=$(ls "$OUT"/quantshift_core-*.whl)
listing=$(unzip -l "$wheel")
for file in LICENSE-MIT LICENSE-APACHE; do
  echo "$listing" | grep -q "dist-info/licenses/$file" || fail "the wheel lacks $file"
done
echo "$listing" | grep -q 'quantshift_core/_quantshift_core.abi3.so' || fail "no abi3 module in the wheel"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for python in "${pythons[@]}"; do
  version=$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
  venv="$work/venv-$version"
  started=$(date +%s)
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel[redis]" "pytest>=8,<9"
  [ -x "$venv/bin/quantshift-state" ] || fail "CPython $version: no quantshift-state console script"
  (cd tests/python_smoke && "$venv/bin/python" -m pytest -q -p no:cacheprovider) \
    || fail "CPython $version: the smoke suite failed"
  echo "35-wheel: CPython $version: installed and smoke-tested in $(( $(date +%s) - started )) s"
done

# The sdist: licences included, and pip builds it (maturin from PyPI in an isolated build env;
# cargo's registry and the wheel's release build in target/portable make the compilation
# incremental: only what the C compiler and linker change is built again).
sdist_dir="$work/sdist"
.venv/bin/maturin sdist --out "$sdist_dir" >/dev/null
sdist=$(ls "$sdist_dir"/quantshift_core-*.tar.gz)
contents=$(tar -tzf "$sdist")
for file in LICENSE-MIT LICENSE-APACHE; do
  echo "$contents" | grep -q "^quantshift_core-[^/]*/$file\$" || fail "the sdist lacks $file"
done
started=$(date +%s)
newest=${pythons[-1]}
"$newest" -m venv "$work/venv-sdist"
CARGO_TARGET_DIR="$ROOT/target/portable" "$work/venv-sdist/bin/python" -m pip install --quiet \
  --disable-pip-version-check "$sdist"
(cd "$work" && "$work/venv-sdist/bin/quantshift-state" --version) | grep -q '^quantshift-state ' \
  || fail "the package installed from the sdist has no working quantshift-state"
(cd "$work" && "$work/venv-sdist/bin/python" -c 'import quantshift_core; quantshift_core.StateManager') \
  || fail "the package installed from the sdist does not import"
echo "35-wheel: pip install of $(basename "$sdist") works ($(( $(date +%s) - started )) s)"
