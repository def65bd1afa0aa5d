#!/usr/bin/env bash
# Writes the krew plugin manifest of `kubectl notebook` for release VERSION of REPO, with the
# checksums of the archives in DIST (written by the release workflow).
#   deploy/krew/manifest.sh v0.1.0 substratusai/substratus dist > notebook.yaml
set -euo pipefail
version="$1" repo="$2" dist="$3"
platform() {
  local os="$1" arch="$2"
  local name="substratus-cli-${version}-${os}-${arch}"
  local sha
  sha="$(cut -d' ' -f1 "${dist}/${name}.tar.gz.sha256")"
  cat <<ENTRY
  - selector:
      matchLabels:
        os: ${os}
        arch: ${arch}
    uri: https://github.com/${repo}/releases/download/${version}/${name}.tar.gz
    sha256: "${sha}"
    bin: kubectl-notebook
    files:
      - from: ${name}/kubectl-notebook
        to: .
      - from: ${name}/LICENSE
        to: .
ENTRY
}
cat <<HEAD
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: notebook
spec:
  version: "${version}"
  homepage: https://github.com/${repo}
  shortDescription: Open a Substratus Notebook and sync its files
  description: |
    Builds a Substratus Notebook from a local directory, opens Jupyter through a port-forward,
    and copies the files the notebook changes back to the directory.
  platforms:
HEAD
for os in linux darwin; do
  for arch in amd64 arm64; do
    platform "$os" "$arch"
  done
done
