#!/usr/bin/env bash
# The benchmarks, on the local control plane and engine (or the cluster named by DPS_KUBECONFIG): the
# engine's throughput, then the fleet figures (10,000 enrollments until Ready against a bare client, an
# operator restart over them, a group of 10,000 devices deleted, memory with 10,000 objects of each kind).
# Each prints its figures; the fleet benchmark ends with a Markdown table for the README.
# Environment: FLEET_OBJECTS, FLEET_DEVICES, FLEET_BUDGET_DEVICES, FLEET_SCENARIOS (see benches/fleet/main.rs).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup) first" >&2; exit 1; }
tools=$("$root/deploy/local/prepare.sh" | tail -n1)
export PATH="$tools:$PATH"

cargo bench --locked --bench engine_throughput
cargo bench --locked --bench fleet
