#!/usr/bin/env bash
# Runs the unit tests from a copy of the work tree in a directory with nothing beside it
# (target/standalone/tree), so a test or build that reads a file outside the repository fails here
# as it would in a user's fresh clone. Also refuses any reference to a sibling directory.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

if refs=$(git grep -n -e '\.\./shared' -- . ':!Cargo.lock' ':!scripts/standalone.sh'); then
  echo "standalone: the project refers to a directory outside its tree:" >&2
  echo "$refs" >&2
  exit 1
fi

# The copy is always in the same place, and it builds into a target directory of its own.
# The tests find their data by the path cargo compiled into them (CARGO_MANIFEST_DIR), and
# cargo does not rebuild an unchanged crate for a new path. A fresh temporary copy built into
# the work tree's target left the tests reading a previous run's deleted copy, and the work
# tree's own `cargo test` reading this one.
parent=$repo/target/standalone/tree
rm -rf "$parent"
trap 'rm -rf "$parent"' EXIT
copy=$parent/celery-operator
mkdir -p "$copy"
# Tracked files and new ones not ignored: the tree a commit of this work tree would hold.
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  tar --null -T - -cf - | tar -xf - -C "$copy"
echo "[standalone] unit tests from $copy (nothing beside it)" >&2
cd "$copy"
# Kept between runs, so the dependencies compile once.
CARGO_TARGET_DIR=$repo/target/standalone/target make --no-print-directory unit
