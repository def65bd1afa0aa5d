#!/usr/bin/env bash
# Static checks of the release workflows: actionlint, built once from the Go module proxy and
# cached outside the checkout by version. (tests/tests/release.rs checks the krew manifest
# script, the Dockerfile and .dockerignore.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ACTIONLINT_VERSION=v1.7.12
CACHE_ROOT="${SUBSTRATUS_CACHE:-$HOME/.cache/substratus}"
actionlint="$CACHE_ROOT/tools/actionlint-$ACTIONLINT_VERSION/actionlint"
if [[ ! -x "$actionlint" ]]; then
  GOBIN="$(dirname "$actionlint")" CGO_ENABLED=0 GOFLAGS=-mod=mod \
    go install -trimpath "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION" >&2
fi
echo "==> actionlint $ACTIONLINT_VERSION"
"$actionlint" -no-color .github/workflows/*.yaml

