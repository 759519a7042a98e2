#!/usr/bin/env bash
# Runs each property test of the input parsers for SECONDS (default 600) in batches of fresh
# random cases, and prints a table: target, cases run, seconds, result. `make test` runs
# the same tests with proptest's short default.
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${1:-600}
batch=${FUZZ_BATCH:-5000}
targets=(
  schedule::fuzz::a_crontab_parses_or_is_refused_and_fires_in_order
  schedule::fuzz::a_cron_expression_parses_or_is_refused_and_fires_in_order
  schedule::fuzz::an_interval_parses_or_is_refused_and_fires_in_order
  schedule::fuzz::a_time_zone_name_parses_or_is_refused
  controller::periodic_task::plan::tests::fuzz::any_message_spec_plans_or_is_refused
  controller::redis_cache::settings::tests::fuzz::any_quantity_is_read_or_refused
  controller::redis_cache::settings::tests::fuzz::any_config_resolves_or_is_refused_and_renders
)
cargo test -q --release -p celery-operator --lib --no-run 2>/dev/null
printf '%-85s %10s %8s %s\n' target cases seconds result
for t in "${targets[@]}"; do
  start=$SECONDS cases=0 result=ok
  while (( SECONDS - start < budget )); do
    # Each batch draws new cases (proptest seeds from the OS unless told otherwise).
    if ! PROPTEST_CASES=$batch cargo test -q --release -p celery-operator --lib -- --exact "$t" \
        >/tmp/fuzz-$$.log 2>&1; then
      result="FAILED (see /tmp/fuzz-$$.log)"
      break
    fi
    cases=$((cases + batch))
  done
  printf '%-85s %10d %8d %s\n' "$t" "$cases" "$((SECONDS - start))" "$result"
  [ "$result" = ok ] || exit 1
done
rm -f /tmp/fuzz-$$.log
