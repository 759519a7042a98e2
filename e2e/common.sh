# Helpers every harness script shares (the cluster scripts, the e2e runner, the demo, the
# benches). Sourced, not run; e2e/common-selftest.sh tests them.
# shellcheck shell=bash

# free_ports N: N distinct free loopback ports. All N are bound at once before any is
# released, so two of them can never be the same port.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# on_exit COMMAND: runs COMMAND once when the script ends, however it ends. Ctrl-C or TERM
# exit the script (130), and the EXIT trap then runs COMMAND: trapping INT and TERM with
# COMMAND as well would run it twice.
on_exit() {
  # shellcheck disable=SC2064
  trap "$1" EXIT
  trap 'exit 130' INT TERM
}
