#!/usr/bin/env bash
# The long form of the reliability tests (docs/operations.md#fault-failover-and-crash-testing): the
# controllers under fault mixes (5 rounds), 20 leader failovers under faults, 180 s of engine kills under
# load, 400 steps of the revocation invariant, 20,000 cases per parser property. DPS_SEED=N replays a run;
# DPS_FAILOVER_RUNS and DPS_LOAD_SECONDS override the sizes.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
log() { echo "[long] $*" >&2; }

tools=$("$root/deploy/local/prepare.sh" | tail -n1)
export PATH="$tools:$PATH"
export DPS_LONG=1

log "engine under load, faults and kill -9 (${DPS_LOAD_SECONDS:-180} s)"
cargo test --locked --test engine_load_crash -- --nocapture
log "leader failover under faults (${DPS_FAILOVER_RUNS:-20} runs)"
cargo test --locked --test integration failover_faults -- --nocapture
for round in 1 2 3 4 5; do
  log "controllers under fault mixes, round $round"
  # A new seed per round unless one is given.
  DPS_SEED=${DPS_SEED:-$(( $(date +%s) + round ))} cargo test --locked --test integration faults::controllers -- --nocapture
done
log "revocation invariant, long walk"
cargo test --locked --test integration revocation_invariant -- --nocapture
log "parser properties, 20,000 cases each"
PROPTEST_CASES=${PROPTEST_CASES:-20000} cargo test --locked --test parser_properties
