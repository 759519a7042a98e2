# Shared helpers of the cluster scripts. Sourced, not run.
# shellcheck shell=bash
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"
# shellcheck source=../common.sh
. "$here/../common.sh"

# Everything a running cluster owns lives here; `down` removes it.
STATE=${E2E_STATE:-$repo/.e2e}
CLUSTER=$STATE/cluster
KUBECONFIG_PATH=$STATE/kubeconfig

log() { echo "[cluster] $*" >&2; }
die() { echo "[cluster] error: $*" >&2; exit 1; }

# Every process up.sh starts, in start order (the real node's after them: node.sh).
COMPONENTS="etcd kube-apiserver kube-controller-manager kube-scheduler kwok"
NODE_COMPONENTS="containerd socat kubelet kube-proxy hostpath-modes"

# alive NAME: the process we started under NAME still runs. A pid reused by another program
# (after a reboot) does not count: its command line must name NAME.
alive() {
  local f="$CLUSTER/pids/$1.pid" pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$1"
}

# launch NAME ARGS...: runs in its own session so `down` can stop it with its children.
launch() {
  local name=$1
  shift
  setsid "$@" >"$CLUSTER/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$CLUSTER/pids/$name.pid"
}

# fail_start NAME: shows NAME's log, brings everything down again and fails.
fail_start() {
  log "$1 did not become ready; last lines of its log:"
  tail -n 30 "$CLUSTER/logs/$1.log" >&2 || true
  "$here/down.sh" || true
  exit 1
}

# The real node (node.sh) runs beside the kwok nodes unless E2E_REAL_NODE=0.
real_node() { [ "${E2E_REAL_NODE:-1}" = 1 ]; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds.
wait_for() {
  local timeout=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      return 1
    fi
    sleep 0.2
  done
  log "$what ready"
}
