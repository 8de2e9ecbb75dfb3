"""The emulator in a process of its own, driven through its control API.

    async with EmulatorProcess(kubeconfig_path, retries=0) as emu:
        emu.url_templates()                         # for a checker's URL templates
        fault = await emu.inject("channel", "drop", app="commerce-mock")
        await emu.remove_fault(fault)               # the fault's id
        await emu.clear_faults()
        rows = await emu.counter_table()

End-to-end timing tests use it rather than the in-process `Emulator`: on a 2-core machine,
the mesh's eight HTTP hops and the checker on one event loop add hundreds of milliseconds
of queueing to every delivery under load; a separate process delivers in parallel, as a real
mesh does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


class EmulatorProcess:
    def __init__(self, kubeconfig: str | Path, *, retries: int = 2,
                 retry_backoff: float = 0.05, start_timeout: float = 60.0) -> None:
        self.kubeconfig = str(kubeconfig)
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.start_timeout = start_timeout
        self.urls: dict[str, Any] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> EmulatorProcess:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.emulator", "--kubeconfig", self.kubeconfig,
            "--retries", str(self.retries), "--retry-backoff", str(self.retry_backoff),
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=None)
        assert self._process.stdout is not None
        try:
            line = await asyncio.wait_for(self._process.stdout.readline(), self.start_timeout)
        except TimeoutError:
            await self.stop()
            raise AssertionError("the emulator process did not start in time") from None
        if not line:
            await self.stop()
            raise AssertionError("the emulator process exited before it started serving")
        self.urls = json.loads(line)
        self._http = httpx.AsyncClient(base_url=self.urls["hops"]["control"],
                                       trust_env=False, timeout=10)
        return self

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    async def __aenter__(self) -> EmulatorProcess:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def url_templates(self) -> dict[str, str]:
        return dict(self.urls["templates"])

    @property
    def http(self) -> httpx.AsyncClient:
        assert self._http is not None, "start() the emulator first"
        return self._http

    async def inject(self, hop: str, kind: str, **params: Any) -> str:
        """Adds a fault (see `faults.Fault`); its id."""
        answer = await self.http.post("/_faults", json={"hop": hop, "kind": kind, **params})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    async def remove_fault(self, fault: str) -> None:
        answer = await self.http.delete(f"/_faults/{fault}")
        assert answer.status_code == 204, answer.text

    async def clear_faults(self) -> None:
        answer = await self.http.delete("/_faults")
        assert answer.status_code == 204, answer.text

    async def counter_table(self) -> list[dict[str, Any]]:
        answer = await self.http.get("/_counters")
        assert answer.status_code == 200, answer.text
        return list(answer.json()["scoped"])
