#!/usr/bin/env bash
# Fidelity suite: the official Azure SDK for Python (azure-keyvault-keys + azure-identity) against kv-emulator
# over HTTPS. Creates its own venv, installs pinned packages from PyPI, starts the emulator binary, runs pytest.
#
#   tests/e2e/azure-sdk/run.sh            # builds target/release/kv-emulator unless KV_EMULATOR_BIN is set
#   KV_EMULATOR_BIN=/path/to/kv-emulator tests/e2e/azure-sdk/run.sh -k sign
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

if [[ -z "${KV_EMULATOR_BIN:-}" ]]; then
    target_dir="${CARGO_TARGET_DIR:-$root/target}"
    KV_EMULATOR_BIN="$target_dir/release/kv-emulator"
    # Always ask cargo: a no-op when up to date, and never a stale binary.
    (cd "$root" && cargo build --release -p kv-emulator --bin kv-emulator)
fi
[[ -x "$KV_EMULATOR_BIN" ]] || { echo "kv-emulator binary not found at $KV_EMULATOR_BIN" >&2; exit 1; }

if ! "$python" -c "import ensurepip, venv" 2>/dev/null; then
    # Debian's python3 ships venv/ensurepip separately.
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
    else
        echo "$python cannot create virtual environments; install python3-venv" >&2
        exit 1
    fi
fi
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
if ! cmp -s "$here/requirements.txt" "$venv/.installed-requirements" 2>/dev/null; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$venv/.installed-requirements"
fi

run_dir="$(mktemp -d "${TMPDIR:-/tmp}/kv-emulator-sdk.XXXXXX")"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$run_dir"
}
trap cleanup EXIT

# start_emulator NAME ARGS...: run kv-emulator on free ports, wait until it printed its endpoints (the
# challenge line comes last, once it is listening).
start_emulator() {
    local name="$1"; shift
    "$KV_EMULATOR_BIN" \
        --listen 127.0.0.1:0 \
        --identity-listen 127.0.0.1:0 \
        --persist-dir "$run_dir/$name" \
        --ca-file "$run_dir/$name/ca.pem" \
        "$@" \
        >"$run_dir/$name.out" 2>"$run_dir/$name.err" &
    local pid=$!
    pids+=("$pid")
    for _ in $(seq 1 200); do
        if grep -q '^challenge=' "$run_dir/$name.out" 2>/dev/null; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "kv-emulator ($name) exited early:" >&2
            cat "$run_dir/$name.err" >&2
            exit 1
        fi
        sleep 0.05
    done
    echo "kv-emulator ($name) did not start" >&2
    cat "$run_dir/$name.err" >&2
    exit 1
}
value() { sed -n "s/^$2=//p" "$run_dir/$1.out"; }

start_emulator vault --identity-header "sdk-suite-identity-header" --control-api
start_emulator hsm --flavour managed-hsm

export KV_URL="$(value vault vault_url)"
export KV_AUTHORITY="$(value vault authority_host)"
export KV_TENANT_ID="$(value vault tenant_id)"
export KV_CLIENT_ID="$(value vault client_id)"
export KV_CLIENT_SECRET="kv-emulator-client-secret"
export KV_IMDS_AUTHORITY="$(value vault imds_authority)"
export KV_IDENTITY_ENDPOINT="$(value vault identity_endpoint)"
export KV_IDENTITY_HEADER="$(value vault identity_header)"
export KV_CA_FILE="$(value vault ca_file)"
export KV_HSM_URL="$(value hsm vault_url)"
export KV_HSM_AUTHORITY="$(value hsm authority_host)"
export KV_HSM_CA_FILE="$(value hsm ca_file)"
echo "kv-emulator vault at $KV_URL (CA $KV_CA_FILE, IMDS $KV_IMDS_AUTHORITY); managed HSM at $KV_HSM_URL"

cd "$here"
"$venv/bin/python" -m pytest -p no:cacheprovider -q -rA test_azure_sdk.py "$@"
