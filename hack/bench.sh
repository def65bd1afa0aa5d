#!/usr/bin/env bash
# Benchmarks the operator against the floor on a simulated cluster and prints the numbers.
#   hack/bench.sh --models 1000 --gpu-nodes 1000 --steady-seconds 300
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export SUBSTRATUS_CONTROLPLANE_BIN="${SUBSTRATUS_CONTROLPLANE_BIN:-$(hack/build-controlplane.sh)}"
cargo build -q --release -p substratus-operator -p substratus-bench
exec "${CARGO_TARGET_DIR:-target}/release/substratus-bench" "$@"
