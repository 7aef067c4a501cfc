#!/usr/bin/env bash
# The benchmarks (BENCHMARKS.md), with the same throwaway Postgres, NATS and
# S3-compatible servers the tests use. Measurements, not assertions.
#
#   bash scripts/bench.sh                         # every benchmark
#   bash scripts/bench.sh --bench ingress_rate    # one (extra arguments go to `cargo bench -p teledrop`)
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/servers.sh
source scripts/servers.sh

cargo bench -p teledrop "$@"
