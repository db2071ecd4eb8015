#!/usr/bin/env bash
# The Rust unit and behaviour tests (real redis-server processes, started by the tests).
set -euo pipefail
cargo test --workspace --all-targets --no-fail-fast
cargo test --doc
