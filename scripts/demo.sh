#!/usr/bin/env bash
# Offline demo: starts tg-sim and `teledrop standalone` against it, sends a
# sample file as a simulated user, prints the link the bot answered with and
# downloads it. Everything lives in a temp dir and stops at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p teledrop -p tg-sim
DIR=$(mktemp -d /tmp/teledrop-demo.XXXXXX)
# A made-up token for this run only.
TOKEN="1000:$(python3 -c 'import secrets; print(secrets.token_urlsafe(30))')"
SIM=127.0.0.1:18081; LINKS=127.0.0.1:18080; ADMIN=127.0.0.1:18090
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"' EXIT
TG_SIM_TOKEN=$TOKEN ./target/debug/tg-sim --listen $SIM >"$DIR/sim.log" 2>&1 &
TELEGRAM_BOT_TOKEN=$TOKEN TELEGRAM_API_URL=http://$SIM/ TELEDROP_PUBLIC_URL=http://$LINKS \
  TELEDROP_LISTEN=$LINKS TELEDROP_ADMIN_LISTEN=$ADMIN DATABASE_URL=sqlite://$DIR/teledrop.db TELEDROP_STORAGE_URL=$DIR/objects \
  TELEDROP_LOG_FORMAT=text ./target/debug/teledrop standalone >"$DIR/teledrop.log" 2>&1 &
for _ in $(seq 100); do curl -fs http://$ADMIN/healthz >/dev/null && break; sleep 0.1; done
echo "sending a 3 MiB document as user 1001…"
curl -fs -X POST http://$SIM/_sim/files -H 'content-type: application/json' \
  -d '{"user":1001,"kind":"document","size":3145728,"seed":7,"name":"demo.bin"}'
echo
LOG=$(curl -fs "http://$SIM/_sim/chats/1001?after_version=0&timeout_ms=1")
for _ in $(seq 100); do
  URL=$(printf '%s' "$LOG" | grep -o 'http://[^" \\]*/download/[0-9a-f-]*' | head -n1 || true)
  [ -n "$URL" ] && break
  V=$(printf '%s' "$LOG" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
  LOG=$(curl -fs "http://$SIM/_sim/chats/1001?after_version=$V&timeout_ms=10000")
done
echo "the bot answered: $URL"
curl -fsS -o "$DIR/downloaded" "$URL"
echo "downloaded $(stat -c %s "$DIR/downloaded") bytes, sha256 $(sha256sum "$DIR/downloaded" | cut -c1-64)"
