#!/usr/bin/env bash
# The README's first command: a local control plane, the CRDs, the operator and the samples.
# Ctrl-C stops everything it started. DEMO_ONESHOT=1 stops after showing the resources.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

pids=()
cleanup() {
  say "stopping the demo"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  e2e/cluster/down.sh || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "building the control plane (first run only: ~15 min) and starting it"
e2e/cluster/up.sh
PATH="$(e2e/cluster/build.sh bindir):$PATH"
export KUBECONFIG=$repo/.e2e/kubeconfig
kubectl get nodes

say "building the operator"
cargo build -q -p celery-operator

say "installing the CRDs"
target/debug/celery-operator crds | kubectl apply --server-side -f -
kubectl wait --for=condition=Established --timeout=60s crd -l '!nonexistent' >/dev/null

say "running the operator (logs in .e2e/operator.log)"
target/debug/celery-operator run >.e2e/operator.log 2>&1 &
pids+=($!)

say "applying the samples"
kubectl apply -f deploy/samples/
sleep 2

say "kubectl get celery"
kubectl get celery -o wide
if [ "${DEMO_ONESHOT:-}" = 1 ]; then exit 0; fi
say "watching; Ctrl-C stops everything"
kubectl get celery --watch
