#!/usr/bin/env bash
# The fast loop while changing behaviour: formatting and every test that needs no cluster, no
# storage server and no root (planners and their property tests, names, schema, parsers,
# the CLI's helpers, the reference workloads in images/tinylm). The planner property test runs 5,000 cases here (PLANNER_CASES);
# hack/test.sh runs everything, it with 160,000.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PLANNER_CASES="${PLANNER_CASES:-5000}"
cargo fmt --all -- --check
cargo test --locked -q --workspace --lib --bins
cargo test --locked -q -p substratus-core -p substratus-crds --test '*'
python3 -m unittest discover -q -s images/tinylm/tests -t images/tinylm 2>&1 | tail -3
