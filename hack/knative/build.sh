#!/usr/bin/env bash
# Finds or builds the real Knative Eventing processes the tests run (tests/knative): the
# upstream reconcilers composed into one process (cmd/eventing-controllers here) and the three
# upstream data-plane mains (IMC channel_dispatcher, broker ingress, broker filter), plus the
# YAML the fixture applies, copied from the same module (CRDs, ConfigMaps, Deployments/Services
# for names and pod templates), so tests need no Go at run time. Progress goes to stderr; the
# LAST line on stdout is the absolute folder that holds them:
#
#   <folder>/{eventing-controllers,channel_dispatcher,ingress,filter}
#   <folder>/config/<path under the module's config/>.yaml
#
#   KNATIVE_ASSETS=/dir  use /dir as it is (no build); it must hold the same files
#   otherwise            build once from hack/knative/go.mod (knative.dev/eventing pinned there)
#                        into ${XDG_CACHE_HOME:-$HOME/.cache}/eventmesh-health/knative/eventing-<v>/
#                        and reuse it while the wrapper module (go.mod, go.sum, *.go) is what it
#                        was built from (a hash of those files is kept there, in knative.source).
set -euo pipefail

trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf 'knative: %s\n' "$*" >&2; }
die() { printf 'knative: ERROR: %s\n' "$*" >&2; exit 1; }

binaries=(eventing-controllers channel_dispatcher ingress filter)
# The YAML the fixture reads, as paths (globs) under the module's config/ folder.
yaml_files=(
  'core/resources/*.yaml'
  channels/in-memory-channel/resources/in-memory-channel.yaml
  'core/configmaps/*.yaml'
  channels/in-memory-channel/configmaps/event-dispatcher.yaml
  core/deployments/controller.yaml
  core/deployments/webhook.yaml
  channels/in-memory-channel/deployments/controller.yaml
  channels/in-memory-channel/deployments/dispatcher.yaml
  channels/in-memory-channel/deployments/dispatcher-service.yaml
  brokers/mt-channel-broker/deployments/controller.yaml
  brokers/mt-channel-broker/deployments/broker-ingress.yaml
  brokers/mt-channel-broker/deployments/broker-filter.yaml
)

# complete <folder>: true when every binary is executable and the YAML is there.
complete() {
  local bin
  for bin in "${binaries[@]}"; do [[ -f "$1/$bin" && -x "$1/$bin" ]] || return 1; done
  [[ -f "$1/config/core/resources/broker.yaml" \
    && -f "$1/config/channels/in-memory-channel/configmaps/event-dispatcher.yaml" \
    && -f "$1/config/brokers/mt-channel-broker/deployments/broker-filter.yaml" ]]
}

if [[ -n "${KNATIVE_ASSETS:-}" ]]; then
  assets="$KNATIVE_ASSETS"
  [[ -d "$assets" ]] || die "KNATIVE_ASSETS=$assets is not a directory"
  complete "$assets" || die "KNATIVE_ASSETS=$assets lacks one of: ${binaries[*]} (executable) or config/ (unset it to build them instead)"
  assets="$(cd "$assets" && pwd -P)"
  log "using KNATIVE_ASSETS"
  printf '%s\n' "$assets"
  exit 0
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"

# The pinned version comes from the wrapper module's go.mod (single source of truth).
version="$(awk '($1 == "require" && $2 == "knative.dev/eventing") { print $3; exit } ($1 == "knative.dev/eventing") { print $2; exit }' "$here/go.mod")"
[[ -n "$version" ]] || die "cannot read the knative.dev/eventing version from $here/go.mod"

out="${XDG_CACHE_HOME:-$HOME/.cache}/eventmesh-health/knative/eventing-$version"
mkdir -p "$out"
out="$(cd "$out" && pwd -P)"
# (hack/knative/v012 is the v0.12 wrapper module, built by build-v012.sh: not part of this one.)
source_hash="$(cd "$here" && find . -path ./v012 -prune -o \( -name '*.go' -o -name go.mod -o -name go.sum \) -print \
  | LC_ALL=C sort \
  | xargs cat | sha256sum | cut -d' ' -f1)"

if complete "$out" && [[ "$(cat "$out/knative.source" 2>/dev/null)" == "$source_hash" ]]; then
  log "cached ($out)"
  printf '%s\n' "$out"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "the 'go' toolchain is not on PATH (needed to build Knative Eventing; or set KNATIVE_ASSETS)"
tmp="$out/.build.tmp.$$"
trap "rm -rf '$tmp'" EXIT  # an interrupted build leaves no half binary
mkdir -p "$tmp/config"

moddir="$(cd "$here" && go mod download -json "knative.dev/eventing@$version" | awk -F'"' '$2 == "Dir" { print $4 }')"
[[ -d "$moddir/config" ]] || die "go mod download knative.dev/eventing@$version gave no module folder"
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
chmod -R u+w "$tmp/config"  # the module cache is read-only

log "building ${binaries[*]} from $here (knative.dev/eventing $version; a cold build takes 2-3 minutes)..."
start=$SECONDS
(cd "$here" && CGO_ENABLED=0 go build -mod=readonly -buildvcs=false -trimpath -p "${KNATIVE_BUILD_JOBS:-2}" \
  -ldflags "-s -w" -o "$tmp/" ./cmd/eventing-controllers \
  knative.dev/eventing/cmd/in_memory/channel_dispatcher \
  knative.dev/eventing/cmd/broker/ingress knative.dev/eventing/cmd/broker/filter) >&2 \
  || die "building Knative Eventing failed (see the go output above)"
log "built in $((SECONDS - start))s"

for bin in "${binaries[@]}"; do mv -f "$tmp/$bin" "$out/$bin"; done
rm -rf "$out/config" && mv "$tmp/config" "$out/config"
printf '%s\n' "$source_hash" > "$out/knative.source"
rm -rf "$tmp"
trap - EXIT

printf '%s\n' "$out"
