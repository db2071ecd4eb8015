#!/usr/bin/env bash
# The Python front end: builds the portable release wheel (scripts/wheel.sh: through
# pyproject.toml, the PEP 517 path of `pip install .`, linked for manylinux_2_28), installs it
# into .venv, then lint, formatting, stubs (mypy stubtest) and the pytest suite, whose tests
# start their own redis-server processes on free loopback ports. 35-wheel.sh tests the same
# wheel on the oldest and newest CPython.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PWD/.venv/bin:$PATH"
export VIRTUAL_ENV="$PWD/.venv"
PY=.venv/bin/python
WHEELS=target/wheels-portable

bash scripts/wheel.sh --out "$WHEELS"
$PY -m pip install --quiet --force-reinstall --no-deps "$WHEELS"/quantshift_core-*.whl
echo "30-python: installed $(basename "$WHEELS"/quantshift_core-*.whl)"

PY_PATHS=(python tests/python tests/python_smoke examples/bot_usage.py examples/failover_demo.py examples/async_bot.py)
[ -f benches/python_bench.py ] && PY_PATHS+=(benches/python_bench.py)
ruff check "${PY_PATHS[@]}"
ruff format --check "${PY_PATHS[@]}"
# Run outside the source tree so the installed package is what gets checked.
export MYPY_CACHE_DIR="$PWD/target/mypy-cache"
(cd tests && "../$PY" -m mypy.stubtest quantshift_core)
mypy examples/bot_usage.py examples/failover_demo.py examples/async_bot.py

status=0
(cd tests/python && "../../$PY" -m pytest -q -rs -p no:cacheprovider) || status=$?
if [ "$status" -eq 5 ]; then
  echo "30-python: pytest collected no tests" >&2
  exit 1
fi
exit "$status"
