"""What the benchmarks report about the machine while they run (shared by bench_serve and
bench_probe)."""

from __future__ import annotations

import os
import statistics
import threading


class LoadSampler:
    """The 1-minute load average, sampled every `every` seconds in a thread."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="loadavg")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self.every)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        if not self.samples:
            return "n/a"
        return (f"mean {statistics.fmean(self.samples):.1f}, min {min(self.samples):.1f}, "
                f"max {max(self.samples):.1f}")
