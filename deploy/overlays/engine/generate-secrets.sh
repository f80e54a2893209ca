#!/usr/bin/env bash
# Makes the in-cluster engine's keys and certificates once, in deploy/overlays/engine/secrets/ (git-ignored):
# a connection string per endpoint (the engine takes its keys from them, the operator uses them), a CA and
# a server certificate naming every endpoint. Names match the chart's (release dps-operator).
set -euo pipefail
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/secrets"
namespace=${NAMESPACE:-dps-operator}
[[ -f "$dir/tls.key" ]] && { echo "$dir exists already; delete it to make new keys" >&2; exit 0; }
mkdir -p "$dir"
umask 077
host() { echo "dps-operator-engine-$1.$namespace.svc"; }
for endpoint in dps hub1 hub2; do
  policy=iothubowner
  [[ $endpoint == dps ]] && policy=provisioningserviceowner
  printf 'HostName=%s;SharedAccessKeyName=%s;SharedAccessKey=%s' \
    "$(host "$endpoint")" "$policy" "$(openssl rand -base64 32)" >"$dir/$endpoint"
done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj "/CN=dps-operator local engine CA" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$(host dps)" \
  -keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:%s,DNS:%s\nextendedKeyUsage=serverAuth\n' "$(host dps)" "$(host hub1)" "$(host hub2)" >"$dir/ext"
openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 3650 \
  -extfile "$dir/ext" -out "$dir/tls.crt" 2>/dev/null
rm -f "$dir/tls.csr" "$dir/ext" "$dir/ca.srl"
echo "wrote $dir" >&2
