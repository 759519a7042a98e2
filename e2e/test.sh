#!/usr/bin/env bash
# `make test`: every check CI makes, in order, then one closing line that totals the tests
# of every cargo test run ("N passed, N failed").
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
log=$(mktemp)
trap 'rm -f "$log"' EXIT

status=0
for target in deps lint check-generated harness-check standalone e2e; do
  echo "== make $target"
  if ! make --no-print-directory "$target" 2>&1 | tee -a "$log"; then
    echo "== make $target FAILED"
    status=1
    break
  fi
done

awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
