#!/usr/bin/env bash
# Rewrites the replace block of e2e/tools/kubernetes/go.mod for KUBE_VERSION (versions.sh, or
# the first argument). k8s.io/kubernetes replaces each of its staging modules with
# ./staging/src/...; outside that repository each must point at its published tag
# v0.<minor>.<patch> instead. Run it after bumping the version, then `go mod tidy` there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"
version=${1:-$KUBE_VERSION}
staging=v0.${version#v1.}
gomod=$here/../tools/kubernetes/go.mod
upstream=$(cd "$(dirname "$gomod")" && GOFLAGS=-mod=mod GOTOOLCHAIN=local \
  go mod download -json "k8s.io/kubernetes@$version" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["GoMod"])')
python3 - "$gomod" "$upstream" "$staging" <<'PY'
import re, sys
gomod, upstream, staging = sys.argv[1:]
modules = re.findall(r"^\s+(k8s\.io/\S+) => \./staging/", open(upstream).read(), re.M)
if not modules:
    sys.exit(f"no staging replaces in {upstream}")
block = "replace (\n" + "".join(f"\t{m} => {m} {staging}\n" for m in modules) + ")"
text = open(gomod).read()
new, n = re.subn(r"^replace \(\n.*?^\)", block, text, flags=re.M | re.S)
if n != 1:
    sys.exit(f"{gomod}: expected one replace block, found {n}")
open(gomod, "w").write(new)
print(f"{gomod}: {len(modules)} staging modules at {staging}", file=sys.stderr)
PY
