#!/usr/bin/env bash
# Runs the named benchmarks (e2e/bench/<name>.rs) on a control plane of its own, brought up
# and down, with the operator built in release so its CPU figures mean something.
# Usage: e2e/bench/run-on-cluster.sh outcome_cost [autoscale_reaction ...]
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 BENCH..." >&2; exit 2; }
repo=$(cd "$(dirname "$0")/../.." && pwd)
export E2E_STATE=$repo/.e2e/bench
. "$repo/e2e/common.sh"
on_exit '"$repo/e2e/cluster/down.sh" || true'
"$repo/e2e/cluster/up.sh"
export E2E_KUBECONFIG=$E2E_STATE/kubeconfig
E2E_KUBECTL=$("$repo/e2e/cluster/build.sh" bindir)/kubectl
export E2E_KUBECTL
E2E_VENV=$("$repo/e2e/venv.sh")
export E2E_VENV
cd "$repo"
cargo build --release -p celery-operator
# BENCH_OPERATOR_BIN runs something else as the operator (a profiler wrapping the release build).
# A heap profile: build with the system allocator (heaptrack hooks malloc, which mimalloc
# bypasses), wrap it in `heaptrack -o FILE`, and `kill -9` the operator itself (not the wrapper)
# between two boundaries: heaptrack then records what was live at that moment as leaked.
export E2E_OPERATOR_BIN=${BENCH_OPERATOR_BIN:-$repo/target/release/celery-operator}
"$E2E_KUBECTL" --kubeconfig "$E2E_KUBECONFIG" apply --server-side -f crds/ >/dev/null
"$E2E_KUBECTL" --kubeconfig "$E2E_KUBECONFIG" wait --for=condition=Established --timeout=60s -f crds/ >/dev/null
for bench in "$@"; do
  cargo bench -p celery-operator-e2e --bench "$bench"
done
