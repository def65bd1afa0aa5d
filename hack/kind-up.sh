#!/usr/bin/env bash
# Substratus on a real kind cluster (a laptop with Docker): kind, MinIO as the bucket, an
# in-cluster registry, the k8s-csi-s3 driver against MinIO, the operator from the Helm chart,
# and the examples. Needs docker, kind, kubectl and helm on PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required for a kind install" >&2; exit 1; }
done

kind get clusters | grep -qx substratus || kind create cluster --config deploy/kind/cluster.yaml
kubectl config use-context kind-substratus
kubectl apply -f deploy/kind/minio.yaml
kubectl -n substratus rollout status deploy/minio --timeout=180s
kubectl -n substratus wait --for=condition=complete job/minio-bucket --timeout=180s

# The S3 CSI driver mounts bucket prefixes into pods, with MinIO's credentials.
helm upgrade --install csi-s3 csi-s3 --repo https://yandex-cloud.github.io/k8s-csi-s3/charts \
  --namespace kube-system \
  --set secret.accessKey=substratus --set secret.secretKey=substratus-local-only \
  --set secret.endpoint=http://minio.substratus.svc.cluster.local:9000 \
  --set storageClass.create=false

docker build -f deploy/Dockerfile -t substratusai/substratus-operator:dev .
kind load docker-image substratusai/substratus-operator:dev --name substratus
helm upgrade --install substratus deploy/helm/substratus --namespace substratus \
  -f deploy/kind/values.yaml --wait --timeout 5m

kubectl apply -f examples/facebook-opt-125m/
kubectl get ai -A
echo "S3 for uploads: http://localhost:30900; registry: localhost:30500. hack/kind-down.sh removes it all."
