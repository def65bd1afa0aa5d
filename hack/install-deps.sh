#!/usr/bin/env bash
# Installs what building and testing need and a fresh machine may lack. Idempotent.
set -euo pipefail

need=()
command -v go >/dev/null || need+=(golang-go)
command -v openssl >/dev/null || need+=(openssl)
# The interactive CLI tests drive `sub` in a real terminal.
command -v tmux >/dev/null || need+=(tmux)
# The notebook sync test runs busybox's find, stat and tar, as busybox and Alpine images have them.
[[ -x /bin/busybox ]] || need+=(busybox-static)
if [[ ${#need[@]} -gt 0 ]]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "error: cargo is required (https://rustup.rs)" >&2; exit 1; }
rustup component add rustfmt clippy >/dev/null 2>&1 || true
