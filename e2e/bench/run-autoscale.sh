#!/usr/bin/env bash
# The autoscaler benchmarks: reaction time (autoscale_reaction.rs) and the broker cost of
# 1,000 pools (autoscale_redis_cost.rs). Env: BENCH_ONLY=reaction|cost runs one of them.
set -euo pipefail
case ${BENCH_ONLY:-all} in
  reaction) set -- autoscale_reaction ;;
  cost) set -- autoscale_redis_cost ;;
  *) set -- autoscale_reaction autoscale_redis_cost ;;
esac
exec "$(dirname "$0")/run-on-cluster.sh" "$@"
