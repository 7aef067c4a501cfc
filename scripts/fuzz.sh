#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of every parser of
# outside input; the targets are fuzz/fuzz_targets/*.rs. Longer than the
# bounded property tests `cargo test` runs; for example:
#   bash scripts/fuzz.sh              # 60 s per target, every target
#   bash scripts/fuzz.sh 600 range    # 10 minutes of one target
# The stable toolchain of rust-toolchain.toml is used with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz passes nightly-only flags). The corpus
# grows in fuzz/corpus/<target>/ (seeded from fuzz/seeds/<target>/) and is
# kept between runs; an input that crashes a target is kept in
# fuzz/artifacts/<target>/ and the script exits 1 after the other targets
# have run. Reproduce one with
#   RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=target/fuzz cargo fuzz run <target> fuzz/artifacts/<target>/<file>
# (from fuzz/), then turn it into a plain #[test] next to the parser.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
case "$seconds" in
  '' | *[!0-9]*) echo "usage: fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
# Instrumented builds of their own, apart from the workspace's.
export CARGO_TARGET_DIR="$PWD/target/fuzz"
cd fuzz

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  seeds=()
  [ -d "seeds/$t" ] && seeds=("seeds/$t")
  echo "fuzz.sh: $t for ${seconds}s" >&2
  if ! cargo fuzz run "$t" "corpus/$t" "${seeds[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: crashes in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
  ls -l "${failed[@]/#/artifacts/}" >&2 || true
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, no crash" >&2
