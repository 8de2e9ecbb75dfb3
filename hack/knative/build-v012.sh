#!/usr/bin/env bash
# Finds or builds REAL Knative Eventing v0.12.0 (what Kyma 1.11-1.20 ran) for the Kyma 1.x tests
# (tests/knative/v012.py): five upstream mains, unmodified, built from knative.dev/eventing@v0.12.0
# through the wrapper module hack/knative/v012 (go.mod pins the dep-era dependencies), plus the
# v0.12 YAML the fixture applies (CRDs, ConfigMaps, Deployments for names and env), copied from
# the same module. Progress goes to stderr; the LAST line on stdout is the absolute folder:
#
#   <folder>/{controller,ingress,filter,channel_controller,channel_dispatcher}
#   <folder>/config/<path under the module's config/>.yaml
#
#   KNATIVE_V012_ASSETS=/dir  use /dir as it is (no build); it must hold the same files
#   otherwise                 build once into
#                             ${XDG_CACHE_HOME:-$HOME/.cache}/eventmesh-health/knative/eventing-v0.12.0/
#                             and reuse it while the wrapper module (go.mod, go.sum, *.go) and this
#                             script are what it was built from (their hash is kept in knative.source).
#
# The opencensus patch: knative.dev/eventing@v0.12.0 calls trace.Span.SetSpanID
# (pkg/tracing/traceparent.go), which no released go.opencensus.io has. Its own hack/update-deps.sh
# applies hack/set-span-id.patch (7 lines) to the vendored go.opencensus.io v0.22.1; so does this
# script, to a copy of go.opencensus.io@v0.22.1 from the module cache, in a build folder next to a
# copy of the wrapper module (go.mod replaces go.opencensus.io => ./third_party/opencensus). The
# repo checkout is never written to.
set -euo pipefail

trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf 'knative-v0.12: %s\n' "$*" >&2; }
die() { printf 'knative-v0.12: ERROR: %s\n' "$*" >&2; exit 1; }

binaries=(controller ingress filter channel_controller channel_dispatcher)
packages=(
  knative.dev/eventing/cmd/controller
  knative.dev/eventing/cmd/broker/ingress
  knative.dev/eventing/cmd/broker/filter
  knative.dev/eventing/cmd/in_memory/channel_controller
  knative.dev/eventing/cmd/in_memory/channel_dispatcher
)
# The YAML the fixture reads, as paths (globs) under the module's config/ folder.
yaml_files=(
  '300-*.yaml'
  channels/in-memory-channel/300-in-memory-channel.yaml
  channels/in-memory-channel/200-dispatcher-service.yaml
  channels/in-memory-channel/500-controller.yaml
  channels/in-memory-channel/500-dispatcher.yaml
  config-logging.yaml
  config-observability.yaml
  config-tracing.yaml
  400-default-ch-config.yaml
  500-controller.yaml
)
OPENCENSUS_VERSION=v0.22.1  # Gopkg.lock's go.opencensus.io version (its revision is not served)

complete() {
  local bin
  for bin in "${binaries[@]}"; do [[ -f "$1/$bin" && -x "$1/$bin" ]] || return 1; done
  [[ -f "$1/config/300-broker.yaml" && -f "$1/config/channels/in-memory-channel/300-in-memory-channel.yaml" \
    && -f "$1/config/500-controller.yaml" ]]
}

if [[ -n "${KNATIVE_V012_ASSETS:-}" ]]; then
  assets="$KNATIVE_V012_ASSETS"
  [[ -d "$assets" ]] || die "KNATIVE_V012_ASSETS=$assets is not a directory"
  complete "$assets" || die "KNATIVE_V012_ASSETS=$assets lacks one of: ${binaries[*]} (executable) or config/ (unset it to build them instead)"
  assets="$(cd "$assets" && pwd -P)"
  log "using KNATIVE_V012_ASSETS"
  printf '%s\n' "$assets"
  exit 0
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
module="$here/v012"
version="$(awk '($1 == "require" && $2 == "knative.dev/eventing") { print $3; exit } ($1 == "knative.dev/eventing") { print $2; exit }' "$module/go.mod")"
[[ -n "$version" ]] || die "cannot read the knative.dev/eventing version from $module/go.mod"

out="${XDG_CACHE_HOME:-$HOME/.cache}/eventmesh-health/knative/eventing-$version"
mkdir -p "$out"
out="$(cd "$out" && pwd -P)"
source_hash="$( { (cd "$module" && find . -name '*.go' -o -name go.mod -o -name go.sum | LC_ALL=C sort | xargs cat); \
  cat "${BASH_SOURCE[0]}"; } | sha256sum | cut -d' ' -f1)"

if complete "$out" && [[ "$(cat "$out/knative.source" 2>/dev/null)" == "$source_hash" ]]; then
  log "cached ($out)"
  printf '%s\n' "$out"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "the 'go' toolchain is not on PATH (needed to build Knative Eventing v0.12; or set KNATIVE_V012_ASSETS)"
command -v patch >/dev/null 2>&1 || die "'patch' is not on PATH (needed for the opencensus patch)"
tmp="$out/.build.tmp.$$"
trap "rm -rf '$tmp'" EXIT  # an interrupted build leaves no half binary
mkdir -p "$tmp/config" "$tmp/src/third_party"

# The build folder: a copy of the wrapper module, and the patched opencensus it replaces.
cp "$module/go.mod" "$module/go.sum" "$module"/*.go "$tmp/src/"
moddir="$(cd "$tmp/src" && GOFLAGS=-mod=mod go mod download -json "knative.dev/eventing@$version" | awk -F'"' '$2 == "Dir" { print $4 }')"
[[ -d "$moddir/config" ]] || die "go mod download knative.dev/eventing@$version gave no module folder"
ocdir="$(cd "$tmp/src" && GOFLAGS=-mod=mod go mod download -json "go.opencensus.io@$OPENCENSUS_VERSION" | awk -F'"' '$2 == "Dir" { print $4 }')"
[[ -f "$ocdir/trace/trace.go" ]] || die "go mod download go.opencensus.io@$OPENCENSUS_VERSION gave no module folder"
cp -r "$ocdir" "$tmp/src/third_party/opencensus"
chmod -R u+w "$tmp/src/third_party/opencensus"  # the module cache is read-only
log "applying knative.dev/eventing@$version hack/set-span-id.patch to go.opencensus.io@$OPENCENSUS_VERSION"
(cd "$tmp/src/third_party/opencensus" && patch --quiet -p3 < "$moddir/hack/set-span-id.patch") >&2 \
  || die "the opencensus patch did not apply"

log "copying YAML from $moddir/config"
copied=0
for pattern in "${yaml_files[@]}"; do
  matches=("$moddir/config/"$pattern)
  [[ -f "${matches[0]}" ]] || die "$moddir/config/$pattern: no such file"
  for f in "${matches[@]}"; do
    rel="${f#"$moddir/config/"}"
    mkdir -p "$tmp/config/$(dirname "$rel")"
    cp "$f" "$tmp/config/$rel"
    copied=$((copied + 1))
  done
done
log "copied $copied YAML files"
chmod -R u+w "$tmp/config"

log "building ${binaries[*]} (knative.dev/eventing $version; a cold build takes about 150 s of CPU time)..."
start=$SECONDS
(cd "$tmp/src" && CGO_ENABLED=0 go build -mod=readonly -buildvcs=false -trimpath -p "${KNATIVE_BUILD_JOBS:-2}" \
  -ldflags "-s -w" -o "$tmp/" "${packages[@]}") >&2 \
  || die "building Knative Eventing $version failed (see the go output above)"
log "built in $((SECONDS - start))s"

for bin in "${binaries[@]}"; do mv -f "$tmp/$bin" "$out/$bin"; done
rm -rf "$out/config" && mv "$tmp/config" "$out/config"
printf '%s\n' "$source_hash" > "$out/knative.source"
rm -rf "$tmp"
trap - EXIT

printf '%s\n' "$out"
