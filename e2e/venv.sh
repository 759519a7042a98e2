#!/usr/bin/env bash
# Creates (once) e2e/.venv with the pinned Celery of e2e/requirements.txt; prints its path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=$here/.venv
stamp=$venv/.requirements
if [ ! -f "$stamp" ] || ! cmp -s "$stamp" "$here/requirements.txt"; then
  echo "[venv] installing $(grep -v "^#" "$here/requirements.txt" | tr "\n" " ")" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" >&2
  cp "$here/requirements.txt" "$stamp"
fi
echo "$venv"
