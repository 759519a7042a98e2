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

# Every process up.sh starts, in start order.
COMPONENTS="etcd kube-apiserver kube-controller-manager kube-scheduler kwok"

# alive NAME: the process we started under NAME still runs. A pid reused by another program
# (after a reboot) does not count: its command line must name NAME.
alive() {
  local f="$CLUSTER/pids/$1.pid" pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$1"
}

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
