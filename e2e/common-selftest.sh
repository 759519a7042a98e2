#!/usr/bin/env bash
# Tests of e2e/common.sh: distinct ports, and a cleanup that runs exactly once on Ctrl-C.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
fail() { echo "common-selftest: $*" >&2; exit 1; }

read -r -a ports <<<"$(free_ports 64)"
[ "${#ports[@]}" -eq 64 ] || fail "free_ports 64 gave ${#ports[@]} ports"
[ "$(printf '%s\n' "${ports[@]}" | sort -u | wc -l)" -eq 64 ] || fail "free_ports gave a port twice"

count=$(mktemp)
trap 'rm -f "$count"' EXIT
# A script that installs its cleanup with on_exit and is interrupted while it works.
# A run started in the background ignores SIGINT from birth; the Ctrl-C of a terminal does not.
env --default-signal=INT bash -c '. "$1"; on_exit "echo cleanup >>$2"; kill -INT $$; sleep 5' _ "$here/common.sh" "$count" || rc=$?
[ "${rc:-0}" -eq 130 ] || fail "an interrupted script exited ${rc:-0}, not 130"
[ "$(grep -c cleanup "$count")" -eq 1 ] || fail "cleanup ran $(grep -c cleanup "$count") times on Ctrl-C"
: >"$count"
bash -c '. "$1"; on_exit "echo cleanup >>$2"; exit 3' _ "$here/common.sh" "$count" || true
[ "$(grep -c cleanup "$count")" -eq 1 ] || fail "cleanup did not run once on a plain exit"
echo "common-selftest: 2 passed, 0 failed"
