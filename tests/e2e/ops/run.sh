#!/usr/bin/env bash
# Operations end to end, with Prometheus's own tool: the release binary serves real traffic, then
#   - `promtool check metrics` lints its /metrics exposition (names, types, HELP, conventions);
#   - /healthz and /readyz answer as documented;
#   - `promtool check rules` and `promtool test rules` run deploy/prometheus/tzkms-alerts.yml against its
#     unit tests (each alert fires on the series that should fire it, not on healthy ones);
#   - SIGTERM ends the server with exit 0 and a "stopped" line.
# Installs Debian's prometheus package (for promtool) when promtool is missing.
#
#   TZKMS_BIN   tzkms binary (default: target/release/tzkms)
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$REPO_ROOT"
TZKMS_BIN="${TZKMS_BIN:-target/release/tzkms}"
case "$TZKMS_BIN" in /*) ;; *) TZKMS_BIN="$REPO_ROOT/$TZKMS_BIN" ;; esac
[ -x "$TZKMS_BIN" ] || { echo "no tzkms binary at $TZKMS_BIN" >&2; exit 1; }

if ! command -v promtool >/dev/null; then
  echo "==> apt-get install prometheus (for promtool)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
promtool --version 2>&1 | head -1

passed=0; failed=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $1"; [ -z "${2:-}" ] || printf '%s\n' "$2" | sed 's/^/    /'; }

TMP="$(mktemp -d -t tzkms-ops.XXXXXX)"
PID=""
cleanup() { [ -z "$PID" ] || kill -KILL "$PID" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

install -d -m 700 "$TMP/data"
"$TZKMS_BIN" serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --data-dir "$TMP/data" \
  > "$TMP/stdout" 2> "$TMP/stderr" &
PID=$!
for _ in $(seq 1 300); do
  grep -q '^listening on http://' "$TMP/stdout" 2>/dev/null && break
  kill -0 "$PID" 2>/dev/null || { cat "$TMP/stderr" >&2; exit 1; }
  sleep 0.1
done
SIGNER="$(sed -n 's|^listening on http://||p' "$TMP/stdout" | head -1)"
OPS="$(sed -n 's|^metrics on http://\(.*\)/metrics$|\1|p' "$TMP/stdout" | head -1)"
PKH="$(sed -n 's|^Generated a P-256 key on first start: ||p' "$TMP/stdout" | head -1)"
[ -n "$SIGNER" ] && [ -n "$OPS" ] && [ -n "$PKH" ] || { cat "$TMP/stdout" "$TMP/stderr" >&2; exit 1; }
echo "signer $SIGNER, operations $OPS, key $PKH"

# Traffic: octez-client's sequence, a replay, a conflict, a refusal by policy, an unknown key.
pre() { printf '"12%s%s%s%s%s%s"' 7a06a770 "$(printf '%064d' 0)" 14 0000 "$(printf '%08x' "$1")" "00000000$2"; }
curl -s -o /dev/null "http://$SIGNER/authorized_keys"
code() { curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' "$@"; }
c1="$(code -d "$(pre 100 "$(printf '%064d' 1)")" "http://$SIGNER/keys/$PKH?version=3")"
c2="$(code -d "$(pre 100 "$(printf '%064d' 1)")" "http://$SIGNER/keys/$PKH?version=3")"
c3="$(code -d "$(pre 100 "$(printf '%064d' 2)")" "http://$SIGNER/keys/$PKH?version=3")"
c4="$(code -d '"0300"' "http://$SIGNER/keys/$PKH")"
c5="$(code "http://$SIGNER/keys/tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx")"
if [ "$c1 $c2 $c3 $c4 $c5" = "200 200 409 403 404" ]; then ok "traffic answered 200 200 409 403 404"
else not_ok "traffic answered $c1 $c2 $c3 $c4 $c5, expected 200 200 409 403 404"; fi

curl -s "http://$OPS/metrics" > "$TMP/metrics"
if lint="$(promtool check metrics < "$TMP/metrics" 2>&1)"; then ok "promtool check metrics: no problem"
else not_ok "promtool check metrics" "$lint"; fi

check_series() {
  if grep -qF "$1" "$TMP/metrics"; then ok "series $1"; else not_ok "series $1 missing"; fi
}
check_series "tzkms_requests_total{route=\"sign\",kind=\"preattestation\",key=\"$PKH\",outcome=\"signed\"} 1"
check_series "tzkms_requests_total{route=\"sign\",kind=\"preattestation\",key=\"$PKH\",outcome=\"replayed\"} 1"
check_series "tzkms_requests_total{route=\"sign\",kind=\"preattestation\",key=\"$PKH\",outcome=\"refused_watermark\"} 1"
check_series "tzkms_requests_total{route=\"sign\",kind=\"generic_operation\",key=\"$PKH\",outcome=\"refused_policy\"} 1"
check_series "tzkms_requests_total{route=\"public_key\",kind=\"none\",key=\"other\",outcome=\"not_found\"} 1"
check_series "tzkms_watermark_level{key=\"$PKH\",kind=\"preattestation\"} 100"
check_series "tzkms_ready 1"

health="$(curl -s -w ' %{http_code}' "http://$OPS/healthz")"
case "$health" in *'"status":"alive"'*' 200') ok "/healthz: $health" ;; *) not_ok "/healthz: $health" ;; esac
ready="$(curl -s -w ' %{http_code}' "http://$OPS/readyz")"
if python3 - "$ready" <<'PY'
import json, sys
body, status = sys.argv[1].rsplit(' ', 1)
r = json.loads(body)
assert status == '200', status
assert r['status'] == 'ready' and r['failed'] == [], r
names = {c['name'] for c in r['checks']}
assert {'keys', 'watermark:file'} <= names, names
assert all(c['ok'] and c['detail'] for c in r['checks']), r
PY
then ok "/readyz: ready, checks keys and watermark:file"; else not_ok "/readyz: $ready"; fi

if out="$(promtool check rules deploy/prometheus/tzkms-alerts.yml 2>&1)"; then ok "promtool check rules"
else not_ok "promtool check rules" "$out"; fi
if out="$(cd deploy/prometheus && promtool test rules tzkms-alerts.test.yml 2>&1)"; then ok "promtool test rules"
else not_ok "promtool test rules" "$out"; fi
# Every metric an alert uses is one tzkms exports (a renamed metric would silently never fire).
missing=""
for name in $(grep -o 'tzkms_[a-z_]*' deploy/prometheus/tzkms-alerts.yml | sed 's/_bucket$//' | sort -u); do
  grep -rqF "\"$name\"" crates/tzkms/src || missing="$missing $name"
done
if [ -z "$missing" ]; then ok "every metric the alerts use exists in the source"
else not_ok "alerts use unknown metrics:$missing"; fi

kill -TERM "$PID"
set +e; wait "$PID"; rc=$?; set -e
PID=""
if [ "$rc" -eq 0 ] && grep -q 'stopped' "$TMP/stderr"; then ok "SIGTERM: exit 0, stopped"
else not_ok "SIGTERM: exit $rc" "$(tail -5 "$TMP/stderr")"; fi

echo "ops: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
