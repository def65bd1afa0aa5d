#!/usr/bin/env bash
# Builds the original Substratus operator (Go, v0.10.1, from the Go module proxy) for the
# benchmark's comparison column: its controller manager and `sci-kind`, the gRPC cloud
# interface its kind mode talks to. Cached outside the checkout by version. Prints two lines:
# the directory holding the binaries, and the directory of the original's CRDs.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VERSION=v0.10.1
CACHE_ROOT="${SUBSTRATUS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/substratus}"
BIN_DIR="$CACHE_ROOT/tools/original-$VERSION"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly"
mkdir -p "$BIN_DIR"
cd "$HERE/gotools/original"
for cmd in controllermanager sci-kind; do
  if [[ ! -x "$BIN_DIR/$cmd" ]]; then
    t0=$(date +%s)
    go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/$cmd.partial" \
      "github.com/substratusai/substratus/cmd/$cmd"
    mv "$BIN_DIR/$cmd.partial" "$BIN_DIR/$cmd"
    echo "built the original's $cmd $VERSION in $(( $(date +%s) - t0 ))s" >&2
  fi
done
echo "$BIN_DIR"
echo "$(go list -m -f '{{.Dir}}' github.com/substratusai/substratus)/config/crd/bases"
