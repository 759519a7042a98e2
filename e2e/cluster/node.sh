#!/usr/bin/env bash
# The real node beside the control plane, on this host (modelled on Kubernetes'
# hack/local-up-cluster.sh): containerd + runc, kubelet, kube-proxy, the CNI bridge, CoreDNS
# and a default hostPath StorageClass. Called by up.sh and down.sh; state under $CLUSTER/node.
#
#   node.sh up      start it (the control plane must be up; up.sh passes API_PORT)
#   node.sh down    stop everything it started and undo what it changed on the machine
#   node.sh check   list what of the node is left on the machine; fails if anything is
#   node.sh make-room   take back what a killed run's node left (as `up` does first)
#
# Networking stays on this machine: pods live on the bridge celery-e2e0 (10.245.0.0/24),
# Services in 10.0.0.0/24; nothing is masqueraded, and the harness's own iptables chains
# reject any packet of those ranges that would leave through another interface.
set -uo pipefail
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

NODE=$CLUSTER/node
NODE_NAME=celery-e2e-node
BRIDGE=celery-e2e0
POD_CIDR=10.245.0.0/24
BRIDGE_IP=10.245.0.1
SERVICE_CIDR=10.0.0.0/24
DNS_IP=10.0.0.10
CGROUP=celery-e2e
# What the machine looked like before `up` (host paths, kernel settings): kept beside the
# cluster's state until `check` has compared the machine with it after `down`.
RECORD=$STATE/node-record
SOCK=$NODE/containerd.sock
CNI_BIN=/usr/lib/cni
HOSTPATH_PV=/tmp/hostpath_pv
# Every image the node's pods use, the operator's included (the chart runs it in the cluster).
NODE_IMAGES="pause coredns redis celery-app django-site operator"
# Host paths the runtime and the kubelet use whatever their configuration says; `down` removes
# what of them did not exist before `up`.
HOST_DIRS="/run/containerd /var/lib/cni /run/netns /var/log/containers $HOSTPATH_PV"
# Kernel settings the node changes (the kubelet's kernel tunables, forwarding for the bridge);
# `up` records them and `down` puts them back.
SYSCTLS="net.ipv4.ip_forward vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
kernel.keys.root_maxkeys kernel.keys.root_maxbytes"

# --- up -----------------------------------------------------------------------------------
record_host() {
  local d s
  # A record left by a `down` whose check failed still tells what the machine was before.
  [ -d "$RECORD" ] && return 0
  mkdir -p "$RECORD"
  for d in $HOST_DIRS; do
    if [ -e "$d" ]; then
      echo "$d" >>"$RECORD/dirs"
      ls -A "$d" >"$RECORD/$(echo "$d" | tr / _).ls" 2>/dev/null || true
    fi
  done
  touch "$RECORD/dirs"
  for s in $SYSCTLS; do echo "$s=$(sysctl -n "$s")"; done >"$RECORD/sysctl"
}

# Pods' cgroups live under /celery-e2e in every v1 hierarchy (kubelet cgroupRoot).
make_cgroups() {
  local h
  for h in /sys/fs/cgroup/*/; do
    [ -f "$h/cgroup.procs" ] || continue
    mkdir -p "$h$CGROUP"
    if [ -f "$h/cpuset.cpus" ]; then
      cat "$h/cpuset.cpus" >"$h$CGROUP/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h$CGROUP/cpuset.mems"
    fi
  done
}

# The harness's guard: packets of the pod or Service ranges never leave by another interface.
guard_iptables() {
  iptables -N CELERY-E2E-FORWARD
  iptables -A CELERY-E2E-FORWARD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
  iptables -A CELERY-E2E-FORWARD -i "$BRIDGE" -j REJECT
  iptables -A CELERY-E2E-FORWARD -o "$BRIDGE" -j REJECT
  iptables -I FORWARD 1 -j CELERY-E2E-FORWARD
  # After every address translation (POSTROUTING sees the final output interface; filter
  # OUTPUT does not see the route a Service's DNAT chose): nothing of the pod or Service
  # ranges leaves by another interface than the bridge; the host's own addresses are on lo.
  iptables -t mangle -N CELERY-E2E-POSTROUTING
  iptables -t mangle -A CELERY-E2E-POSTROUTING -o lo -j RETURN
  iptables -t mangle -A CELERY-E2E-POSTROUTING -d "$POD_CIDR" ! -o "$BRIDGE" -j DROP
  iptables -t mangle -A CELERY-E2E-POSTROUTING -s "$POD_CIDR" ! -o "$BRIDGE" -j DROP
  # A Service address kube-proxy did not translate would go to the default route.
  iptables -t mangle -A CELERY-E2E-POSTROUTING -d "$SERVICE_CIDR" -j DROP
  iptables -t mangle -I POSTROUTING 1 -j CELERY-E2E-POSTROUTING
}

write_configs() {
  local pki=$CLUSTER/pki
  mkdir -p "$NODE"/{containerd/root,containerd/state,containerd/opt,runc,cni/net.d,cni/ipam,kubelet,pod-logs,volume-plugins}
  cat >"$NODE/containerd.toml" <<EOF
version = 2
root = "$NODE/containerd/root"
state = "$NODE/containerd/state"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$("$here/images.sh" ref pause)"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # This VM refuses a lower oom_score_adj than the runtime's own; containers keep theirs.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$NODE/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$NODE/cni/net.d"
    max_conf_num = 1
EOF
  cat >"$NODE/cni/net.d/10-celery-e2e.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "celery-e2e",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$NODE/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$BRIDGE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  # Pods with dnsPolicy Default get this instead of the host's resolvers: nothing off the host.
  echo "nameserver $DNS_IP" >"$NODE/resolv.conf"
  cat >"$NODE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Reached by the API server (kubectl logs/exec) at the node IP, on the bridge.
address: $BRIDGE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$SOCK
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP
# This host has cgroup v1 (hybrid); kubelet 1.35+ refuses v1 unless told.
failCgroupV1: false
failSwapOn: false
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: $NODE/resolv.conf
podLogsDir: $NODE/pod-logs
volumePluginDir: $NODE/volume-plugins
registerNode: true
maxPods: 50
serializeImagePulls: false
# The images are imported, never pulled: never garbage-collect them, never evict for disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
EOF
  cat >"$NODE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $CLUSTER/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
mode: iptables
clusterCIDR: $POD_CIDR
detectLocalMode: ClusterCIDR
nodePortAddresses: [$BRIDGE_IP/32]
oomScoreAdj: 0
iptables:
  masqueradeAll: false
  localhostNodePorts: false
  syncPeriod: 30s
  minSyncPeriod: 0s
# Leave the host's conntrack settings alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

k() { kubectl --kubeconfig "$CLUSTER/admin.kubeconfig" "$@"; }

node_ready() {
  [ "$(k get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

# Pods reach the API server as the `kubernetes` Service, whose endpoint is this proxy on the
# bridge (the API server itself listens on 127.0.0.1 only).
api_endpoints() {
  k apply -f - >/dev/null <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes-e2e
  namespace: default
  labels:
    kubernetes.io/service-name: kubernetes
    endpointslice.kubernetes.io/managed-by: celery-operator-e2e
addressType: IPv4
endpoints:
- addresses: [$BRIDGE_IP]
  conditions: {ready: true}
ports:
- {name: https, port: $API_PORT, protocol: TCP}
EOF
}

cluster_objects() {
  # The node's own RBAC: the kubelet's identity may do what a node does.
  k apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "celery-e2e:node"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:node"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:node:$NODE_NAME"}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF
  k annotate storageclass kwok-volume storageclass.kubernetes.io/is-default-class=false --overwrite >/dev/null
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "celery-e2e:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "celery-e2e:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "celery-e2e:coredns"}
subjects:
- {kind: ServiceAccount, name: coredns, namespace: kube-system}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  # Only the cluster's own names; everything else is NXDOMAIN, never forwarded off the host.
  Corefile: |
    cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }
        cache 5
    }
    .:53 {
        errors
        template ANY ANY {
            rcode NXDOMAIN
        }
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      nodeSelector: {kubernetes.io/hostname: $NODE_NAME}
      securityContext:
        runAsNonRoot: true
        # Port 53 as uid 65532, without file capabilities in the image.
        sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: "0"}]
      containers:
      - name: coredns
        image: $("$here/images.sh" ref coredns)
        imagePullPolicy: IfNotPresent
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        readinessProbe: {httpGet: {path: /ready, port: 8181}, periodSeconds: 2}
        livenessProbe: {httpGet: {path: /health, port: 8080}, periodSeconds: 10, failureThreshold: 5}
        securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true}
        resources: {requests: {cpu: 10m, memory: 32Mi}, limits: {memory: 128Mi}}
        volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $DNS_IP
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
EOF
}

up() {
  [ -n "${API_PORT:-}" ] || die "node.sh up: API_PORT is not set (up.sh starts the node)"
  make_room || exit 1
  local start=$SECONDS t
  for c in containerd ctr runc socat iptables "$CNI_BIN/bridge"; do
    command -v "$c" >/dev/null || die "node: $c is missing (make deps)"
  done
  BIN=$("$here/build.sh" bindir)
  export PATH="$BIN:$PATH"
  "$here/build.sh" node
  t=$SECONDS
  "$here/images.sh" build $NODE_IMAGES
  log "images ready in $((SECONDS - t))s"

  mkdir -p "$NODE"
  record_host
  read -r KUBELET_PORT KUBELET_HEALTHZ_PORT PROXY_HEALTHZ_PORT PROXY_METRICS_PORT <<<"$(free_ports 4)"
  write_configs
  make_cgroups
  ip link add "$BRIDGE" type bridge
  ip addr add "$BRIDGE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  guard_iptables
  # Pod → Service → pod on the same bridge needs the bridge's frames to pass iptables.
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.ipv4.ip_forward=1

  # No registry is ever reached: a pull of anything not imported fails at once, locally.
  t=$SECONDS
  launch containerd env HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY='' \
    containerd --config "$NODE/containerd.toml"
  wait_for 30 containerd ctr -a "$SOCK" version || fail_start containerd
  "$here/images.sh" import "$SOCK" $NODE_IMAGES
  log "containerd up, images imported in $((SECONDS - t))s"

  launch socat socat "TCP-LISTEN:$API_PORT,bind=$BRIDGE_IP,fork,reuseaddr" "TCP:127.0.0.1:$API_PORT"
  launch kubelet kubelet --config "$NODE/kubelet.yaml" \
    --kubeconfig "$CLUSTER/kubelet.kubeconfig" --root-dir "$NODE/kubelet" \
    --cert-dir "$NODE/kubelet/pki" --hostname-override "$NODE_NAME" --node-ip "$BRIDGE_IP" \
    --node-labels type=real
  launch kube-proxy kube-proxy --config "$NODE/kube-proxy.yaml"
  launch hostpath-modes "$here/node.sh" hostpath-modes "$NODE"
  wait_for 120 "node $NODE_NAME" node_ready || fail_start kubelet
  api_endpoints
  cluster_objects
  coredns_ready() {
    [ "$(k -n kube-system get deploy coredns -o jsonpath='{.status.readyReplicas}')" = 1 ]
  }
  wait_for 120 CoreDNS coredns_ready || {
    k -n kube-system describe pods -l k8s-app=kube-dns | tail -20 >&2
    fail_start kubelet
  }
  log "node up in $((SECONDS - start))s"
}

# The controller-manager's hostPath provisioner makes each volume a 0750 root directory, where
# a non-root pod (Redis runs as uid 999) cannot write, and hostPath ignores fsGroup. Real
# clusters' storage honours fsGroup, and kind's local-path provisioner makes 0777 directories:
# do what kind does, for each new volume.
hostpath_modes() {
  while :; do
    [ -d "$HOSTPATH_PV" ] &&
      find "$HOSTPATH_PV" -mindepth 1 -maxdepth 1 -type d ! -perm 0777 -exec chmod 0777 {} +
    sleep 0.2
  done
}

# --- down ---------------------------------------------------------------------------------
stop_component() { # NAME: TERM its process group, KILL after 20 s
  local name=$1 f=$CLUSTER/pids/$1.pid pid deadline
  [ -f "$f" ] || return 0
  if alive "$name"; then
    pid=$(cat "$f")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    deadline=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# Processes of the node: the runtime's shims (they leave containerd's process group) and
# everything in the pods' cgroups.
node_pids() {
  local p c
  for p in /proc/[0-9]*; do
    c=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    [[ $c == *"$SOCK"* ]] && echo "${p#/proc/}"
  done
  find /sys/fs/cgroup/*/"$CGROUP" -name cgroup.procs -exec cat {} + 2>/dev/null
}

remove_cgroups() {
  local h
  for h in /sys/fs/cgroup/*/"$CGROUP"; do
    [ -d "$h" ] || continue
    find "$h" -depth -type d -exec rmdir {} + 2>/dev/null
  done
}

# Our pods' network namespaces: those whose eth0 has an address on the pod range.
our_netns() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
    ip netns exec "$ns" ip -4 -o addr show 2>/dev/null | grep -q " ${POD_CIDR%.*}\." && echo "$ns"
  done
}

# Chains named KUBE-* (kubelet, kube-proxy), CNI-* (portmap) and CELERY-E2E-* (ours).
our_chain() { grep -Eq '^(KUBE-|CNI-|CELERY-E2E-)' <<<"$1"; }

clean_iptables() {
  local ipt t chain rule
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for t in filter nat mangle raw; do
      "$ipt" -t "$t" -S >/dev/null 2>&1 || continue
      # Jumps from the built-in chains first, then the chains themselves.
      "$ipt" -t "$t" -S | grep -E -- '^-A [A-Z]+ .*-j (KUBE-|CNI-|CELERY-E2E-)' | while read -r rule; do
        chain=$(awk '{print $2}' <<<"$rule")
        our_chain "$chain" && continue
        # shellcheck disable=SC2086
        eval "$ipt -t $t -D ${rule#-A }" 2>/dev/null
      done
      for chain in $("$ipt" -t "$t" -S | awk '$1 == "-N" {print $2}'); do
        our_chain "$chain" && "$ipt" -t "$t" -F "$chain"
      done
      for chain in $("$ipt" -t "$t" -S | awk '$1 == "-N" {print $2}'); do
        our_chain "$chain" && "$ipt" -t "$t" -X "$chain"
      done
    done
  done
}

down() {
  local pid m
  # Nothing of a node was ever started with this state (or it is gone already).
  [ -d "$NODE" ] || return 0
  stop_component kubelet
  stop_component kube-proxy
  stop_component socat
  stop_component hostpath-modes
  # Pods' containers first through the runtime (it tears their network down), then the
  # runtime; whatever survives is killed by its cgroup.
  if [ -S "$SOCK" ] && command -v ctr >/dev/null; then
    for c in $(ctr -a "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$SOCK" -n k8s.io tasks kill -s KILL "$c" >/dev/null 2>&1
    done
  fi
  stop_component containerd
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    pid=$(node_pids | sort -u)
    [ -n "$pid" ] || break
    # shellcheck disable=SC2086
    kill -KILL $pid 2>/dev/null
    sleep 0.3
  done
  release_machine
  # Mounts under the node's state (kubelet volumes, containerd's overlays), deepest first.
  for _ in 1 2 3; do
    m=$(awk -v p="$NODE/" 'index($2, p) == 1 {print $2}' /proc/self/mounts | sort -r)
    [ -n "$m" ] || break
    for d in $m; do umount "$d" 2>/dev/null || umount -l "$d" 2>/dev/null; done
  done
  if awk -v p="$NODE/" 'index($2, p) == 1' /proc/self/mounts | grep -q .; then
    log "node: mounts are left under $NODE; not removing it"
    return 1
  fi
  rm -rf --one-file-system "$NODE"
}

# What a node changed on the machine outside its state directory, undone once none of its
# processes runs: pods' cgroups and network namespaces, the bridge, the chains, and (from
# $RECORD, when there is one) kernel settings and host paths.
release_machine() {
  local ns d s v
  remove_cgroups
  for ns in $(our_netns); do ip netns delete "$ns" 2>/dev/null; done
  for d in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link delete "$d" 2>/dev/null
  done
  ip link delete "$BRIDGE" 2>/dev/null
  clean_iptables
  if [ -f "$RECORD/sysctl" ]; then
    while IFS='=' read -r s v; do sysctl -qw "$s=$v" 2>/dev/null; done <"$RECORD/sysctl"
  fi
  # Host paths the runtime and kubelet use: those that were not there before `up` go; in
  # those that were, what the node added (log links, volumes, CNI results) goes.
  if [ -f "$RECORD/dirs" ]; then
    for d in $HOST_DIRS; do
      [ -e "$d" ] || continue
      if ! grep -qx "$d" "$RECORD/dirs"; then
        rm -rf --one-file-system "$d"
      elif [ "$d" = /var/log/containers ] || [ "$d" = "$HOSTPATH_PV" ]; then
        comm -13 <(sort "$RECORD/$(echo "$d" | tr / _).ls") <(ls -A "$d" | sort) |
          while read -r e; do rm -rf --one-file-system "${d:?}/$e"; done
      fi
    done
    rm -f /var/lib/cni/results/celery-e2e-*
  fi
  return 0
}

# Processes of a real node of any checkout on this machine: its runtime, shims and kubelet
# (their command lines name its state directory) and whatever runs in the pods' cgroups.
live_node_pids() {
  local p c
  for p in /proc/[0-9]*; do
    c=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    [[ $c =~ /cluster/node/(containerd\.toml|containerd\.sock|kubelet|kube-proxy\.yaml) ]] &&
      echo "${p#/proc/}"
  done
  find /sys/fs/cgroup/*/"$CGROUP" -name cgroup.procs -exec cat {} + 2>/dev/null
}

# The state directories of nodes that still hold mounts, this checkout's or another's
# (<checkout>/.e2e[/<run>]/cluster/node).
mounted_nodes() {
  awk '{print $2}' /proc/self/mounts | sed -En 's#^(/.*/\.e2e(/[^/]+)?/cluster/node)/.*#\1#p' | sort -u
}

# Whether anything of a node is on the machine: bridge, cgroups, mounts, pods' namespaces or
# the harness's chains (what `up` would otherwise trip over).
node_traces() {
  ip link show "$BRIDGE" >/dev/null 2>&1 || [ -d "/sys/fs/cgroup/pids/$CGROUP" ] ||
    [ -n "$(mounted_nodes)" ] || [ -n "$(our_netns)" ] ||
    iptables -S 2>/dev/null | grep -q -- '^-N CELERY-E2E-'
}

# One real node per machine: its bridge, chains and cgroups have fixed names. A node that runs
# (from this checkout or another) is left alone and `up` fails. A node whose processes are all
# gone (its run was killed before its cleanup: a session that ended, kill -9) left the bridge,
# chains, cgroups, pods' network namespaces and mounts behind: they are taken back.
make_room() {
  local pids d
  node_traces || return 0
  pids=$(live_node_pids | sort -u | tr '\n' ' ')
  if [ -n "$pids" ]; then
    log "error: another real node runs on this machine (bridge $BRIDGE, processes $pids);" \
      "bring its cluster down first (e2e/cluster/down.sh in its checkout)"
    return 1
  fi
  log "a real node whose run was killed left its bridge, chains or cgroups behind; none of" \
    "its processes runs: taking them back"
  for d in $(mounted_nodes); do
    # That node's own cleanup, with its state (and its record of the machine before it).
    (
      NODE=$d CLUSTER=${d%/node}
      STATE=${CLUSTER%/cluster} SOCK=$d/containerd.sock
      RECORD=$STATE/node-record
      down
    ) || log "the node at $d kept some mounts"
  done
  release_machine
  if node_traces; then
    log "error: could not take back what the killed node left:"
    check
    return 1
  fi
}

# --- check --------------------------------------------------------------------------------
check() {
  local left=() p c d t ipt
  for p in /proc/[0-9]*; do
    c=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    [[ $c == *"$NODE"* ]] && left+=("process ${p#/proc/}: $c")
  done
  for p in $(find /sys/fs/cgroup/*/"$CGROUP" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u); do
    left+=("process $p in the pods' cgroups")
  done
  while read -r d; do left+=("mount $d"); done < <(awk -v p="$NODE/" 'index($2, p) == 1 {print $2}' /proc/self/mounts)
  while read -r d; do left+=("mount $d"); done < <(awk '$2 ~ "^/run/netns/cni-" {print $2}' /proc/self/mounts)
  ip link show "$BRIDGE" >/dev/null 2>&1 && left+=("interface $BRIDGE")
  while read -r d; do [ -n "$d" ] && left+=("interface $d"); done < <(ip -o link show type veth 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1)
  for ns in $(our_netns); do left+=("network namespace $ns"); done
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for t in filter nat mangle raw; do
      while read -r d; do left+=("$ipt chain $t/$d"); done < <("$ipt" -t "$t" -S 2>/dev/null | awk '$1 == "-N" {print $2}' | grep -E '^(KUBE-|CNI-|CELERY-E2E-)')
    done
  done
  for d in /sys/fs/cgroup/*/"$CGROUP"; do [ -d "$d" ] && left+=("cgroup $d"); done
  [ -e "$NODE" ] && left+=("directory $NODE")
  if [ -d "$RECORD" ]; then
    for d in $HOST_DIRS; do
      if [ -e "$d" ] && ! grep -qx "$d" "$RECORD/dirs"; then left+=("directory $d"); fi
    done
    while IFS='=' read -r d c; do
      [ "$(sysctl -n "$d")" = "$c" ] || left+=("sysctl $d=$(sysctl -n "$d") (was $c)")
    done <"$RECORD/sysctl"
  fi
  if [ "${#left[@]}" -gt 0 ]; then
    printf '[cluster] left behind by the node: %s\n' "${left[@]}" >&2
    return 1
  fi
  rm -rf "$RECORD"
  log "node check: no process, mount, interface, iptables chain, network namespace, cgroup," \
    "directory or kernel setting left"
}

# The check must see what it looks for: with no node up, plant a bridge of the node's name, a
# chain of the harness's and a pods' cgroup, and the check must name all three and fail.
selftest() {
  local out rc=0
  # Only on a clean machine: what it plants, it removes, and nothing else.
  check >/dev/null 2>&1 || die "node.sh selftest: the machine is not clean (node.sh check)"
  ip link add "$BRIDGE" type bridge || die "selftest: cannot plant a bridge"
  iptables -N CELERY-E2E-SELFTEST || { ip link delete "$BRIDGE"; die "selftest: cannot plant a chain"; }
  mkdir /sys/fs/cgroup/pids/"$CGROUP" || die "selftest: cannot plant a cgroup"
  out=$(check 2>&1) || rc=$?
  ip link delete "$BRIDGE"
  iptables -X CELERY-E2E-SELFTEST
  rmdir /sys/fs/cgroup/pids/"$CGROUP"
  [ "$rc" -ne 0 ] || die "node check passed with leftovers planted: $out"
  for want in "interface $BRIDGE" "chain filter/CELERY-E2E-SELFTEST" "cgroup /sys/fs/cgroup/pids/$CGROUP"; do
    grep -qF "$want" <<<"$out" || die "node check did not name '$want': $out"
  done
  check >/dev/null 2>&1 || die "node check failed once the planted leftovers were gone"
  log "node check selftest: planted leftovers found, none after removing them"
  selftest_make_room
}

# What a run killed before its cleanup leaves (another checkout's node with a pod: its state
# mounted, the pod's network namespace on the bridge, chains, cgroups) is taken back by `up`;
# the same with a process still in the pods' cgroups is a node that runs: `up` refuses.
selftest_make_room() {
  local other pid rc
  other=$(mktemp -d /tmp/celery-e2e-selftest.XXXXXX)
  mkdir -p "$other/.e2e/test/cluster/node/kubelet/pods/p1" "$other/.e2e/test/node-record"
  mount -t tmpfs tmpfs "$other/.e2e/test/cluster/node/kubelet/pods/p1" || die "selftest: cannot plant a mount"
  ip link add "$BRIDGE" type bridge
  ip netns add celery-e2e-selftest
  ip link add celery-e2e-st0 type veth peer name eth0 netns celery-e2e-selftest
  ip link set celery-e2e-st0 master "$BRIDGE"
  ip netns exec celery-e2e-selftest ip addr add "${POD_CIDR%.*}.250/24" dev eth0
  iptables -N CELERY-E2E-SELFTEST
  iptables -I FORWARD 1 -j CELERY-E2E-SELFTEST
  make_cgroups
  make_room || die "make_room refused a node none of whose processes runs"
  check >/dev/null 2>&1 || die "make_room left some of the killed node behind: $(check 2>&1)"
  [ ! -e "$other/.e2e/test/cluster/node" ] || die "make_room left the killed node's state directory"
  rm -rf "$other"
  # A chain alone (its bridge gone) would still stop `up` from adding its own.
  iptables -N CELERY-E2E-FORWARD
  make_room || die "make_room refused a chain left alone"
  check >/dev/null 2>&1 || die "make_room left a lone chain behind: $(check 2>&1)"

  ip link add "$BRIDGE" type bridge
  make_cgroups
  sleep 60 &
  pid=$!
  echo "$pid" >"/sys/fs/cgroup/pids/$CGROUP/cgroup.procs"
  make_room 2>/dev/null && rc=0 || rc=$?
  kill "$pid"
  wait "$pid" 2>/dev/null
  [ "$rc" -ne 0 ] || die "make_room made room beside a node whose pod still runs"
  ip link show "$BRIDGE" >/dev/null 2>&1 || die "make_room took the bridge of a node that runs"
  ip link delete "$BRIDGE"
  remove_cgroups
  check >/dev/null 2>&1 || die "the make_room selftest left something behind: $(check 2>&1)"
  log "make_room selftest: a killed node's leftovers taken back, a running node's kept"
}

case "${1:-}" in
  up) set -e; up ;;
  down) down ;;
  check) check ;;
  make-room) make_room ;;
  selftest) selftest ;;
  hostpath-modes) hostpath_modes ;;
  *) echo "usage: node.sh up|down|check|make-room|selftest" >&2; exit 2 ;;
esac
