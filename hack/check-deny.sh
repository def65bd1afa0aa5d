#!/usr/bin/env bash
# Supply-chain checks of the Rust dependency graph with cargo-deny: no crate with a RustSec
# advisory (vulnerable, unsound or unmaintained) unless deny.toml says why, every crate from
# crates.io (no git or other registries), every license one of deny.toml's list, and the
# crates banned there (a second TLS stack, OpenSSL, the unmaintained YAML crate) kept out.
#
# The advisories are deny/advisory-db, a dated snapshot of the RustSec database (refresh it
# with hack/update-advisories.sh where GitHub is reachable); this script fails when a crate
# of Cargo.lock has advisories the snapshot does not carry, and prints the snapshot's age.
# cargo-deny is built once from crates.io and cached outside the checkout by version.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CARGO_DENY_VERSION=0.20.2
CACHE_ROOT="${SUBSTRATUS_CACHE:-$HOME/.cache/substratus}"
root="$CACHE_ROOT/tools/cargo-deny-$CARGO_DENY_VERSION"
if [[ ! -x "$root/bin/cargo-deny" ]]; then
  # Its own target directory: the workspace's build cache is not touched.
  CARGO_TARGET_DIR="$root/target" cargo install --locked --quiet --root "$root" \
    cargo-deny --version "$CARGO_DENY_VERSION" >&2
  rm -rf "$root/target"
fi

snapshot=deny/advisory-db
missing=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.lock | sort -u |
  comm -12 - "$snapshot/advised-crates.txt" |
  while read -r crate; do [[ -d "$snapshot/crates/$crate" ]] || echo "$crate"; done)
if [[ -n "$missing" ]]; then
  echo "crates of Cargo.lock with advisories the snapshot lacks: $missing" >&2
  echo "run hack/update-advisories.sh with a clone of the RustSec database" >&2
  exit 1
fi

# cargo-deny reads a database as a git clone named after its URL (deny.toml's db-path).
db="$HOME/.cache/substratus/advisory-dbs/advisory-db-3157b0e258782691"
date=$(sed -n 's/^date //p' "$snapshot/SNAPSHOT")
rm -rf "$db"
mkdir -p "$db"
cp -r "$snapshot/crates" "$db/"
git -C "$db" init -q
git -C "$db" add -A
GIT_COMMITTER_DATE="$date" git -C "$db" -c user.name=snapshot -c user.email=snapshot@localhost \
  commit -q --date="$date" -m "$(sed -n 's/^commit //p' "$snapshot/SNAPSHOT")"
age=$(( ( $(date +%s) - $(date -d "$date" +%s) ) / 86400 ))
echo "==> cargo-deny $CARGO_DENY_VERSION: advisories (RustSec of $date, $age days old), licenses, bans, sources"
# Offline: no database fetch; the crates' metadata comes from a fetch of every target's crates.
cargo fetch --locked --quiet
"$root/bin/cargo-deny" --all-features --locked --offline check advisories licenses bans sources

# The check is real: without deny.toml's reasoned exceptions, the snapshot's advisories for
# the Azure SDK's crates fail it.
strict=$(mktemp)
trap 'rm -f "$strict" "$strict.out"' EXIT
python3 - deny.toml "$strict" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
open(sys.argv[2], "w").write(re.sub(r"\nignore = \[.*?\n\]\n", "\n", text, flags=re.S))
PY
if "$root/bin/cargo-deny" --all-features --locked --offline --config "$strict" check advisories \
  > "$strict.out" 2>&1; then
  echo "cargo-deny found no advisory without deny.toml's exceptions: the database did not load" >&2
  exit 1
fi
for id in $(sed -n 's/.*id = "\(RUSTSEC-[0-9-]*\)".*/\1/p' deny.toml); do
  grep -q "$id" "$strict.out" || { echo "$id is excepted in deny.toml but no longer reported: drop it" >&2; exit 1; }
done
rm -f "$strict.out"
echo "advisories: the snapshot reports every exception deny.toml makes"
