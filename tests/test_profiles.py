"""Profiles as the one place a topology lives: the registry, `--profile` and its detection,
`source.profile`, and that nothing outside `topology/` knows the Kyma 1.x profile."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from eventmesh_health.probing.health import HopObjects
from eventmesh_health.probing.heartbeat import Hop
from eventmesh_health.topology import Kind
from eventmesh_health.topology.knative1 import PROFILE as KNATIVE_V1
from eventmesh_health.topology.kyma1 import DATA_PLANE
from eventmesh_health.topology.kyma1 import PROFILE as KYMA_1
from eventmesh_health.topology.registry import (
    AUTO,
    CHOICES,
    DEFAULT,
    PROFILES,
    ProfileError,
    combine,
    detect,
    lookup,
)
from tests.rulecases import BASE

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "eventmesh_health"
EXAMPLES = ROOT / "examples"
CLI = [sys.executable, "-m", "eventmesh_health"]


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=60,
                          check=False)


# --- the registry ---------------------------------------------------------------------------


def test_the_registry_holds_the_profiles_by_name() -> None:
    assert PROFILES == {"kyma-1": KYMA_1, "knative-v1": KNATIVE_V1} and DEFAULT is KYMA_1
    assert lookup("kyma-1") is KYMA_1 and lookup("knative-v1") is KNATIVE_V1
    with pytest.raises(ProfileError, match=r"unknown profile 'knative-v9' \(known: auto, kyma-1"):
        lookup("knative-v9")
    assert AUTO not in PROFILES
    assert CHOICES == ("auto", "kyma-1", "knative-v1", "kyma-1+knative-v1")
    assert lookup("kyma-1+knative-v1").name == "kyma-1+knative-v1"


def test_every_profile_is_complete_data() -> None:
    for name, profile in PROFILES.items():
        assert profile.name == name and profile.description
        assert profile.markers and set(profile.markers) <= set(profile.kinds)
        assert profile.application in profile.kinds or (
            profile.application is None and profile.flows), name
        ids = [link.id for link in profile.all_links]
        assert len(ids) == len(set(ids)), name
        for flow in profile.flows:
            assert set(flow.roots) <= set(flow.links[0].kinds) <= set(profile.kinds)
        plane = profile.data_plane
        assert plane is not None, name
        for probe in plane.flows:  # flows probed by heartbeats (knative-v1)
            flow = next(f for f in profile.flows if f.id == probe.flow)
            assert set(probe.roots) <= set(flow.roots), probe.flow
            assert probe.hop in {h.value for h in Hop}
            assert probe.subscriber.kind in profile.kinds
        if profile.application is None:
            assert not plane.hops and plane.flows, name
            continue
        assert plane.broker is not None and plane.channel is not None
        assert [h.id for h in plane.hops] == [h.value for h in Hop]  # upstream first
        for kind in (plane.broker.kind, plane.channel.kind, plane.trigger,
                     *(h.segment.kind for h in plane.hops), *(h.entry.kind for h in plane.hops)):
            assert kind in profile.kinds, kind


def test_detection_by_kind_keys_or_resources() -> None:
    assert detect({"Application.applicationconnector.kyma-project.io"}, "x") is KYMA_1
    assert detect({"httpsources.sources.kyma-project.io", "pods"}, "x") is KYMA_1


def test_knative_v1_is_told_from_v0_12_by_the_version() -> None:
    # Kyma 1.x runs Knative v0.12: the same Broker kind, at v1alpha1; only v1 means Knative v1.
    assert detect({"Broker.eventing.knative.dev/v1"}, "x") is KNATIVE_V1
    assert detect({"brokers.eventing.knative.dev/v1", "brokers.eventing.knative.dev"},
                  "x") is KNATIVE_V1
    with pytest.raises(ProfileError):
        detect({"Broker.eventing.knative.dev", "Broker.eventing.knative.dev/v1alpha1"}, "x")


def test_several_profiles_present_are_combined_into_one() -> None:
    both = detect({"Application.applicationconnector.kyma-project.io",
                   "Trigger.eventing.knative.dev/v1"}, "x")
    assert both.name == "kyma-1+knative-v1"
    assert both.application == KYMA_1.application and both.flows == KNATIVE_V1.flows
    assert both.data_plane is not None and KYMA_1.data_plane is not None
    assert KNATIVE_V1.data_plane is not None
    assert replace(both.data_plane, flows=()) == KYMA_1.data_plane
    assert both.data_plane.flows == KNATIVE_V1.data_plane.flows
    # A kind both read is read at the version the marker pinned.
    broker = next(k for k in both.kinds if k.kind == "Broker")
    assert broker.api_version == "eventing.knative.dev/v1"
    # Components named alike (Knative's eventing-controller) are one.
    names = [(c.namespace, c.deployment) for c in both.components]
    assert len(names) == len(set(names))
    clash = replace(KNATIVE_V1, name="other", flows=(), links=KYMA_1.links[:1])
    with pytest.raises(ProfileError, match="both define links application"):
        combine([KYMA_1, clash])


def test_detection_says_clearly_when_nothing_is_known() -> None:
    with pytest.raises(ProfileError) as err:
        detect({"Pod", "ConfigMap", "Broker.eventing.knative.dev"}, "the dump d")
    message = str(err.value)
    assert message.startswith("no known profile detected in the dump d")
    assert "kyma-1: applications.applicationconnector.kyma-project.io" in message
    assert "knative-v1: brokers.eventing.knative.dev/v1" in message
    assert "choose one with --profile (kyma-1, knative-v1)" in message


# A further profile is a new module and one registry entry; detection picks it by its markers.
_SOURCE_KIND = Kind("sources.example.dev/v1", "ExampleSource", "examplesources")
_OTHER = replace(KYMA_1, name="example", markers=(_SOURCE_KIND,),
                 kinds=(*KYMA_1.kinds, _SOURCE_KIND))


def test_a_further_profile_is_told_apart_by_its_markers() -> None:
    both = (KYMA_1, _OTHER)
    assert detect({"examplesources.sources.example.dev"}, "x", both) is _OTHER
    assert detect({"applications.applicationconnector.kyma-project.io"}, "x", both) is KYMA_1


# --- the data plane is the profile's ----------------------------------------------------------


def test_hop_objects_come_from_the_profile() -> None:
    objects = HopObjects.of(DATA_PLANE, "shop", "prod", "brokersub-x1")
    assert str(objects.segment[Hop.CHANNEL]) == "Subscription kyma-integration/brokersub-x1"
    assert str(objects.entry[Hop.INGRESS]) == "HTTPSource kyma-integration/shop"
    assert str(objects.segment[Hop.BROKER]) == "Broker prod/default"
    assert "brokersub-" in objects.segment_text[Hop.CHANNEL]


# --- the CLI ------------------------------------------------------------------------------------


def test_check_names_the_detected_profile_in_the_report() -> None:
    report = json.loads(run("check", "--snapshot", EXAMPLES / "healthy-mesh", "-o",
                            "json").stdout)
    assert report["source"]["profile"] == "kyma-1" and report["healthy"] is True
    named = json.loads(run("check", "--snapshot", BASE, "--profile", "kyma-1", "-o",
                           "json").stdout)
    assert named["source"]["profile"] == "kyma-1"


def test_a_dump_of_no_known_mesh_is_a_clear_usage_error(tmp_path: Path) -> None:
    (tmp_path / "cm.yaml").write_text(yaml.safe_dump(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "x"}}))
    result = run("check", "--snapshot", tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no known profile detected in the "
                                                   "dump"), result.stderr
    assert "--profile" in lines[0]
    forced = run("check", "--snapshot", tmp_path, "--profile", "kyma-1", "-o", "json")
    assert forced.returncode == 1, forced.stderr
    assert json.loads(forced.stdout)["source"]["profile"] == "kyma-1"


def test_the_profile_a_dump_names_is_used_and_checked(tmp_path: Path) -> None:
    info = {"apiVersion": "eventmesh-health.kyma-project.io/v1alpha1", "kind": "SnapshotInfo",
            "metadata": {"name": "snapshot"}, "takenAt": "2020-06-15T10:00:00Z",
            "collected": ["pods"], "profile": "kyma-1"}
    (tmp_path / "snapshot.yaml").write_text(yaml.safe_dump(info))
    result = run("check", "--snapshot", tmp_path, "-o", "json")
    assert json.loads(result.stdout)["source"]["profile"] == "kyma-1", result.stderr
    (tmp_path / "snapshot.yaml").write_text(yaml.safe_dump({**info, "profile": "nope"}))
    bad = run("check", "--snapshot", tmp_path)
    assert bad.returncode == 2 and "SnapshotInfo.profile: unknown profile 'nope'" in bad.stderr


def test_an_unknown_profile_name_is_a_usage_error(tmp_path: Path) -> None:
    shutil.copy(BASE, tmp_path / "mesh.yaml")
    for command in (["check", "--snapshot", tmp_path], ["explain", "x", "--snapshot", tmp_path],
                    ["dump", "-o", tmp_path / "d"]):
        result = run(*command, "--profile", "knative-v9")
        assert result.returncode == 2 and "knative-v9" in result.stderr, command
    help_text = run("serve", "--help").stdout
    assert "--profile" in help_text and "kyma-1" in help_text


# --- nothing outside topology/ knows the Kyma 1.x profile -----------------------------------------


def test_only_topology_imports_the_kyma_profile() -> None:
    offenders = []
    for path in sorted(SOURCE.rglob("*.py")):
        if path.parent.name == "topology":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "eventmesh_health.topology.kyma1"):
                offenders.append(str(path.relative_to(ROOT)))
            if isinstance(node, ast.ImportFrom) and node.module == "eventmesh_health.topology" \
                    and any(a.name == "kyma1" for a in node.names):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
