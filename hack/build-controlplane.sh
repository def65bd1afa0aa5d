#!/usr/bin/env bash
# Builds the simulated cluster's control plane from Go modules:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, kwok.
# Binaries are cached outside the checkout, keyed by version, and rebuilt only
# when missing. Prints the directory holding the binaries on its last line.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION="v1.36.3"
ETCD_VERSION="v3.6.16"
KWOK_VERSION="v0.8.0"
VERSITYGW_VERSION="v1.8.0"
CACHE_ROOT="${SUBSTRATUS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/substratus}"
BIN_DIR="$CACHE_ROOT/controlplane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION/bin"
# Test servers live beside the control plane, keyed by their own version.
TOOLS_DIR="$CACHE_ROOT/tools/versitygw-$VERSITYGW_VERSION"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok versitygw)

missing=()
for b in "${BINARIES[@]}"; do
  [[ -x "$BIN_DIR/$b" ]] || missing+=("$b")
done
# versitygw is cached under its own key and linked into the binary directory.
if [[ -x "$TOOLS_DIR/versitygw" && ! -e "$BIN_DIR/versitygw" ]]; then
  mkdir -p "$BIN_DIR" && ln -sf "$TOOLS_DIR/versitygw" "$BIN_DIR/versitygw"
  missing=("${missing[@]/versitygw}")
  missing=(${missing[@]})
fi
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "control plane: cached in $BIN_DIR" >&2
  echo "$BIN_DIR"
  exit 0
fi

command -v go >/dev/null || { echo "error: go is required to build the control plane (https://go.dev/dl)" >&2; exit 1; }
start=$(date +%s)
mkdir -p "$BIN_DIR"
tmp="$BIN_DIR/.partial"
mkdir -p "$tmp"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly"

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

build() { # dir package output [ldflags]
  local dir="$1" pkg="$2" out="$3" flags="${4:--s -w}"
  local t0; t0=$(date +%s)
  echo "building $out ..." >&2
  (cd "$HERE/controlplane/$dir" && go build -trimpath -ldflags "$flags" -o "$tmp/$out" "$pkg")
  mv "$tmp/$out" "$BIN_DIR/$out"
  echo "built $out in $(( $(date +%s) - t0 ))s" >&2
}

for b in "${missing[@]}"; do
  case "$b" in
    kube-*|kubectl) build kubernetes "k8s.io/kubernetes/cmd/$b" "$b" "$ldflags" ;;
    etcd) build etcd . etcd ;;
    kwok) build kwok sigs.k8s.io/kwok/cmd/kwok kwok ;;
    versitygw)
      build versitygw github.com/versity/versitygw/cmd/versitygw versitygw
      mkdir -p "$TOOLS_DIR" && mv "$BIN_DIR/versitygw" "$TOOLS_DIR/versitygw"
      ln -sf "$TOOLS_DIR/versitygw" "$BIN_DIR/versitygw" ;;
  esac
done
rmdir "$tmp" 2>/dev/null || true
echo "control plane: built ${missing[*]} in $(( $(date +%s) - start ))s into $BIN_DIR" >&2
echo "$BIN_DIR"
