#!/usr/bin/env bash
# The main job on one machine: a local Kubernetes control plane (unless DPS_KUBECONFIG names a cluster of
# your own), the CRDs, and the operator in the foreground. Ctrl-C stops everything this script started.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state="${DPS_LOCAL_DIR:-$root/.local}"
log() { echo "[up] $*" >&2; }

"$root/deploy/local/prepare.sh" >/dev/null
log "building dps-operator"
cargo build --quiet --manifest-path "$root/Cargo.toml" --bin dps-operator
operator="$root/target/debug/dps-operator"

if [ -n "${DPS_KUBECONFIG:-}" ]; then
  kubeconfig="$DPS_KUBECONFIG"
  log "using your cluster from DPS_KUBECONFIG=$kubeconfig"
else
  mkdir -p "$state"
  "$root/deploy/local/control-plane.sh" start "$state/control-plane" "${DPS_APISERVER_PORT:-}"
  trap '"$root/deploy/local/control-plane.sh" stop "$state/control-plane"' EXIT
  kubeconfig="$state/control-plane/kubeconfig"
fi
export KUBECONFIG="$kubeconfig"

log "installing CRDs"
# Client-side apply without schema validation: kubectl refuses the CEL rules against a 1.20 apiserver,
# which ignores them (the controller enforces the same rules).
"$operator" crds | kubectl apply --validate=false -f - >&2
kubectl wait --for condition=established --timeout=60s \
  crd/provisioningservices.dps.iot-operator.dev crd/individualenrollments.dps.iot-operator.dev \
  crd/enrollmentgroups.dps.iot-operator.dev crd/devicedeprovisions.dps.iot-operator.dev >&2

cat >&2 <<MSG

  Ready. In another terminal:
    export KUBECONFIG=$kubeconfig
    kubectl apply -f $root/examples/
    kubectl get iot

  Starting the operator in the foreground (Ctrl-C stops it and the local control plane).

MSG
"$operator" run
