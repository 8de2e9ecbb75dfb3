"""The compiled analysis (mypyc, `eventmesh_health.compiled`): CI's venv runs it, it gives
exactly what its pure-Python source gives, and a build of older sources is never run.

`make compiled` (a prerequisite of `make test`) builds it; without a build these tests fail
and say so, as a test needing any other built binary does.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

from eventmesh_health import compiled

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> str:
    done = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, check=False, env=env)
    assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
    return done.stdout


def pure_env(**more: str) -> dict[str, str]:
    return {**os.environ, compiled.PURE_ENV: "1", **more}


def test_this_venv_runs_the_compiled_analysis() -> None:
    assert compiled.BUILD == "compiled by mypyc", (
        f"the analysis runs as {compiled.BUILD}: build it with `make compiled`")
    for name in compiled.MODULES:
        module = importlib.import_module(name)
        assert str(module.__file__).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), (
            name, module.__file__)


def test_the_version_says_which_build_runs() -> None:
    assert "; analysis compiled by mypyc" in run("-m", "eventmesh_health", "--version")
    shown = run("-m", "eventmesh_health", "--version", env=pure_env())
    assert f"; analysis pure Python ({compiled.PURE_ENV}=1)" in shown


def test_the_compiled_build_gives_what_the_source_gives() -> None:
    lines = run("-m", "tests.compiled_reports").splitlines()
    pure = run("-m", "tests.compiled_reports", env=pure_env()).splitlines()
    assert lines[0] == "build compiled by mypyc"
    assert pure[0] == f"build pure Python ({compiled.PURE_ENV}=1)"
    assert len(lines) == len(pure) > 1000
    assert [a for a, b in zip(lines[1:], pure[1:], strict=True) if a != b] == []


def test_a_build_of_other_sources_is_never_run(tmp_path: Path) -> None:
    # A copy of the tree with its build, one compiled module's source then changed.
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    graph = src / "eventmesh_health" / "analysis" / "graph.py"
    probe = ("import eventmesh_health.analysis.graph as g, eventmesh_health.compiled as c;"
             "print(c.BUILD); print(g.__file__); print(getattr(g, 'EDITED', None))")
    env = {**os.environ, "PYTHONPATH": str(src)}
    before = run("-c", probe, env=env, cwd=tmp_path).splitlines()
    assert before[0] == "compiled by mypyc" and before[1].startswith(str(src)), before
    graph.write_text(graph.read_text() + "\nEDITED = True\n")
    after = run("-c", probe, env=env, cwd=tmp_path).splitlines()
    assert after == ["pure Python (the compiled build is of other sources: `make compiled`)",
                     str(graph), "True"]
    # and every compiled module comes from its source then, not only the one edited
    loaded = run("-c", "import eventmesh_health.compiled as c, importlib;"
                 "print(*(importlib.import_module(m).__file__ for m in c.MODULES))",
                 env=env, cwd=tmp_path).split()
    assert loaded and all(path.endswith(".py") for path in loaded), loaded
