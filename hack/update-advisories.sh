#!/usr/bin/env bash
# Refreshes deny/advisory-db, the dated snapshot of the RustSec advisory database that
# hack/check-deny.sh checks the dependency graph against (the database is a git repository
# the test machine cannot reach). Give it a clone of https://github.com/rustsec/advisory-db:
#
#   git clone https://github.com/rustsec/advisory-db /tmp/advisory-db
#   hack/update-advisories.sh /tmp/advisory-db
#
# It keeps the advisories of the crates in Cargo.lock and the names of every crate the
# database has advisories for, so that hack/check-deny.sh fails when a new dependency has
# advisories the snapshot does not carry.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
src="${1:?usage: hack/update-advisories.sh <clone of rustsec/advisory-db>}"
out=deny/advisory-db
commit=$(git -C "$src" rev-parse HEAD)
date=$(git -C "$src" show -s --format=%cI HEAD)
rm -rf "$out"
mkdir -p "$out/crates"
git -C "$src" ls-tree -r --name-only HEAD crates | awk -F/ 'NF == 3 {print $2}' | sort -u > "$out/advised-crates.txt"
sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.lock | sort -u | comm -12 - "$out/advised-crates.txt" |
  while read -r crate; do
    mkdir -p "$out/crates/$crate"
    git -C "$src" ls-tree -r --name-only HEAD "crates/$crate" | while read -r f; do
      git -C "$src" show "HEAD:$f" > "$out/$f"
    done
  done
cat > "$out/SNAPSHOT" <<INFO
source https://github.com/rustsec/advisory-db
commit $commit
date $date
license CC0-1.0 (the advisories are in the public domain)
INFO
echo "deny/advisory-db: $(find "$out/crates" -name '*.md' | wc -l) advisories of $(ls "$out/crates" | wc -l) crates in Cargo.lock, database of $date"
