#!/usr/bin/env bash
# The Debian package on this machine: build it (packaging/build-deb.sh, installing cargo-deb and
# dpkg-dev if missing), dpkg -i, check the user, directories, files and unit, run the installed
# /usr/bin/tzkms as the packaged user (generate a key in /var/lib/tzkms, serve, sign over HTTP, verify the
# signature with openssl, stop), then dpkg -r (state and configuration stay) and dpkg -P (configuration
# goes, keys and watermarks stay). Re-runnable: it removes what a previous run left, and refuses to touch
# a tzkms installation or /var/lib/tzkms it did not make. Needs root (CI runs as root).
#
# Called by tests/e2e/run.sh (E2E_ONLY=deb runs only this). Honours CARGO_TARGET_DIR.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$REPO_ROOT"
CARGO_DEB_VERSION=3.8.0
MARK=/var/lib/tzkms/.tzkms-deb-e2e   # this test's data directory, safe to delete

passed=0; failed=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $1"; [ -z "${2:-}" ] || printf '%s\n' "$2" | sed 's/^/    /'; }
check() { local what="$1"; shift; if "$@" >/dev/null 2>&1; then ok "$what"; else not_ok "$what"; fi; }
die() { printf 'tests/e2e/deb/run.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (dpkg -i, a system user); CI runs as root"
command -v dpkg >/dev/null || die "not a Debian system (no dpkg)"

# ------------------------------------------------------------------ leftovers of an earlier run
if dpkg-query -W -f='${Status}' tzkms 2>/dev/null | grep -q 'installed\|config-files'; then
  [ -f "$MARK" ] || die "a tzkms package is installed that this test did not install: not touching it"
  dpkg -P tzkms >/dev/null
fi
if [ -e /var/lib/tzkms ]; then
  [ -f "$MARK" ] || die "/var/lib/tzkms exists and is not this test's: not touching it"
  rm -rf /var/lib/tzkms
fi

# ------------------------------------------------------------------ tools
t0=$SECONDS
apt_needed=()
command -v dpkg-shlibdeps >/dev/null || apt_needed+=(dpkg-dev)
command -v curl >/dev/null || apt_needed+=(curl)
command -v openssl >/dev/null || apt_needed+=(openssl)
command -v setpriv >/dev/null || apt_needed+=(util-linux)
if [ "${#apt_needed[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${apt_needed[@]}" >/dev/null
fi
if [ "$(cargo deb --version 2>/dev/null || true)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  echo "installing cargo-deb $CARGO_DEB_VERSION"
  # Its own target directory: kept between runs like CI's, apart from the project's release builds.
  CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/cargo-deb" \
    cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION"
fi
echo "tools ready in $((SECONDS - t0))s: $(cargo deb --version)"

TMP="$(mktemp -d -t tzkms-deb.XXXXXX)"
PID=""
cleanup() {
  [ -z "$PID" ] || kill -KILL "$PID" 2>/dev/null || true
  # Leave the machine as found: the package purged and this test's data directory gone.
  if [ -f "$MARK" ]; then
    dpkg -P tzkms >/dev/null 2>&1 || true
    rm -rf /var/lib/tzkms
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# ------------------------------------------------------------------ build and install
t0=$SECONDS
# From tests/e2e/run.sh (TZKMS_BIN set), the release build of .ci/run is packaged as it is.
build_args=(--out-dir "$TMP"); [ -z "${TZKMS_BIN:-}" ] || build_args+=(--no-build)
DEB="$(bash packaging/build-deb.sh "${build_args[@]}" | tail -1)"
echo "built $DEB in $((SECONDS - t0))s"
dpkg-deb -c "$DEB" | awk '{print $1, $2, $NF}'
dpkg-deb -f "$DEB" Package Version Depends

dpkg -i "$DEB" > "$TMP/dpkg-i.log" 2>&1 || { cat "$TMP/dpkg-i.log" >&2; die "dpkg -i failed"; }
touch "$MARK"

# ------------------------------------------------------------------ what the package put in place
check "the tzkms system user exists" getent passwd tzkms
shell="$(getent passwd tzkms | cut -d: -f7)"; uid="$(id -u tzkms)"
if [ "$shell" = /usr/sbin/nologin ] && [ "$uid" -lt 1000 ]; then ok "tzkms is a system user (uid $uid) with nologin"
else not_ok "tzkms user: uid $uid shell $shell"; fi
st="$(stat -c '%U:%G %a' /var/lib/tzkms)"
[ "$st" = "tzkms:tzkms 700" ] && ok "/var/lib/tzkms is tzkms:tzkms 0700" || not_ok "/var/lib/tzkms is $st"
st="$(stat -c '%U:%G %a' /etc/tzkms /etc/tzkms/tzkms.toml | tr '\n' ' ')"
[ "$st" = "root:tzkms 750 root:tzkms 640 " ] && ok "/etc/tzkms 0750 and tzkms.toml 0640, root:tzkms" \
  || not_ok "/etc/tzkms and its file: $st"
check "tzkms.toml is a conffile" sh -c "dpkg-query -W -f='\${Conffiles}' tzkms | grep -q '/etc/tzkms/tzkms.toml'"
for f in /usr/bin/tzkms /usr/lib/systemd/system/tzkms.service /usr/lib/sysusers.d/tzkms.conf \
         /usr/lib/tmpfiles.d/tzkms.conf /usr/share/man/man1/tzkms.1.gz /usr/share/man/man1/tzkms-keys-generate.1.gz \
         /usr/share/bash-completion/completions/tzkms /usr/share/zsh/vendor-completions/_tzkms \
         /usr/share/fish/vendor_completions.d/tzkms.fish /usr/share/doc/tzkms/copyright; do
  check "installed $f" test -s "$f"
done
pages="$(dpkg -L tzkms | grep -c '^/usr/share/man/man1/tzkms.*\.1\.gz$')"
subs="$(/usr/bin/tzkms man --out-dir "$TMP/man" | wc -l)"
[ "$pages" -eq "$subs" ] && ok "$pages man pages, one per (sub)command" || not_ok "$pages man pages for $subs commands"
check "bash completion of the installed package parses" bash -n /usr/share/bash-completion/completions/tzkms
if command -v man >/dev/null; then check "man tzkms-keys-generate finds the page" man -w tzkms-keys-generate; fi
grep -q '^ExecStart=/usr/bin/tzkms ' /usr/lib/systemd/system/tzkms.service \
  && ok "the installed unit runs /usr/bin/tzkms" || not_ok "the installed unit's ExecStart is not /usr/bin/tzkms"
if out="$(systemd-analyze verify /usr/lib/systemd/system/tzkms.service 2>&1)"; then ok "systemd-analyze verify of the installed unit"
else not_ok "systemd-analyze verify of the installed unit" "$out"; fi
/usr/bin/tzkms --version | grep -q '^tzkms ' && ok "tzkms --version" || not_ok "tzkms --version"

# ------------------------------------------------------------------ run it as the packaged user
as_tzkms() { setpriv --reuid=tzkms --regid=tzkms --init-groups --inh-caps=-all -- "$@"; }
CONF=(--config /etc/tzkms/tzkms.toml)
cd /   # the service's working directory; tzkms must not need the caller's
as_tzkms /usr/bin/tzkms "${CONF[@]}" keys generate --curve ed25519 > "$TMP/keygen" 2>&1 \
  || { cat "$TMP/keygen" >&2; die "keys generate as tzkms failed"; }
PKH="$(head -1 "$TMP/keygen")"
st="$(stat -c '%U %a' "/var/lib/tzkms/keys/$PKH.key" 2>&1)"
[ "$st" = "tzkms 600" ] && ok "key $PKH in /var/lib/tzkms/keys, tzkms 0600" || not_ok "key file: $st"
if out="$(as_tzkms /usr/bin/tzkms "${CONF[@]}" config check 2>&1)"; then ok "config check as tzkms"
else not_ok "config check as tzkms" "$out"; fi

# setpriv itself (not the function, which would fork a subshell) so that $! is tzkms once setpriv execs.
setpriv --reuid=tzkms --regid=tzkms --init-groups --inh-caps=-all -- \
  /usr/bin/tzkms "${CONF[@]}" serve --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  > "$TMP/stdout" 2> "$TMP/stderr" &
PID=$!
for _ in $(seq 1 300); do   # a failure bound (30 s), not a delay: the loop ends at the first line
  grep -q '^listening on http://' "$TMP/stdout" 2>/dev/null && break
  kill -0 "$PID" 2>/dev/null || { cat "$TMP/stderr" >&2; die "serve exited"; }
  sleep 0.1
done
SIGNER="$(sed -n 's|^listening on http://||p' "$TMP/stdout" | head -1)"
[ -n "$SIGNER" ] || { cat "$TMP/stdout" "$TMP/stderr" >&2; die "serve printed no address"; }
! grep -q 'running as root' "$TMP/stderr" && ok "serve runs unprivileged" || not_ok "serve warns it runs as root"

PK="$(curl -sf "http://$SIGNER/keys/$PKH" | python3 -c 'import json,sys; print(json.load(sys.stdin)["public_key"])')"
# A preattestation (0x12): chain, branch, tag 20, slot, level 7, round 0, payload hash.
MSG="12$(printf '7a06a770%064d14%04x%08x%08x%064d' 0 0 7 0 1)"
resp="$(curl -s -w ' %{http_code}' -H 'content-type: application/json' -d "\"$MSG\"" "http://$SIGNER/keys/$PKH")"
SIG="$(printf '%s' "${resp% *}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["signature"])' 2>/dev/null || true)"
[ "${resp##* }" = 200 ] && [ -n "$SIG" ] && ok "signed a preattestation over HTTP" || not_ok "sign answered $resp"

# Verify: blake2b-256 of the bytes, Ed25519 with openssl (base58check decoding in the standard library).
python3 - "$PK" "$SIG" "$MSG" "$TMP" <<'PY'
import hashlib, sys
A = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
def b58check(s, prefix_len):
    n = 0
    for c in s: n = n * 58 + A.index(c)
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    body, check = raw[:-4], raw[-4:]
    assert hashlib.sha256(hashlib.sha256(body).digest()).digest()[:4] == check, "bad checksum"
    return body[prefix_len:]
pk, sig, msg, tmp = sys.argv[1:]
assert pk.startswith("edpk"), pk
key = b58check(pk, 4)
sigb = b58check(sig, 5 if sig.startswith("edsig") else 3)
assert len(key) == 32 and len(sigb) == 64
der = bytes.fromhex("302a300506032b6570032100") + key
open(f"{tmp}/pub.der", "wb").write(der)
open(f"{tmp}/sig", "wb").write(sigb)
digest = hashlib.blake2b(bytes.fromhex(msg), digest_size=32).digest()
open(f"{tmp}/digest", "wb").write(digest)
open(f"{tmp}/other", "wb").write(bytes([digest[0] ^ 1]) + digest[1:])
PY
verify() { openssl pkeyutl -verify -pubin -keyform DER -inkey "$TMP/pub.der" -rawin -in "$1" -sigfile "$TMP/sig"; }
check "the signature verifies against the key's public key" verify "$TMP/digest"
if verify "$TMP/other" >/dev/null 2>&1; then not_ok "the signature verifies for other bytes too"; else ok "the signature does not verify for other bytes"; fi

kill -TERM "$PID"
rc=0; wait "$PID" || rc=$?
PID=""
[ "$rc" -eq 0 ] && ok "serve stops on SIGTERM with status 0" || not_ok "serve exited $rc on SIGTERM"
check "the watermark is durable in /var/lib/tzkms" \
  sh -c "setpriv --reuid=tzkms --regid=tzkms --init-groups /usr/bin/tzkms --config /etc/tzkms/tzkms.toml watermark show | grep -q '$PKH'"

# ------------------------------------------------------------------ remove, then purge
cd "$REPO_ROOT"
dpkg -r tzkms > "$TMP/dpkg-r.log" 2>&1 || { cat "$TMP/dpkg-r.log" >&2; die "dpkg -r failed"; }
check "remove: /usr/bin/tzkms is gone" test ! -e /usr/bin/tzkms
check "remove: the unit is gone" test ! -e /usr/lib/systemd/system/tzkms.service
check "remove: the key stays" test -f "/var/lib/tzkms/keys/$PKH.key"
check "remove: the configuration stays" test -f /etc/tzkms/tzkms.toml
check "remove: the tzkms user stays" getent passwd tzkms
dpkg -P tzkms > "$TMP/dpkg-p.log" 2>&1 || { cat "$TMP/dpkg-p.log" >&2; die "dpkg -P failed"; }
check "purge: /etc/tzkms is gone" test ! -e /etc/tzkms
check "purge: the package is gone" sh -c "! dpkg-query -W tzkms 2>/dev/null | grep -q ."
check "purge: keys and watermarks stay in /var/lib/tzkms" test -f "/var/lib/tzkms/keys/$PKH.key"

echo "deb: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
