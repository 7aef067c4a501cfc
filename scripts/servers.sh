# Sourced by scripts/test.sh and scripts/bench.sh: installs what is missing
# (Postgres, nats-server, python3, moto) and starts throwaway Postgres, NATS
# JetStream and moto (S3) servers on free loopback ports, exporting
# TEST_DATABASE_URL, TEST_NATS_URL and TEST_S3_ENDPOINT. An EXIT trap stops
# them and removes their data. Expects to run from the repository root.
log() { printf '\033[1m[teledrop]\033[0m %s\n' "$*" >&2; }
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else log "need root to run: $*  (install these packages, or run as root)"; exit 1
  fi
}

# ---------------------------------------------------------------- installs
pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return; }; done
  command -v initdb >/dev/null 2>&1 && dirname "$(command -v initdb)"
}
apt_updated=0
apt_install() {
  if [ $apt_updated = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}
command -v cargo >/dev/null || { log "cargo not found: install the Rust toolchain named in rust-toolchain.toml"; exit 1; }
command -v cc >/dev/null || { log "installing a C toolchain"; apt_install build-essential pkg-config; }
[ -n "$(pg_bin)" ] || { log "installing postgresql"; apt_install postgresql; }
command -v nats-server >/dev/null || { log "installing nats-server"; apt_install nats-server; }
command -v python3 >/dev/null || { log "installing python3"; apt_install python3; }
# moto (the S3-compatible test server): use one on PATH, else keep our own
# virtualenv so nothing is installed into the system's Python.
MOTO=$(command -v moto_server || true)
if [ -z "$MOTO" ]; then
  VENV=${XDG_CACHE_HOME:-$HOME/.cache}/teledrop/venv
  if [ ! -x "$VENV/bin/moto_server" ]; then
    python3 -c 'import venv, ensurepip' 2>/dev/null || { log "installing python3-venv"; apt_install python3-venv python3-pip; }
    log "installing moto[server] into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q 'moto[server]'
  fi
  MOTO=$VENV/bin/moto_server
fi
PG_BIN=$(pg_bin)

# ---------------------------------------------------------------- servers
WORK=$(mktemp -d /tmp/teledrop-test.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  set +e
  [ -n "${PG_DATA:-}" ] && [ -f "$PG_DATA/postmaster.pid" ] && pg_as "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_for() { # name, pid, command...
  local name=$1 pid=$2; shift 2
  for _ in $(seq 1 300); do
    "$@" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { log "$name exited:"; cat "$WORK/$name.log" >&2; return 1; }
    sleep 0.1
  done
  log "$name did not start"; cat "$WORK/$name.log" >&2; return 1
}

# Postgres refuses to run as root: run it as the postgres user.
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || as_root useradd --system --no-create-home postgres
  pg_as() { runuser -u postgres -- "$@"; }
else
  pg_as() { "$@"; }
fi
PG_DATA=$WORK/pg
PG_PORT=$(free_port)
mkdir -p "$PG_DATA"; [ "$(id -u)" = 0 ] && chown postgres "$PG_DATA"
pg_as "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U postgres --no-sync >/dev/null
pg_as "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/log" -w \
  -o "-p $PG_PORT -k $PG_DATA -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null
export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
log "postgres on 127.0.0.1:$PG_PORT"

NATS_PORT=$(free_port)
nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$WORK/nats" >"$WORK/nats.log" 2>&1 &
PIDS+=($!)
export TEST_NATS_URL="nats://127.0.0.1:$NATS_PORT"
wait_for nats "$!" bash -c "exec 3<>/dev/tcp/127.0.0.1/$NATS_PORT"
log "nats on $TEST_NATS_URL"

S3_PORT=$(free_port)
"$MOTO" -H 127.0.0.1 -p "$S3_PORT" >"$WORK/moto.log" 2>&1 &
PIDS+=($!)
export TEST_S3_ENDPOINT="http://127.0.0.1:$S3_PORT"
wait_for moto "$!" python3 -c "import urllib.request; urllib.request.urlopen('$TEST_S3_ENDPOINT/')"
log "moto (S3) on $TEST_S3_ENDPOINT"


# ------------------------------------------ object storage beyond S3 (storage)
# Owned by crates/storage's tests. Azurite (Azure Blob) from npm, kept in our
# cache like moto's virtualenv; exported as TEST_AZURE_ENDPOINT.
AZURITE_VERSION=3.35.0
AZURITE_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/teledrop/azurite-$AZURITE_VERSION
if [ ! -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ]; then
  command -v npm >/dev/null || { log "installing nodejs and npm"; apt_install nodejs npm; }
  log "installing azurite $AZURITE_VERSION into $AZURITE_DIR"
  mkdir -p "$AZURITE_DIR"
  npm install --prefix "$AZURITE_DIR" --no-audit --no-fund --silent "azurite@$AZURITE_VERSION" >&2
fi
AZURE_PORT=$(free_port)
"$AZURITE_DIR/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$AZURE_PORT" \
  --inMemoryPersistence --disableTelemetry --skipApiVersionCheck >"$WORK/azurite.log" 2>&1 &
PIDS+=($!)
export TEST_AZURE_ENDPOINT="http://127.0.0.1:$AZURE_PORT"
wait_for azurite "$!" bash -c "exec 3<>/dev/tcp/127.0.0.1/$AZURE_PORT"
log "azurite (Azure Blob) on $TEST_AZURE_ENDPOINT"
# GCS: object_store's GCS client speaks only GCS's XML API (the S3-style
# protocol: path-style objects, list-type=2, ?uploads multipart), and no
# GCS emulator installable from PyPI or npm implements it (gcp-storage-
# emulator: XML GET/PUT only; fake-gcs-server 1.54, the build the PyPI
# wrapper ships: no XML DELETE, its path-style PUT refuses object_store's
# request). moto serves that same XML protocol, so the GCS suite runs
# object_store's GCS client against it (its static OAuth token shaped so
# that moto routes the requests to its S3; see crates/storage/tests).
export TEST_GCS_ENDPOINT="$TEST_S3_ENDPOINT"
# The storage TLS test starts its own moto over HTTPS with a throwaway CA.
export TEST_MOTO_BIN="$MOTO"
