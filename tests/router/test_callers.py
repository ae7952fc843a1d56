"""Services calling Route directly, by name: each caller's policy (its share, whether it may choose, its budget
and rate) on a real router over gRPC."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import grpc
import pytest

from router_service.server import RouterApp, build_router
from routing_api.router.v1 import router_pb2, router_pb2_grpc
from tests.conftest import router_settings

TOKENS = {"svc": "tok-svc-000000001", "batch": "tok-batch-0000001"}


@pytest.fixture
async def router() -> AsyncIterator[RouterApp]:
    app = await build_router(router_settings(
        embedder={"backend": "static"},
        callers=[{"name": "svc", "api_keys": [TOKENS["svc"]], "policy": "fixed"},
                 {"name": "batch", "api_keys": [TOKENS["batch"]], "policy": "batch"}],
        caller_policies=[{"name": "fixed", "strong_share": 0.2, "may_choose": False},
                         {"name": "batch", "threshold": 0.0, "strong_calls": 2, "requests_per_minute": 4}],
    ))
    try:
        yield app
    finally:
        await app.stop()


async def test_each_caller_is_routed_and_limited_by_its_own_policy(
    router: RouterApp, caplog: pytest.LogCaptureFixture
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)

        async def route(caller: str, **fields: object) -> router_pb2.RouteResponse:
            request = router_pb2.RouteRequest(prompt="Prove that 7 is prime.", **fields)  # type: ignore[arg-type]
            return await stub.Route(request, metadata=(("authorization", f"Bearer {TOKENS[caller]}"),), timeout=10)

        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await route("svc", threshold=0.0)
        with caplog.at_level(logging.INFO, logger="router_service.access"):
            fixed = await route("svc")
            batch = [await route("batch") for _ in range(4)]
        with pytest.raises(grpc.aio.AioRpcError) as exhausted:
            await route("batch")
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.Route(router_pb2.RouteRequest(prompt="hi"), metadata=(("authorization", "Bearer nope-000000"),))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "caller 'svc' may not choose its own threshold or strong_share" in (denied.value.details() or "")
    scorer = router.engine.policy.scorers[router.engine.policy.default_scorer]
    assert fixed.threshold == pytest.approx(scorer.threshold_for_share(0.2))  # its policy's share, calibrated
    assert [r.routed_strong for r in batch] == [True, True, False, False]  # threshold 0, a budget of 2
    assert [r.budget_limited for r in batch] == [False, False, True, True]
    assert exhausted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "caller 'batch' is past its limit: 4 calls in the last minute, requests_per_minute=4" in (
        exhausted.value.details() or ""
    )
    assert unknown.value.code() == grpc.StatusCode.UNAUTHENTICATED
    callers = [json.loads(r.getMessage())["caller"] for r in caplog.records]
    assert callers == ["svc", "batch", "batch", "batch", "batch"]
    assert not any(token in r.getMessage() for r in caplog.records for token in TOKENS.values())


async def test_a_batch_refused_part_way_keeps_none_of_its_reservations() -> None:
    """RouteBatch of 5 against requests_per_minute = 3: refused at the 4th, and the 3 strong calls its first queries
    reserved are given back (#36: they stayed taken for the window, none made)."""
    app = await build_router(router_settings(
        embedder={"backend": "static"}, callers=[{"name": "batch", "api_keys": [TOKENS["batch"]], "policy": "batch"}],
        caller_policies=[{"name": "batch", "threshold": 0.0, "strong_calls": 3, "requests_per_minute": 3}],
    ))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            metadata = (("authorization", f"Bearer {TOKENS['batch']}"),)
            batch = router_pb2.RouteBatchRequest(requests=[router_pb2.RouteRequest(prompt=f"Prove {i} is odd.") for i in range(5)])
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.RouteBatch(batch, metadata=metadata, timeout=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        counted = await app.engine.counters.take("router:strong:batch", 0, None, 3600.0)
        assert counted.used == 0
    finally:
        await app.stop()
