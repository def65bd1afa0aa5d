#!/usr/bin/env bash
# Starts a local cluster, runs the operator against it and applies examples/.
set -euo pipefail
echo "hack/up.sh: the local cluster and the controllers are not built yet." >&2
echo "What exists today: 'cargo run -p substratus-operator -- crd' prints the CRDs." >&2
exit 1
