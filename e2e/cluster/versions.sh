# Versions of the components the e2e harness builds (control plane, node). Sourced by the scripts.
# The cache key of each binary is its version, so bumping one rebuilds only that component.
KUBE_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
# Cluster DNS of the real node (e2e/cluster/node.sh).
COREDNS_VERSION=v1.15.0
# Where built binaries live, outside the work tree so clean clones (CI) reuse them.
E2E_CACHE=${CELERY_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/celery-operator}
