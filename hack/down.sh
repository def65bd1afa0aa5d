#!/usr/bin/env bash
# Stops what hack/up.sh started: the operator, the local S3 server and the cluster.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for svc in operator s3; do
  if [[ -f ".$svc.pid" ]]; then
    pid="$(cat ".$svc.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f ".$svc.pid"
  fi
done
bin="${CARGO_TARGET_DIR:-target}/debug/substratus-devcluster"
if [[ -x "$bin" ]]; then
  "$bin" down
elif [[ -f .cluster.pid ]]; then
  kill "$(cat .cluster.pid)" 2>/dev/null || true
fi
