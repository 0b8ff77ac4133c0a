#!/usr/bin/env bash
# Added latency of threshold tz4 keys (2-of-3, 3-of-5) over one local tz4 file key, measured with
# tzkms-load in baker mode against three signers started here on loopback, in one run: a tz4 file key,
# a 2-of-3 coordinator and a 3-of-5 coordinator (no share of its own; every cosigner its own data
# directory, mTLS with certificates made by openssl). Usage: threshold_latency.sh [LEVELS]
# Needs the release binaries: cargo build --release --bin tzkms --bin tzkms-load
set -euo pipefail
LEVELS=${1:-300}
BIN=${CARGO_TARGET_DIR:-target}/release
T=$BIN/tzkms
L=$BIN/tzkms-load
W=$(mktemp -d)
# Servers are started in subshells too (process substitution): their pids go to a file.
cleanup() { while read -r p; do kill "$p" 2>/dev/null || true; done < "$W/pids"; rm -rf "$W"; }
touch "$W/pids"
trap cleanup EXIT
export TZKMS_LOG=warn
cd "$W"

# A CA, one server certificate for every cosigner (127.0.0.1) and the coordinators' client certificate.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
openssl req -new -x509 -key ca.key -subj '/CN=bench CA' -days 2 -out ca.pem
for who in server coordinator; do
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $who.key 2>/dev/null
  openssl req -new -key $who.key -subj "/CN=$who" -out $who.csr
  if [ $who = server ]; then printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > $who.ext
  else printf 'extendedKeyUsage=clientAuth\n' > $who.ext; fi
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -sha256 -extfile $who.ext \
    -out $who.pem 2>/dev/null
done
chmod 600 ./*.key

wait_up() { for _ in $(seq 300); do curl -s -o /dev/null "http://$1/authorized_keys" && return; sleep 0.1; done; echo "no $1" >&2; cat "$W/log" >&2; exit 1; }
serve() { # data_dir port config
  "$T" serve --data-dir "$1" --listen "127.0.0.1:$2" --config "$3" >/dev/null 2>>"$W/log" &
  echo $! >> "$W/pids"
  wait_up "127.0.0.1:$2"
}
pkh_of() { "$T" keys list --data-dir "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["pkh"])'; }

# One local tz4 key.
mkdir -m 700 single && "$T" keys generate --curve bls --data-dir single >/dev/null
printf '[keys]\ngenerate_if_empty = false\n' > single.toml
serve single 17100 single.toml
SINGLE=$(pkh_of single)

group() { # N M BASE_PORT -> prints the group pkh and the coordinator's port; starts cosigners and coordinator
  local n=$1 m=$2 g=g$1of$2
  PORT=$3
  mkdir -m 700 $g.src && "$T" keys generate --curve bls --data-dir $g.src >/dev/null
  "$T" threshold split --key "$(pkh_of $g.src)" --shares $n --threshold $m --data-dir $g.src > $g.json 2> $g.pks
  local pk pkh
  pk=$(python3 -c "import json; print(json.load(open('$g.json'))['public_key'])")
  pkh=$(python3 -c "import json; print(json.load(open('$g.json'))['public_key_hash'])")
  printf '[keys]\ngenerate_if_empty = false\n[threshold.client]\ncertificate = "%s"\nprivate_key = "%s"\nserver_ca = "%s"\n[[threshold.groups]]\npublic_key = "%s"\nthreshold = %s\nshares = %s\n' \
    "$W/coordinator.pem" "$W/coordinator.key" "$W/ca.pem" "$pk" $m $n > $g.coord.toml
  for i in $(seq $n); do
    PORT=$((PORT + 1))
    mkdir -m 700 $g.c$i
    "$T" threshold import $g.json --id $i --data-dir $g.c$i >/dev/null 2>&1
    "$T" watermark floor "$pkh" --level 1 --data-dir $g.c$i >/dev/null
    printf '[keys]\ngenerate_if_empty = false\n[server.tls]\nlisten = ["127.0.0.1:%s"]\ncertificate = "%s"\nprivate_key = "%s"\nclient_ca = "%s"\n[policy.keys.%s]\nallow = ["block", "preattestation", "attestation"]\ntls_clients = ["cn:coordinator"]\n' \
      $PORT "$W/server.pem" "$W/server.key" "$W/ca.pem" "$pkh" > $g.c$i.toml
    PORT=$((PORT + 1))
    serve $g.c$i $PORT $g.c$i.toml
    local spk
    spk=$(sed -n "s/.*share $i: public key \(BLpk[A-Za-z0-9]*\).*/\1/p" $g.pks)
    printf '[[threshold.groups.cosigners]]\nid = %s\nurl = "https://127.0.0.1:%s"\nshare_public_key = "%s"\n' \
      $i $((PORT - 1)) "$spk" >> $g.coord.toml
  done
  mkdir -m 700 $g.coord
  "$T" watermark floor "$pkh" --level 1 --data-dir $g.coord >/dev/null
  PORT=$((PORT + 1))
  serve $g.coord $PORT $g.coord.toml
  echo "$pkh $PORT"
}
read -r G3 P3 < <(group 3 2 17200)
read -r G5 P5 < <(group 5 3 17300)

run() { # label url pkh
  echo "== $1"
  "$L" --mode baker --target "$2" --key "$3" --delegates 1 --levels "$LEVELS" --blocks --no-limits \
    --start-level 1000 --json "$W/$1.json" | grep -Ei 'p50|p99|latency|signatures|error' || true
}
run single http://127.0.0.1:17100 "$SINGLE"
run 2of3 "http://127.0.0.1:$P3" "$G3"
run 3of5 "http://127.0.0.1:$P5" "$G5"
python3 - "$W" <<'PY'
import json, sys
rows = {f: json.load(open(f"{sys.argv[1]}/{f}.json"))["runs"][0]["load"] for f in ("single", "2of3", "3of5")}
base = rows["single"]["latency_ms"]
print("| signer | signatures | p50 | p99 | added p50 | added p99 |")
print("|---|---|---|---|---|---|")
for name, r in rows.items():
    l = r["latency_ms"]
    print(f"| {name} | {r['ok']}/{r['requests']} | {l['p50']:.2f} ms | {l['p99']:.2f} ms | "
          f"{l['p50'] - base['p50']:+.2f} ms | {l['p99'] - base['p99']:+.2f} ms |")
PY
