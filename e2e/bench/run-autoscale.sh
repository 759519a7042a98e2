#!/usr/bin/env bash
# Runs the autoscaler benchmarks on a control plane of its own (brought up and down): the
# reaction time (autoscale_reaction.rs) and the broker cost of 1,000 pools
# (autoscale_redis_cost.rs). Env: BENCH_ONLY=reaction|cost runs one of them.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
export E2E_STATE=$repo/.e2e/bench
. "$repo/e2e/common.sh"
on_exit '"$repo/e2e/cluster/down.sh" || true'
"$repo/e2e/cluster/up.sh"
export E2E_KUBECONFIG=$E2E_STATE/kubeconfig
E2E_KUBECTL=$("$repo/e2e/cluster/build.sh" bindir)/kubectl
export E2E_KUBECTL
cd "$repo"
# The operator as it ships (release), so its CPU figure means something.
cargo build --release -p celery-operator
export E2E_OPERATOR_BIN=$repo/target/release/celery-operator
"$E2E_KUBECTL" --kubeconfig "$E2E_KUBECONFIG" apply --server-side -f crds/ >/dev/null
"$E2E_KUBECTL" --kubeconfig "$E2E_KUBECONFIG" wait --for=condition=Established --timeout=60s -f crds/ >/dev/null
only=${BENCH_ONLY:-all}
if [ "$only" = all ] || [ "$only" = reaction ]; then
  cargo bench -p celery-operator-e2e --bench autoscale_reaction
fi
if [ "$only" = all ] || [ "$only" = cost ]; then
  cargo bench -p celery-operator-e2e --bench autoscale_redis_cost
fi
