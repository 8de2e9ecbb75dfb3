"""Heartbeat probing of the data plane: does an application's event reach each namespace,
and if not, at which hop does the flow break?

The pure, self-contained core (no cluster, no I/O of its own):

    heartbeat.py  the heartbeat CloudEvent: building (binary, structured, legacy
                  event-service) and strict reading of CloudEvents over HTTP
    signing.py    HMAC-SHA256 signatures, rotatable keys from a Secret, freshness, replays
    tracker.py    per (application, namespace, hop): arrivals, loss, duplicates,
                  reordering, latency; what the sender sent; `ProbeMetrics`
    health.py     data-plane verdicts per (application, namespace) and hop localisation,
                  as `model.Finding`s
    receiver.py   the FastAPI router the heartbeat Triggers deliver to (import it from
                  there: it is not re-exported, so importing this package needs no web
                  framework and `serve` can import it without cycles)

How the pieces fit (the sender and the Trigger management are the callers'):

    keyring = keyring_from_secret_data(secret["data"])
    tracker = Tracker(window=..., grace=...)
    receiver = Receiver(tracker, Verifier(keyring))          # app.include_router(receiver.router)
    metrics = ProbeMetrics(tracker, receiver.rejected_counts).register(registry)
    run, seqs = new_run_id(pod_name), SequenceCounter()
    hb = keyring.sign(new_heartbeat(app, Hop.INGRESS, seqs.next(app, Hop.INGRESS), run=run,
                                    at=tracker.clock()))
    headers, body = to_legacy(hb)                             # POST legacy_path(app)
    tracker.record_sent(app, Hop.INGRESS, hb.sequence, run=run, at=hb.time)
    verdict = evaluate(tracker, app, namespace, since=trigger_ready_at)
"""

from eventmesh_health.probing.health import (
    Culprit,
    DataPlaneVerdict,
    HopObjects,
    HopState,
    HopVerdict,
    ProbeThresholds,
    Problem,
    classify,
    evaluate,
)
from eventmesh_health.probing.heartbeat import (
    DEFAULT_TYPE,
    CloudEvent,
    Heartbeat,
    HeartbeatError,
    Hop,
    RejectReason,
    SequenceCounter,
    canonical_time,
    heartbeat_from_event,
    legacy_path,
    new_heartbeat,
    new_run_id,
    parse_http,
    to_binary,
    to_legacy,
    to_structured,
)
from eventmesh_health.probing.signing import (
    Freshness,
    Key,
    Keyring,
    ReplayCache,
    Verifier,
    keyring_from_secret_data,
)
from eventmesh_health.probing.tracker import (
    Arrival,
    HopStats,
    LatencySummary,
    ProbeMetrics,
    Tracker,
)

__all__ = [
    "DEFAULT_TYPE",
    "Arrival",
    "CloudEvent",
    "Culprit",
    "DataPlaneVerdict",
    "Freshness",
    "Heartbeat",
    "HeartbeatError",
    "Hop",
    "HopObjects",
    "HopState",
    "HopStats",
    "HopVerdict",
    "Key",
    "Keyring",
    "LatencySummary",
    "ProbeMetrics",
    "ProbeThresholds",
    "Problem",
    "RejectReason",
    "ReplayCache",
    "SequenceCounter",
    "Tracker",
    "Verifier",
    "canonical_time",
    "classify",
    "evaluate",
    "heartbeat_from_event",
    "keyring_from_secret_data",
    "legacy_path",
    "new_heartbeat",
    "new_run_id",
    "parse_http",
    "to_binary",
    "to_legacy",
    "to_structured",
]
