#!/usr/bin/env bash
# Deletes the kind cluster made by hack/kind-up.sh (MinIO's data lives inside it).
set -euo pipefail
command -v kind >/dev/null || { echo "error: kind is required" >&2; exit 1; }
kind delete cluster --name substratus
