"""Builds the analysis' hot modules with mypyc (`eventmesh_health.compiled.MODULES`) where it
can: mypyc importable (a build requirement, and the dev venv's mypy) and a C compiler that
finds Python's headers. Anywhere else the package installs as its pure-Python source, which
is the same program, slower (say so: `eventmesh-health --version`). Everything else about the
package is in pyproject.toml.

`EVENTMESH_HEALTH_BUILD=pure` skips compiling; `=compiled` makes a missing compiler an error.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

from setuptools import Extension, setup

ROOT = Path(__file__).resolve().parent


def _compiled_module() -> object:
    spec = importlib.util.spec_from_file_location(
        "_eventmesh_health_compiled", ROOT / "src" / "eventmesh_health" / "compiled.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compiler_problem() -> str | None:
    """Why no C extension can be built here (None: it can)."""
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.errors import CCompilerError, DistutilsError
    from setuptools._distutils.sysconfig import customize_compiler, get_python_inc

    compiler = new_compiler()
    customize_compiler(compiler)
    with tempfile.TemporaryDirectory() as folder:
        probe = Path(folder) / "probe.c"
        probe.write_text("#include <Python.h>\nint probe(void) { return Py_IsInitialized(); }\n")
        try:
            compiler.compile([str(probe)], output_dir=folder, include_dirs=[get_python_inc()])
        except (CCompilerError, DistutilsError, OSError) as err:
            return f"no C compiler with Python's headers ({type(err).__name__}: {err})"
    return None


# What pip runs setup.py for besides building: metadata, for which mypyc would compile in vain.
_METADATA_ONLY = {"egg_info", "dist_info"}


def _ext_modules() -> list[Extension]:
    wanted = os.environ.get("EVENTMESH_HEALTH_BUILD", "auto")
    commands = {arg for arg in sys.argv[1:] if arg.isidentifier()}  # not options, nor paths
    if wanted == "pure" or (commands and commands <= _METADATA_ONLY):
        return []
    problem = None
    try:
        from mypyc.build import mypycify
    except ImportError:
        problem = "mypyc is not installed"
    else:
        problem = _compiler_problem()
    if problem is not None:
        if wanted == "compiled":
            sys.exit(f"eventmesh-health: cannot compile the analysis: {problem}. On Debian: "
                     "apt-get install gcc python3-dev (the headers of the system Python)")
        print(f"eventmesh-health: {problem}; installing the pure-Python analysis",
              file=sys.stderr)
        return []
    compiled = _compiled_module()
    modules: tuple[str, ...] = compiled.MODULES  # type: ignore[attr-defined]
    paths = [str(compiled.source_path(m, ROOT / "src").relative_to(ROOT))  # type: ignore[attr-defined]
             for m in modules]
    group = compiled.group_name(compiled.digest(ROOT / "src"))  # type: ignore[attr-defined]
    return mypycify(["--config-file", str(ROOT / "pyproject.toml"), *paths],
                    opt_level="3", group_name=group)


setup(ext_modules=_ext_modules())
