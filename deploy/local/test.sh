#!/usr/bin/env bash
# Every check and test: formatting, lints, unit tests, and integration tests on a real local control plane
# (or on the cluster named by DPS_KUBECONFIG). Installs what it needs on a fresh Debian machine.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
log() { echo "[test] $*" >&2; }

command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup) first" >&2; exit 1; }
# prepare.sh prints the directory of the tools it built or fetched (apiserver, helm).
tools=$("$root/deploy/local/prepare.sh" | tail -n1)
export PATH="$tools:$PATH"
# Kubernetes 1.36's apiextensions-apiserver for tests/crd_modern (built from Debian sid once per machine).
"$root/deploy/local/prepare-apiextensions.sh" >/dev/null

log "npm ci (the official Azure IoT SDKs for the compatibility test)"
(cd tests/sdk-compat && npm ci --no-audit --no-fund --loglevel=error)

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
log "cargo test (unit + integration)"
# The reliability tests append their figures here (cargo test hides what a passing test prints).
figures="$root/target/tmp/figures.txt"
rm -f "$figures"
# Doc tests are left out: there are none, and their "0 passed" would be the run's last word.
cargo test --locked --lib --bins --tests
log "figures of the reliability tests"
cat "$figures" >&2 2>/dev/null || true
