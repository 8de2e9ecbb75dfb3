"""The writer's client-side token bucket (`--kube-api-qps`, `--kube-api-burst`): a fake clock
and a sleep that only records, so every figure is exact and nothing waits."""

from __future__ import annotations

import asyncio
import math

import pytest
from click.testing import CliRunner

from eventmesh_health.cli import main
from eventmesh_health.serve.ratelimit import DEFAULT_BURST, DEFAULT_QPS, TokenBucket


class FakeTime:
    """`advance`: a sleep moves the clock (one caller at a time); else waits overlap, as
    those of concurrent callers do."""

    def __init__(self, advance: bool = True) -> None:
        self.now = 100.0
        self.advance = advance
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if self.advance:
            self.now += seconds
        await asyncio.sleep(0)  # yields, as a real sleep does


def bucket(qps: float, burst: int, advance: bool = True) -> tuple[TokenBucket, FakeTime]:
    fake = FakeTime(advance)
    return TokenBucket(qps, burst, clock=fake.clock, sleep=fake.sleep), fake


def test_burst_goes_at_once_then_one_request_per_interval() -> None:
    limiter, _ = bucket(qps=20, burst=30)
    assert [limiter.reserve() for _ in range(30)] == [0.0] * 30
    # With no time passing, the 31st waits 1/20 s, the 32nd 2/20 s: turns, not a stampede.
    assert limiter.reserve() == pytest.approx(0.05)
    assert limiter.reserve() == pytest.approx(0.10)


def test_sequential_writer_is_held_to_qps_after_the_burst() -> None:
    limiter, fake = bucket(qps=20, burst=30)

    async def writes(n: int) -> None:
        for _ in range(n):
            await limiter.acquire()

    started = fake.now
    asyncio.run(writes(3 * 1000))  # the first sync of 1,000 applications
    assert fake.now - started == pytest.approx((3000 - 30) / 20)
    assert limiter.waited == pytest.approx(fake.now - started)
    assert len(fake.slept) == 3000 - 30


def test_concurrent_callers_wait_their_turn_in_order() -> None:
    limiter, fake = bucket(qps=10, burst=1, advance=False)
    order: list[int] = []

    async def one(i: int) -> None:
        await limiter.acquire()
        order.append(i)

    async def many() -> None:
        await asyncio.gather(*(one(i) for i in range(5)))

    asyncio.run(many())
    assert order == [0, 1, 2, 3, 4]
    assert fake.slept == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_tokens_come_back_at_qps_up_to_burst_only() -> None:
    limiter, fake = bucket(qps=5, burst=10)
    for _ in range(10):
        limiter.reserve()
    fake.now += 1.0  # 5 tokens back
    assert [limiter.reserve() for _ in range(5)] == [0.0] * 5
    assert limiter.reserve() == pytest.approx(0.2)
    fake.now += 3600.0  # an idle hour refills to the burst, not to 18,000
    assert [limiter.reserve() for _ in range(10)] == [0.0] * 10
    assert limiter.reserve() == pytest.approx(0.2)


@pytest.mark.parametrize(("qps", "burst"), [(0, 1), (-1, 1), (math.nan, 1), (1, 0)])
def test_nonsense_limits_are_refused(qps: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(qps, burst)


def test_defaults_are_kube_controller_managers() -> None:
    assert (DEFAULT_QPS, DEFAULT_BURST) == (20.0, 30)


@pytest.mark.parametrize("flags", [["--kube-api-qps", "0"], ["--kube-api-qps", "-3"],
                                   ["--kube-api-burst", "0"], ["--kube-api-qps", "fast"]])
def test_serve_refuses_bad_limits_with_a_usage_error(flags: list[str]) -> None:
    result = CliRunner().invoke(main, ["serve", *flags])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "--kube-api-" in result.output
