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

# download_rate compares the link server with nginx under wrk.
command -v wrk >/dev/null || { log "installing wrk"; apt_install wrk; }
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { log "installing nginx"; apt_install nginx-light || apt_install nginx; }
export PATH="$PATH:/usr/sbin"

cargo bench -p teledrop "$@"
