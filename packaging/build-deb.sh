#!/usr/bin/env bash
# Builds the Debian package of tzkms: the release binary, then the man pages, shell completions and the
# systemd unit (ExecStart at /usr/bin/tzkms) generated into target/release/deb-staging, then
# `cargo deb --no-build`. Prints the path of the .deb on its last line.
#
#   packaging/build-deb.sh [--out-dir DIR] [--no-build]
#
# --out-dir: where the .deb goes (default: <target dir>/debian). --no-build: package the release binary
# already in the target directory (CI built it with --workspace; building -p tzkms alone could resolve
# other features and rebuild).
#
# Needs cargo-deb (cargo install --locked cargo-deb --version <CARGO_DEB_VERSION below>) and dpkg-shlibdeps
# (package dpkg-dev) for the library dependencies. Honours CARGO_TARGET_DIR.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
die() { printf 'packaging/build-deb.sh: %s\n' "$*" >&2; exit 1; }

out_dir=""; build=1
while [ "$#" -gt 0 ]; do
  case "$1" in
    --out-dir) out_dir="${2:?--out-dir needs a directory}"; shift 2 ;;
    --no-build) build=0; shift ;;
    *) die "unknown argument $1 (usage: packaging/build-deb.sh [--out-dir DIR] [--no-build])" ;;
  esac
done

cargo deb --version >/dev/null 2>&1 \
  || die "cargo-deb is not installed: cargo install --locked cargo-deb"
command -v dpkg-shlibdeps >/dev/null \
  || die "dpkg-shlibdeps is missing (it computes the package's library dependencies): apt-get install dpkg-dev"

target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target_dir/release/tzkms"
if [ "$build" -eq 1 ]; then
  cargo build --release --locked -p tzkms --bin tzkms
else
  [ -x "$bin" ] || die "--no-build: no release binary at $bin (cargo build --release -p tzkms)"
fi

stage="$target_dir/release/deb-staging"
rm -rf "$stage"
mkdir -p "$stage/man" "$stage/completions"
# Generated from the binary being packaged, so they match it; TZKMS_CONFIG must not leak in.
env -u TZKMS_CONFIG "$bin" man --out-dir "$stage/man" >/dev/null
# Compressed as Debian policy wants (cargo-deb leaves files from target/ as they are); -n: no timestamp.
gzip -9n "$stage"/man/*.1
env -u TZKMS_CONFIG "$bin" completions bash > "$stage/completions/tzkms.bash"
env -u TZKMS_CONFIG "$bin" completions zsh > "$stage/completions/_tzkms"
env -u TZKMS_CONFIG "$bin" completions fish > "$stage/completions/tzkms.fish"
# The unit in deploy/ runs /usr/local/bin/tzkms (a hand install); the package's binary is /usr/bin/tzkms.
sed 's|/usr/local/bin/tzkms|/usr/bin/tzkms|g' deploy/tzkms.service > "$stage/tzkms.service"
grep -q '^ExecStart=/usr/bin/tzkms ' "$stage/tzkms.service" || die "the staged unit has no ExecStart=/usr/bin/tzkms"

args=(deb -p tzkms --no-build --locked)
[ -z "$out_dir" ] || { mkdir -p "$out_dir"; args+=(--output "$out_dir"); }
deb="$(cargo "${args[@]}" | tail -1)"
[ -f "$deb" ] || die "cargo deb did not print a package path (got: $deb)"
echo "$deb"
