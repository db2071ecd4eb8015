#!/usr/bin/env bash
# Formatting, lints and API docs of the Rust code, with and without the optional front ends, and the
# guard on the lease's purity: crates/lease (the machine and the lease thread's rules, run
# by the lease thread and by the simulator alike) depends on nothing, so it cannot do IO,
# read a clock, take a lock or log.
set -euo pipefail
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --all-targets --features python -- -D warnings
# The core alone (no C ABI, no operator tool), and the API docs with every warning an error
# (a broken intra-doc link is a reader's dead end). The declared MSRV (rust-version) is held
# by clippy's incompatible_msrv lint above: the machine has one toolchain.
cargo clippy --lib --no-default-features -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
deps=$(cargo tree --quiet --package quantshift-lease --edges normal,build --prefix none | sort -u)
if [ "$deps" != "$(cargo tree --quiet --package quantshift-lease --depth 0 --prefix none)" ]; then
  echo "10-lint: crates/lease must have no dependencies; it has:" >&2
  echo "$deps" >&2
  exit 1
fi
if grep -rnE '\bunsafe\b|std::(time::(Instant|SystemTime)|thread|sync::(Mutex|RwLock|Condvar|mpsc)|net|fs|io)\b' crates/lease/src; then
  echo "10-lint: crates/lease must not read a clock, sleep, lock, do IO or use unsafe code" >&2
  exit 1
fi
echo "10-lint: crates/lease depends on nothing and does no IO"
