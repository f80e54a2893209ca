#!/usr/bin/env bash
# The main job on one machine: a local Kubernetes control plane (unless DPS_KUBECONFIG names a cluster of
# your own), the local provisioning engine, the CRDs, a ProvisioningService `local-dps` connected to the
# engine, and the operator. It runs until Ctrl-C or SIGTERM, then stops everything it started.
#
#   DPS_KUBECONFIG      use this cluster instead of starting a local control plane
#   DPS_LOCAL_DIR       state directory (default .local/): control plane, engine data, engine and operator logs
#   DPS_APISERVER_PORT  the local apiserver's port (default: a free one)
#   DPS_ENGINE_LISTEN   the engine's first loopback address and port (default 127.0.0.1:8443; the hubs take
#                       the next addresses). Port 443 (as root) suits SDKs that cannot take a port.
#   DPS_OPERATOR_BIN    a built dps-operator binary to use instead of building one with cargo
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state="${DPS_LOCAL_DIR:-$root/.local}"
log() { echo "[up] $*" >&2; }

control_plane_dir=""
engine_pid=""
operator_pid=""

# Stops one child: SIGTERM, then SIGKILL if it is still there after 15 s.
stop_child() {
  local pid=$1 deadline=$((SECONDS + 15))
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  # A second Ctrl-C while stopping must not leave half of it running.
  trap '' INT TERM
  log "stopping what up.sh started"
  if [ -n "$operator_pid" ]; then stop_child "$operator_pid"; fi
  if [ -n "$engine_pid" ]; then stop_child "$engine_pid"; fi
  if [ -n "$control_plane_dir" ]; then "$root/deploy/local/control-plane.sh" stop "$control_plane_dir"; fi
  log "stopped"
}
trap cleanup EXIT
# Without these traps bash would die on SIGTERM without running the EXIT trap.
trap 'exit 130' INT
trap 'exit 143' TERM

"$root/deploy/local/prepare.sh" >/dev/null
if [ -n "${DPS_OPERATOR_BIN:-}" ]; then
  operator="$DPS_OPERATOR_BIN"
else
  log "building dps-operator"
  cargo build --quiet --manifest-path "$root/Cargo.toml" --bin dps-operator
  operator="$root/target/debug/dps-operator"
fi
mkdir -p "$state"
state=$(cd "$state" && pwd)

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

log "starting the operator (log in $state/operator.log)"
# Metrics and probes on loopback, on a free port unless one is asked for (the log line
# "serving metrics and health probes" gives the address).
DPS_OPERATOR_METRICS_ADDR="${DPS_OPERATOR_METRICS_ADDR:-127.0.0.1:0}" "$operator" run >"$state/operator.log" 2>&1 &
operator_pid=$!
# local-dps Ready means the operator runs, reaches the apiserver and the engine: examples can go Ready now.
deadline=$((SECONDS + 60))
until kubectl wait -n default --for condition=Ready --timeout=5s provisioningservice/local-dps >/dev/null 2>&1; do
  kill -0 "$operator_pid" 2>/dev/null || { cat "$state/operator.log" >&2; log "the operator exited"; exit 1; }
  [ "$SECONDS" -lt "$deadline" ] || { cat "$state/operator.log" >&2; log "local-dps not Ready within 60s"; exit 1; }
done

cat >&2 <<MSG

  In another terminal (walk-through: README.md, "Revoking a device, step by step"):
    export KUBECONFIG=$kubeconfig
    kubectl apply -f $root/examples/
    kubectl get iot
    # a device registering as a real one would (engine.json has the ID scope, endpoint and CA):
    $operator device register --engine-json $engine_dir/engine.json --registration-id sensor-0042 \\
        --cert $root/examples/certs/sensor-0042.pem --key $root/examples/certs/sensor-0042.key

  Ctrl-C (or SIGTERM) stops the operator, the engine and the local control plane.

MSG
log "ready"
# Waiting in the shell (not running the operator in the foreground) lets the traps fire at once.
wait "$operator_pid"
