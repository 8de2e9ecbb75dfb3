#!/usr/bin/env bash
# Finds or builds the mypyc-compiled analysis (the modules `eventmesh_health.compiled.MODULES`
# names) for the sources in this tree, and puts it beside them in src/ (git ignores it). Progress
# goes to stderr; the LAST line on stdout is the folder of the cached build.
#
# Built once per source digest, Python and mypy version (setup.py: mypycify, gcc -O3) into
#   ${XDG_CACHE_HOME:-$HOME/.cache}/eventmesh-health/compiled/<digest>-<python>-mypy<version>/
# and copied from there into src/ (another worktree with the same sources builds nothing). A build
# of other sources already in src/ is removed first; left there it would never run anyway (see
# src/eventmesh_health/compiled.py). Needs a C compiler and Python's headers (Debian:
# `apt-get install gcc python3-dev` for the system Python; pyenv and python.org builds carry
# their headers). PYTHON=... picks the interpreter (default: the venv's).
set -euo pipefail

trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf 'compiled: %s\n' "$*" >&2; }
die() { printf 'compiled: ERROR: %s\n' "$*" >&2; exit 1; }

cd "$(dirname "$0")/../.."
root="$(pwd -P)"
python="${PYTHON:-$root/.venv/bin/python}"
[[ -x "$python" ]] || die "no $python (make the venv first: make .venv/bin/eventmesh-health)"
python="$(cd "$(dirname "$python")" && pwd -P)/$(basename "$python")"  # the build runs elsewhere

key="$("$python" - <<'PY'
import importlib.util, sys
from importlib.metadata import version
spec = importlib.util.spec_from_file_location("c", "src/eventmesh_health/compiled.py")
c = importlib.util.module_from_spec(spec); spec.loader.exec_module(c)
print(f"{c.digest()}-{sys.implementation.cache_tag}-mypy{version('mypy')}")
PY
)" || die "cannot read the sources' digest (is mypy installed in $python's environment?)"
out="${XDG_CACHE_HOME:-$HOME/.cache}/eventmesh-health/compiled/$key"

if [[ ! -f "$out/done" ]]; then
  "$python" -c 'import mypyc' 2>/dev/null || die "mypyc is not installed for $python (pip install mypy)"
  start=$SECONDS
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/eventmesh-health-compiled.XXXXXX")"
  trap "rm -rf '$tmp'" EXIT  # an interrupted build leaves nothing half built behind
  log "building $key (mypyc, then gcc -O3: a few minutes)..."
  mkdir -p "$tmp/tree"
  cp -r setup.py pyproject.toml README.md src "$tmp/tree/"
  find "$tmp/tree/src" \( -name '*.so' -o -name '__pycache__' \) -prune -exec rm -rf {} +
  (cd "$tmp/tree" && EVENTMESH_HEALTH_BUILD=compiled "$python" setup.py --quiet build_ext \
      --inplace --parallel "${COMPILED_BUILD_JOBS:-2}" >&2) \
    || die "mypyc or the C compiler failed (see above)"
  mkdir -p "$tmp/so"
  (cd "$tmp/tree/src" && find . -name '*.so' | tar -cf - -T -) | tar -C "$tmp/so" -xf - \
    || die "the build left no extension modules"
  mkdir -p "$(dirname "$out")"
  rm -rf "$out"
  mv "$tmp/so" "$out"
  touch "$out/done"
  rm -rf "$tmp"
  trap - EXIT
  log "built in $((SECONDS - start))s"
else
  log "cached ($out)"
fi

# Replace whatever build src/ holds by this one.
find src -name '*.so' -delete
(cd "$out" && find . -name '*.so' | tar -cf - -T -) | tar -C src -xf -
build="$("$python" -c 'import eventmesh_health.compiled as c; print(c.BUILD)')"
[[ "$build" == "compiled by mypyc" ]] || die "the build was copied into src/ but does not run: $build"
log "src/ runs the analysis $build"
echo "$out"
