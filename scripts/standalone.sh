#!/usr/bin/env bash
# Runs the unit tests from a copy of the work tree in an empty temporary directory, with
# nothing beside it, so a test or build that reads a file outside the repository fails here
# as it would in a user's fresh clone. Also refuses any reference to a sibling directory.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

if refs=$(git grep -n -e '\.\./shared' -- . ':!Cargo.lock' ':!scripts/standalone.sh'); then
  echo "standalone: the project refers to a directory outside its tree:" >&2
  echo "$refs" >&2
  exit 1
fi

parent=$(mktemp -d)
trap 'rm -rf "$parent"' EXIT
copy=$parent/celery-operator
mkdir "$copy"
# Tracked files and new ones not ignored: the tree a commit of this work tree would hold.
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  tar --null -T - -cf - | tar -xf - -C "$copy"
echo "[standalone] unit tests from $copy (nothing beside it)" >&2
cd "$copy"
# The repository's target directory keeps the dependencies compiled once.
CARGO_TARGET_DIR=$repo/target make --no-print-directory unit
