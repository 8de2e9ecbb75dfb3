"""The real entry point, in a subprocess: exit codes, each output format, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.rulecases import BASE

CLI = [sys.executable, "-m", "eventmesh_health"]


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """The base mesh with the Broker of `stage` gone, split over files like a dump."""
    docs = [d for d in yaml.safe_load_all(BASE.read_text())
            if not (d["kind"] == "Broker" and d["metadata"]["name"] == "default")]
    (tmp_path / "mesh.yaml").write_text(yaml.safe_dump_all(docs))
    other = {"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "Broker",
             "metadata": {"name": "default", "namespace": "elsewhere", "generation": 1},
             "status": {"observedGeneration": 1,
                        "conditions": [{"type": "Ready", "status": "True"}]}}
    (tmp_path / "snapshot.yaml").write_text(
        "apiVersion: eventmesh-health.kyma-project.io/v1alpha1\nkind: SnapshotInfo\n"
        "metadata: {name: snapshot}\ntakenAt: '2020-06-15T10:00:00Z'\n"
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "other.json").write_text(json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": [other]}))
    return tmp_path


def test_healthy_table_exit_0() -> None:
    result = run("check", "--snapshot", BASE)
    assert result.returncode == 0, result.stderr
    assert "Event mesh: ✓ Healthy" in result.stdout
    assert "commerce" in result.stdout and "stage" in result.stdout


def test_unhealthy_json_contract_exit_1(broken: Path) -> None:
    result = run("check", "--snapshot", broken, "-o", "json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["healthy"] is False and report["health"] == "Unhealthy"
    assert set(report) >= {"healthy", "health", "system", "applications"}
    (app,) = report["applications"]
    assert app["name"] == "commerce" and app["state"] == 4
    (ns,) = app["namespaces"]
    root = [f for f in ns["findings"] if f["rootCause"]]
    assert root == [{
        "severity": "Error", "health": "Unhealthy",
        "object": {"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "Broker",
                   "namespace": "stage", "name": "default"},
        "reason": "NotFound",
        "message": "missing: the namespace's default Broker",
        "rootCause": True, "causedBy": None,
    }]


def test_yaml_output_equals_json(broken: Path) -> None:
    as_json = json.loads(run("check", "--snapshot", broken, "-o", "json").stdout)
    as_yaml = run("check", "--snapshot", broken, "-o", "yaml")
    assert as_yaml.returncode == 1
    assert yaml.safe_load(as_yaml.stdout) == as_json


def test_table_names_root_cause(broken: Path) -> None:
    result = run("check", "--snapshot", broken)
    assert result.returncode == 1
    assert "Root causes" in result.stdout
    assert "Broker stage/default" in result.stdout and "NotFound" in result.stdout
    # Piped output is plain text: no colour escape codes.
    assert "\x1b[" not in result.stdout


def test_explain_tree_and_json(broken: Path) -> None:
    tree = run("explain", "commerce", "--snapshot", broken)
    assert tree.returncode == 1
    assert "Broker stage/default (missing)" in tree.stdout
    assert "ROOT CAUSE" in tree.stdout
    data = json.loads(run("explain", "commerce", "--snapshot", broken, "-o", "json").stdout)
    (ns,) = data["namespaces"]
    broker = next(link for link in ns["links"] if link["link"] == "broker")
    assert broker["exists"] is False and broker["rootCause"] is True


def test_explain_unknown_application_exit_2() -> None:
    result = run("explain", "nope", "--snapshot", BASE)
    assert result.returncode == 2
    assert "no Application 'nope'" in result.stderr and "commerce" in result.stderr


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.yaml", "apiVersion: v1\nkind: List\nitems:\n  - a: [1, 2\n", "bad.yaml:"),
        ("bad.json", '{"apiVersion": "v1",\n "kind": }', "bad.json:2: invalid JSON"),
    ],
)
def test_unparsable_input_names_file_and_line(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    (tmp_path / name).write_text(content)
    result = run("check", "--snapshot", tmp_path / name)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    missing = run("check", "--snapshot", tmp_path / "nope")
    assert missing.returncode == 2 and "no such file or directory" in missing.stderr
    empty = run("check", "--snapshot", tmp_path)
    assert empty.returncode == 2 and "no .yaml, .yml or .json files" in empty.stderr


def test_unreadable_file(tmp_path: Path) -> None:
    target = tmp_path / "mesh.yaml"
    shutil.copy(BASE, target)
    target.write_bytes(b"\xff\xfe not utf-8")
    result = run("check", "--snapshot", target)
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_bad_duration_is_a_usage_error() -> None:
    result = run("check", "--snapshot", BASE, "--stuck-deletion-after", "soon")
    assert result.returncode == 2 and "is not a duration" in result.stderr


def test_non_object_items_are_reported_not_lost(tmp_path: Path) -> None:
    shutil.copy(BASE, tmp_path / "mesh.yaml")
    (tmp_path / "junk.yaml").write_text("--- just a string\n--- 42\n")
    report = json.loads(run("check", "--snapshot", tmp_path, "-o", "json").stdout)
    messages = [f["message"] for f in report["system"]["findings"]]
    assert any("junk.yaml (document 1)" in m and "str" in m for m in messages)
    assert any("junk.yaml (document 2)" in m and "int" in m for m in messages)
    assert report["system"]["health"] == "Unknown"


def test_skipped_kinds_are_counted(tmp_path: Path) -> None:
    shutil.copy(BASE, tmp_path / "mesh.yaml")
    (tmp_path / "cm.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}", "namespace": "x"}}
        for i in range(3)
    ]}))
    report = json.loads(run("check", "--snapshot", tmp_path, "-o", "json").stdout)
    assert report["source"]["skippedKinds"] == {"ConfigMap": 3}
    assert report["healthy"] is True


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--probe-max-loss", "2", "--probe-max-loss"),
    ("--probe-latency-slo", "0s", "must be positive"),
    ("--probe-grace", "soon", "is not a duration"),
])
def test_bad_probing_settings_are_usage_errors(flag: str, value: str, message: str) -> None:
    result = run("serve", "--probe", flag, value)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_a_large_report_is_written_whole_before_the_unfreed_exit(tmp_path: Path) -> None:
    """`check` leaves without freeing what it holds (cli._exit_unfreed): a report far larger
    than a pipe's buffer still arrives whole, with the exit code; in-process, the same
    command raises SystemExit as before (the tests above that use CliRunner)."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
    import synthetic

    objects = synthetic.mesh(200, 3)
    (tmp_path / "mesh.json").write_text(json.dumps({"apiVersion": "v1", "items": objects,
                                                    "kind": "List"}, indent=4))
    for output in ("json", "yaml", "table"):
        result = run("check", "--snapshot", tmp_path / "mesh.json", "-o", output)
        assert result.returncode == 0, result.stderr
        assert "app-00199" in result.stdout
        if output == "json":
            assert len(result.stdout) > 2**16  # a pipe's buffer
            assert len(json.loads(result.stdout)["applications"]) == 200
        elif output == "yaml":
            assert len(yaml.safe_load(result.stdout)["applications"]) == 200
    closed = subprocess.run(  # a reader that stops early: as Python reports it, no traceback
        f"{' '.join(CLI)} check --snapshot {tmp_path / 'mesh.json'} -o json | head -c 10",
        shell=True, capture_output=True, text=True, timeout=60, check=False)
    assert closed.stdout == '{\n  "healt'
    assert "Traceback" not in closed.stderr
