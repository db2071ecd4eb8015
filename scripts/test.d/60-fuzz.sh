#!/usr/bin/env bash
# Fuzzing smoke run: the cargo-fuzz targets in fuzz/ (name/symbol validation and glob
# escaping, stored-value decoding, fill arithmetic), coverage-guided by libFuzzer, a bounded
# time each. Runs on the stable toolchain: `--sanitizer none` needs no -Z flag (the targets
# are safe Rust; for AddressSanitizer set QS_FUZZ_ASAN=1, which uses RUSTC_BOOTSTRAP=1).
# Longer: QS_FUZZ_SECONDS=600 bash scripts/test.d/60-fuzz.sh (seconds per target).
# Without cargo-fuzz (and no way to install it) the same properties run under the stable
# random/mutation runner fuzz/src/bin/smoke.rs instead, except under the test command
# (QS_REQUIRE_ALL=1), where that fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${QS_FUZZ_SECONDS:-10}"
targets=(names decode fills)
cd fuzz
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "60-fuzz: installing cargo-fuzz"
  cargo install --quiet --locked cargo-fuzz || true
fi
if cargo fuzz --version >/dev/null 2>&1; then
  if [ "${QS_FUZZ_ASAN:-0}" = 1 ]; then
    export RUSTC_BOOTSTRAP=1
    sanitizer=address
  else
    sanitizer=none
  fi
  log="$(mktemp)"
  trap 'rm -f "$log"' EXIT
  for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    echo "60-fuzz: $target for ${seconds} s (libFuzzer, sanitizer $sanitizer)"
    # -timeout: an input taking over 10 s is a hang. A failing input lands in fuzz/artifacts/.
    if ! cargo fuzz run --sanitizer "$sanitizer" "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 >"$log" 2>&1; then
      grep -v '^\s*[0-9]*: \|^\s*at ' "$log" | tail -n 30
      echo "60-fuzz: $target FAILED; reproduce with: cd fuzz && cargo fuzz run --sanitizer none $target fuzz/artifacts/$target/<file>"
      exit 1
    fi
    grep -E '^Done|DONE' "$log" | tail -n 2
  done
elif [ "${QS_REQUIRE_ALL:-0}" = 1 ]; then
  # Under the test command a missing fuzzer is a failure, not a quieter substitute.
  echo "60-fuzz: FAILED: cargo-fuzz could not be installed (cargo install cargo-fuzz)" >&2
  exit 1
else
  echo "60-fuzz: cargo-fuzz unavailable; running the stable mutation runner"
  cargo run --quiet --release --bin smoke -- "$seconds"
fi
echo "60-fuzz: ${#targets[@]} targets passed"
