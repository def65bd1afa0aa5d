#!/usr/bin/env bash
# The main job on this machine: builds everything and starts the local cluster with a local
# S3 server for the bucket, then the operator, and applies examples until they are Ready.
#
# With a real node (root, and the Debian packages hack/install-node-deps.sh installs): the
# operator runs as a pod from its chart, examples/local/ runs for real on the node (Dataset →
# Model → fine-tuned Model → Server → Notebook, artifacts in the bucket), and the GPU pools
# stay simulated. Without one (SUBSTRATUS_REAL_NODE=0, or the machine cannot): every node
# is simulated, the operator runs as a process, and the cloud examples and an upload build
# run on simulated nodes. Everything keeps running in the background; hack/down.sh stops it.
# Logs: .cluster.log, .operator.log, .s3.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

hack/install-deps.sh
export SUBSTRATUS_CONTROLPLANE_BIN="${SUBSTRATUS_CONTROLPLANE_BIN:-$(hack/build-controlplane.sh)}"
target="${CARGO_TARGET_DIR:-target}"
echo "==> building the operator, the launcher and the CLI"
cargo build -q -p substratus-operator -p substratus-devcluster -p substratus-cli
devcluster="$target/debug/substratus-devcluster"
kubectl="$SUBSTRATUS_CONTROLPLANE_BIN/kubectl --kubeconfig=$PWD/.cluster/kubeconfig"
helm="$SUBSTRATUS_CONTROLPLANE_BIN/helm --kubeconfig=$PWD/.cluster/kubeconfig"

real_node=1
if [[ "${SUBSTRATUS_REAL_NODE:-1}" == 0 ]]; then
  real_node=0; echo "==> SUBSTRATUS_REAL_NODE=0: every node simulated"
elif [[ $(id -u) -ne 0 ]]; then
  real_node=0; echo "==> not root: no real node (it needs a network namespace, mounts, cgroups); every node simulated"
elif ! hack/install-node-deps.sh; then
  real_node=0; echo "==> the real node's packages could not be installed; every node simulated"
elif ! why="$("$devcluster" node-check)"; then
  real_node=0; echo "==> no real node: $why; every node simulated"
fi

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
s3_endpoint="$(cat .s3.endpoint)"
s3_port="${s3_endpoint##*:}"

if [[ $real_node == 1 ]]; then
  echo "==> building the operator image (release build) and the workload images"
  t0=$(date +%s)
  cargo build -q --release -p substratus-operator
  operator_image="$("$devcluster" image-build operator --binary "$target/release/substratus-operator" --tag dev)"
  busybox_image="$("$devcluster" image-build busybox)"
  kaniko_image="$("$devcluster" image-build kaniko)"
  python_image="$("$devcluster" image-build python)"
  tinylm_image="$("$devcluster" image-build tinylm)"
  notebook_image="$("$devcluster" image-build notebook)"
  echo "    images ready in $(( $(date +%s) - t0 ))s"
  echo "==> starting the cluster: a real node, GKE and kind GPU pools simulated"
  SUBSTRATUS_PROFILE="${SUBSTRATUS_PROFILE:-gcp,kind}" hack/cluster-up.sh --real-node \
    --node-image "$operator_image" --node-image "$busybox_image" --node-image "$kaniko_image" \
    --node-image "$tinylm_image" --node-image "$notebook_image" \
    --node-forward "$s3_port"
  # The base images of examples/local/custom-model and examples/custom-model, in the registry
  # kaniko pulls from (python:3.11-slim through the builder's registry mirror).
  "$devcluster" image-push "$busybox_image" busybox 1.35.0
  "$devcluster" image-push "$python_image" library/python 3.11-slim
else
  echo "==> starting the cluster (simulated nodes)"
  SUBSTRATUS_PROFILE="${SUBSTRATUS_PROFILE:-gcp,kind}" hack/cluster-up.sh
fi

echo "==> installing the CRDs"
$kubectl apply --server-side -f crds/generated/crds.yaml >/dev/null
$kubectl wait --for=condition=Established --timeout=60s crd --all >/dev/null

wait_ready() { # seconds, then kubectl-get arguments
  local limit="$1"; shift
  for _ in $(seq 1 "$limit"); do
    not_ready="$($kubectl get "$@" -o jsonpath='{range .items[*]}{.status.ready}{"\n"}{end}' | grep -vc true || true)"
    [[ "$not_ready" == 0 ]] && return 0
    sleep 1
  done
  return 1
}

if [[ $real_node == 1 ]]; then
  echo "==> installing the operator with its chart (helm install --wait)"
  node_ip=10.254.0.2
  $kubectl get namespace substratus >/dev/null 2>&1 || $kubectl create namespace substratus >/dev/null
  $kubectl -n substratus create secret generic s3-credentials \
    --from-literal=AWS_ACCESS_KEY_ID=substratus --from-literal=AWS_SECRET_ACCESS_KEY=substratus-local \
    --dry-run=client -o yaml | $kubectl apply -f - >/dev/null
  # The node's S3 plugin mounts inline volumes with credentials of its own (root-only files).
  creds=/var/lib/substratus-node/csi-s3/credentials
  install -d -m 0700 "$creds"
  (umask 077
   printf '%s' "http://127.0.0.1:$s3_port" >"$creds/endpoint"
   printf '%s' us-east-1 >"$creds/region"
   printf '%s' substratus >"$creds/accessKeyID"
   printf '%s' substratus-local >"$creds/secretAccessKey")
  # --take-ownership: the CRDs applied above become the release's (the chart upgrades them).
  $helm upgrade --install substratus deploy/helm/substratus -n substratus --wait --timeout 180s \
    --take-ownership \
    --set image.repository=localhost/substratus/substratus-operator --set image.tag=dev \
    --set cloud=kind --set clusterName=local --set gpuCatalog=gcp \
    --set artifactBucketURL=s3://substratus-artifacts \
    --set registryURL=registry.substratus.svc.cluster.local:5000 \
    --set kind.s3Endpoint="http://$node_ip:$s3_port" --set kind.s3PublicEndpoint="$s3_endpoint" \
    --set kind.credentialsSecret=s3-credentials --set kind.csiDriver=s3.csi.substratus.ai \
    --set kind.volumes=inline \
    --set build.builderImage=localhost/substratus/kaniko:v1.23.2 \
    --set kind.registryMirror=registry.substratus.svc.cluster.local:5000 \
    --set gateway.enabled=true >/dev/null
  $kubectl -n substratus get pods -o wide

  echo "==> applying examples/local/ (real containers on the real node)"
  t0=$(date +%s)
  $kubectl apply -f examples/local/
  ready=0
  wait_ready 300 ai && ready=1
  echo "    Ready after $(( $(date +%s) - t0 ))s"
  echo
  $kubectl get ai -A
  echo
  echo "==> what the Server's fine-tuned adapter answers (kubectl port-forward, /v1/completions)"
  port="$(free_port)"
  $kubectl port-forward service/local-server-server "$port:8080" --address 127.0.0.1 >/dev/null 2>&1 &
  fwd=$!
  for _ in $(seq 1 50); do curl -fs "127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.2; done
  prompt='Q: What does a Server do?\nA:'
  echo "    prompt: $prompt"
  curl -fs "127.0.0.1:$port/v1/completions" -H 'Content-Type: application/json' \
    -d "{\"model\": \"finetuned\", \"prompt\": \"$prompt\", \"max_tokens\": 40, \"temperature\": 0, \"stop\": [\"\\n\"]}" \
    | python3 -c 'import json, sys; print("    completion:", repr(json.load(sys.stdin)["choices"][0]["text"]))' \
    || { echo "    no completion"; ready=0; }
  echo "    first completion $(( $(date +%s) - t0 ))s after kubectl apply"
  kill "$fwd" 2>/dev/null || true
  echo
  echo "==> the same adapter through the gateway as local-server/finetuned (OpenAI-compatible, routes by model; docs/gateway.md)"
  gw_port="$(free_port)"
  $kubectl -n substratus port-forward service/substratus-gateway "$gw_port:80" --address 127.0.0.1 >/dev/null 2>&1 &
  gw_fwd=$!
  for _ in $(seq 1 50); do curl -fs "127.0.0.1:$gw_port/v1/models" >/dev/null 2>&1 && break; sleep 0.2; done
  echo "    GET /v1/models: $(curl -fs "127.0.0.1:$gw_port/v1/models" | python3 -c 'import json, sys; print([m["id"] for m in json.load(sys.stdin)["data"]])' || echo unavailable)"
  curl -fs "127.0.0.1:$gw_port/v1/completions" -H 'Content-Type: application/json' \
    -d "{\"model\": \"local-server/finetuned\", \"prompt\": \"$prompt\", \"max_tokens\": 40, \"temperature\": 0, \"stop\": [\"\\n\"]}" \
    | python3 -c 'import json, sys; print("    completion through the gateway:", repr(json.load(sys.stdin)["choices"][0]["text"]))' \
    || { echo "    no completion through the gateway"; ready=0; }
  kill "$gw_fwd" 2>/dev/null || true
  echo
  echo "Objects in the bucket (.s3/substratus-artifacts):"
  (cd .s3/substratus-artifacts && find . -type f -path '*artifacts*' | sort | head -20)
  echo
  echo "==> sub run examples/local/custom-model (pack, upload, kaniko build, push, run)"
  t0=$(date +%s)
  "$target/debug/sub" --kubeconfig "$PWD/.cluster/kubeconfig" -n default run examples/local/custom-model --timeout 5m || ready=0
  echo "    upload → build → Ready in $(( $(date +%s) - t0 ))s"
  echo
  echo "==> sub run examples/custom-model (the cloud example: FROM python:3.11-slim, through the registry mirror)"
  t0=$(date +%s)
  "$target/debug/sub" --kubeconfig "$PWD/.cluster/kubeconfig" -n default run examples/custom-model --timeout 5m || ready=0
  echo "    upload → build → Ready in $(( $(date +%s) - t0 ))s"
else
  if ! { [[ -f .operator.pid ]] && kill -0 "$(cat .operator.pid)" 2>/dev/null; }; then
    echo "==> starting the operator (CLOUD=kind, GPU catalogue of GKE)"
    KUBECONFIG="$PWD/.cluster/kubeconfig" CLOUD=kind CLUSTER_NAME=local GPU_CATALOG=gcp \
      S3_ENDPOINT="$s3_endpoint" AWS_ACCESS_KEY_ID=substratus AWS_SECRET_ACCESS_KEY=substratus-local \
      METRICS_BIND_ADDRESS=127.0.0.1:18080 HEALTH_PROBE_BIND_ADDRESS=127.0.0.1:18081 \
      nohup "$target/debug/substratus-operator" run >.operator.log 2>&1 &
    echo $! >.operator.pid
    for _ in $(seq 1 100); do
      curl -fs 127.0.0.1:18081/readyz >/dev/null 2>&1 && break
      kill -0 "$(cat .operator.pid)" 2>/dev/null || { cat .operator.log >&2; exit 1; }
      sleep 0.2
    done
  fi
  echo "==> applying examples/"
  $kubectl apply -f examples/falcon-40b/ -f examples/facebook-opt-125m/
  ready=0
  wait_ready 120 ai -A && ready=1
  echo
  echo "==> sub run examples/custom-model (pack, upload, build, run)"
  "$target/debug/sub" --kubeconfig "$PWD/.cluster/kubeconfig" -n default run examples/custom-model --timeout 2m
  echo
  $kubectl get ai -A
fi
echo
echo "Everything runs in the background. Try:"
echo "  export KUBECONFIG=$PWD/.cluster/kubeconfig"
echo "  $SUBSTRATUS_CONTROLPLANE_BIN/kubectl get ai -A"
echo "  $target/debug/sub get"
echo "Stop it all with hack/down.sh."
[[ "$ready" == 1 ]] || { echo "some examples are not Ready yet; see kubectl describe" >&2; exit 1; }
