#!/usr/bin/env bash
# Runs the autoscaler reaction benchmark on a control plane of its own (brought up and down).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
export E2E_STATE=$repo/.e2e/bench
trap '"$repo/e2e/cluster/down.sh" || true' EXIT
"$repo/e2e/cluster/up.sh"
export E2E_KUBECONFIG=$E2E_STATE/kubeconfig
E2E_KUBECTL=$("$repo/e2e/cluster/build.sh" bindir)/kubectl
export E2E_KUBECTL
cd "$repo"
cargo build -p celery-operator
"$E2E_KUBECTL" --kubeconfig "$E2E_KUBECONFIG" apply --server-side -f crds/ >/dev/null
"$E2E_KUBECTL" --kubeconfig "$E2E_KUBECONFIG" wait --for=condition=Established --timeout=60s -f crds/ >/dev/null
cargo bench -p celery-operator-e2e --bench autoscale_reaction
