#!/usr/bin/env bash
# The one test command (README "Test"): installs what is missing, starts
# throwaway Postgres, NATS JetStream and S3-compatible (moto) servers on free
# loopback ports, runs fmt, clippy and every test, then the chart, manifest
# and Dockerfile checks (charts/tests), and stops the servers.
#
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -p tg-sim  # arguments replace --workspace in `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# shellcheck source=scripts/servers.sh
source scripts/servers.sh

# ---------------------------------------------------------------- checks
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
log "cargo test"
if [ $# -gt 0 ]; then
  cargo test "$@"
else
  cargo test --workspace
fi

# ---------------------------------------------------------------- Kubernetes
# The chart, the k8s/ manifests and the Dockerfile (charts/tests): Helm's own
# Go library (helm-python-sdk) renders and lints the chart; kubernetes-validate,
# checkov and hadolint check what we ship; `kubectl kustomize` builds k8s/.
# The tools live in a virtualenv of their own, rebuilt when their pins change.
K8S_VENV=${XDG_CACHE_HOME:-$HOME/.cache}/teledrop/k8s-venv
K8S_REQ=charts/tests/requirements.txt
if ! cmp -s "$K8S_REQ" "$K8S_VENV/requirements.txt"; then
  python3 -c 'import venv, ensurepip' 2>/dev/null || { log "installing python3-venv"; apt_install python3-venv python3-pip; }
  log "installing the chart-check tools into $K8S_VENV"
  rm -rf "$K8S_VENV"
  python3 -m venv "$K8S_VENV"
  "$K8S_VENV/bin/pip" install -q -r "$K8S_REQ"
  cp "$K8S_REQ" "$K8S_VENV/requirements.txt"
fi
command -v kubectl >/dev/null || { log "installing kubernetes-client (kubectl, for kubectl kustomize)"; apt_install kubernetes-client; }
log "chart, manifests and Dockerfile (charts/tests)"
"$K8S_VENV/bin/python" -m pytest -q -p no:cacheprovider charts/tests
