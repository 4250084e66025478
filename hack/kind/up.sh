#!/usr/bin/env bash
# kubevisor on a local kind cluster, for users who have Docker:
#   hack/kind/up.sh            create the cluster, build and load both images, install
#                              kubevisor, run one VM to Ready, then the e2e suite
#   hack/kind/up.sh --no-e2e   the same without the e2e suite
#   hack/kind/down.sh          delete the cluster
# Needs docker (with BuildKit), kind and kubectl on PATH. NOT exercised in kubevisor's CI
# (no Docker engine there); kept correct by reading. The agents run on libvirt's test
# driver here (hack/kind/overlay explains why), so no guest really boots.
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${KUBEVISOR_KIND_CLUSTER:-kubevisor}
export KUBECONFIG=${KUBEVISOR_KIND_KUBECONFIG:-$PWD/.kubevisor/kind-$CLUSTER.kubeconfig}
TAG=kind

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "hack/kind/up.sh: $1 not found; install it: $2" >&2; exit 1; }
}
need docker "https://docs.docker.com/engine/install/"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "https://kubernetes.io/docs/tasks/tools/"

step() { printf '\n== %s\n' "$*"; }

step "kind cluster $CLUSTER (kubeconfig $KUBECONFIG)"
mkdir -p "$(dirname "$KUBECONFIG")"
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --config hack/kind/cluster.yaml --kubeconfig "$KUBECONFIG" --wait 180s
else
  kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"
fi

step "images"
docker build --target controller -t "kubevisor-controller:$TAG" .
docker build --target agent -t "kubevisor-agent:$TAG" .
kind load docker-image --name "$CLUSTER" "kubevisor-controller:$TAG" "kubevisor-agent:$TAG"

step "CRDs"
kubectl apply --server-side -k deploy/manifests/crds
kubectl wait --for=condition=Established crd -l app.kubernetes.io/part-of=kubevisor --timeout=60s

step "kubevisor (deploy/manifests through hack/kind/overlay)"
kubectl apply --server-side -k hack/kind/overlay
# The images are rebuilt under the same tag: restart so the pods run the new build.
kubectl -n kubevisor-system rollout restart deployment/kubevisor-controller daemonset/kubevisor-agent
kubectl -n kubevisor-system rollout status deployment/kubevisor-controller --timeout=180s
kubectl -n kubevisor-system rollout status daemonset/kubevisor-agent --timeout=180s
kubectl wait --for=condition=Ready hypervisorhosts --all --timeout=120s

step "smoke: deploy/examples/01-minimal-vm.yaml to Ready"
kubectl create namespace kubevisor-examples --dry-run=client -o yaml | kubectl apply -f -
kubectl -n kubevisor-examples apply --server-side -f deploy/examples/01-minimal-vm.yaml
kubectl -n kubevisor-examples wait vm/minimal --for=condition=Ready --timeout=180s
kubectl get vm,hvh -A

if [[ "${1:-}" != "--no-e2e" ]]; then
  step "e2e suite against the kind cluster"
  need .venv/bin/pytest "run \`make setup\` first"
  KUBEVISOR_E2E_KUBECONFIG="$KUBECONFIG" .venv/bin/pytest -m e2e tests/e2e
fi

step "done"
echo "export KUBECONFIG=$KUBECONFIG   # kubectl get vm -A"
echo "hack/kind/down.sh                # delete the cluster"
