#!/usr/bin/env bash
# Delete the kind cluster hack/kind/up.sh made (not exercised in kubevisor's CI).
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER=${KUBEVISOR_KIND_CLUSTER:-kubevisor}
kind delete cluster --name "$CLUSTER"
rm -f "${KUBEVISOR_KIND_KUBECONFIG:-$PWD/.kubevisor/kind-$CLUSTER.kubeconfig}"
