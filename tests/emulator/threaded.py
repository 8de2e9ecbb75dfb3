"""The emulator in a background thread, for synchronous tests (and `serve` in a subprocess).

    with ThreadedEmulator(kubeconfig=path) as emu:
        url = emu.event_service_url("commerce-mock")      # the URL map, as on `Emulator`
        fault = emu.inject("channel", "drop", app="commerce-mock")
        emu.clear_faults()
        emu.counters("channel").dropped

Everything else of the `Emulator` is reachable through `emu.call(coroutine_function, ...)`
(run on the emulator's loop) and `emu.emulator` (read-only use from the test thread).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .faults import Counters, Fault
from .mesh import Emulator

T = TypeVar("T")


class ThreadedEmulator:
    def __init__(self, *args: Any, start_timeout: float = 60.0, **kwargs: Any) -> None:
        self._args, self._kwargs = args, kwargs
        self._start_timeout = start_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.emulator: Emulator | None = None

    def start(self) -> ThreadedEmulator:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="emulator",
                                        daemon=True)
        self._thread.start()

        async def start() -> Emulator:
            return await Emulator(*self._args, **self._kwargs).start()

        self.emulator = self._run(start(), self._start_timeout)
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self.emulator is not None:
            self._run(self.emulator.stop(), 30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> ThreadedEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        assert self._loop is not None, "start() first"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
        timeout = kwargs.pop("_timeout", 60.0)
        return self._run(fn(*args, **kwargs), timeout)

    def inject(self, hop: str, kind: str, **params: Any) -> Fault:
        assert self.emulator is not None
        return self._run(self.emulator.inject(hop, kind, **params))

    def remove_fault(self, fault: Fault | str) -> None:
        assert self.emulator is not None
        self._run(self.emulator.remove_fault(fault))

    def clear_faults(self, hop: str | None = None) -> None:
        assert self.emulator is not None
        self._run(self.emulator.clear_faults(hop))

    def idle(self, timeout: float = 10.0) -> None:
        assert self.emulator is not None
        self._run(self.emulator.idle(timeout), timeout + 5)

    def counters(self, hop: str | None = None, **scope: str) -> Counters:
        assert self.emulator is not None
        return self._run(_sync(self.emulator.counters, hop, **scope))

    def __getattr__(self, name: str) -> Any:
        # The URL map and other plain methods (event_service_url, url_templates, resolve, ...).
        emulator = self.__dict__.get("emulator")
        if emulator is None:
            raise AttributeError(name)
        return getattr(emulator, name)


async def _sync(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return fn(*args, **kwargs)
