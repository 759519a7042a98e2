#!/usr/bin/env bash
# Push-lateness benchmark of PeriodicTask (see push_lateness.rs): brings up a control plane
# of its own in .e2e/bench (unless E2E_KUBECONFIG points at one), builds in release, runs,
# prints the table, and brings its control plane down again.
# Env: BENCH_SECONDS (default 30), BENCH_SKIP_API=1, BENCH_SKIP_BEAT=1.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
if [ -z "${E2E_KUBECONFIG:-}" ] && [ -z "${BENCH_SKIP_API:-}" ]; then
  export E2E_STATE=$repo/.e2e/bench
  . "$repo/e2e/common.sh"
  on_exit '"$repo/e2e/cluster/down.sh" || true'
  "$repo/e2e/cluster/up.sh"
  export E2E_KUBECONFIG=$E2E_STATE/kubeconfig
fi
E2E_VENV=$("$repo/e2e/venv.sh")
export E2E_VENV
if [ -n "${E2E_KUBECONFIG:-}" ]; then
  kubectl=$("$repo/e2e/cluster/build.sh" bindir)/kubectl
  "$kubectl" --kubeconfig "$E2E_KUBECONFIG" apply --server-side -f crds/ >/dev/null
  "$kubectl" --kubeconfig "$E2E_KUBECONFIG" wait --for=condition=Established --timeout=60s -f crds/ >/dev/null
fi
cargo bench -p celery-operator-e2e --bench push_lateness
