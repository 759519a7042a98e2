#!/usr/bin/env bash
# Runs the end-to-end tests against a control plane of their own: brings it up in
# .e2e/test (apart from a `make cluster-up` cluster), runs the tests, and always brings it down.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export E2E_STATE=$repo/.e2e/test
. "$repo/e2e/common.sh"
on_exit '"$repo/e2e/cluster/down.sh" || true'
"$repo/e2e/cluster/up.sh"
export E2E_KUBECONFIG=$E2E_STATE/kubeconfig
E2E_KUBECTL=$("$repo/e2e/cluster/build.sh" bindir)/kubectl
E2E_VENV=$("$repo/e2e/venv.sh")
export E2E_KUBECTL E2E_VENV
cd "$repo"
# The operator runs as a host process in the tests, against CRDs installed once here.
cargo build -p celery-operator
"$E2E_KUBECTL" --kubeconfig "$E2E_KUBECONFIG" apply --server-side -f crds/ >/dev/null
"$E2E_KUBECTL" --kubeconfig "$E2E_KUBECONFIG" wait --for=condition=Established --timeout=60s -f crds/ >/dev/null
# Every test binary runs even after a failure, so one run shows every failure.
cargo test -p celery-operator-e2e --tests --no-fail-fast "$@"
