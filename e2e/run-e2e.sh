#!/usr/bin/env bash
# Runs the end-to-end tests against a control plane of their own: brings it up in
# .e2e/test (apart from a `make cluster-up` cluster), runs the tests, and always brings it down.
# The cluster has a real node (e2e/cluster/node.sh; E2E_REAL_NODE=0 leaves it out, and the
# `real_node_*` tests with it); the run fails if `down` leaves anything of the node behind.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export E2E_STATE=$repo/.e2e/test
export E2E_REAL_NODE=${E2E_REAL_NODE:-1}
. "$repo/e2e/common.sh"
on_exit '"$repo/e2e/cluster/down.sh" || true'
"$repo/e2e/cluster/up.sh"
export E2E_KUBECONFIG=$E2E_STATE/kubeconfig
E2E_KUBECTL=$("$repo/e2e/cluster/build.sh" bindir)/kubectl
E2E_VENV=$("$repo/e2e/venv.sh")
export E2E_KUBECTL E2E_VENV
if [ "$E2E_REAL_NODE" = 1 ]; then
  E2E_IMAGE_REDIS=$("$repo/e2e/cluster/images.sh" ref redis)
  E2E_IMAGE_CELERY_APP=$("$repo/e2e/cluster/images.sh" ref celery-app)
  E2E_IMAGE_OPERATOR=$("$repo/e2e/cluster/images.sh" ref operator)
  E2E_IMAGE_DJANGO_SITE=$("$repo/e2e/cluster/images.sh" ref django-site)
  export E2E_IMAGE_REDIS E2E_IMAGE_CELERY_APP E2E_IMAGE_OPERATOR E2E_IMAGE_DJANGO_SITE
else
  # Without the node its tests cannot run: leave them out, loudly.
  echo "[e2e] E2E_REAL_NODE=0: skipping the real_node_* tests" >&2
  case " $* " in *" -- "*) set -- "$@" --skip real_node_ ;; *) set -- "$@" -- --skip real_node_ ;; esac
fi
cd "$repo"
# The operator runs as a host process in the tests, against CRDs installed once here.
cargo build -p celery-operator
"$E2E_KUBECTL" --kubeconfig "$E2E_KUBECONFIG" apply --server-side -f crds/ >/dev/null
"$E2E_KUBECTL" --kubeconfig "$E2E_KUBECONFIG" wait --for=condition=Established --timeout=60s -f crds/ >/dev/null
# Every test binary runs even after a failure, so one run shows every failure.
status=0
cargo test -p celery-operator-e2e --tests --no-fail-fast "$@" || status=$?
# Down here rather than only on exit: its check that nothing of the node is left counts.
trap - EXIT
if ! "$repo/e2e/cluster/down.sh"; then
  echo "[e2e] cluster-down left something behind" >&2
  status=1
elif [ "$E2E_REAL_NODE" = 1 ]; then
  # ... and that check finds what it looks for.
  "$repo/e2e/cluster/node.sh" selftest || status=1
fi
exit "$status"
