#!/usr/bin/env bash
# Starts the simulated cluster in the background (state in .cluster/, log in .cluster.log)
# and waits until it is ready. Profiles: SUBSTRATUS_PROFILE (default gcp,kind); further
# arguments go to `substratus-devcluster up` (e.g. --real-node).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export SUBSTRATUS_CONTROLPLANE_BIN="${SUBSTRATUS_CONTROLPLANE_BIN:-$(hack/build-controlplane.sh)}"
cargo build -q -p substratus-devcluster
bin="${CARGO_TARGET_DIR:-target}/debug/substratus-devcluster"
if [[ -f .cluster.pid ]] && kill -0 "$(cat .cluster.pid)" 2>/dev/null; then
  echo "cluster already running (pid $(cat .cluster.pid)); hack/down.sh stops it" >&2
  exit 0
fi
rm -f .cluster/ready
nohup "$bin" up --profile "${SUBSTRATUS_PROFILE:-gcp,kind}" "$@" >.cluster.log 2>&1 &
for _ in $(seq 1 600); do
  [[ -f .cluster/ready ]] && break
  kill -0 $! 2>/dev/null || { cat .cluster.log >&2; exit 1; }
  sleep 0.2
done
[[ -f .cluster/ready ]] || { echo "cluster did not start in 120s; see .cluster.log" >&2; exit 1; }
grep "cluster ready" .cluster.log >&2
