#!/usr/bin/env bash
# The README's first command: a local cluster with a real node, the operator installed by its
# Helm chart from the locally built image, then a RedisCache, a WorkerPool and two
# PeriodicTasks; Redis, the Celery workers and the beat all run in pods. It ends with a worker
# pod executing the operator's periodic task, then follows the workers' log. Ctrl-C stops
# everything it started. DEMO_ONESHOT=1 stops after the first execution.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
. "$repo/e2e/common.sh"

# A control plane that was up before (`make cluster-up`) is left running afterwards.
own_cluster=1
cleanup() {
  say "stopping the demo"
  if [ "$own_cluster" = 1 ]; then e2e/cluster/down.sh || true; fi
}
on_exit cleanup
start=$SECONDS

say "building (first run only: ~25 min) and starting the local cluster with its real node"
BIN=$(e2e/cluster/build.sh bindir)
if [ -x "$BIN/kubectl" ] &&
  "$BIN/kubectl" --kubeconfig .e2e/kubeconfig get --raw /readyz >/dev/null 2>&1; then
  own_cluster=0
fi
E2E_REAL_NODE=1 e2e/cluster/up.sh
PATH="$BIN:$PATH"
export KUBECONFIG=$repo/.e2e/kubeconfig
kubectl get nodes

say "helm install: the chart's defaults (2 replicas, leader election, its RBAC), the local image"
operator=$(e2e/cluster/images.sh ref operator)
helm upgrade --install celery-operator charts/celery-operator -n celery-operator --create-namespace \
  --set image.repository="${operator%:*}" --set image.tag="${operator##*:}" --wait --timeout 180s
kubectl -n celery-operator get pods -o wide

say "kubectl apply: a RedisCache, a WorkerPool and two PeriodicTasks (e2e/demo/celery.yaml)"
sed -e "s|@REDIS_IMAGE@|$(e2e/cluster/images.sh ref redis)|" \
  -e "s|@APP_IMAGE@|$(e2e/cluster/images.sh ref celery-app)|" e2e/demo/celery.yaml |
  kubectl apply -f -
kubectl wait --for=condition=Ready --timeout=180s rediscache/broker workerpool/workers

say "waiting for a worker pod to execute the operator's periodic task"
executed() {
  kubectl logs -l app.kubernetes.io/name=celery-worker,app.kubernetes.io/instance=workers --tail=-1 --prefix 2>/dev/null |
    grep "Task tasks.record\[.*\] succeeded"
}
for _ in $(seq 1 120); do
  executed >/dev/null && break
  sleep 1
done
executed | tail -n 3 || {
  echo "no execution yet; the workers' log:" >&2
  kubectl logs -l app.kubernetes.io/name=celery-worker,app.kubernetes.io/instance=workers --tail=20 >&2 || true
  exit 1
}

say "kubectl get celery,pods (and the operator's pods)"
kubectl get celery,pods
kubectl -n celery-operator get pods
echo
echo "ready in $((SECONDS - start)) s. Try, in another shell:"
echo "  export KUBECONFIG=$KUBECONFIG PATH=$BIN:\$PATH"
echo "  kubectl annotate ptask heartbeat celeryoperator.io/run-now=\$(date +%s) --overwrite"
echo "  kubectl logs -n celery-operator -l app.kubernetes.io/instance=celery-operator"
if [ "${DEMO_ONESHOT:-}" = 1 ]; then exit 0; fi
say "following the workers (Ctrl-C stops everything)"
kubectl logs -f -l app.kubernetes.io/name=celery-worker,app.kubernetes.io/instance=workers --tail=0 --prefix | grep --line-buffered "tasks.record"
