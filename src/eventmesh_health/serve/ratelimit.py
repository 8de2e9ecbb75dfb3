"""A client-side token bucket for serve's writes, like client-go's `--kube-api-qps` and
`--kube-api-burst` (`flowcontrol.NewTokenBucketRateLimiter`).

The first sync of a large mesh writes three objects per application at once; without a limit
that burst would hit the API server as fast as it answers, as no controller of the cluster
does. `burst` requests go at once, then `qps` per second on average. A request that finds the
bucket empty still takes its token at once (the bucket goes into debt) and waits until its
turn, so concurrent callers are served in order and never wait longer than needed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

# kube-controller-manager's defaults for these two flags: a controller's write rate that
# clusters are sized for. (client-go's own rest.Config default, 5/10, would make the first
# sync of 10,000 applications take 100 minutes.)
DEFAULT_QPS = 20.0
DEFAULT_BURST = 30


class TokenBucket:
    def __init__(
        self,
        qps: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not qps > 0:  # also rejects NaN
            raise ValueError(f"qps must be positive, not {qps}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._last = clock()
        self.waited = 0.0  # seconds requests spent waiting for a token, in total

    def reserve(self) -> float:
        """Take a token; the seconds to wait before the request may go (0: at once)."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1.0
        return max(0.0, -self._tokens / self.qps)

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            self.waited += delay
            await self._sleep(delay)
