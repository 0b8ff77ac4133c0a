#!/usr/bin/env bash
# End-to-end suite of tzkms: real clients (Taquito, pytezos, py_ecc, curl)
# against the real tzkms binary. Called by .ci/run from the repository root;
# works from any directory.
#
#   TZKMS_BIN       tzkms binary to test (default: target/release/tzkms)
#   TZKMS_VECTORS   vectors directory (default: <repo>/../shared/vectors)
#   E2E_SKIP_AZURE  set to skip tests/e2e/azure-sdk/run.sh
#   E2E_ONLY        "node", "python", "azure", "ops", "dashboard", "docs" or "deb" to run only that suite
#   TZKMS_LOAD_BIN  load tool for the dashboard suite (default: beside TZKMS_BIN)
#   E2E_SKIP_DEB    set to skip tests/e2e/deb/run.sh (it installs and purges the package on this machine)
#   PYTHON          interpreter for the venv (default: python3)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"
SIGNER_DIR="$REPO_ROOT/tests/e2e/signer"

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'tests/e2e/run.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- binary, vectors
TZKMS_BIN="${TZKMS_BIN:-target/release/tzkms}"
case "$TZKMS_BIN" in /*) ;; *) TZKMS_BIN="$REPO_ROOT/$TZKMS_BIN" ;; esac
[ -x "$TZKMS_BIN" ] || die "no tzkms binary at $TZKMS_BIN (build it with 'cargo build --release' or set TZKMS_BIN)"
export TZKMS_BIN

KV_EMULATOR_BIN="${KV_EMULATOR_BIN:-$(dirname "$TZKMS_BIN")/kv-emulator}"
[ -x "$KV_EMULATOR_BIN" ] || die "no kv-emulator binary at $KV_EMULATOR_BIN (cargo build --release -p kv-emulator, or set KV_EMULATOR_BIN)"
export KV_EMULATOR_BIN

TZKMS_VECTORS="${TZKMS_VECTORS:-$REPO_ROOT/../shared/vectors}"
[ -f "$TZKMS_VECTORS/signatures.json" ] || die "no test vectors in $TZKMS_VECTORS"
TZKMS_VECTORS="$(cd "$TZKMS_VECTORS" && pwd)"
export TZKMS_VECTORS

# ---------------------------------------------------------------- system packages
# curl: the octez-client-sequence test; libsodium: pysodium (pytezos) loads it
# with ctypes; libgmp-dev and a C compiler: only needed if pip has to build
# fastecdsa<4 from source; python3-venv: venvs on a Debian python.
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found"
command -v node >/dev/null || die "node not found"
command -v npm >/dev/null || die "npm not found"

have_deb() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
apt_needed=()
command -v curl >/dev/null || apt_needed+=(curl ca-certificates)
# openssl and socat: the docs-run suite runs the TLS recipe of docs/security.md (certificates, a TLS proxy).
command -v openssl >/dev/null || apt_needed+=(openssl)
command -v socat >/dev/null || apt_needed+=(socat)
"$PYTHON" -c "import ctypes.util, sys; sys.exit(0 if ctypes.util.find_library('sodium') else 1)" \
  || apt_needed+=(libsodium-dev)
[ -f /usr/include/gmp.h ] || [ -f /usr/include/x86_64-linux-gnu/gmp.h ] || have_deb libgmp-dev \
  || apt_needed+=(libgmp-dev)
command -v cc >/dev/null || apt_needed+=(build-essential)
"$PYTHON" -c "import ensurepip, venv" 2>/dev/null || apt_needed+=(python3-venv)
if [ "${#apt_needed[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing system packages (${apt_needed[*]}) and no apt-get"
  if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif sudo -n true 2>/dev/null; then SUDO=(sudo -n); else
    die "missing system packages (${apt_needed[*]}); install them or run as root"
  fi
  log "apt-get install ${apt_needed[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${apt_needed[@]}"
fi

# ---------------------------------------------------------------- node and python deps
stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

node_stamp="$(stamp_of "$SIGNER_DIR/package-lock.json"; node --version)"
if [ "$(cat "$SIGNER_DIR/node_modules/.e2e-stamp" 2>/dev/null || true)" != "$node_stamp" ]; then
  log "npm ci (tests/e2e/signer)"
  (cd "$SIGNER_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$node_stamp" > "$SIGNER_DIR/node_modules/.e2e-stamp"
fi

VENV="$SIGNER_DIR/.venv"
py_stamp="$(stamp_of "$SIGNER_DIR/requirements.txt"; "$PYTHON" --version 2>&1)"
if [ "$(cat "$VENV/.e2e-stamp" 2>/dev/null || true)" != "$py_stamp" ]; then
  log "python venv (tests/e2e/signer/.venv)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$SIGNER_DIR/requirements.txt"
  echo "$py_stamp" > "$VENV/.e2e-stamp"
fi

# ---------------------------------------------------------------- temp dir, cleanup
E2E_TMP="$(mktemp -d -t tzkms-e2e.XXXXXX)"
export TMPDIR="$E2E_TMP"   # every data dir and log of the suites lands here

kill_our_servers() {
  # Any tzkms still running from this run has a data dir under $E2E_TMP.
  local p cmd
  for p in /proc/[0-9]*; do
    cmd="$( { tr '\0' ' ' < "$p/cmdline"; } 2>/dev/null || true)"
    case "$cmd" in
      "$TZKMS_BIN "*"$E2E_TMP"*) kill -TERM "${p#/proc/}" 2>/dev/null || true ;;
    esac
  done
}
cleanup() {
  kill_our_servers
  rm -rf "$E2E_TMP"
}
SUITE_PID=""
on_signal() {
  [ -z "$SUITE_PID" ] || kill -TERM "$SUITE_PID" 2>/dev/null || true
  exit 130
}
trap cleanup EXIT
trap on_signal INT TERM

# Runs a suite in the background and waits for it, so that a signal to this
# script stops the suite at once (timeout forwards SIGTERM to its child).
# Sets rc to the suite's exit code.
run_suite() {
  local dir="$1"; shift
  set +e
  (cd "$dir" && exec "$@") &
  SUITE_PID=$!
  wait "$SUITE_PID"
  rc=$?
  SUITE_PID=""
  set -e
}

# ---------------------------------------------------------------- suites
log "tzkms under test: $TZKMS_BIN"
log "vectors: $TZKMS_VECTORS"

failed=()
start=$SECONDS

if [ -z "${E2E_ONLY:-}" ] || [ "${E2E_ONLY}" = node ]; then
  log "node --test: Taquito RemoteSigner with file keys and Azure keys (kv-emulator), local forger"
  run_suite "$SIGNER_DIR" timeout 600 node --test --test-reporter=tap taquito.test.mjs azure.test.mjs operations.test.mjs
  [ "$rc" -eq 0 ] || failed+=("node (exit $rc)")
fi

if [ -z "${E2E_ONLY:-}" ] || [ "${E2E_ONLY}" = python ]; then
  log "pytest: pytezos, py_ecc, curl, bad input (tests/e2e/signer/test_*.py)"
  run_suite "$SIGNER_DIR" timeout 900 "$VENV/bin/python" -m pytest -p no:cacheprovider -v \
    --tb=short --durations=5
  # 5 = no test collected: that is a failure here too.
  [ "$rc" -eq 0 ] || failed+=("pytest (exit $rc)")
fi

if [ -f "$REPO_ROOT/tests/e2e/azure-sdk/run.sh" ] \
  && { { [ -z "${E2E_SKIP_AZURE:-}" ] && [ -z "${E2E_ONLY:-}" ]; } || [ "${E2E_ONLY:-}" = azure ]; }; then
  log "tests/e2e/azure-sdk/run.sh"
  run_suite "$REPO_ROOT" bash tests/e2e/azure-sdk/run.sh
  [ "$rc" -eq 0 ] || failed+=("azure-sdk (exit $rc)")
fi

if [ -z "${E2E_ONLY:-}" ] || [ "${E2E_ONLY}" = ops ]; then
  log "tests/e2e/ops/run.sh: promtool lints /metrics and tests the alert rules; /healthz, /readyz, SIGTERM"
  run_suite "$REPO_ROOT" timeout 600 bash tests/e2e/ops/run.sh
  [ "$rc" -eq 0 ] || failed+=("ops (exit $rc)")
fi

if [ -z "${E2E_ONLY:-}" ] || [ "${E2E_ONLY}" = dashboard ]; then
  log "tests/e2e/dashboard/run.sh: every Grafana panel's query has data in a real Prometheus (tzkms, kv-emulator, tzkms-load)"
  run_suite "$REPO_ROOT" timeout 300 bash tests/e2e/dashboard/run.sh
  [ "$rc" -eq 0 ] || failed+=("dashboard (exit $rc)")
fi

if [ -z "${E2E_ONLY:-}" ] || [ "${E2E_ONLY}" = docs ]; then
  log "tests/e2e/docs: every shell block of README.md and docs/*.md, run as written or skipped with a reason"
  run_suite "$REPO_ROOT/tests/e2e/docs" timeout 60 "$PYTHON" -B -m unittest -v test_docs_run
  [ "$rc" -eq 0 ] || failed+=("docs-run unit tests (exit $rc)")
  run_suite "$REPO_ROOT" timeout 300 "$PYTHON" tests/e2e/docs/docs_run.py
  [ "$rc" -eq 0 ] || failed+=("docs (exit $rc)")
fi

if [ -z "${E2E_SKIP_DEB:-}" ] && { [ -z "${E2E_ONLY:-}" ] || [ "${E2E_ONLY}" = deb ]; }; then
  if [ "$(id -u)" -eq 0 ] && command -v dpkg >/dev/null; then
    log "tests/e2e/deb/run.sh: build the .deb, dpkg -i, run it as the tzkms user, dpkg -r and -P"
    run_suite "$REPO_ROOT" timeout 1200 bash tests/e2e/deb/run.sh
    [ "$rc" -eq 0 ] || failed+=("deb (exit $rc)")
  elif [ -n "${CI:-}" ] || [ "${E2E_ONLY:-}" = deb ]; then
    failed+=("deb (needs root and dpkg)")
  else
    log "tests/e2e/deb/run.sh skipped: needs root and dpkg"
  fi
fi

log "e2e suites finished in $((SECONDS - start))s"
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'e2e FAILED: %s\n' "${failed[*]}" >&2
  exit 1
fi
echo "e2e: all suites passed"
