#!/usr/bin/env bash
# A real Kubernetes control plane on loopback: etcd + kube-apiserver + kube-controller-manager.
#
#   control-plane.sh start DIR [PORT]   start in the background, write DIR/kubeconfig, return when ready
#   control-plane.sh stop DIR           stop the processes started in DIR, by PID
#   control-plane.sh serve DIR [PORT]   start, print "ready DIR/kubeconfig", stop when standard input closes
#
# PORT is the apiserver's port (default: a free one). Binaries come from prepare.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { echo "[control-plane] $*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_until() { # DEADLINE_SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then log "timed out waiting for $what"; return 1; fi
    sleep 0.2
  done
}

start() {
  local dir=$1 port=${2:-}
  local bin
  bin=$("$here/prepare.sh" | tail -n1)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/pids" ]; then stop "$dir"; fi
  remove_etcd_data "$dir"
  rm -rf "$dir/certs"
  mkdir -p "$dir/certs" "$dir/logs"
  # etcd's data lives in memory when it can: the control plane is thrown away after each run anyway, and
  # on a loaded 2-core machine disk syncs made etcd time out requests ("etcdserver: request timed out").
  if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    ln -s "$(mktemp -d /dev/shm/dps-operator-etcd.XXXXXX)" "$dir/etcd"
  fi
  [ -n "$port" ] || port=$(free_port)
  local etcd_port etcd_peer_port
  etcd_port=$(free_port)
  etcd_peer_port=$(free_port)

  # Our own CA and serving certificate, so clients can verify 127.0.0.1 and localhost.
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=dps-operator-local-ca" \
    -keyout "$dir/certs/ca.key" -out "$dir/certs/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$dir/certs/apiserver.key" -out "$dir/certs/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' \
    >"$dir/certs/san.ext"
  openssl x509 -req -in "$dir/certs/apiserver.csr" -CA "$dir/certs/ca.crt" -CAkey "$dir/certs/ca.key" \
    -CAcreateserial -days 3650 -extfile "$dir/certs/san.ext" -out "$dir/certs/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$dir/certs/sa.key" 2048 2>/dev/null
  local token
  token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  echo "$token,admin,admin,system:masters" >"$dir/tokens.csv"
  chmod 600 "$dir/tokens.csv"

  : >"$dir/pids"
  setsid etcd --data-dir "$dir/etcd" --name local \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "local=http://127.0.0.1:$etcd_peer_port" \
    >"$dir/logs/etcd.log" 2>&1 </dev/null &
  echo $! >>"$dir/pids"
  wait_until 30 etcd curl -sf "http://127.0.0.1:$etcd_port/health"

  setsid "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --secure-port "$port" --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
    --tls-cert-file "$dir/certs/apiserver.crt" --tls-private-key-file "$dir/certs/apiserver.key" \
    --client-ca-file "$dir/certs/ca.crt" \
    --token-auth-file "$dir/tokens.csv" --authorization-mode RBAC \
    --enable-admission-plugins OwnerReferencesPermissionEnforcement \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$dir/certs/sa.key" --service-account-signing-key-file "$dir/certs/sa.key" \
    --service-cluster-ip-range 10.0.0.0/24 \
    >"$dir/logs/kube-apiserver.log" 2>&1 </dev/null &
  echo $! >>"$dir/pids"

  cat >"$dir/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority: $dir/certs/ca.crt
users:
- name: admin
  user:
    token: $token
contexts:
- name: local
  context:
    cluster: local
    user: admin
    namespace: default
current-context: local
KUBECONFIG
  chmod 600 "$dir/kubeconfig"
  wait_until 90 kube-apiserver curl -sf --cacert "$dir/certs/ca.crt" -H "Authorization: Bearer $token" \
    "https://127.0.0.1:$port/readyz"

  # Needed for namespace deletion and ownerReference garbage collection; no kubelet runs.
  setsid "$bin/kube-controller-manager" --kubeconfig "$dir/kubeconfig" \
    --controllers namespace,garbagecollector,serviceaccount-token \
    --service-account-private-key-file "$dir/certs/sa.key" --root-ca-file "$dir/certs/ca.crt" \
    --leader-elect=false --secure-port 0 --port 0 \
    >"$dir/logs/kube-controller-manager.log" 2>&1 </dev/null &
  echo $! >>"$dir/pids"
  # The default namespace is created by the apiserver shortly after it is ready.
  wait_until 30 "namespace default" kubectl --kubeconfig "$dir/kubeconfig" get namespace default
  log "ready: export KUBECONFIG=$dir/kubeconfig"
}

stop() {
  local dir=$1 pid
  [ -f "$dir/pids" ] || return 0
  # Reverse order: controller-manager, apiserver, etcd.
  for pid in $(tac "$dir/pids"); do kill "$pid" 2>/dev/null || true; done
  for pid in $(tac "$dir/pids"); do
    local deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -f "$dir/pids"
  remove_etcd_data "$dir"
}

remove_etcd_data() { # DIR: the data directory, or the in-memory one it links to
  local dir=$1
  if [ -L "$dir/etcd" ]; then rm -rf "$(readlink "$dir/etcd")"; fi
  rm -rf "$dir/etcd"
}

case "${1:-}" in
  start) start "$2" "${3:-}" ;;
  stop) stop "$2" ;;
  serve)
    dir=$2
    # Stop by PID, and drop etcd's data (logs stay in DIR/logs for post-mortems).
    trap 'stop "$dir"; remove_etcd_data "$dir"' EXIT
    trap 'exit 1' INT TERM
    start "$dir" "${3:-}"
    echo "ready $(cd "$dir" && pwd)/kubeconfig"
    # Our caller keeps our standard input open for as long as it wants the control plane.
    cat >/dev/null || true
    ;;
  *) echo "usage: $0 start|stop|serve DIR [PORT]" >&2; exit 2 ;;
esac
