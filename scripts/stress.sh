#!/usr/bin/env bash
# Runs already-built test binaries over and over, to flush out tests that
# pass or fail depending on scheduling. Build first (`cargo test --no-run`),
# then for example:
#   bash scripts/stress.sh 8 pipeline trace conformance lease
#   bash scripts/stress.sh 3 standalone retention
# The names are test targets (the file names under crates/*/tests); every
# binary of that name is run, against the same throwaway servers as
# scripts/test.sh. A failing run's output is kept under target/stress/.
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:?usage: stress.sh RUNS TARGET...}"
shift
[ $# -gt 0 ] || { echo "usage: stress.sh RUNS TARGET..." >&2; exit 2; }

# shellcheck source=scripts/servers.sh
source scripts/servers.sh

mkdir -p target/stress
failed=0
for i in $(seq "$runs"); do
  for name in "$@"; do
    found=0
    for bin in target/debug/deps/"$name"-*; do
      case "$bin" in *.d | *.rlib | *.rmeta) continue ;; esac
      [ -x "$bin" ] || continue
      found=1
      out="target/stress/$(basename "$bin").run$i.log"
      if "$bin" >"$out" 2>&1; then
        rm -f "$out"
      else
        failed=$((failed + 1))
        log "FAILED: $bin (run $i), output in $out"
      fi
    done
    [ "$found" = 1 ] || { log "no built test binary named $name"; exit 2; }
  done
done
log "$runs runs of $*: $failed failed"
[ "$failed" = 0 ]
