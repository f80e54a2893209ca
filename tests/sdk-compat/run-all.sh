#!/usr/bin/env bash
# Runs the whole SDK compatibility harness against a running engine.
# usage: tests/sdk-compat/run-all.sh ENGINE_JSON
# Needs node >= 18 and `npm ci` done in tests/sdk-compat (this script runs it when node_modules is missing).
# Trusts the engine's CA through NODE_EXTRA_CA_CERTS (taken from engine.json unless already set).
# Every step runs even after a failure; the script exits non-zero when any step failed.
set -uo pipefail

ENGINE_JSON=${1:?usage: run-all.sh ENGINE_JSON}
ENGINE_JSON=$(cd "$(dirname "$ENGINE_JSON")" && pwd)/$(basename "$ENGINE_JSON")
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE"

if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund >/dev/null || { echo "npm ci failed"; exit 1; }
fi

passed=0
failed=0
pass() { echo "PASS run-all: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL run-all: $*"; failed=$((failed + 1)); }
# errmsg: shows the trace lines (SDK_COMPAT_TRACE=1) of the last failed helper, then prints its error line
errmsg() { grep '^[<>]\{3\}' "$TMP/err" | sed 's/^/    /' >&2; grep -v '^[<>]\{3\}' "$TMP/err" | tail -1; }
enroll() { node enroll.js "$ENGINE_JSON" "$@"; }
device() { node device.js "$ENGINE_JSON" "$@"; }
suffix="$(date +%s)-$RANDOM"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# Trust the engine's CA: NODE_EXTRA_CA_CERTS names one file, and may already name another bundle (some machines
# set it to the system bundle), so the engine CA is appended to whatever it named.
ENGINE_CA=$(node -e 'console.log(require(process.argv[1]).caCertificate)' "$ENGINE_JSON")
if [ -n "${NODE_EXTRA_CA_CERTS:-}" ] && [ -f "$NODE_EXTRA_CA_CERTS" ] && [ "$NODE_EXTRA_CA_CERTS" != "$ENGINE_CA" ]; then
  cat "$NODE_EXTRA_CA_CERTS" "$ENGINE_CA" > "$TMP/ca-bundle.pem"
  NODE_EXTRA_CA_CERTS="$TMP/ca-bundle.pem"
else
  NODE_EXTRA_CA_CERTS="$ENGINE_CA"
fi
export NODE_EXTRA_CA_CERTS

echo "== preflight.js (engine.json and TLS as the SDKs will see them)"
if node preflight.js "$ENGINE_JSON"; then pass "preflight.js"; else fail "preflight.js"; fi

echo "== service.js"
if node service.js "$ENGINE_JSON"; then pass "service.js"; else fail "service.js"; fi

echo "== registry.js"
if node registry.js "$ENGINE_JSON"; then pass "registry.js"; else fail "registry.js"; fi

# expect_assigned NAME REG_ID DEVICE_ARGS... : registers, then checks the registration state and the hub device
expect_assigned() {
  local name=$1 reg=$2; shift 2
  local out rc
  out=$(device "$@" 2>&1); rc=$?
  echo "$out" | sed 's/^/    device.js: /'
  if [ $rc -ne 0 ]; then fail "$name: device.js exited $rc"; return 1; fi
  local hub dev
  read -r _ hub dev <<<"$(echo "$out" | grep '^assigned ' | tail -1)"
  if [ -z "$hub" ] || [ -z "$dev" ]; then fail "$name: no 'assigned <hub> <deviceId>' line"; return 1; fi
  local state
  if ! state=$(enroll regstate "$reg" 2>"$TMP/err"); then fail "$name: registration state: $(errmsg)"; return 1; fi
  if [ "$state" != "assigned $hub $dev" ]; then fail "$name: registration state is '$state', expected 'assigned $hub $dev'"; return 1; fi
  local hubdev
  if ! hubdev=$(enroll hub-device "$hub" "$dev" 2>"$TMP/err"); then fail "$name: device $dev in hub $hub: $(errmsg)"; return 1; fi
  pass "$name: assigned to $hub as $dev (registration state assigned; hub device: $hubdev)"
}

# expect_refused NAME HOW DEVICE_ARGS... : device.js must exit 3 with "refused HOW" (at-register, disabled, failed)
expect_refused() {
  local name=$1 how=$2; shift 2
  local out rc
  out=$(device "$@" 2>&1); rc=$?
  echo "$out" | sed 's/^/    device.js: /'
  if [ $rc -ne 3 ]; then fail "$name: device.js exited $rc, expected 3 (refused $how)"
  elif ! echo "$out" | grep -q "^refused $how "; then fail "$name: refused, but not $how"
  else pass "$name: refused $how"; fi
}

echo "== device.js, individual symmetric-key enrollment"
REG="sdk-dev-$suffix"
if KEY=$(enroll individual-sym "$REG"); then
  pass "individual enrollment $REG created"
  expect_assigned "register $REG (symmetric key)" "$REG" "$REG" "$KEY"
  expect_assigned "register $REG again" "$REG" "$REG" "$KEY"
  WRONG=$(node -e 'console.log(require("crypto").randomBytes(64).toString("base64"))')
  expect_refused "register $REG with a wrong key" at-register "$REG" "$WRONG"
  if out=$(enroll delete-regstate "$REG" 2>"$TMP/err"); then pass "registration state of $REG deleted with its etag"
  else fail "delete registration state of $REG: $(errmsg)"; fi
else
  fail "individual enrollment $REG not created"
fi
enroll cleanup-individual "$REG"

echo "== device.js, disabled individual enrollment"
REG="sdk-dis-$suffix"
if KEY=$(enroll individual-sym "$REG" disabled); then
  pass "disabled individual enrollment $REG created"
  expect_refused "register $REG (disabled enrollment)" disabled "$REG" "$KEY"
else
  fail "disabled individual enrollment $REG not created"
fi
enroll cleanup-individual "$REG"

echo "== device.js, unknown registration id"
expect_refused "register an unknown registration id" at-register "sdk-unknown-$suffix" "$(node -e 'console.log(require("crypto").randomBytes(32).toString("base64"))')"

echo "== device.js, symmetric-key enrollment group"
GRP="sdk-grp-$suffix"
REG="sdk-grpdev-$suffix"
if GKEY=$(enroll group-sym "$GRP"); then
  pass "enrollment group $GRP created"
  DKEY=$(node enroll.js - derive "$GKEY" "$REG")
  expect_assigned "register $REG through group $GRP (derived key)" "$REG" "$REG" "$DKEY"
  if regs=$(enroll group-regs "$GRP" 2>"$TMP/err") && [[ " $regs " == *" $REG:assigned "* ]]; then
    pass "group $GRP lists $REG among its registration states ($regs)"
  else
    fail "group $GRP registration states: '${regs:-}' $(errmsg)"
  fi
  # Revoking one member of a group: a disabled individual enrollment (throw-away keys) for its registration ID
  # must block it even though the enabled group still covers it.
  if enroll individual-sym "$REG" disabled >/dev/null; then
    pass "disabled individual enrollment for group member $REG created"
    expect_refused "register $REG through group $GRP while a disabled individual enrollment exists" disabled "$REG" "$DKEY"
  else
    fail "disabled individual enrollment for group member $REG not created"
  fi
else
  fail "enrollment group $GRP not created"
fi
enroll cleanup-individual "$REG"
enroll cleanup-group "$GRP"

echo "== device.js, individual X.509 enrollment (self-signed)"
REG="sdk-x509-$suffix"
if openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=$REG" \
     -addext "extendedKeyUsage=clientAuth" -keyout "$TMP/dev.key" -out "$TMP/dev.pem" 2>"$TMP/openssl.err"; then
  if out=$(enroll individual-x509 "$REG" "$TMP/dev.pem" 2>"$TMP/err"); then
    pass "X.509 enrollment $REG created"
    expect_assigned "register $REG (X.509 client certificate)" "$REG" --x509 "$TMP/dev.pem" "$TMP/dev.key"
  else
    fail "X.509 enrollment $REG not created: $(errmsg)"
  fi
else
  fail "openssl could not make a test certificate: $(cat "$TMP/openssl.err")"
fi
enroll cleanup-individual "$REG"

echo "== device.js, X.509 enrollment group (root CA -> intermediate CA -> device; the device sends leaf + intermediate)"
GRP="sdk-x509grp-$suffix"
REG="sdk-x509chain-$suffix"
mkcert() { # mkcert NAME CN ISSUER_NAME|'' CA(true|false)
  local ext="$TMP/$1.ext"
  if [ "$4" = true ]; then printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' > "$ext"
  else printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nauthorityKeyIdentifier=keyid\n' > "$ext"; fi
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$2" -keyout "$TMP/$1.key" -out "$TMP/$1.csr" 2>>"$TMP/openssl.err" &&
  if [ -z "$3" ]; then
    openssl x509 -req -in "$TMP/$1.csr" -signkey "$TMP/$1.key" -days 2 -extfile "$ext" -out "$TMP/$1.pem" 2>>"$TMP/openssl.err"
  else
    openssl x509 -req -in "$TMP/$1.csr" -CA "$TMP/$3.pem" -CAkey "$TMP/$3.key" -CAcreateserial -days 2 -extfile "$ext" -out "$TMP/$1.pem" 2>>"$TMP/openssl.err"
  fi
}
if [ -n "${SDK_COMPAT_SKIP_X509_CHAIN:-}" ]; then
  echo "skipped (SDK_COMPAT_SKIP_X509_CHAIN is set)"
elif mkcert root "sdk-root-$suffix" "" true && mkcert inter "sdk-inter-$suffix" root true && mkcert leaf "$REG" inter false; then
  cat "$TMP/leaf.pem" "$TMP/inter.pem" > "$TMP/leaf-chain.pem"
  if out=$(enroll group-x509 "$GRP" "$TMP/root.pem" 2>"$TMP/err"); then
    pass "X.509 enrollment group $GRP (signing certificate: root) created"
    expect_assigned "register $REG (leaf + intermediate, group on the root)" "$REG" --x509 "$TMP/leaf-chain.pem" "$TMP/leaf.key"
  else
    fail "X.509 enrollment group $GRP not created: $(errmsg)"
  fi
else
  fail "openssl could not make the test chain: $(tail -3 "$TMP/openssl.err")"
fi
enroll cleanup-individual "$REG"
enroll cleanup-group "$GRP"

echo "run-all: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
