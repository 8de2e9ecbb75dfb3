"""Sending heartbeats and hop probes into the mesh (the leader does this).

Per application and round (`Sender.send_application`):

- one heartbeat into the application's ingress: by default the legacy Kyma event-service
  (`POST` to `event_service_url_template`, the legacy JSON body of `heartbeat.to_legacy`),
  or, with `adapter_url_template` set, a binary-mode CloudEvent to the HTTP adapter;
- one `channel` probe into the application Channel's address (`channel_url_template`, or
  the Channel's `status.address.url` the caller passes);
- one `broker` probe per namespace into its broker ingress (`broker_url_template`).

Every send is recorded in the tracker (`Tracker.record_sent`) *before* it is posted, with
the heartbeat's own time: a send that fails never arrives, which is exactly what the
tracker must count against the hop. At most `max_in_flight` posts are in flight; a probe
waiting for a slot is made (and timed, and recorded) only when it gets one. Failures (no
answer, timeout, non-2xx) are counted in `failures` per (application, hop) and logged at
debug level; nothing raises out of `send_application` but cancellation.

The HTTP client is aiohttp's: it costs a fraction of httpx's CPU per post (see the
README's dependency table), and the sender makes three or more posts per application and
round. Its session is made on the first send, in the running loop; connections idle for
`keepalive` seconds are closed by the sender, before a server's own idle timeout could
close one just as a post goes out on it.

Keys come from a Kubernetes Secret (`KeySource`): read through the API, parsed with
`signing.keyring_from_secret_data`, re-read every `reload` so a rotation takes effect
without a restart. A Secret that cannot be read or parsed keeps the last good keyring (and
is logged); without any keyring nothing is sent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

import aiohttp

from eventmesh_health.probing.heartbeat import (
    DEFAULT_TYPE,
    Heartbeat,
    Hop,
    SequenceCounter,
    new_heartbeat,
    to_binary,
    to_legacy,
    trace_headers,
)
from eventmesh_health.probing.signing import Keyring, keyring_from_secret_data
from eventmesh_health.probing.tracker import Tracker

__all__ = [
    "DEFAULT_BROKER_URL_TEMPLATE",
    "DEFAULT_EVENT_SERVICE_URL_TEMPLATE",
    "DEFAULT_RECEIVER_URL_TEMPLATE",
    "KeySource",
    "SendConfig",
    "Sender",
    "jittered",
]

log = logging.getLogger("eventmesh_health.probing")

DEFAULT_EVENT_SERVICE_URL_TEMPLATE = (
    "http://{app}-event-service.kyma-integration.svc.cluster.local:8081/{app}/v1/events")
DEFAULT_BROKER_URL_TEMPLATE = "http://default-broker.{namespace}.svc.cluster.local"
DEFAULT_RECEIVER_URL_TEMPLATE = (
    "http://eventmesh-health.kyma-system.svc.cluster.local:8080/heartbeat/{namespace}/{application}")


@dataclass(frozen=True, slots=True)
class SendConfig:
    """Where probes go. Templates are `str.format` templates: `{app}` (also `{application}`)
    and `{namespace}`."""

    event_service_url_template: str = DEFAULT_EVENT_SERVICE_URL_TEMPLATE
    adapter_url_template: str | None = None  # set: binary CloudEvents to the HTTP adapter
    channel_url_template: str | None = None  # None: the Channel's status.address.url
    broker_url_template: str = DEFAULT_BROKER_URL_TEMPLATE
    heartbeat_type: str = DEFAULT_TYPE
    timeout: float = 5.0  # seconds, per request in total (connect, send, answer)
    # posts in flight at once; the rest wait before their heartbeat is even made, so a
    # queued probe neither counts as sent nor carries an old time (a post waiting in the
    # client's pool would carry a time from before it waited). Below the client's 64
    # connections. (With httpx, a 1,000-application round all at once stalled the event
    # loop for a minute in its pool bookkeeping.)
    max_in_flight: int = 32
    keepalive: float = 4.0  # seconds an idle connection is kept


def fill(template: str, application: str, namespace: str = "") -> str:
    return template.format(app=application, application=application, namespace=namespace)


def jittered(interval: float, jitter: float = 0.1) -> float:
    """`interval` seconds plus or minus up to `jitter` of it (spreads replicas' rounds)."""
    return max(0.0, interval * (1 + random.uniform(-jitter, jitter)))


class KeySource:
    """The keyring from a Secret's `data`, re-read at most every `reload`.

    `read` returns the Secret's `data` map (e.g. a lightkube `get` of the Secret).
    """

    def __init__(
        self, read: Callable[[], Awaitable[Mapping[str, str]]], *,
        reload: timedelta = timedelta(minutes=1),
    ) -> None:
        self._read = read
        self.reload = reload
        self.keyring: Keyring | None = None
        self._loaded_at: float | None = None
        self.errors = 0

    def get(self) -> Keyring:
        """The current keyring (for the receiver's `Verifier`); raises before the first load."""
        if self.keyring is None:
            raise LookupError("no heartbeat keys loaded yet")
        return self.keyring

    async def refresh(self, force: bool = False) -> Keyring | None:
        now = time.monotonic()
        if (not force and self._loaded_at is not None
                and now - self._loaded_at < self.reload.total_seconds()):
            return self.keyring
        self._loaded_at = now
        try:
            data = await self._read()
            self.keyring = keyring_from_secret_data(data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the last good keyring stays in use
            self.errors += 1
            log.warning("heartbeat keys could not be (re)loaded: %s", _describe(exc))
        return self.keyring


class Sender:
    """Signs, records and posts heartbeats; see the module docstring."""

    def __init__(
        self,
        tracker: Tracker,
        keys: Callable[[], Keyring | None],
        run: str,
        *,
        config: SendConfig | None = None,
        client: aiohttp.ClientSession | None = None,
    ) -> None:
        self.tracker = tracker
        self.keys = keys
        self.run = run
        self.config = config or SendConfig()
        self.sequences = SequenceCounter()
        self._own_client = client is None
        self.client = client  # made on the first send, in the running loop
        self.sent: dict[tuple[str, Hop], int] = {}
        self.failures: dict[tuple[str, Hop], int] = {}
        self.accepted = 0  # posts answered 2xx
        self._slots: asyncio.Semaphore | None = None  # made on first use, in the loop
        self._rounds: dict[str, int] = {}  # the newest round's sequence per application

    async def close(self) -> None:
        if self._own_client and self.client is not None:
            await self.client.close()
            self.client = None

    def _session(self) -> aiohttp.ClientSession:
        if self.client is None:
            self.client = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=self.config.keepalive),
                trust_env=False)
        return self.client

    async def send_application(
        self, application: str, namespaces: list[str], channel_url: str | None = None,
        *, on_send: Callable[[Heartbeat], None] | None = None,
    ) -> list[Heartbeat]:
        """One round for an application: ingress, channel (when its address is known) and
        one broker probe per namespace, concurrently; the heartbeats sent. `on_send` is
        told of each as it is recorded, before it is posted (its deliveries can arrive
        before the post is answered). Never raises (but cancellation)."""
        hops: list[tuple[Hop, str | None]] = [(Hop.INGRESS, None), (Hop.CHANNEL, None)]
        hops += [(Hop.BROKER, namespace) for namespace in namespaces]
        # One sequence for the whole round: every hop (and namespace) of the application
        # carries it, so sequences name rounds across hops (the health compares hops round
        # by round) and each injection point still counts 1, 2, 3, ...
        sequence = self._rounds.get(application, 0) + 1
        self._rounds[application] = sequence
        sent = await asyncio.gather(*(
            self.send_probe(application, hop, namespace, channel_url, on_send=on_send,
                            sequence=sequence)
            for hop, namespace in hops))
        return [hb for hb in sent if hb is not None]

    async def send_flow(
        self, key: str, hop: Hop, namespace: str, url: str | None,
        *, on_send: Callable[[Heartbeat], None] | None = None,
    ) -> list[Heartbeat]:
        """One round for a flow (`key`: its heartbeats' source): one binary probe into
        `hop` at `url` (a `broker` probe carries `namespace`); the heartbeats sent (none
        without keys or an address). Never raises (but cancellation)."""
        keyring = self.keys()
        if keyring is None or url is None:
            return []
        sequence = self._rounds.get(key, 0) + 1
        self._rounds[key] = sequence
        hb = await self._send(keyring, key, hop, url, binary=True,
                              namespace=namespace if hop is Hop.BROKER else None,
                              on_send=on_send, sequence=sequence)
        return [hb] if hb is not None else []

    async def send_probe(
        self, application: str, hop: Hop, namespace: str | None = None,
        channel_url: str | None = None, *, on_send: Callable[[Heartbeat], None] | None = None,
        sequence: int | None = None,
    ) -> Heartbeat | None:
        """One probe into `hop` (`namespace`: for broker probes); the heartbeat sent, or
        None when there are no keys or no address for the hop. Never raises (but
        cancellation); a failed post is counted in `failures`. `sequence`: the round's
        (default: the next of the injection point's own counter; do not mix the two for
        one application)."""
        keyring = self.keys()
        url = self.url(application, hop, namespace, channel_url)
        if keyring is None or url is None:
            return None
        binary = hop is not Hop.INGRESS or self.config.adapter_url_template is not None
        return await self._send(keyring, application, hop, url, binary=binary,
                                namespace=namespace if hop is Hop.BROKER else None,
                                on_send=on_send, sequence=sequence)

    def url(self, application: str, hop: Hop, namespace: str | None = None,
            channel_url: str | None = None) -> str | None:
        cfg = self.config
        if hop is Hop.INGRESS:
            if cfg.adapter_url_template is not None:
                return fill(cfg.adapter_url_template, application)
            return fill(cfg.event_service_url_template, application)
        if hop is Hop.CHANNEL:
            if cfg.channel_url_template is not None:
                return fill(cfg.channel_url_template, application)
            return channel_url
        return fill(cfg.broker_url_template, application, namespace or "")

    def _heartbeat(
        self, keyring: Keyring, application: str, hop: Hop, namespace: str | None,
        sequence: int | None = None,
    ) -> Heartbeat:
        if sequence is None:
            sequence = self.sequences.next(application, hop, namespace)
        hb = new_heartbeat(application, hop, sequence, run=self.run, at=self.tracker.clock(),
                           type=self.config.heartbeat_type, namespace=namespace)
        return keyring.sign(hb)

    async def _send(
        self, keyring: Keyring, application: str, hop: Hop, url: str, *, binary: bool,
        namespace: str | None = None, on_send: Callable[[Heartbeat], None] | None = None,
        sequence: int | None = None,
    ) -> Heartbeat | None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(max(1, self.config.max_in_flight))
        async with self._slots:
            return await self._post(keyring, application, hop, url, binary=binary,
                                    namespace=namespace, on_send=on_send, sequence=sequence)

    async def _post(
        self, keyring: Keyring, application: str, hop: Hop, url: str, *, binary: bool,
        namespace: str | None, on_send: Callable[[Heartbeat], None] | None,
        sequence: int | None,
    ) -> Heartbeat | None:
        key = (application, hop)
        hb: Heartbeat | None = None
        try:
            hb = self._heartbeat(keyring, application, hop, namespace, sequence)
            headers, body = to_binary(hb) if binary else to_legacy(hb)
            headers.update(trace_headers(hb))
            self.tracker.record_sent(application, hop, hb.sequence, run=self.run, at=hb.time,
                                     namespace=namespace)
            self.sent[key] = self.sent.get(key, 0) + 1
            if on_send is not None:
                on_send(hb)
            async with self._session().post(url, headers=headers, data=body) as answer:
                await answer.read()
                if not 200 <= answer.status < 300:
                    raise _Refused(f"HTTP {answer.status}")
            self.accepted += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failures[key] = self.failures.get(key, 0) + 1
            log.debug("%s probe of %s to %s failed: %s", hop.value, application, url,
                      _describe(exc))
        return hb


class _Refused(Exception):
    """A non-2xx answer."""


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."
