#!/usr/bin/env bash
# Supply-chain checks of the Rust dependency graph with cargo-deny: every crate comes from
# crates.io (no git or other registries), every license is one of deny.toml's list, and the
# crates banned there (a second TLS stack, OpenSSL, the unmaintained YAML crate) stay out.
# cargo-deny is built once from crates.io and cached outside the checkout by version.
# Advisories are not checked here: the advisory database is a git repository this machine
# cannot reach (see deny.toml).
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
echo "==> cargo-deny $CARGO_DENY_VERSION: licenses, bans, sources"
"$root/bin/cargo-deny" --all-features --locked check licenses bans sources
