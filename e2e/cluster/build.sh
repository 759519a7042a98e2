#!/usr/bin/env bash
# Builds (once) and caches the control-plane binaries from their Go modules:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, kwok, helm;
# `build.sh node` also the real node's kubelet, kube-proxy and CoreDNS.
# Prints nothing but progress on stderr; `build.sh bindir` prints the cache's bin directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tools=$(cd "$here/../tools" && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"

export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

log() { echo "[build] $*" >&2; }

# build_one NAME VERSION MODULE_DIR PACKAGE [LDFLAGS]
build_one() {
  local name=$1 version=$2 dir=$3 pkg=$4 ldflags=${5:-}
  local out="$E2E_CACHE/$name-$version/$name"
  if [ -x "$out" ]; then return 0; fi
  log "building $name $version (first time only; cached in $E2E_CACHE)"
  local start=$SECONDS tmp
  mkdir -p "$(dirname "$out")"
  tmp="$out.tmp.$$"
  (cd "$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$tmp" "$pkg")
  mv "$tmp" "$out"
  log "built $name in $((SECONDS - start))s"
}

kube_ldflags() {
  local v=${KUBE_VERSION#v} flags="" pkg
  local major=${v%%.*} rest=${v#*.}
  local minor=${rest%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

bindir() {
  # One directory of symlinks so callers can put every tool on PATH at once.
  local d="$E2E_CACHE/bin-$KUBE_VERSION-$ETCD_VERSION-$KWOK_VERSION-$HELM_VERSION"
  mkdir -p "$d"
  local c
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    ln -sf "$E2E_CACHE/$c-$KUBE_VERSION/$c" "$d/$c"
  done
  ln -sf "$E2E_CACHE/etcd-$ETCD_VERSION/etcd" "$d/etcd"
  ln -sf "$E2E_CACHE/kwok-$KWOK_VERSION/kwok" "$d/kwok"
  ln -sf "$E2E_CACHE/helm-$HELM_VERSION/helm" "$d/helm"
  # The node's binaries, linked whether built yet or not (`build.sh node` builds them).
  for c in kubelet kube-proxy; do
    ln -sf "$E2E_CACHE/$c-$KUBE_VERSION/$c" "$d/$c"
  done
  ln -sf "$E2E_CACHE/coredns-$COREDNS_VERSION/coredns" "$d/coredns"
  echo "$d"
}

# check_pin DIR MODULE VERSION: the wrapper module builds exactly the version whose name the
# cache key and the version ldflags carry; a bump in only one of the two files is refused.
check_pin() {
  local dir=$1 module=$2 version=$3
  if ! grep -Eq "^[[:space:]]+$module $version( |\$)" "$dir/go.mod"; then
    echo "build.sh: $dir/go.mod does not require $module $version (e2e/cluster/versions.sh);" \
      "bump both together (for Kubernetes: e2e/cluster/gen-kube-gomod.sh)" >&2
    exit 1
  fi
}

main() {
  command -v go >/dev/null || { echo "build.sh: Go is required (see README prerequisites)" >&2; exit 1; }
  check_pin "$tools/kubernetes" k8s.io/kubernetes "$KUBE_VERSION"
  check_pin "$tools/kubernetes" "k8s.io/api => k8s.io/api" "v0.${KUBE_VERSION#v1.}"
  check_pin "$tools/etcd" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
  check_pin "$tools/kwok" sigs.k8s.io/kwok "$KWOK_VERSION"
  check_pin "$tools/helm" helm.sh/helm/v3 "$HELM_VERSION"
  check_pin "$tools/coredns" github.com/coredns/coredns "$COREDNS_VERSION"
  local lf
  lf=$(kube_ldflags)
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    build_one "$c" "$KUBE_VERSION" "$tools/kubernetes" "k8s.io/kubernetes/cmd/$c" "$lf"
  done
  build_one etcd "$ETCD_VERSION" "$tools/etcd" go.etcd.io/etcd/server/v3
  build_one kwok "$KWOK_VERSION" "$tools/kwok" sigs.k8s.io/kwok/cmd/kwok
  build_one helm "$HELM_VERSION" "$tools/helm" helm.sh/helm/v3/cmd/helm \
    "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  kwok_stages
  bindir >/dev/null
}

# The real node (e2e/cluster/node.sh): kubelet and kube-proxy from the same wrapper module and
# version as the control plane, CoreDNS from its own.
node() {
  main
  local lf c
  lf=$(kube_ldflags)
  for c in kubelet kube-proxy; do
    build_one "$c" "$KUBE_VERSION" "$tools/kubernetes" "k8s.io/kubernetes/cmd/$c" "$lf"
  done
  build_one coredns "$COREDNS_VERSION" "$tools/coredns" github.com/coredns/coredns
}

# kwok acts only through Stage objects; take upstream's fast stages from the module itself.
kwok_stages() {
  local out="$E2E_CACHE/kwok-$KWOK_VERSION/stages.yaml"
  [ -s "$out" ] && return 0
  local src f
  src=$(cd "$tools/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage
  {
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
      pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml \
      volume/fast/pv-bind.yaml volume/fast/pv-delete.yaml volume/fast/pvc-provision.yaml \
      volume/fast/pvc-delete.yaml; do
      echo "---"
      cat "$src/$f"
    done
  } >"$out.tmp"
  mv "$out.tmp" "$out"
  cp "$src/volume/fast/storage-class.yaml" "$E2E_CACHE/kwok-$KWOK_VERSION/storage-class.yaml"
}

case "${1:-all}" in
  bindir) bindir ;;
  all) main ;;
  node) node ;;
  *) echo "usage: build.sh [all|node|bindir]" >&2; exit 2 ;;
esac
