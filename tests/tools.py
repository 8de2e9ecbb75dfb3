"""The command-line tools the deploy tests drive (promtool), found or built by
`hack/tools/build.sh` (`make tools`): never skipped, a missing tool fails the test that
needs it with what to do.

`EVENTMESH_HEALTH_PROMTOOL=/path/to/promtool` uses that binary as it is (no build).
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "hack" / "tools" / "build.sh"


class ToolMissing(RuntimeError):
    pass


@functools.cache
def tools_dir() -> Path:
    """The folder `hack/tools/build.sh` prints on its last line (it builds once, then
    finds its cache)."""
    if not BUILD.is_file():
        raise ToolMissing(
            f"{BUILD.relative_to(ROOT)} is not in this tree: it builds promtool "
            "(`make tools`). Merge it, or set EVENTMESH_HEALTH_PROMTOOL to a promtool "
            "binary (e.g. GOBIN=/tmp/promtool-bin go install "
            "github.com/prometheus/prometheus/cmd/promtool@v0.316.0)")
    done = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise ToolMissing(f"`bash {BUILD.relative_to(ROOT)}` failed "
                          f"(exit {done.returncode}):\n{done.stderr[-3000:]}")
    return Path(lines[-1])


def tool(name: str) -> Path:
    """The path of the executable `name` (promtool, helm)."""
    override = os.environ.get(f"EVENTMESH_HEALTH_{name.upper()}")
    path = Path(override) if override else tools_dir() / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ToolMissing(f"{name} is not an executable at {path}")
    return path
