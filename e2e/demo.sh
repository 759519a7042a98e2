#!/usr/bin/env bash
# The README's first command: a local cluster with a real node, the operator installed by its
# Helm chart from the locally built image, then a RedisCache, a WorkerPool and two
# PeriodicTasks; Redis, the Celery workers and the beat all run in pods. It ends with a worker
# pod executing the operator's periodic task, then follows the workers' log. Ctrl-C stops
# everything it started. DEMO_ONESHOT=1 stops after the first execution.
# EXAMPLE=django-site runs the example Django site (examples/django-site) instead: its cache
# and broker, its workers, its refreshes on schedule, a signup whose mail is retried.
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
case "${EXAMPLE:-}" in
  "" | django-site) ;;
  *)
    echo "make demo: unknown EXAMPLE=$EXAMPLE (known: django-site)" >&2
    exit 2
    ;;
esac
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

if [ "${EXAMPLE:-}" = django-site ]; then
  say "kubectl apply: the Django site (examples/django-site/k8s/site.yaml) in namespace shop"
  kubectl create namespace shop --dry-run=client -o yaml | kubectl apply -f -
  sed -e "s|@SITE_IMAGE@|$(e2e/cluster/images.sh ref django-site)|" \
    -e "s|@REDIS_IMAGE@|$(e2e/cluster/images.sh ref redis)|" examples/django-site/k8s/site.yaml |
    kubectl apply -n shop -f -
  kubectl wait -n shop --for=condition=Ready --timeout=180s rcache/cache rcache/broker wpool/site-workers
  kubectl wait -n shop --for=condition=Available --timeout=180s deployment/web deployment/smtp
  # The site's own HTTP client, inside its pod: no port-forward needed.
  site() { kubectl exec -n shop deploy/web -- python3 -c \
    "import sys, urllib.request; print(urllib.request.urlopen('http://localhost:8000' + sys.argv[1]).read().decode())" "$1"; }

  say "the ranking a worker computed and cached, pushed by the operator (every 30 s)"
  for _ in $(seq 1 90); do
    # "computed_at": null until the first slot has run.
    ranking=$(site /ranking/ 2>/dev/null) && grep -q '"computed_at": "' <<<"$ranking" && break
    sleep 1
  done
  echo "$ranking"
  say "a signup answers at once; its mail is refused once by the SMTP server and retried"
  site "/signup/?email=visitor@example.com"
  for _ in $(seq 1 60); do
    kubectl logs -n shop deploy/smtp | grep -q "DELIVERED to=visitor@example.com" && break
    sleep 1
  done
  kubectl logs -n shop deploy/smtp | grep "to=visitor@example.com"

  say "kubectl get celery,pods -n shop"
  kubectl get celery,pods -n shop
  echo
  echo "ready in $((SECONDS - start)) s. Try, in another shell (examples/django-site/README.md):"
  echo "  export KUBECONFIG=$KUBECONFIG PATH=$BIN:\$PATH"
  echo "  kubectl annotate -n shop ptask refresh-ranking celeryoperator.io/run-now=\$(date +%s) --overwrite"
  if [ "${DEMO_ONESHOT:-}" = 1 ]; then exit 0; fi
  say "following the workers (Ctrl-C stops everything)"
  kubectl logs -n shop -f deploy/site-workers --tail=0 | grep --line-buffered "shop.tasks"
  exit 0
fi

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
