#!/usr/bin/env bash
# Finds or builds the command-line tools the deploy tests drive: helm (the chart) and promtool (the
# alert rules). Progress goes to stderr; the LAST line on stdout is the absolute folder that holds
# both executables.
#
# Built, not fetched: `go install <module>/cmd/<tool>@<version>` from the pinned Go modules below
# (neither go.mod has replace or exclude directives, so no wrapper module is needed), once, into
#   ${XDG_CACHE_HOME:-$HOME/.cache}/eventmesh-health/tools/helm-<v>-promtool-<v>/
# Each tool is built to a temporary folder, then moved into place: an interrupted build leaves no
# half binary. A cold build takes several minutes per tool (see README, "Tools").
set -euo pipefail

trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf 'tools: %s\n' "$*" >&2; }
die() { printf 'tools: ERROR: %s\n' "$*" >&2; exit 1; }

# The pinned versions (single source of truth: bump here).
helm_module=helm.sh/helm/v4
helm_version=v4.3.2
prometheus_module=github.com/prometheus/prometheus
prometheus_version=v0.316.0   # = Prometheus 3.16

out="${XDG_CACHE_HOME:-$HOME/.cache}/eventmesh-health/tools/helm-$helm_version-promtool-$prometheus_version"
mkdir -p "$out"
out="$(cd "$out" && pwd -P)"

# install <name> <package@version> <ldflags> [go build flags...]
install() {
  local name="$1" pkg="$2" ldflags="$3"; shift 3
  if [[ -x "$out/$name" ]]; then
    log "$name: cached ($out/$name)"
    return 0
  fi
  command -v go >/dev/null 2>&1 || die "the 'go' toolchain is not on PATH (needed to build $name)"
  local tmp="$out/.$name.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  trap "rm -rf '$tmp'" EXIT  # an interrupted build leaves no half binary
  log "$name: building $pkg (a cold build takes several minutes)..."
  local start=$SECONDS
  CGO_ENABLED=0 GOBIN="$tmp" GOFLAGS=-buildvcs=false \
    go install -trimpath -p "${TOOLS_BUILD_JOBS:-2}" -ldflags "$ldflags" "$@" "$pkg" >&2 \
    || die "building $name failed (see the go output above)"
  [[ -x "$tmp/$name" ]] || die "go install left no $tmp/$name"
  mv -f "$tmp/$name" "$out/$name"
  rm -rf "$tmp"
  trap - EXIT
  log "$name: built in $((SECONDS - start))s"
}

install helm "$helm_module/cmd/helm@$helm_version" \
  "-s -w -X $helm_module/internal/version.version=$helm_version -X $helm_module/internal/version.gitTreeState=clean"

v="${prometheus_version#v0.}"; m=$((10#${v%%.*}))  # v0.316.0 -> Prometheus 3.16.0
promver="$((m / 100)).$((m % 100)).${v#*.}"
install promtool "$prometheus_module/cmd/promtool@$prometheus_version" \
  "-s -w -X github.com/prometheus/common/version.Version=$promver -X github.com/prometheus/common/version.Branch=$prometheus_version" \
  -tags netgo

printf '%s\n' "$out"
