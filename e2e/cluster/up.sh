#!/usr/bin/env bash
# Starts a real local control plane as processes: etcd, kube-apiserver (TLS, RBAC, service
# account keys), kube-controller-manager, kube-scheduler, kwok with two fake Nodes, and a
# real node on this host (node.sh; E2E_REAL_NODE=0 leaves it out), onto which every pod goes
# that does not tolerate the fake nodes' taint. Writes the admin kubeconfig to
# .e2e/kubeconfig. Safe to run twice.
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

"$here/build.sh"
BIN=$("$here/build.sh" bindir)
export PATH="$BIN:$PATH"

all_alive() {
  local c
  for c in $COMPONENTS; do alive "$c" || return 1; done
  if real_node; then
    for c in $NODE_COMPONENTS; do alive "$c" || return 1; done
  fi
}
if [ -f "$KUBECONFIG_PATH" ] && all_alive &&
  kubectl --kubeconfig "$KUBECONFIG_PATH" get --raw /readyz >/dev/null 2>&1; then
  log "already up (KUBECONFIG=$KUBECONFIG_PATH)"
  exit 0
fi
if [ -d "$CLUSTER" ]; then
  log "found a stale cluster state; cleaning it first"
  "$here/down.sh"
fi

start=$SECONDS
mkdir -p "$CLUSTER"/{pki,pids,logs,etcd}
chmod 700 "$CLUSTER/etcd" "$CLUSTER/pki"
pki=$CLUSTER/pki

# --- certificates -----------------------------------------------------------------------
gen_key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }

openssl_cert() { # NAME SUBJECT [SAN]
  local name=$1 subj=$2 san=${3:-} ext
  gen_key "$pki/$name.key"
  openssl req -new -key "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
  ext=$pki/$name.ext
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ -n "$san" ]; then
      echo "extendedKeyUsage=serverAuth"
      echo "subjectAltName=$san"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 30 -sha256 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
}

gen_key "$pki/ca.key"
openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=celery-operator-e2e-ca" -days 30 \
  -sha256 -out "$pki/ca.crt" 2>/dev/null
openssl_cert apiserver "/CN=kube-apiserver" \
  "IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
openssl_cert admin "/O=system:masters/CN=kubernetes-admin"
openssl_cert controller-manager "/CN=system:kube-controller-manager"
openssl_cert scheduler "/CN=system:kube-scheduler"
openssl_cert kwok "/O=system:masters/CN=kwok-controller"
# The real node's identities, and the API server's for `kubectl logs/exec` through kubelets.
openssl_cert kubelet "/O=system:nodes/CN=system:node:celery-e2e-node"
openssl_cert kubelet-serving "/CN=celery-e2e-node" "IP:10.245.0.1,IP:127.0.0.1,DNS:celery-e2e-node"
openssl_cert kube-proxy "/CN=system:kube-proxy"
openssl_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null

# --- ports --------------------------------------------------------------------------------
read -r ETCD_PORT ETCD_PEER_PORT API_PORT CM_PORT SCHED_PORT KWOK_PORT <<<"$(free_ports 6)"
SERVER="https://127.0.0.1:$API_PORT"

kubeconfig() { # NAME -> writes $CLUSTER/NAME.kubeconfig with NAME's client cert
  local name=$1 out=$2
  cat >"$out" <<KC
apiVersion: v1
kind: Config
clusters:
- name: celery-operator-e2e
  cluster:
    server: $SERVER
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 "$pki/$name.crt")
    client-key-data: $(base64 -w0 "$pki/$name.key")
contexts:
- name: $name@celery-operator-e2e
  context:
    cluster: celery-operator-e2e
    user: $name
current-context: $name@celery-operator-e2e
KC
}
for n in admin controller-manager scheduler kwok kubelet kube-proxy; do kubeconfig "$n" "$CLUSTER/$n.kubeconfig"; done

# --- etcd ---------------------------------------------------------------------------------
launch etcd etcd --name e2e --data-dir "$CLUSTER/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "e2e=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync=true --log-level=warn
etcd_healthy() { python3 - "$ETCD_PORT" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1) as r:
    sys.exit(0 if b'"true"' in r.read() else 1)
PY
}
wait_for 60 etcd etcd_healthy || fail_start etcd

# --- kube-apiserver -----------------------------------------------------------------------
launch kube-apiserver kube-apiserver \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --authorization-mode Node,RBAC \
  --enable-admission-plugins PodNodeSelector,PodTolerationRestriction \
  --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types InternalIP,Hostname \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=true \
  --endpoint-reconciler-type none \
  --cert-dir "$CLUSTER/apiserver-certs"
admin=$CLUSTER/admin.kubeconfig
wait_for 120 kube-apiserver kubectl --kubeconfig "$admin" get --raw /readyz || fail_start kube-apiserver

# --- controller-manager, scheduler --------------------------------------------------------
launch kube-controller-manager kube-controller-manager \
  --kubeconfig "$CLUSTER/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$CLUSTER/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$CLUSTER/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$CM_PORT" --leader-elect=false \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --use-service-account-credentials=true \
  --enable-hostpath-provisioner=true \
  --cert-dir "$CLUSTER/controller-manager-certs"
launch kube-scheduler kube-scheduler \
  --kubeconfig "$CLUSTER/scheduler.kubeconfig" \
  --authentication-kubeconfig "$CLUSTER/scheduler.kubeconfig" \
  --authorization-kubeconfig "$CLUSTER/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --leader-elect=false \
  --cert-dir "$CLUSTER/scheduler-certs"

# --- kwok and fake nodes ------------------------------------------------------------------
KWOK_DIR=$E2E_CACHE/kwok-$KWOK_VERSION
launch kwok kwok --kubeconfig "$CLUSTER/kwok.kubeconfig" \
  --config "$KWOK_DIR/stages.yaml" \
  --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --cidr 10.244.0.0/16 --node-ip 127.0.0.1 --node-lease-duration-seconds 40 \
  --server-address "127.0.0.1:$KWOK_PORT"

k() { kubectl --kubeconfig "$admin" "$@"; }
k apply -f "$KWOK_DIR/storage-class.yaml" >/dev/null
# With a real node, the fake ones take only pods that tolerate their taint.
taints="[]"
if real_node; then taints='[{key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}]'; fi
for i in 0 1; do
  k apply -f - >/dev/null <<NODE
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
spec:
  taints: $taints
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
NODE
done
nodes_ready() {
  [ "$(k get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True)" -ge 2 ]
}
wait_for 120 nodes nodes_ready || fail_start kwok
sa_ready() { k -n default get serviceaccount default; }
wait_for 60 "default ServiceAccount" sa_ready || fail_start kube-controller-manager
alive kube-scheduler || fail_start kube-scheduler

if real_node; then
  API_PORT=$API_PORT "$here/node.sh" up || fail_start kubelet
fi

cp "$admin" "$KUBECONFIG_PATH.tmp" && mv "$KUBECONFIG_PATH.tmp" "$KUBECONFIG_PATH"
log "up in $((SECONDS - start))s: $SERVER, KUBECONFIG=$KUBECONFIG_PATH"
