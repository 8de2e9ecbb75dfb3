"""Hostile input to `check --snapshot`: every case ends in one line on stderr and exit 2,
or in a report that is not healthy — within seconds and bounded memory, never a traceback.

The inputs are generated here (bombs, depths, sizes, damaged copies of the healthy base
mesh), not checked in. The CLI runs in a subprocess with an address-space limit, so a
blow-up fails the test instead of the machine.
"""

from __future__ import annotations

import copy
import json
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from eventmesh_health.analysis import analyse
from eventmesh_health.model import Health
from eventmesh_health.snapshot import Snapshot
from eventmesh_health.topology.kyma1 import PROFILE as KYMA_1
from tests.rulecases import BASE, TAKEN_AT

CLI = [sys.executable, "-m", "eventmesh_health"]
MEMORY_LIMIT = 1536 * 1024 * 1024  # address space, not RSS: Python + Rust libraries need room
SECONDS = 30
EXIT_INPUT, EXIT_UNHEALTHY = 2, 1


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


# Root reads any file whatever its mode: to see "permission denied" as root, the command runs
# without the two capabilities that let it (util-linux's setpriv).
_NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
           "--inh-caps=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


def run(*args: str | Path, obey_modes: bool = False) -> subprocess.CompletedProcess[str]:
    prefix = _NO_DAC if obey_modes else []
    return subprocess.run(
        [*prefix, *CLI, *map(str, args)], capture_output=True, text=True, timeout=SECONDS,
        check=False, preexec_fn=_limits,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == EXIT_INPUT, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith(("error:", "Error:")), result.stderr[-2000:]
    assert len(result.stderr) < 1000, "an error is one short line, not an echo of the input"
    for word in words:
        assert word in result.stderr, result.stderr


def base_objects() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(BASE.read_text()) if d]


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# --- files that cannot be read as a dump: one line, exit 2 --------------------------------


BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)

UNREADABLE: dict[str, tuple[str, str | bytes, tuple[str, ...]]] = {
    # name: (file name, content, words the message must hold)
    "alias-bomb": ("bomb.yaml", BILLION_LAUGHS, ("aliases",)),
    "one-alias": ("alias.yaml", "a: &x {b: 1}\nc: *x\n", ("aliases",)),
    "deep-json": ("deep.json", "[" * 2000 + "]" * 2000, ("nested",)),
    "deep-json-objects": ("deep.json", '{"a":' * 5000 + "1" + "}" * 5000, ("nested",)),
    "deep-yaml-flow": ("deep.yaml", "a: " + "[" * 2000 + "]" * 2000, ("deep.yaml",)),
    "deep-yaml-block": ("deep.yaml", "".join(" " * i + f"k{i}:\n" for i in range(300)) + " " * 300
                        + "v: 1\n", ("deep.yaml",)),
    "huge-int-json": ("int.json", '{"kind": "List", "items": [], "x": ' + "9" * 5000 + "}",
                      ("64 bits",)),
    "huge-int-yaml": ("int.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n"
                      "  generation: " + "9" * 5000 + "\n", ("64 bits",)),
    "int-beyond-int64": ("int.yaml", "a: 9223372036854775808\n", ("64 bits",)),
    "invalid-utf8": ("bad.yaml", b"apiVersion: v1\nkind: \xff\xfe\n", ("cannot read",)),
    "binary": ("blob.yaml", bytes(range(256)) * 64, ("bad.yaml" if False else "blob.yaml",)),
    "nul-in-yaml": ("nul.yaml", "apiVersion: v1\x00\n", ("control character",)),
    "duplicate-status": ("dup.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n"
                         "status: {phase: Terminating}\nstatus: {phase: Active}\n",
                         ("duplicate", "status")),
    "duplicate-json-key": ("dup.json", '{"apiVersion": "v1", "kind": "Namespace", '
                           '"metadata": {"name": "x"}, "kind": "Pod"}', ("duplicate", "kind")),
    "invalid-json": ("bad.json", '{"a": [1,', ("bad.json:1", "invalid JSON")),
    "invalid-yaml": ("bad.yaml", "a:\n  b: 1\n c: 2\n", ("bad.yaml:3", "invalid YAML")),
    "info-taken-at-int": ("snapshot.yaml", "apiVersion: eventmesh-health.kyma-project.io/v1alpha1"
                          "\nkind: SnapshotInfo\nmetadata: {name: s}\ntakenAt: 5\n",
                          ("takenAt",)),
    "info-collected-maps": ("snapshot.yaml", "apiVersion: eventmesh-health.kyma-project.io/"
                            "v1alpha1\nkind: SnapshotInfo\nmetadata: {name: s}\n"
                            "takenAt: '2020-06-15T10:00:00Z'\ncollected: [{a: b}, 1]\n",
                            ("collected",)),
    "info-unavailable-list": ("snapshot.yaml", "apiVersion: eventmesh-health.kyma-project.io/"
                              "v1alpha1\nkind: SnapshotInfo\nmetadata: {name: s}\n"
                              "takenAt: '2020-06-15T10:00:00Z'\nunavailable: [pods]\n",
                              ("unavailable",)),
    "info-taken-at-long": ("snapshot.yaml", "apiVersion: eventmesh-health.kyma-project.io/"
                           "v1alpha1\nkind: SnapshotInfo\nmetadata: {name: s}\ntakenAt: '"
                           + "x" * 100_000 + "'\n", ("takenAt",)),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_an_unreadable_file_is_one_line_and_exit_2(tmp_path: Path, case: str) -> None:
    name, content, words = UNREADABLE[case]
    result = run("check", "--snapshot", write(tmp_path / name, content))
    assert_one_line_error(result, *words)


def test_the_billion_laughs_is_refused_in_a_folder_too(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", yaml.safe_dump_all(base_objects()))
    write(tmp_path / "z.yaml", BILLION_LAUGHS)
    assert_one_line_error(run("check", "--snapshot", tmp_path), "z.yaml", "aliases")


@pytest.mark.parametrize("hidden", ["folder", "file"])
def test_what_cannot_be_read_is_an_error_not_skipped(tmp_path: Path, hidden: str) -> None:
    """A failing object in a folder or file we may not read must not leave a Healthy mesh."""
    write(tmp_path / "mesh.yaml", yaml.safe_dump_all(base_objects()))
    locked = tmp_path / "hidden"
    if hidden == "folder":
        locked.mkdir()
        write(locked / "broken.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n")
    else:
        locked = write(tmp_path / "hidden.yaml", "apiVersion: v1\nkind: Namespace\n")
    mode = locked.stat().st_mode
    locked.chmod(0o000)
    try:
        result = run("check", "--snapshot", tmp_path, obey_modes=True)
    finally:
        locked.chmod(mode)
    assert_one_line_error(result, "hidden", "cannot read")


def test_a_symlink_loop_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "mesh.yaml", yaml.safe_dump_all(base_objects()))
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)
    assert_one_line_error(run("check", "--snapshot", tmp_path), "loop", "link")


def test_a_fifo_is_refused_instead_of_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")
    assert_one_line_error(run("check", "--snapshot", tmp_path / "pipe.yaml"), "regular file")


def test_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    assert_one_line_error(run("check", "--snapshot", tmp_path), "no .yaml")


@pytest.mark.parametrize("content", ["", "---\n", "[]", "{}", "null"])
def test_empty_input_is_not_healthy(tmp_path: Path, content: str) -> None:
    result = run("check", "--snapshot", write(tmp_path / "empty.yaml", content))
    assert result.returncode in (EXIT_UNHEALTHY, EXIT_INPUT), result.stderr
    assert "Traceback" not in result.stderr
    assert "✓ Healthy" not in result.stdout.splitlines()[0] if result.stdout else True


@pytest.mark.parametrize("flag", ["--stuck-deletion-after", "--progress-deadline"])
@pytest.mark.parametrize("value", ["99999999999999999999h", "1" + "0" * 400 + "s", "-5m"])
def test_absurd_durations_are_usage_errors(flag: str, value: str) -> None:
    result = run("check", "--snapshot", BASE, flag, value)
    assert_one_line_error(result, flag)


def test_an_impossible_date_as_kubectl_writes_it_stays_a_string(tmp_path: Path) -> None:
    """`kubectl create configmap cm --from-literal=expires=2020-02-30 -o yaml` writes the
    value unquoted; PyYAML (YAML 1.1) failed on it. YAML 1.2 reads a string."""
    objects = base_objects()
    app = next(o for o in objects if o["kind"] == "Application")
    text = yaml.safe_dump_all(objects)
    text = text.replace(f"  name: {app['metadata']['name']}\n",
                        f"  annotations:\n    expires: 2020-02-30\n  name: "
                        f"{app['metadata']['name']}\n", 1)
    assert "expires: 2020-02-30\n" in text
    result = run("check", "--snapshot", write(tmp_path / "mesh.yaml", text))
    assert result.returncode == 0, result.stderr  # the base mesh is healthy


# --- objects that were not understood: never Healthy ---------------------------------------


def analysed(objects: list[Any]) -> Health:
    now = datetime.fromisoformat(TAKEN_AT)
    snapshot = Snapshot(objects, now, collected=frozenset(k.key for k in KYMA_1.kinds))
    return analyse(snapshot, KYMA_1).health


def test_the_base_mesh_is_healthy() -> None:
    """The premise of every damage case below."""
    assert analysed(base_objects()) is Health.HEALTHY


def _reports_malformed(objects: list[Any]) -> tuple[Health, list[str]]:
    now = datetime.fromisoformat(TAKEN_AT).astimezone(UTC)
    snapshot = Snapshot(objects, now, collected=frozenset(k.key for k in KYMA_1.kinds))
    report = analyse(snapshot, KYMA_1)
    reasons = [f.reason for f in report.system.findings]
    for app in report.applications:
        reasons += [f.reason for f in app.findings]
        for ns in app.namespaces:
            reasons += [f.reason for f in ns.findings]
    return report.health, reasons


def test_two_ready_conditions_are_malformed_not_healthy() -> None:
    objects = base_objects()
    trigger = next(o for o in objects if o["kind"] == "Trigger")
    trigger["status"]["conditions"] = [{"type": "Ready", "status": "False"},
                                       {"type": "Ready", "status": "True"}]
    health, reasons = _reports_malformed(objects)
    assert health is not Health.HEALTHY and "MalformedObject" in reasons


def test_owner_references_as_a_map_are_malformed_not_healthy() -> None:
    """A failing Subscription whose ownerReferences is a map fell out of its Trigger's chain
    and left the mesh Healthy."""
    objects = base_objects()
    sub = next(o for o in objects if o["kind"] == "Subscription"
               and o["metadata"].get("ownerReferences"))
    sub["metadata"]["ownerReferences"] = sub["metadata"]["ownerReferences"][0]
    sub["status"]["conditions"] = [{"type": "Ready", "status": "False", "reason": "NotSubscribed"}]
    health, reasons = _reports_malformed(objects)
    assert health is not Health.HEALTHY and "MalformedObject" in reasons


def test_labels_of_the_wrong_type_are_malformed_not_healthy() -> None:
    objects = base_objects()
    labelled = next(o for o in objects if o["metadata"].get("labels"))
    labelled["metadata"]["labels"] = ["application-name", "commerce"]
    health, reasons = _reports_malformed(objects)
    assert health is not Health.HEALTHY and "MalformedObject" in reasons


_WRONG: tuple[object, ...] = ({"x": 1}, ["x"], 7, True, "x" * 300)


def _paths(value: Any, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every path to every value in an object (maps and lists), deepest last."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for position, item in enumerate(value):
            yield (*prefix, position)
            yield from _paths(item, (*prefix, position))


def _set(obj: Any, path: tuple[str | int, ...], value: object) -> None:
    for part in path[:-1]:
        obj = obj[part]
    obj[path[-1]] = value


# The fields the analysis reads to judge and to link (paths with list positions as 0).
_READ = (
    ("metadata", "name"), ("metadata", "namespace"), ("metadata", "labels"),
    ("metadata", "ownerReferences"), ("metadata", "generation"),
    ("metadata", "deletionTimestamp"), ("metadata", "creationTimestamp"),
    ("status", "conditions"), ("status", "conditions", 0), ("status", "conditions", 0, "type"),
    ("status", "observedGeneration"), ("status", "installationStatus"),
    ("status", "installationStatus", "status"), ("status", "provisionStatus"),
    ("status", "availableReplicas"), ("spec", "replicas"), ("spec", "filter"),
    ("spec", "filter", "attributes"), ("spec", "filter", "attributes", "source"),
    ("spec", "services"), ("spec", "clusterServiceClassExternalName"),
    ("spec", "serviceClassRef"), ("spec", "clusterServiceClassRef"),
    ("status", "channel"),
)


def _damage_cases() -> list[tuple[int, tuple[str | int, ...], int]]:
    cases = []
    for position, obj in enumerate(base_objects()):
        present = set(_paths(obj))
        for path in _READ:
            if path in present:
                for wrong, value in enumerate(_WRONG):
                    current: Any = obj
                    for part in path:
                        current = current[part]
                    if type(current) is not type(value) and not (
                            isinstance(current, str) and isinstance(value, str)):
                        cases.append((position, path, wrong))
    return cases


def test_a_wrong_type_in_any_field_the_analysis_reads_is_never_healthy() -> None:
    """Every object of the healthy base mesh, every field the analysis reads that it has,
    every wrong type: no exception, and the mesh is not Healthy."""
    cases = _damage_cases()
    assert len(cases) > 300, "the generator should reach hundreds of fields"
    healthy_after: list[str] = []
    original = base_objects()
    for position, path, wrong in cases:
        objects = copy.deepcopy(original)
        _set(objects[position], path, copy.deepcopy(_WRONG[wrong]))
        if analysed(objects) is Health.HEALTHY:
            obj = original[position]
            healthy_after.append(f"{obj['kind']} {obj['metadata'].get('name')} "
                                 f"{'.'.join(map(str, path))} = {_WRONG[wrong]!r:.20}")
    assert not healthy_after, "\n".join(healthy_after)


def test_a_list_of_100k_objects_is_read_in_seconds(tmp_path: Path) -> None:
    """A big dump (100k objects in one `kubectl get -o json` List) within the time and
    memory limits of `run`."""
    objects = base_objects()
    filler = [{"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": f"cm-{n}", "namespace": "default"},
               "data": {"k": "v" * 50}} for n in range(100_000 - len(objects))]
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects + filler}))
    result = run("check", "--snapshot", path, "-o", "json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["source"]["skippedKinds"]["ConfigMap"] == len(filler)


def test_echoed_text_is_bounded_and_cannot_forge_lines(tmp_path: Path) -> None:
    """A controller message of 1 MB with forged lines, an object name with a newline: the
    report repeats at most a bounded, escaped part of them."""
    objects = base_objects()
    trigger = next(o for o in objects if o["kind"] == "Trigger")
    forged = "fine\n✓ Healthy   everything\x1b[2J" + "x" * 1_000_000
    trigger["status"]["conditions"] = [{"type": "Ready", "status": "False",
                                        "reason": "R" * 10_000, "message": forged}]
    objects.append({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": "evil\nEvent mesh: ✓ Healthy" + "n" * 100_000}})
    path = write(tmp_path / "mesh.json", json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": objects}))
    for output in ("json", "table"):
        # a bare JSON array is no List: nothing in it identifies the mesh, so name the profile
        result = run("check", "--snapshot", path, "-o", output, "--profile", "kyma-1")
        assert result.returncode == EXIT_UNHEALTHY, result.stderr[-2000:]
        assert len(result.stdout) < 50_000, len(result.stdout)
        assert "\x1b" not in result.stdout
        assert not any(line.lstrip().startswith(("✓ Healthy", "Event mesh: ✓"))
                       for line in result.stdout.splitlines()), result.stdout[:3000]
        assert "everything" in result.stdout  # the message was read, and shown cut short
