"""Which build of the analysis runs: the modules compiled by mypyc, or their Python source.

The source is the truth; the compiled modules (C extensions beside it, built by `setup.py`
when a C compiler is at hand: `make compiled`) are only faster. Their shared library is
named after a digest of the sources it was built from, so a build of older sources is
recognised and never run: the import system would take a stale `graph.*.so` over an edited
`graph.py`, so then every compiled module is loaded from its source instead (all of them:
compiled modules call one another directly, so one stale module would run in the others).
`EVENTMESH_HEALTH_PURE=1` asks for the source too (the tests compare the two builds).

Stdlib only, and never compiled itself: `setup.py` loads it by path to name what it builds.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# What the analysis spends its time in. Measured (bench_analysis.py, 249,990 objects, best of
# 3, alternating, load 4.2-4.8): all pure 2.79-2.81 s; these analysis modules compiled 1.68-1.76;
# with `topology` too 1.63-1.66 (its Kinds' and Links' fields read per object); adding
# `reasons` and `snapshot` gains nothing. Each is `mypy --strict` clean, as mypyc needs.
MODULES = (
    "eventmesh_health.analysis",
    "eventmesh_health.analysis.causes",
    "eventmesh_health.analysis.fields",
    "eventmesh_health.analysis.graph",
    "eventmesh_health.analysis.index",
    "eventmesh_health.analysis.multimap",
    "eventmesh_health.analysis.namemap",
    "eventmesh_health.analysis.report",
    "eventmesh_health.analysis.rules",
    "eventmesh_health.topology",
)
PURE_ENV = "EVENTMESH_HEALTH_PURE"
_SRC = Path(__file__).resolve().parent.parent


def source_path(module: str, src: Path = _SRC) -> Path:
    path = src.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def digest(src: Path = _SRC, modules: Sequence[str] = MODULES) -> str:
    """Of the compiled modules' sources (their names and bytes), as `setup.py` names a build."""
    sha = hashlib.sha256()
    for module in modules:
        sha.update(module.encode() + b"\0")
        sha.update(source_path(module, src).read_bytes() + b"\0")
    return sha.hexdigest()[:16]


def group_name(source_digest: str) -> str:
    """The mypyc group of a build: its shared library is `<group>__mypyc`, a top-level module."""
    return f"eventmesh_health_{source_digest}"


class _FromSource:
    """Finds the compiled modules' sources ahead of the extensions beside them (a meta path
    finder; not `importlib.abc`'s subclass, whose import costs every command 25 ms)."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        source = source_path(fullname)
        return importlib.util.spec_from_file_location(
            fullname, source,
            submodule_search_locations=[str(source.parent)] if source.name == "__init__.py"
            else None)


def _decide() -> str:
    if os.environ.get(PURE_ENV) == "1":
        return f"pure Python ({PURE_ENV}=1)"
    try:
        current = digest()
    except OSError as err:  # no sources to compare with (or to fall back on): as installed
        return f"as installed (its sources cannot be read: {type(err).__name__})"
    if importlib.machinery.PathFinder.find_spec(f"{group_name(current)}__mypyc") is not None:
        return "compiled by mypyc"
    if any(source_path(module).with_name(f"{source_path(module).stem}{suffix}").exists()
           for module in MODULES for suffix in importlib.machinery.EXTENSION_SUFFIXES):
        return "pure Python (the compiled build is of other sources: `make compiled`)"
    return "pure Python (no compiled build)"


# Decided once, when the package is first imported: before any compiled module can be.
BUILD = _decide()
if BUILD.startswith("pure"):
    sys.meta_path.insert(0, _FromSource())
