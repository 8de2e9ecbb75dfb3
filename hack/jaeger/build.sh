#!/usr/bin/env bash
# Finds or builds Jaeger (the tracing backend the trace tests feed and query: OTLP HTTP and Zipkin
# receivers, query API, in-memory storage). Progress goes to stderr; the LAST line on stdout is the
# absolute folder that holds the `jaeger` executable.
#
# Built, not fetched: github.com/jaegertracing/jaeger/cmd/jaeger at v1.75.0 (the same commit as the
# v2.12.0 binary) from the Go module proxy, once, into
#   ${XDG_CACHE_HOME:-$HOME/.cache}/eventmesh-health/jaeger-v1.75.0/
# Jaeger's go.mod has a replace directive (github.com/Shopify/sarama => v1.33.0), which
# `go install pkg@version` refuses, so a throw-away wrapper module requires jaeger at the tag and
# repeats that replace; with nothing else required, minimal version selection picks exactly the
# versions jaeger's go.mod pins. Built into a temporary folder, then moved into place: an interrupted
# build leaves no half binary. A cold build takes several minutes (see README, "Tests").
set -euo pipefail

trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf 'jaeger: %s\n' "$*" >&2; }
die() { printf 'jaeger: ERROR: %s\n' "$*" >&2; exit 1; }

module=github.com/jaegertracing/jaeger
version=v1.75.0   # single source of truth: bump here (and the replace below, from its go.mod)

out="${XDG_CACHE_HOME:-$HOME/.cache}/eventmesh-health/jaeger-$version"
mkdir -p "$out"
out="$(cd "$out" && pwd -P)"

if [[ -x "$out/jaeger" ]]; then
  log "cached ($out/jaeger)"
  printf '%s\n' "$out"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "the 'go' toolchain is not on PATH (needed to build jaeger)"
tmp="$out/.build.$$"
rm -rf "$tmp"
mkdir -p "$tmp/wrapper" "$tmp/bin"
trap "rm -rf '$tmp'" EXIT

cat >"$tmp/wrapper/go.mod" <<MOD
module eventmesh-health.local/jaeger-build

go 1.24.6

require $module $version

replace github.com/Shopify/sarama => github.com/Shopify/sarama v1.33.0
MOD
cat >"$tmp/wrapper/tools.go" <<'GO'
//go:build tools

package tools

import _ "github.com/jaegertracing/jaeger/cmd/jaeger"
GO

log "building $module/cmd/jaeger@$version (a cold build takes several minutes)..."
start=$SECONDS
(
  cd "$tmp/wrapper"
  export GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOTOOLCHAIN=local
  go mod tidy -e >&2 2>&1 || go mod download >&2
  nice -n 10 go build -trimpath -p "${JAEGER_BUILD_JOBS:-2}" \
    -ldflags "-s -w -X $module/internal/version.latestVersion=$version" \
    -o "$tmp/bin/jaeger" "$module/cmd/jaeger" >&2
) || die "building jaeger failed (see the go output above)"
[[ -x "$tmp/bin/jaeger" ]] || die "go build left no $tmp/bin/jaeger"
mv -f "$tmp/bin/jaeger" "$out/jaeger"
rm -rf "$tmp"
trap - EXIT
log "built in $((SECONDS - start))s"
printf '%s\n' "$out"
