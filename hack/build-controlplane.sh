#!/usr/bin/env bash
# Builds, from Go modules, the local cluster's control plane (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, etcd, kwok), the real node's kubelet,
# kube-proxy and CoreDNS, and the tools the tests use (versitygw as the S3 server, helm). Binaries are cached outside the checkout, keyed by
# version, and built only when missing. Prints the directory holding them on its last line.
# With --cached-only it builds nothing: it prints the directory when everything is cached,
# else lists what is missing and exits 3 (what `cargo test` runs, so that it never starts a
# 20-minute Go build on its own).
set -euo pipefail
CACHED_ONLY=false
[[ "${1:-}" == "--cached-only" ]] && CACHED_ONLY=true
missing=()

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION="v1.36.3"
ETCD_VERSION="v3.6.16"
KWOK_VERSION="v0.8.0"
# Tools: name, version, wrapper module under hack/gotools, package.
TOOLS=(
  "versitygw v1.8.0 versitygw github.com/versity/versitygw/cmd/versitygw"
  "helm v3.22.0 helm helm.sh/helm/v3/cmd/helm"
  "coredns v1.15.0 coredns github.com/coredns/coredns"
  "registry v3.1.2 registry github.com/distribution/distribution/v3/cmd/registry"
  "kaniko v1.23.2 kaniko github.com/GoogleContainerTools/kaniko/cmd/executor"
)
CACHE_ROOT="${SUBSTRATUS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/substratus}"
BIN_DIR="$CACHE_ROOT/controlplane/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION/bin"

$CACHED_ONLY || command -v go >/dev/null || { echo "error: go is required to build the control plane (https://go.dev/dl)" >&2; exit 1; }
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=readonly"
start=$(date +%s)
built=()
mkdir -p "$BIN_DIR"

build() { # wrapper-module package output-path [ldflags]
  local dir="$1" pkg="$2" out="$3" flags="${4:--s -w}"
  if $CACHED_ONLY; then missing+=("$(basename "$out")"); return; fi
  local t0; t0=$(date +%s)
  echo "building $(basename "$out") ..." >&2
  mkdir -p "$(dirname "$out")"
  (cd "$HERE/gotools/$dir" && go build -trimpath -ldflags "$flags" -o "$out.partial" "$pkg")
  mv "$out.partial" "$out"
  built+=("$(basename "$out")")
  echo "built $(basename "$out") in $(( $(date +%s) - t0 ))s" >&2
}

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
  [[ -x "$BIN_DIR/$b" ]] || build kubernetes "k8s.io/kubernetes/cmd/$b" "$BIN_DIR/$b" "$ldflags"
done
[[ -x "$BIN_DIR/etcd" ]] || build etcd . "$BIN_DIR/etcd"
[[ -x "$BIN_DIR/kwok" ]] || build kwok sigs.k8s.io/kwok/cmd/kwok "$BIN_DIR/kwok"
# kwok's Logs, Exec and PortForward CRDs, from the module kwok was built from.
if [[ ! -f "$BIN_DIR/kwok-crds/kwok.x-k8s.io_portforwards.yaml" ]] && $CACHED_ONLY; then
  missing+=(kwok-crds)
elif [[ ! -f "$BIN_DIR/kwok-crds/kwok.x-k8s.io_portforwards.yaml" ]]; then
  kwok_dir=$(cd "$HERE/gotools/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  mkdir -p "$BIN_DIR/kwok-crds"
  for crd in logs execs portforwards; do
    cp "$kwok_dir/kustomize/crd/bases/kwok.x-k8s.io_$crd.yaml" "$BIN_DIR/kwok-crds/"
  done
  chmod u+w "$BIN_DIR"/kwok-crds/*.yaml
fi

for tool in "${TOOLS[@]}"; do
  read -r name version dir pkg <<<"$tool"
  cached="$CACHE_ROOT/tools/$name-$version/$name"
  [[ -x "$cached" ]] || build "$dir" "$pkg" "$cached" "-s -w"
  [[ -x "$cached" ]] && ln -sfn "$cached" "$BIN_DIR/$name"
done

# The local clusters' S3 CSI node plugin (our own module, csi/s3), keyed by its sources.
csi_src="$HERE/../csi/s3"
csi_key=$(cat "$csi_src"/go.mod "$csi_src"/go.sum "$csi_src"/*.go | sha256sum | cut -c1-16)
csi_bin="$CACHE_ROOT/tools/substratus-csi-s3-$csi_key/substratus-csi-s3"
if [[ ! -x "$csi_bin" ]] && $CACHED_ONLY; then
  missing+=(substratus-csi-s3)
elif [[ ! -x "$csi_bin" ]]; then
  echo "building substratus-csi-s3 ..." >&2
  mkdir -p "$(dirname "$csi_bin")"
  (cd "$csi_src" && go build -trimpath -ldflags "-s -w -X main.version=$csi_key" -o "$csi_bin.partial" .)
  mv "$csi_bin.partial" "$csi_bin"
  built+=(substratus-csi-s3)
fi
[[ -x "$csi_bin" ]] && ln -sfn "$csi_bin" "$BIN_DIR/substratus-csi-s3"

if [[ ${#missing[@]} -gt 0 ]]; then
  echo "not built yet: ${missing[*]}" >&2
  exit 3
fi
if [[ ${#built[@]} -eq 0 ]]; then
  echo "control plane and tools: cached in $BIN_DIR" >&2
else
  echo "control plane and tools: built ${built[*]} in $(( $(date +%s) - start ))s into $BIN_DIR" >&2
fi
echo "$BIN_DIR"
