"""The windowed counters behind budgets and rate limits: the same answers per process and on a real Redis, and a
bounded wait with the configured behaviour when Redis is gone or stuck."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from service_core.quota import Check, Counters, LocalCounters, RedisSettings, StoreUnavailable
from tests.redis_server import RedisServer, redis_server


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


def counters_on(redis: RedisServer, timeout_ms: float = 2000) -> Counters:
    """Generous deadlines (a loaded CI machine opens connections slowly) except where the deadline is the point."""
    return Counters(RedisSettings(url=redis.url, prefix="test", timeout_ms=timeout_ms, retry_s=0.2))


@pytest.mark.parametrize("where", ["local", "redis"])
async def test_a_window_holds_its_limit_gives_back_and_frees(where: str, redis: RedisServer) -> None:
    counters = Counters(RedisSettings()) if where == "local" else counters_on(redis)
    try:
        taken = [await counters.take("k", 1, 5, 1.0) for _ in range(7)]
        assert [t.allowed for t in taken] == [True] * 5 + [False] * 2
        assert taken[4].used == 5 and taken[5].used == 5 and 0 < taken[5].frees_in_s <= 1.1
        await counters.give_back("k", taken[0], 1)  # a reserved call not made
        assert (await counters.take("k", 1, 5, 1.0)).allowed
        assert not (await counters.take("k", 1, 5, 1.0)).allowed
        assert (await counters.add("other", 40, 1.0)).used == 40  # no limit: counted all the same
        await asyncio.sleep(1.15)  # the window and its one-slice margin: all counted calls have left it
        assert (await counters.take("k", 1, 5, 1.0)).used == 1
    finally:
        await counters.aclose()


@pytest.mark.parametrize("where", ["local", "redis"])
async def test_a_room_check_counts_nothing_and_a_limit_of_0_has_none(where: str, redis: RedisServer) -> None:
    counters = Counters(RedisSettings()) if where == "local" else counters_on(redis)
    try:
        assert [(await counters.take_all([Check.room("k", 2, 60.0)]))[0].allowed for _ in range(3)] == [True] * 3
        await counters.add("k", 2, 60.0)
        (full,) = await counters.take_all([Check.room("k", 2, 60.0)])
        (none,) = await counters.take_all([Check.room("empty", 0, 60.0)])
        assert (full.allowed, full.used) == (False, 2) and (none.allowed, none.used) == (False, 0)
        assert (await counters.add("empty", 0, 60.0)).used == 0  # the refused room check counted nothing
    finally:
        await counters.aclose()


async def test_two_replicas_on_one_redis_share_a_count(redis: RedisServer) -> None:
    first, second = counters_on(redis), counters_on(redis)
    try:
        taken = await asyncio.gather(*(c.take("fleet", 1, 10, 60.0) for _ in range(15) for c in (first, second)))
        assert all(t.enforced for t in taken)
        assert sum(t.allowed for t in taken) == 10  # 30 tries from two replicas, one limit
    finally:
        await first.aclose()
        await second.aclose()


async def test_redis_gone_serves_unenforced_warns_once_and_comes_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    states: list[bool] = []
    with redis_server(tmp_path) as redis:
        counters = Counters(
            RedisSettings(url=redis.url, prefix="test", timeout_ms=1000, retry_s=0.2), on_state=states.append
        )
        try:
            assert (await counters.take("k", 1, 1, 60.0)).enforced
            redis.kill()
            with caplog.at_level(logging.WARNING, logger="service_core.quota"):
                async with asyncio.timeout(5):  # a bound on a hang, not a timing: each call waits <= timeout_ms
                    gone = [await counters.take("k", 1, 1, 60.0) for _ in range(50)]
            assert all(t.allowed and not t.enforced for t in gone)  # served, flagged: limit 1 not applied
            warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
            assert len(warnings) == 1 and "not enforced" in warnings[0].getMessage()
            assert counters.unavailable == 50 and states == [False]
            redis.start()  # the same port; an empty Redis (no persistence in this test)
            await asyncio.sleep(0.25)  # past retry_s
            back = await counters.take("k", 1, 1, 60.0)
            assert back.enforced and back.allowed and states == [False, True]
            assert not (await counters.take("k", 1, 1, 60.0)).allowed  # enforced again
        finally:
            await counters.aclose()


async def test_a_stuck_redis_costs_a_bounded_wait(redis: RedisServer) -> None:
    counters = counters_on(redis, timeout_ms=100)
    try:
        await counters.take("k", 1, 10, 60.0)
        redis.pause()
        try:
            async with asyncio.timeout(3):
                stuck = await counters.take("k", 1, 10, 60.0)  # waits timeout_ms (100 ms), then serves
                skipped = await counters.take("k", 1, 10, 60.0)  # within retry_s: not tried at all
        finally:
            redis.resume()
        assert not stuck.enforced and not skipped.enforced
    finally:
        await counters.aclose()


async def test_the_other_behaviours_when_redis_is_gone(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis:
        url = redis.url
    local = Counters(RedisSettings(url=url, timeout_ms=100, on_unavailable="local"))
    refuse = Counters(RedisSettings(url=url, timeout_ms=100, on_unavailable="refuse"))
    try:
        taken = [await local.take("k", 1, 2, 60.0) for _ in range(3)]
        assert [t.allowed for t in taken] == [True, True, False]  # counted in this process meanwhile
        assert not any(t.enforced for t in taken)
        with pytest.raises(StoreUnavailable, match=r"Redis at 127\.0\.0\.1:\d+/0 is unavailable.*'refuse'"):
            await refuse.take("k", 1, 2, 60.0)
    finally:
        await local.aclose()
        await refuse.aclose()


def test_local_counters_keep_only_the_window() -> None:
    now = [1000.0]
    counters = LocalCounters(clock=lambda: now[0])
    for _ in range(3):
        counters.take_now("k", 1, None, 10.0)
    now[0] += 5.0
    assert counters.take_now("k", 0, None, 10.0).used == 3
    now[0] += 6.1  # 11.1 s after: past the window and its slice
    assert counters.take_now("k", 0, None, 10.0).used == 0


@pytest.mark.parametrize("where", ["local", "redis"])
async def test_a_request_s_checks_go_in_one_call_and_a_refused_gate_ends_them(where: str, redis: RedisServer) -> None:
    counters = Counters(RedisSettings()) if where == "local" else counters_on(redis)
    checks = [Check("rpm", 1, 2, 60.0), Check("tpm", 0, 99, 60.0), Check("strong", 1, 1, 60.0, gate=False)]
    try:
        first = await counters.take_all(checks)
        second = await counters.take_all(checks)
        third = await counters.take_all(checks)
    finally:
        await counters.aclose()
    assert [t.allowed for t in first] == [True, True, True]
    assert [t.allowed for t in second] == [True, True, False]  # the budget of 1 spent: not a gate, answered
    assert [t.allowed for t in third] == [False]  # past the rate: nothing after it is counted or answered
    assert second[0].used == 2 and third[0].used == 2
