#!/usr/bin/env bash
# Smoke run of the load tool so it cannot rot: a few seconds of each mode against a tzkms it starts itself
# (file keys; watermark on and off; Azure through the Key Vault emulator) and once against the release
# tzkms binary as a separate process. No thresholds: it fails only if a request fails or a signature does
# not verify. Called by .ci/run after the release build.
#
#   TZKMS_LOAD_BIN  load tool binary (default: $CARGO_TARGET_DIR/release/tzkms-load, else target/release)
#   TZKMS_BIN       tzkms binary for the separate-process run (default: beside the load tool)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RELEASE_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release"
LOAD="${TZKMS_LOAD_BIN:-$RELEASE_DIR/tzkms-load}"
TZKMS="${TZKMS_BIN:-$(dirname "$LOAD")/tzkms}"
[ -x "$LOAD" ] || { echo "no load tool at $LOAD (cargo build --release -p tzkms-load)" >&2; exit 1; }
[ -x "$TZKMS" ] || { echo "no tzkms at $TZKMS (cargo build --release -p tzkms)" >&2; exit 1; }

TMP="$(mktemp -d -t tzkms-load-smoke.XXXXXX)"
SERVER_PID=""
cleanup() {
  [ -z "$SERVER_PID" ] || kill -TERM "$SERVER_PID" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

step() { printf '\n--- load smoke: %s\n' "$*"; }
start=$SECONDS

step "baker mode, 20 delegates, blocks, a second round every 2 levels, watermark on"
"$LOAD" --mode baker --delegates 5,20 --levels 3 --blocks --extra-round-every 2 --limit-seconds 0.2 \
  --data-dir "$TMP"

step "baker mode, connection reuse, no GET /authorized_keys, watermark off, tz4"
"$LOAD" --mode baker --delegates 10 --levels 2 --connections reuse --no-authorized-keys --watermark off \
  --curve bls --no-limits

step "closed loop, attestations through the watermark"
"$LOAD" --mode max --payload attestation --concurrency 8 --duration 1 --limit-seconds 0.2 --data-dir "$TMP"

step "open loop, 300 requests/s for 1 s, new connection per request"
"$LOAD" --mode rate --rate 300 --duration 1 --connections per-request --no-limits

step "Azure path: Key Vault emulator with 5 ms sign latency, 20 concurrent"
"$LOAD" --mode max --backend azure --azure-latency-ms 5 --concurrency 20 --requests 200 --no-limits

step "against the tzkms binary as a separate process"
DATA="$TMP/data"
mkdir -m 700 "$DATA"
cat > "$TMP/tzkms.toml" <<TOML
data_dir = "$DATA"
[server]
listen = ["127.0.0.1:0"]
TOML
"$TZKMS" --config "$TMP/tzkms.toml" serve > "$TMP/serve.log" 2>&1 &
SERVER_PID=$!
url=""
for _ in $(seq 1 100); do
  url="$(grep -o 'listening on http://[0-9.:]*' "$TMP/serve.log" | head -1 | sed 's/listening on //')" || true
  [ -n "$url" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$TMP/serve.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "tzkms did not announce its address" >&2; cat "$TMP/serve.log" >&2; exit 1; }
pkh="$(ls "$DATA/keys" | head -1 | sed 's/\.key$//')"
"$LOAD" --target "$url" --key "$pkh" --mode baker --delegates 1 --levels 5 --blocks --data-dir "$DATA" \
  --limit-seconds 0.2

echo
echo "load smoke: passed in $((SECONDS - start))s"
