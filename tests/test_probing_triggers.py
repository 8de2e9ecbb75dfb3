"""The checker's heartbeat Triggers: shape, deterministic names, and reconciliation that
writes only on change and only ever touches labelled Triggers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from eventmesh_health.probing.triggers import (
    HEARTBEAT_LABEL,
    TriggerConfig,
    TriggerManager,
    desired_trigger,
    pair_token_of,
    trigger_name,
)

CONFIG = TriggerConfig(receiver_url_template="http://c/heartbeat/{namespace}/{application}")


def test_desired_trigger() -> None:
    body = desired_trigger(CONFIG, "commerce-mock", "stage")
    assert body["metadata"]["name"] == "eventmesh-health-commerce-mock"
    assert body["metadata"]["labels"][HEARTBEAT_LABEL] == "true"
    assert body["spec"] == {
        "broker": "default",
        "filter": {"attributes": {"source": "commerce-mock",
                                  "type": "eventmesh-health.heartbeat",
                                  "eventtypeversion": "v1"}},
        "subscriber": {"uri": "http://c/heartbeat/stage/commerce-mock"},
    }


def test_dead_letter_sink_only_where_the_api_version_has_delivery() -> None:
    dl = "http://c/deadletter/{namespace}/{application}"
    v1alpha1 = TriggerConfig(CONFIG.receiver_url_template, dl)
    assert "delivery" not in desired_trigger(v1alpha1, "a", "ns")["spec"]
    v1beta1 = TriggerConfig(CONFIG.receiver_url_template, dl,
                            api_version="eventing.knative.dev/v1beta1")
    assert desired_trigger(v1beta1, "a", "ns")["spec"]["delivery"] == {
        "deadLetterSink": {"uri": "http://c/deadletter/ns/a"}}


def test_names_are_deterministic_and_fit() -> None:
    long = "x" * 200
    assert trigger_name(long) == trigger_name(long) and len(trigger_name(long)) <= 63
    assert trigger_name(long) != trigger_name(long + "y")
    assert trigger_name("a.b") != trigger_name("a-b")


class _Obj:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    def to_dict(self) -> dict[str, Any]:
        return self.raw


class FakeClient:
    def __init__(self, triggers: list[dict[str, Any]]) -> None:
        self.triggers = {(t["metadata"]["namespace"], t["metadata"]["name"]): t
                         for t in triggers}
        self.calls: list[tuple[str, str, str]] = []

    async def list(self, kind: Any, namespace: str, labels: dict[str, str]
                   ) -> AsyncIterator[_Obj]:
        for t in list(self.triggers.values()):
            have = t["metadata"].get("labels") or {}
            if all(have.get(k) == v for k, v in labels.items()):
                yield _Obj(t)

    async def create(self, obj: Any) -> None:
        raw = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
        key = (raw["metadata"]["namespace"], raw["metadata"]["name"])
        self.triggers[key] = raw
        self.calls.append(("create", *key))

    async def patch(self, kind: Any, name: str, patch: dict[str, Any], namespace: str,
                    patch_type: Any) -> None:
        t = self.triggers[(namespace, name)]
        t["metadata"].setdefault("labels", {}).update(patch["metadata"]["labels"])
        t["spec"] = {k: v for k, v in patch["spec"].items() if v is not None}
        self.calls.append(("patch", namespace, name))

    async def delete(self, kind: Any, name: str, namespace: str) -> None:
        del self.triggers[(namespace, name)]
        self.calls.append(("delete", namespace, name))


def user_trigger(namespace: str, name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name, "labels": {"function": "x"}},
            "spec": {"broker": "default"}}


async def test_reconcile_creates_adopts_deletes_and_leaves_user_triggers_alone() -> None:
    stale = desired_trigger(CONFIG, "a", "stage")
    stale["spec"]["subscriber"]["uri"] = "http://old"  # left over from a crashed run
    orphan = desired_trigger(CONFIG, "gone", "prod")  # an application no longer probed
    client = FakeClient([stale, orphan, user_trigger("stage", "mine"),
                         user_trigger("stage", trigger_name("b"))])
    manager = TriggerManager(client, CONFIG)
    assert await manager.reconcile([("a", "stage"), ("a", "prod")])
    assert sorted(client.calls) == [
        ("create", "prod", trigger_name("a")),
        ("delete", "prod", trigger_name("gone")),
        ("patch", "stage", trigger_name("a")),
    ]
    assert client.triggers[("stage", trigger_name("a"))]["spec"] == desired_trigger(
        CONFIG, "a", "stage", manager.tokens[("stage", "a")])["spec"]
    assert ("stage", "mine") in client.triggers

    client.calls.clear()
    assert await manager.reconcile([("a", "stage"), ("a", "prod")])
    assert client.calls == []  # no change, no write

    assert await manager.reconcile([])
    assert sorted(client.calls) == [("delete", "prod", trigger_name("a")),
                                    ("delete", "stage", trigger_name("a"))]
    assert set(client.triggers) == {("stage", "mine"), ("stage", trigger_name("b"))}


async def test_each_pair_gets_a_token_of_its_own_and_keeps_it() -> None:
    """A random pair token per Trigger, in its URL; later reconciliations, a new leader's
    manager (another address) and a failed write keep it: it never depends on the keys."""
    client = FakeClient([user_trigger("stage", "mine")])
    first = TriggerManager(client, TriggerConfig("http://{replica}/heartbeat/{namespace}/"
                                                 "{application}", replica="10.0.0.1:8081"))
    assert await first.reconcile([("a", "stage"), ("a", "prod"), ("b", "stage")])
    tokens = dict(first.tokens)
    assert set(tokens) == {("stage", "a"), ("prod", "a"), ("stage", "b")}
    assert len(set(tokens.values())) == 3 and all(len(t) >= 24 for t in tokens.values())
    for (ns, app), token in tokens.items():
        uri = client.triggers[(ns, trigger_name(app))]["spec"]["subscriber"]["uri"]
        assert uri == f"http://10.0.0.1:8081/heartbeat/{ns}/{app}?pair={token}"
        assert pair_token_of(client.triggers[(ns, trigger_name(app))]) == token

    successor = TriggerManager(client, TriggerConfig(
        "http://{replica}/heartbeat/{namespace}/{application}", replica="10.0.0.2:8081"))
    client.calls.clear()
    assert await successor.reconcile([("a", "stage"), ("a", "prod"), ("b", "stage")])
    assert sorted(c[0] for c in client.calls) == ["patch"] * 3  # to the new address only
    assert successor.tokens == tokens
    assert "10.0.0.2:8081" in client.triggers[("stage", trigger_name("a"))]["spec"][
        "subscriber"]["uri"]

    async def refuse(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the API server is away")

    client.patch = refuse  # type: ignore[method-assign]
    failing = TriggerManager(client, TriggerConfig(
        "http://{replica}/heartbeat/{namespace}/{application}", replica="10.0.0.3:8081"))
    assert not await failing.reconcile([("a", "stage"), ("a", "prod"), ("b", "stage")])
    assert failing.tokens == tokens  # the Triggers in the cluster carry them still
    assert pair_token_of({"spec": {"subscriber": {"uri": "http://x/?pair=short"}}}) is None
    assert pair_token_of({"spec": {"subscriber": {"uri": "http://x/?pair=a&pair=b"}}}) is None
