#!/usr/bin/env bash
# The main job on one machine: a local Kubernetes control plane (unless DPS_KUBECONFIG names a cluster of
# your own), the local provisioning engine, the CRDs, a ProvisioningService `local-dps` connected to the
# engine, and the operator in the foreground. Ctrl-C stops everything this script started.
#
#   DPS_KUBECONFIG      use this cluster instead of starting a local control plane
#   DPS_ENGINE_LISTEN   the engine's first loopback address and port (default 127.0.0.1:8443; the hubs take
#                       the next addresses). Port 443 (as root) suits SDKs that cannot take a port.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state="${DPS_LOCAL_DIR:-$root/.local}"
log() { echo "[up] $*" >&2; }

control_plane_dir=""
engine_pid=""
cleanup() {
  if [ -n "$engine_pid" ]; then kill "$engine_pid" 2>/dev/null || true; fi
  if [ -n "$control_plane_dir" ]; then "$root/deploy/local/control-plane.sh" stop "$control_plane_dir"; fi
}
trap cleanup EXIT

"$root/deploy/local/prepare.sh" >/dev/null
log "building dps-operator"
cargo build --quiet --manifest-path "$root/Cargo.toml" --bin dps-operator
operator="$root/target/debug/dps-operator"
mkdir -p "$state"

if [ -n "${DPS_KUBECONFIG:-}" ]; then
  kubeconfig="$DPS_KUBECONFIG"
  log "using your cluster from DPS_KUBECONFIG=$kubeconfig"
else
  control_plane_dir="$state/control-plane"
  "$root/deploy/local/control-plane.sh" start "$control_plane_dir" "${DPS_APISERVER_PORT:-}"
  kubeconfig="$control_plane_dir/kubeconfig"
fi
export KUBECONFIG="$kubeconfig"

engine_dir="$state/engine"
log "starting the local engine (data in $engine_dir, log in $state/engine.log)"
mkdir -p "$engine_dir"
"$operator" engine --data-dir "$engine_dir" --listen "${DPS_ENGINE_LISTEN:-127.0.0.1:8443}" >"$state/engine.log" 2>&1 &
engine_pid=$!
deadline=$((SECONDS + 60))
until grep -q "^engine ready" "$state/engine.log"; do
  kill -0 "$engine_pid" 2>/dev/null || { cat "$state/engine.log" >&2; log "the engine exited"; exit 1; }
  [ "$SECONDS" -lt "$deadline" ] || { log "the engine was not ready within 60s"; exit 1; }
  sleep 0.2
done

log "installing CRDs"
# Client-side apply without schema validation: kubectl refuses the CEL rules against a 1.20 apiserver,
# which ignores them (the controller enforces the same rules).
"$operator" crds | kubectl apply --validate=false -f - >&2
kubectl wait --for condition=established --timeout=60s \
  crd/provisioningservices.dps.iot-operator.dev crd/individualenrollments.dps.iot-operator.dev \
  crd/enrollmentgroups.dps.iot-operator.dev crd/devicedeprovisions.dps.iot-operator.dev >&2

log "connecting to the engine: Secret local-dps-credentials and ProvisioningService local-dps in namespace default"
"$operator" engine-connection --engine-json "$engine_dir/engine.json" --name local-dps | kubectl apply -n default -f - >&2

cat >&2 <<MSG

  Ready. In another terminal:
    export KUBECONFIG=$kubeconfig
    kubectl apply -f $root/examples/
    kubectl get iot
    # a device registering as a real one would (engine.json has the ID scope, endpoint and CA):
    $operator device register --engine-json $engine_dir/engine.json --registration-id <id> --symmetric-key <key>

  Starting the operator in the foreground (Ctrl-C stops it, the engine and the local control plane).

MSG
"$operator" run
