"""The watch cache's string sharing (`serve/compact.py`): same values, one copy of each short
string across objects parsed apart, long strings and non-strings untouched."""

from __future__ import annotations

import json

from eventmesh_health.serve.compact import SHORT, compact

TRIGGER = {
    "apiVersion": "eventing.knative.dev/v1alpha1", "kind": "Trigger",
    "metadata": {"name": "t", "namespace": "ns", "labels": {"app": "x"}, "generation": 2},
    "status": {"conditions": [{"type": "Ready", "status": "True", "message": "m" * 200}],
               "observedGeneration": 2, "ok": True, "none": None, "ratio": 0.5},
}


def parsed() -> dict:
    return json.loads(json.dumps(TRIGGER))  # new string objects, as each LIST page has


def test_the_value_is_unchanged() -> None:
    assert compact(parsed()) == TRIGGER


def test_short_strings_of_separately_parsed_objects_are_one_object() -> None:
    a, b = compact(parsed()), compact(parsed())
    first, second = a["status"]["conditions"][0], b["status"]["conditions"][0]
    assert first["status"] is second["status"]
    assert a["apiVersion"] is b["apiVersion"]
    assert next(iter(a["metadata"])) is next(iter(b["metadata"]))  # keys too


def test_long_strings_are_left_alone() -> None:
    a, b = compact(parsed()), compact(parsed())
    message = a["status"]["conditions"][0]["message"]
    assert len(message) > SHORT
    assert message == b["status"]["conditions"][0]["message"]
    assert message is not b["status"]["conditions"][0]["message"]


def test_containers_are_new_so_the_parsed_object_can_be_freed() -> None:
    source = parsed()
    kept = compact(source)
    assert kept["status"] is not source["status"]
    assert kept["status"]["conditions"] is not source["status"]["conditions"]


def test_anything_but_dicts_lists_and_strings_passes_through() -> None:
    for value in (None, True, 3, 0.5, ("a", "b")):
        assert compact(value) is value
