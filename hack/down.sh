#!/usr/bin/env bash
# Stops what hack/up.sh started: the operator and the simulated cluster.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -f .operator.pid ]]; then
  kill "$(cat .operator.pid)" 2>/dev/null || true
  rm -f .operator.pid
fi
bin="${CARGO_TARGET_DIR:-target}/debug/substratus-devcluster"
if [[ -x "$bin" ]]; then
  "$bin" down
else
  [[ -f .cluster.pid ]] && kill "$(cat .cluster.pid)" 2>/dev/null || true
fi
