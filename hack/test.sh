#!/usr/bin/env bash
# Runs every check and test of the repository: formatting, clippy, unit, compatibility and
# cluster tests (the cluster tests start a real control plane on 127.0.0.1, built from
# source once and cached; see hack/build-controlplane.sh), and, as root, the tests on a real
# node (real containers in a network namespace of their own).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { echo; echo "==> $*"; }

# The cluster tests share one control plane per test process; its processes die with the
# process, and its state directory is removed by the next test process. After the last
# one, this removes it (and any other left by a process that is gone).
remove_test_cluster_dirs() {
  local dir
  for dir in "${TMPDIR:-/tmp}"/substratus-test-cluster-*; do
    [[ -d $dir && ! -d /proc/${dir##*-} ]] && rm -rf -- "$dir"
  done
  return 0
}
trap remove_test_cluster_dirs EXIT

step "installing what the tests need"
hack/install-deps.sh
# The real node's packages (containerd, runc, CNI, iptables, busybox, rclone, FUSE): root
# only. Without them the real-node tests are skipped, saying why.
if [[ $(id -u) -eq 0 ]]; then
  hack/install-node-deps.sh
else
  export SUBSTRATUS_SKIP_REAL_NODE="not root: a real node needs root (network namespace, mounts, cgroups)"
  echo "$SUBSTRATUS_SKIP_REAL_NODE" >&2
fi

step "control plane binaries"
SUBSTRATUS_CONTROLPLANE_BIN="$(hack/build-controlplane.sh)"
export SUBSTRATUS_CONTROLPLANE_BIN

step "storage emulators (fake-gcs-server, Azurite)"
while IFS='=' read -r name path; do export "$name=$path"; done < <(hack/install-emulators.sh)

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "supply chain (cargo-deny): RustSec advisories, crates.io only, permissive licenses, one crypto provider, one YAML crate, no OpenSSL"
hack/check-deny.sh

step "go vet and go test of the S3 CSI plugin (csi/s3)"
(cd csi/s3 && GOFLAGS=-mod=readonly go vet ./... && GOFLAGS=-mod=readonly go test ./...)

step "the reference workloads' own tests (images/tinylm, Python standard library)"
python3 -m unittest discover -q -s images/tinylm/tests -t images/tinylm

step "terraform checks"
hack/check-terraform.sh

step "release workflow checks (actionlint)"
hack/check-workflows.sh

if [[ -z "${SUBSTRATUS_SKIP_REAL_NODE:-}" ]]; then
  step "release build of the operator (its image runs on the real node)"
  cargo build --release --locked -p substratus-operator
  export SUBSTRATUS_OPERATOR_BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/release/substratus-operator"
fi

step "cargo test"
cargo test --workspace --locked
