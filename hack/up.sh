#!/usr/bin/env bash
# The main job on this machine: builds everything, starts the simulated cluster (GKE and
# kind node pools), a local S3 server for the bucket, and the operator; applies examples/
# and waits until they are Ready. Everything keeps running in the background;
# hack/down.sh stops it. Logs: .cluster.log, .operator.log, .s3.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

hack/install-deps.sh
export SUBSTRATUS_CONTROLPLANE_BIN="${SUBSTRATUS_CONTROLPLANE_BIN:-$(hack/build-controlplane.sh)}"
echo "==> building the operator"
cargo build -q -p substratus-operator -p substratus-devcluster -p substratus-cli
target="${CARGO_TARGET_DIR:-target}/debug"
kubectl="$SUBSTRATUS_CONTROLPLANE_BIN/kubectl --kubeconfig=$PWD/.cluster/kubeconfig"

echo "==> starting the cluster"
SUBSTRATUS_PROFILE="${SUBSTRATUS_PROFILE:-gcp,kind}" hack/cluster-up.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
if ! { [[ -f .s3.pid ]] && kill -0 "$(cat .s3.pid)" 2>/dev/null; }; then
  echo "==> starting the local S3 server (bucket substratus-artifacts)"
  s3_port="$(free_port)"
  mkdir -p .s3/substratus-artifacts
  nohup "$SUBSTRATUS_CONTROLPLANE_BIN/versitygw" --access substratus --secret substratus-local \
    --port "127.0.0.1:$s3_port" posix "$PWD/.s3" >.s3.log 2>&1 &
  echo $! >.s3.pid
  echo "http://127.0.0.1:$s3_port" >.s3.endpoint
fi

echo "==> installing the CRDs"
$kubectl apply --server-side -f crds/generated/crds.yaml >/dev/null
$kubectl wait --for=condition=Established --timeout=60s crd --all >/dev/null

if ! { [[ -f .operator.pid ]] && kill -0 "$(cat .operator.pid)" 2>/dev/null; }; then
  echo "==> starting the operator (CLOUD=kind, GPU catalogue of GKE)"
  KUBECONFIG="$PWD/.cluster/kubeconfig" CLOUD=kind CLUSTER_NAME=local GPU_CATALOG=gcp \
    S3_ENDPOINT="$(cat .s3.endpoint)" AWS_ACCESS_KEY_ID=substratus AWS_SECRET_ACCESS_KEY=substratus-local \
    METRICS_BIND_ADDRESS=127.0.0.1:18080 HEALTH_PROBE_BIND_ADDRESS=127.0.0.1:18081 \
    nohup "$target/substratus-operator" run >.operator.log 2>&1 &
  echo $! >.operator.pid
  for _ in $(seq 1 100); do
    curl -fs 127.0.0.1:18081/readyz >/dev/null 2>&1 && break
    kill -0 "$(cat .operator.pid)" 2>/dev/null || { cat .operator.log >&2; exit 1; }
    sleep 0.2
  done
fi

echo "==> applying examples/"
$kubectl apply -f examples/falcon-40b/ -f examples/facebook-opt-125m/
for _ in $(seq 1 120); do
  not_ready="$($kubectl get ai -A -o jsonpath='{range .items[*]}{.status.ready}{"\n"}{end}' | grep -vc true || true)"
  [[ "$not_ready" == 0 ]] && break
  sleep 1
done
echo
echo "==> sub run examples/custom-model (pack, upload, build, run)"
"$target/sub" --kubeconfig "$PWD/.cluster/kubeconfig" -n default run examples/custom-model --timeout 2m
echo
$kubectl get ai -A
echo
echo "Everything runs in the background. Try:"
echo "  export KUBECONFIG=$PWD/.cluster/kubeconfig"
echo "  $SUBSTRATUS_CONTROLPLANE_BIN/kubectl get ai -A"
echo "  $target/sub get"
echo "  curl -s 127.0.0.1:18080/metrics | grep substratus_"
echo "Stop it all with hack/down.sh."
[[ "$not_ready" == 0 ]] || { echo "some examples are not Ready yet; see .operator.log" >&2; exit 1; }
