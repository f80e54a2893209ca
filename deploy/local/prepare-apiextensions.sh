#!/usr/bin/env bash
# Builds a current apiextensions-apiserver (the CRD machinery of Kubernetes 1.36, CEL included) from Debian
# sid's packages, once per machine: no Debian suite carries a kube-apiserver newer than 1.20, but sid's Go
# library packages hold everything the standalone apiextensions-apiserver needs. The CRD tests use it to
# prove the CRDs install on a current apiserver and that their CEL rules behave.
#
# The binary is cached under $DPS_CACHE_DIR (default ~/.cache/dps-operator); later runs return at once.
# Prints the directory holding the binary on its last line.
set -euo pipefail

cache_dir="${DPS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dps-operator}"
out_dir="$cache_dir/apiextensions-apiserver/bin"
binary="$out_dir/apiextensions-apiserver"
# sid's Go toolchains come and go (golang-1.26-go when this was written); the newest one builds the newest
# Kubernetes libraries, so it is picked from the index.
roots=(golang-k8s-apiextensions-apiserver-dev golang-k8s-apiserver-dev)
sid_list=/etc/apt/sources.list.d/dps-operator-sid.sources
sid_pin=/etc/apt/preferences.d/dps-operator-sid

log() { echo "[prepare-apiextensions] $*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

mkdir -p "$cache_dir"
# Not build.lock: prepare.sh may hold that one while it calls us.
exec 8>"$cache_dir/apiextensions.lock"
flock 8

if [ -x "$binary" ]; then
  echo "$out_dir"
  exit 0
fi

for c in python3 dpkg apt-get; do
  command -v "$c" >/dev/null || { log "$c is needed (run prepare.sh first)"; exit 1; }
done

work=$(mktemp -d "$cache_dir/apiextensions-work.XXXXXX")
remove_sid() {
  # sid stays on this machine only as long as the download takes: nothing else may ever install from it.
  if [ -f "$sid_list" ] || [ -f "$sid_pin" ]; then
    log "removing the temporary sid source"
    as_root rm -f "$sid_list" "$sid_pin"
    as_root apt-get update -qq >&2 || log "apt-get update after removing sid failed"
  fi
}
cleanup() {
  remove_sid
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

started=$SECONDS
log "adding a temporary Debian sid source (pin priority 50: never chosen unless asked for by version)"
printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: sid\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  | as_root tee "$sid_list" >/dev/null
printf 'Package: *\nPin: release n=sid\nPin-Priority: 50\n' | as_root tee "$sid_pin" >/dev/null
# Only sid's index is fetched here; List-Cleanup=0 keeps the other suites' indexes.
as_root apt-get update -qq -o Dir::Etc::SourceList="$sid_list" -o Dir::Etc::SourceParts=- \
  -o APT::Get::List-Cleanup=0 >&2

index=$(apt-get indextargets --format '$(FILENAME)' 'Created-By: Packages' 'Codename: sid' | head -n1)
[ -n "$index" ] || { log "sid's Packages index is missing after apt-get update"; exit 1; }

# The Depends closure of the roots among sid's Go library packages, as name=version lines. Only golang-*
# packages are followed: the build needs their sources alone (no cgo, and the toolchain comes separately).
/usr/lib/apt/apt-helper cat-file "$index" >"$work/Packages"
python3 - "$work/Packages" "${roots[@]}" >"$work/packages" <<'PY'
import re, sys

index, roots = sys.argv[1], sys.argv[2:]
packages, provides = {}, {}
for stanza in open(index, encoding="utf-8").read().split("\n\n"):
    fields, key = {}, None
    for line in stanza.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    name = fields.get("Package")
    if not name:
        continue
    packages[name] = fields
    for p in fields.get("Provides", "").split(","):
        p = re.split(r"[\s(:]", p.strip(), maxsplit=1)[0]
        if p:
            provides.setdefault(p, name)

def resolve(name):
    if name in packages:
        return name
    return provides.get(name)

def followed(name):
    return name.startswith("golang-") and name not in ("golang-go", "golang-src", "golang-any") \
        and not re.match(r"golang-\d", name)

wanted, todo = set(), list(roots)
while todo:
    name = resolve(todo.pop())
    if name is None or name in wanted:
        continue
    wanted.add(name)
    deps = packages[name].get("Depends", "") + "," + packages[name].get("Pre-Depends", "")
    for clause in deps.split(","):
        for alternative in clause.split("|"):
            dep = re.split(r"[\s(:]", alternative.strip(), maxsplit=1)[0]
            if dep and resolve(dep):
                if followed(resolve(dep)):
                    todo.append(dep)
                break
missing = [r for r in roots if r not in wanted]
if missing:
    sys.exit("not in sid: " + " ".join(missing))
toolchains = [int(m.group(1)) for m in (re.fullmatch(r"golang-1\.(\d+)-go", p) for p in packages) if m]
if not toolchains:
    sys.exit("no golang-1.N-go in sid")
go_version = f"1.{max(toolchains)}"
for tool in (f"golang-{go_version}-go", f"golang-{go_version}-src"):
    if tool not in packages:
        sys.exit("not in sid: " + tool)
    wanted.add(tool)
for name in sorted(wanted):
    print(f"{name}={packages[name]['Version']}")
PY
go_version=$(sed -n 's/^golang-\(1\.[0-9]*\)-go=.*/\1/p' "$work/packages")
apiext_version=$(sed -n 's/^golang-k8s-apiextensions-apiserver-dev=\([0-9]*\.[0-9]*\.[0-9]*\).*/\1/p' "$work/packages")
[ -n "$apiext_version" ] || { log "cannot tell the apiextensions-apiserver version"; exit 1; }
log "downloading $(wc -l <"$work/packages") packages from sid (apiextensions-apiserver $apiext_version, Go $go_version)"
mkdir -p "$work/debs" "$work/root"
(cd "$work/debs" && xargs apt-get download -qq -o APT::Sandbox::User=root <"$work/packages" >&2)
log "downloaded $(du -sh "$work/debs" | cut -f1)"
remove_sid

for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$work/root"; done
# Debian's packages link into /usr/share and /usr/lib by absolute paths; point those links into our root.
find "$work/root" -type l -lname '/*' | while read -r link; do
  ln -sfn "$work/root$(readlink "$link")" "$link"
done

# Kubernetes 1.x releases apiextensions-apiserver as 0.x; kubectl and clients read the server version.
k8s_minor=$(echo "$apiext_version" | cut -d. -f2)
k8s_version="1.${apiext_version#*.}"
ldflags="-X k8s.io/component-base/version.gitVersion=v$k8s_version"
ldflags="$ldflags -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$k8s_minor"
log "building apiextensions-apiserver v$k8s_version (about 5 minutes on 2 cores, once per machine)"
mkdir -p "$work/home" "$work/out"
env GOROOT="$work/root/usr/lib/go-$go_version" GOPATH="$work/root/usr/share/gocode" GO111MODULE=off \
  GOTOOLCHAIN=local GOPROXY=off GOFLAGS= CGO_ENABLED=0 HOME="$work/home" GOCACHE="$work/home/go-build" \
  "$work/root/usr/lib/go-$go_version/bin/go" build -trimpath -ldflags "$ldflags" \
  -o "$work/out/apiextensions-apiserver" k8s.io/apiextensions-apiserver >&2
mkdir -p "$out_dir"
cp "$work/out/apiextensions-apiserver" "$binary.tmp"
mv "$binary.tmp" "$binary"
echo "v$k8s_version" >"$out_dir/VERSION"
log "built $binary (v$k8s_version) in $((SECONDS - started)) s"
echo "$out_dir"
