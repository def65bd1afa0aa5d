#!/usr/bin/env bash
# Runs every check and test of the repository: formatting, clippy, unit, compatibility and
# cluster tests (the cluster tests start a real control plane on 127.0.0.1, built from
# source once and cached; see hack/build-controlplane.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { echo; echo "==> $*"; }

step "installing what the tests need"
hack/install-deps.sh

step "control plane binaries"
SUBSTRATUS_CONTROLPLANE_BIN="$(hack/build-controlplane.sh)"
export SUBSTRATUS_CONTROLPLANE_BIN

step "storage emulators (fake-gcs-server, Azurite)"
while IFS='=' read -r name path; do export "$name=$path"; done < <(hack/install-emulators.sh)

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "terraform checks"
hack/check-terraform.sh

step "cargo test"
cargo test --workspace --locked
