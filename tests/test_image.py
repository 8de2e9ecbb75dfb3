"""The image recipe: the Dockerfile's install commands are the README's, and what they do
works. No container engine runs here, so the commands run as they would in the build stage,
into a clean virtualenv, offline (the tests may only reach loopback):

- the wheel is built from the tree (`pip wheel`, without build isolation: the venv's
  setuptools instead of one from PyPI, and its mypy: the analysis is compiled, as `setup.py`
  does wherever mypyc and a C compiler are at hand) and holds the package and nothing else;
- it installs with pip into a new venv (`--no-index`, the README's command; its
  dependencies, which the image gets as wheels from PyPI, come from this venv through a
  `.pth` line *after* the new venv's own site-packages, so the code that runs is the wheel's);
- the installed `eventmesh-health` checks a bundled dump and prints `serve --help`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

from eventmesh_health import compiled

ROOT = Path(__file__).resolve().parent.parent


def dockerfile_commands() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    return [m.strip() for m in re.findall(r"^RUN (.+)$", text, re.M)]


def readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Container image\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_the_dockerfile_runs_the_readme_commands() -> None:
    assert dockerfile_commands() == readme_commands()
    text = (ROOT / "Dockerfile").read_text()
    images = re.findall(r"^FROM (\S+)", text, re.M)
    assert images == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]  # two stages, one base
    assert re.search(r"^ARG PYTHON_IMAGE=python:[\w.-]+@sha256:[0-9a-f]{64}$", text, re.M)
    # Non-root, and the runtime stage needs no shell: no RUN after the second FROM, an
    # ENTRYPOINT and CMD in exec form.
    runtime = text.split("\nFROM ${PYTHON_IMAGE}\n", 1)[1]
    assert "\nRUN " not in runtime
    assert re.search(r'^USER 65532:65532$', runtime, re.M)
    assert re.search(r'^ENTRYPOINT \["/opt/eventmesh-health/bin/eventmesh-health"\]$',
                     runtime, re.M)
    assert re.search(r'^CMD \["serve"\]$', runtime, re.M)


def run(*args: str | Path, cwd: Path = ROOT, ok: tuple[int, ...] = (0,),
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          check=False, timeout=300, env=env)
    assert done.returncode in ok, (args, done.returncode, done.stdout[-2000:],
                                   done.stderr[-2000:])
    return done


def test_the_wheel_installs_into_a_clean_venv_and_runs(tmp_path: Path) -> None:
    commands = readme_commands()
    assert commands[0] == "python -m pip wheel --wheel-dir /wheels /src"
    wheels = tmp_path / "wheels"
    # 1. the wheel (offline: no build isolation, and the dependencies are not fetched)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--wheel-dir", wheels, ROOT)
    (wheel,) = wheels.glob("eventmesh_health-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "eventmesh_health/py.typed" in names
    assert "eventmesh_health/cli.py" in names
    assert not [n for n in names if n.startswith(("tests/", "deploy/", "examples/"))]
    # serve's web page: its templates and static files travel in the wheel
    assert "eventmesh_health/serve/templates/base.html" in names
    assert "eventmesh_health/serve/static/app.js" in names
    # the analysis compiled by mypyc (this venv has it and a C compiler), its source beside it
    group = compiled.group_name(compiled.digest())
    assert [n for n in names if n.startswith(f"{group}__mypyc.")], names
    for module in compiled.MODULES:
        source = compiled.source_path(module).relative_to(ROOT / "src").as_posix()
        assert source in names
        assert [n for n in names if n.startswith(source[:-len(".py")] + ".cpython-")], module
    # 2. the README's venv and install commands, with its paths in tmp_path
    target = tmp_path / "opt" / "eventmesh-health"
    assert commands[1] == "python -m venv /opt/eventmesh-health"
    venv.EnvBuilder(with_pip=False).create(target)  # pip comes from this interpreter
    clean_python = target / "bin" / "python"
    assert commands[2] == ("/opt/eventmesh-health/bin/pip install --no-index --find-links "
                           "/wheels eventmesh-health")
    run(sys.executable, "-m", "pip", "--python", clean_python, "install", "--no-index",
        "--find-links", wheels, "--no-deps", "eventmesh-health")
    site = Path(run(clean_python, "-c", "import sysconfig; print(sysconfig.get_path("
                    "'purelib'))").stdout.strip())
    (site / "zz-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # 3. the installed entry point
    exe = target / "bin" / "eventmesh-health"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = run(clean_python, "-c", "import eventmesh_health; print(eventmesh_health.__file__)",
                cwd=tmp_path, env=env).stdout.strip()
    assert where.startswith(str(site)), where  # the wheel's code, not the tree's
    healthy = run(exe, "check", "--snapshot", ROOT / "examples" / "healthy-mesh",
                  cwd=tmp_path, env=env)
    assert "Healthy" in healthy.stdout
    broken = run(exe, "check", "--snapshot", ROOT / "examples" / "kafka-quota-reached",
                 cwd=tmp_path, env=env, ok=(1,))
    assert "TopicFailed" in broken.stdout
    shown = run(exe, "--version", cwd=tmp_path, env=env)
    assert "; analysis compiled by mypyc" in shown.stdout
    helped = run(exe, "serve", "--help", cwd=tmp_path, env=env)
    assert "--notify-url" in helped.stdout and "--probe" in helped.stdout
