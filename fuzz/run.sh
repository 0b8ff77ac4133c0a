#!/usr/bin/env bash
# Bounded fuzzing of every target (libFuzzer via cargo-fuzz, nightly). Used by .ci/run; longer campaigns:
# see docs/testing.md. FUZZ_SECONDS per target (default 20).
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-20}"
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain here; the stable property tests (cargo test) cover the parsers instead"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
python3 seed.py
total=0
for target in classify operation base58 request_body config watermark_file; do
  mkdir -p "corpus/$target"
  log="$(mktemp)"
  if ! cargo +nightly fuzz run "$target" "corpus/$target" -- -max_total_time="$SECONDS_PER_TARGET" \
      -max_len=4096 -rss_limit_mb=1024 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $target FAILED (crash input under fuzz/artifacts/$target)" >&2
    exit 1
  fi
  runs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  echo "fuzz: $target: ${runs:-?} executions in ${SECONDS_PER_TARGET}s, no crash"
  total=$((total + ${runs:-0}))
done
echo "fuzz: $total executions in all"
