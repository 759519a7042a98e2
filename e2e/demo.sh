#!/usr/bin/env bash
# The README's first command: a local control plane, the chart, a real Redis and a real Celery
# worker, the operator, and the samples; then the worker executing the operator's periodic
# task. Ctrl-C stops everything it started. DEMO_ONESHOT=1 stops after the first execution.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
. "$repo/e2e/common.sh"

pids=()
work=$repo/.e2e/demo
# A control plane that was up before (`make cluster-up`) is left running afterwards.
own_cluster=1
cleanup() {
  say "stopping the demo"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$own_cluster" = 1 ]; then e2e/cluster/down.sh || true; fi
}
on_exit cleanup
mkdir -p "$work"

say "building (first run only: ~13 min) and starting the local control plane"
BIN=$(e2e/cluster/build.sh bindir)
if [ -x "$BIN/kubectl" ] &&
  "$BIN/kubectl" --kubeconfig .e2e/kubeconfig get --raw /readyz >/dev/null 2>&1; then
  own_cluster=0
fi
e2e/cluster/up.sh
PATH="$BIN:$PATH"
export KUBECONFIG=$repo/.e2e/kubeconfig
kubectl get nodes

say "installing the chart (CRDs, RBAC; the operator itself runs on this host, so 0 in-cluster replicas)"
helm upgrade --install celery-operator charts/celery-operator -n celery-operator --create-namespace \
  --set replicaCount=0 --wait
kubectl wait --for=condition=Established --timeout=60s -f charts/celery-operator/crds/ >/dev/null

say "starting a real Redis and a real Celery worker (pods here are simulated by kwok)"
venv=$(e2e/venv.sh)
read -r redis_port metrics_port <<<"$(free_ports 2)"
password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
redis-server --port "$redis_port" --bind 127.0.0.1 --requirepass "$password" --save '' \
  --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
broker_url="redis://:$password@127.0.0.1:$redis_port/0"
kubectl create secret generic demo-broker --from-literal=url="$broker_url" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
(cd e2e/app && CELERY_BROKER_URL=$broker_url exec "$venv/bin/celery" -A tasks worker \
  --loglevel=INFO --queues=celery --concurrency=2 --pool=threads) >"$work/worker.log" 2>&1 &
pids+=($!)

say "building and running the operator (log: .e2e/demo/operator.log, metrics: see below)"
cargo build -q -p celery-operator
"${CARGO_TARGET_DIR:-target}/debug/celery-operator" run --leader-election --lease-namespace celery-operator \
  --metrics-addr "127.0.0.1:$metrics_port" >"$work/operator.log" 2>&1 &
pids+=($!)

say "applying the samples and the demo's periodic tasks"
kubectl apply -f deploy/samples/rediscache.yaml -f deploy/samples/workerpool.yaml
kubectl apply -f e2e/demo/periodictasks.yaml
kubectl wait --for=condition=Ready --timeout=60s rediscache/broker workerpool/default

say "waiting for the worker to execute the operator's periodic task"
for _ in $(seq 1 120); do
  grep -q "Task tasks.record\[.*\] succeeded" "$work/worker.log" && break
  sleep 1
done
grep "Task tasks.record\[.*\] succeeded" "$work/worker.log" | tail -n 3 || {
  echo "no execution yet; worker log:" >&2
  tail -n 20 "$work/worker.log" >&2
  exit 1
}

say "kubectl get celery"
kubectl get celery
echo
echo "metrics: curl -s http://127.0.0.1:$metrics_port/metrics | grep celery_operator_"
echo "try:     KUBECONFIG=$KUBECONFIG PATH=$BIN:\$PATH kubectl annotate ptask heartbeat celeryoperator.io/run-now=\$(date +%s)"
if [ "${DEMO_ONESHOT:-}" = 1 ]; then exit 0; fi
say "following the worker (Ctrl-C stops everything)"
tail -n 0 -f "$work/worker.log" | grep --line-buffered "tasks.record"
