#!/usr/bin/env bash
# Stops exactly the processes `up.sh` started (each in its own session) and removes their state.
set -uo pipefail
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

# The real node first: its cleanup needs the state the rest of this removes.
"$here/node.sh" down
[ -d "$CLUSTER/pids" ] || { rm -rf "$CLUSTER" "$KUBECONFIG_PATH"; log "nothing to stop"; exit 0; }

# Stop in reverse start order so nothing logs errors about a vanished apiserver for long.
for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  f=$CLUSTER/pids/$name.pid
  [ -f "$f" ] || continue
  if ! alive "$name"; then
    # Exited already, or the pid now belongs to someone else: leave it alone.
    rm -f "$f"
    continue
  fi
  pid=$(cat "$f")
  # The pid leads its own process group (setsid), so the group holds exactly what we started.
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
done
deadline=$((SECONDS + 20))
for f in "$CLUSTER"/pids/*.pid; do
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
done
rm -rf --one-file-system "$CLUSTER" "$KUBECONFIG_PATH"
log "down"
# Proof that nothing of the node is left on the machine (fails the caller if anything is).
"$here/node.sh" check
