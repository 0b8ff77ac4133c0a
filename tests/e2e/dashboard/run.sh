#!/usr/bin/env bash
# The Grafana dashboard (deploy/grafana/tzkms-dashboard.json) against a real Prometheus scraping a real tzkms
# that signs with Key Vault keys in the kv-emulator under a baker load: every panel's every query must return
# data (test_dashboard.py says how). Installs Debian's prometheus package when the prometheus binary is
# missing; the package's own service is not used (nor needed): the test runs the binary itself, on a free
# port with a temporary database.
#
#   TZKMS_BIN        tzkms binary (default: target/release/tzkms)
#   KV_EMULATOR_BIN  kv-emulator binary (default: beside TZKMS_BIN)
#   TZKMS_LOAD_BIN   tzkms-load binary (default: beside TZKMS_BIN)
#   PROMETHEUS_BIN   prometheus binary (default: prometheus on PATH)
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$REPO_ROOT"
TZKMS_BIN="${TZKMS_BIN:-target/release/tzkms}"
case "$TZKMS_BIN" in /*) ;; *) TZKMS_BIN="$REPO_ROOT/$TZKMS_BIN" ;; esac
export TZKMS_BIN

if [ -z "${PROMETHEUS_BIN:-}" ] && ! command -v prometheus >/dev/null; then
  echo "==> apt-get install prometheus (the server, run by the test itself)"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo -n); fi
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
"${PROMETHEUS_BIN:-prometheus}" --version 2>&1 | head -1

exec python3 tests/e2e/dashboard/test_dashboard.py
