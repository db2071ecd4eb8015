#!/usr/bin/env bash
# Formatting and lints of the Rust code, with and without the optional front ends.
set -euo pipefail
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets --features python -- -D warnings
