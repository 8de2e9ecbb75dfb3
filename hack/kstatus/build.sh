#!/usr/bin/env bash
# Finds or builds the kstatus benchmark peer (benchmarks/kstatus: sigs.k8s.io/cli-utils'
# kstatus/status.Compute over every object of a JSON List). Progress goes to stderr; the LAST
# line on stdout is the binary's absolute path.
#
# Built once from the pinned module (benchmarks/kstatus/go.mod, go.sum committed) into
#   ${XDG_CACHE_HOME:-$HOME/.cache}/eventmesh-health/kstatus/<cli-utils version>/kstatus
# and reused while benchmarks/kstatus (go.mod, go.sum, main.go) is what it was built from
# (a hash of those files is kept next to it, in kstatus.source).
set -euo pipefail

trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf 'kstatus: %s\n' "$*" >&2; }
die() { printf 'kstatus: ERROR: %s\n' "$*" >&2; exit 1; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
src="$(cd "$here/../../benchmarks/kstatus" && pwd -P)"

# The pinned version comes from the module's go.mod (single source of truth).
modver() { # modver <go.mod> <module path>
  awk -v m="$2" '($1 == "require" && $2 == m) { print $3; exit } ($1 == m) { print $2; exit }' "$1"
}
version="$(modver "$src/go.mod" sigs.k8s.io/cli-utils)"
[[ -n "$version" ]] || die "cannot read the sigs.k8s.io/cli-utils version from $src/go.mod"

out="${XDG_CACHE_HOME:-$HOME/.cache}/eventmesh-health/kstatus/$version"
mkdir -p "$out"
out="$(cd "$out" && pwd -P)"
bin="$out/kstatus"
source_hash="$(cd "$src" && cat go.mod go.sum main.go | sha256sum | cut -d' ' -f1)"

if [[ -x "$bin" && "$(cat "$out/kstatus.source" 2>/dev/null)" == "$source_hash" ]]; then
  log "cached ($bin)"
else
  command -v go >/dev/null 2>&1 || die "the 'go' toolchain is not on PATH (needed to build kstatus)"
  tmp="$out/.kstatus.tmp.$$"
  trap "rm -f '$tmp'" EXIT  # an interrupted build leaves no half binary
  log "building from $src (cli-utils $version)..."
  start=$SECONDS
  (cd "$src" && CGO_ENABLED=0 go build -mod=readonly -buildvcs=false -trimpath \
    -ldflags "-s -w" -o "$tmp" .) >&2 || die "building kstatus failed (see the go output above)"
  mv -f "$tmp" "$bin"
  printf '%s\n' "$source_hash" > "$out/kstatus.source"
  trap - EXIT
  log "built in $((SECONDS - start))s"
fi

printf '%s\n' "$bin"
