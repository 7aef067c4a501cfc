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
# download_rate's second reference: FastAPI's FileResponse under uvicorn,
# in a virtualenv of its own.
BENCH_VENV=${XDG_CACHE_HOME:-$HOME/.cache}/teledrop/bench-venv
if [ ! -x "$BENCH_VENV/bin/uvicorn" ]; then
  python3 -c 'import venv, ensurepip' 2>/dev/null || { log "installing python3-venv"; apt_install python3-venv python3-pip; }
  log "installing fastapi and uvicorn into $BENCH_VENV"
  python3 -m venv "$BENCH_VENV"
  "$BENCH_VENV/bin/pip" install -q fastapi 'uvicorn[standard]'
fi
export BENCH_PYTHON=$BENCH_VENV/bin/python

# slow_downloads holds a thousand connections open at once.
ulimit -n 65536 2>/dev/null || true

cargo bench -p teledrop "$@"
