#!/usr/bin/env bash
# The server matrix: the paths where servers differ, run again on Valkey 9.1 and Redis 6.2
# (pinned, hash-checked binaries fetched by scripts/servers.sh into .cache/servers/; every
# other part runs on Debian's Redis 7). Uses the test binaries 20-rust.sh built and the
# package 30-python.sh installed. Each line of output names the server it ran on.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec bash scripts/server_matrix.sh
