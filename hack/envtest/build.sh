#!/usr/bin/env bash
# Finds or builds the kube-apiserver and etcd binaries used by the Python envtest
# fixture (tests/envtest). Progress goes to stderr; the LAST line on stdout is the
# absolute folder that holds both executables.
#
#   KUBEBUILDER_ASSETS=/dir  use /dir/kube-apiserver and /dir/etcd as they are (no build)
#   otherwise                build once from the pinned Go modules in hack/envtest/*/go.mod into
#                            ${XDG_CACHE_HOME:-$HOME/.cache}/eventmesh-health/envtest/k8s-<v>-etcd-<v>/
set -euo pipefail

trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf 'envtest: %s\n' "$*" >&2; }
die() { printf 'envtest: ERROR: %s\n' "$*" >&2; exit 1; }

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  assets="$KUBEBUILDER_ASSETS"
  [[ -d "$assets" ]] || die "KUBEBUILDER_ASSETS=$assets is not a directory"
  missing=()
  for bin in kube-apiserver etcd; do
    [[ -f "$assets/$bin" && -x "$assets/$bin" ]] || missing+=("$bin")
  done
  if ((${#missing[@]})); then
    die "KUBEBUILDER_ASSETS=$assets lacks executable: ${missing[*]} (unset it to build them instead)"
  fi
  assets="$(cd "$assets" && pwd -P)"
  log "using KUBEBUILDER_ASSETS"
  printf '%s\n' "$assets"
  exit 0
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
command -v go >/dev/null 2>&1 || die "the 'go' toolchain is not on PATH (needed to build kube-apiserver/etcd; or set KUBEBUILDER_ASSETS)"

# The pinned versions come from the wrapper modules' go.mod files (single source of truth).
modver() { # modver <go.mod> <module path>
  awk -v m="$2" '($1 == "require" && $2 == m) { print $3; exit } ($1 == m) { print $2; exit }' "$1"
}
k8s_version="$(modver "$here/kube-apiserver/go.mod" k8s.io/kubernetes)"
etcd_version="$(modver "$here/etcd/go.mod" go.etcd.io/etcd/server/v3)"
[[ -n "$k8s_version" && -n "$etcd_version" ]] || die "cannot read pinned versions from $here/*/go.mod"

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/eventmesh-health/envtest"
out="$cache_root/k8s-$k8s_version-etcd-$etcd_version"
mkdir -p "$out"
out="$(cd "$out" && pwd -P)"

# go build <module dir> <binary name> [ldflags]; atomic: build to a temp name, then mv.
build() {
  local dir="$1" name="$2" ldflags="$3"
  if [[ -x "$out/$name" ]]; then
    log "$name: cached ($out/$name)"
    return 0
  fi
  local tmp="$out/.$name.tmp.$$"
  trap "rm -f '$tmp'" EXIT  # an interrupted build leaves no half binary
  log "$name: building from $dir (a cold build takes several minutes)..."
  local start=$SECONDS
  (cd "$dir" && CGO_ENABLED=0 go build -mod=readonly -buildvcs=false -trimpath -p "${ENVTEST_BUILD_JOBS:-2}" \
    -ldflags "$ldflags" -o "$tmp" .) >&2 || die "building $name failed (see the go output above)"
  mv -f "$tmp" "$out/$name"
  trap - EXIT
  log "$name: built in $((SECONDS - start))s"
}

k8s_minor="${k8s_version#v}"; k8s_major="${k8s_minor%%.*}"; k8s_minor="${k8s_minor#*.}"; k8s_minor="${k8s_minor%%.*}"
version_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  version_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$k8s_major -X $pkg.gitMinor=$k8s_minor"
  version_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

build "$here/etcd" etcd "-s -w"
build "$here/kube-apiserver" kube-apiserver "-s -w$version_ldflags"

printf '%s\n' "$out"
