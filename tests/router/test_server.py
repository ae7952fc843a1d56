"""The real router: gRPC server on a free port, health, reflection, every status code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from router_service.domain import RouteQuery
from router_service.server import build_router
from routing_api.router.v1 import router_pb2, router_pb2_grpc
from tests.conftest import closed_port, router_settings
from tests.http_servers import EmbeddingServerState, embedding_app, serve_app

RouteRequest = router_pb2.RouteRequest
Chat, ChatMessage = router_pb2.Chat, router_pb2.ChatMessage


@pytest.fixture
async def stub(router_app) -> AsyncIterator[router_pb2_grpc.RouterServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router_app.port}") as channel:
        yield router_pb2_grpc.RouterServiceStub(channel)


async def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


async def test_route_returns_a_decision(stub) -> None:
    response = await stub.Route(RouteRequest(prompt="Prove that there are infinitely many primes."), timeout=10)
    assert response.model in ("llama3.1:8b", "llama3.2:1b")
    assert 0.0 < response.score < 1.0
    assert response.routed_strong == (response.score >= response.threshold)
    assert response.model == ("llama3.1:8b" if response.routed_strong else "llama3.2:1b")
    assert response.scorer_name == "difficulty" and response.scorer_version
    assert response.timings.embed_ms > 0 and response.timings.total_ms >= response.timings.embed_ms
    assert not response.embedding_cached
    again = await stub.Route(RouteRequest(prompt="Prove that there are infinitely many primes."), timeout=10)
    assert again.embedding_cached and again.score == response.score


async def test_thresholds_and_shares_steer_the_choice(stub) -> None:
    prompt = "Summarise this paragraph in one line."
    always_strong = await stub.Route(RouteRequest(prompt=prompt, threshold=0.0), timeout=10)
    never_strong = await stub.Route(RouteRequest(prompt=prompt, threshold=1.0), timeout=10)
    assert always_strong.model == "llama3.1:8b" and always_strong.threshold == 0.0
    assert never_strong.model == "llama3.2:1b" and never_strong.threshold == 1.0
    all_strong = await stub.Route(RouteRequest(prompt=prompt, strong_share=1.0), timeout=10)
    none_strong = await stub.Route(RouteRequest(prompt=prompt, strong_share=0.0), timeout=10)
    assert (all_strong.routed_strong, none_strong.routed_strong) == (True, False)


async def test_chat_embeds_only_the_last_user_message(stub) -> None:
    question = "What is the derivative of x^3 sin(x)?"
    chat = Chat(messages=[
        ChatMessage(role="system", content="You are a terse assistant who answers in French."),
        ChatMessage(role="user", content="Hello!"),
        ChatMessage(role="assistant", content="Bonjour !"),
        ChatMessage(role="user", content=question),
        ChatMessage(role="assistant", content="(thinking)"),
    ])
    from_chat = await stub.Route(RouteRequest(chat=chat), timeout=10)
    from_prompt = await stub.Route(RouteRequest(prompt=question), timeout=10)
    assert from_prompt.embedding_cached  # same text, so the chat's embedding was reused
    assert from_chat.score == from_prompt.score


async def test_route_batch_matches_single_routes(stub) -> None:
    prompts = ["Write a haiku about autumn.", "Solve 3x + 5 = 20.", "Translate 'good morning' to German."]
    batch = await stub.RouteBatch(router_pb2.RouteBatchRequest(requests=[RouteRequest(prompt=p) for p in prompts]), timeout=10)
    singles = [await stub.Route(RouteRequest(prompt=p), timeout=10) for p in prompts]
    assert [r.model for r in batch.responses] == [r.model for r in singles]
    assert [r.score for r in batch.responses] == pytest.approx([r.score for r in singles], abs=1e-6)


@pytest.fixture
async def mf_stub() -> AsyncIterator[router_pb2_grpc.RouterServiceStub]:
    """A router whose default scorer is the MF: it scores 138 models, so candidates can be any of them."""
    app = await build_router(router_settings(scorers=[{"name": "mf"}, {"name": "difficulty"}]))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield router_pb2_grpc.RouterServiceStub(channel)
    finally:
        await app.stop()


async def test_candidates_pick_the_cheapest_good_enough(mf_stub) -> None:
    stub = mf_stub
    described = await stub.Describe(router_pb2.DescribeRequest(), timeout=10)
    scorer = described.scorers[0]
    candidates = [
        router_pb2.Candidate(model="big", cost=10, scorer_model="strong"),
        router_pb2.Candidate(model="small", cost=1, scorer_model="weak"),
        router_pb2.Candidate(model="medium", cost=3, scorer_model=scorer.models[2]),
    ]
    request = RouteRequest(prompt="Explain the proof of Fermat's little theorem.", candidates=candidates)
    request.threshold = 0.0
    strongest = await stub.Route(request, timeout=10)
    assert strongest.model == "big" and strongest.routed_strong
    assert [c.model for c in strongest.candidates] == ["small", "medium", "big"]  # cheapest first
    request.threshold = 1.0
    cheapest = await stub.Route(request, timeout=10)
    assert cheapest.model == "small" and not cheapest.routed_strong
    # In between, the first candidate (by cost) whose loss to the strongest is below the threshold.
    rates = {c.model: c.strongest_win_rate for c in cheapest.candidates}
    request.threshold = (rates["small"] + 1) / 2 if rates["small"] < 1 else 1.0
    middle = await stub.Route(request, timeout=10)
    expected = next((m for m in ("small", "medium") if rates[m] < request.threshold), "big")
    assert middle.model == expected


async def test_describe_reports_scorers_and_mapping(stub) -> None:
    described = await stub.Describe(router_pb2.DescribeRequest(), timeout=10)
    assert described.default_scorer == "difficulty"
    assert described.embedder_backend == "local"
    (scorer,) = described.scorers
    assert scorer.embedder == "local:all-MiniLM-L6-v2" and scorer.embedding_dim == 384
    assert "50" in scorer.thresholds
    assert {m.model: m.scorer_model for m in described.models} == {"llama3.1:8b": "strong", "llama3.2:1b": "weak"}
    assert described.default_threshold == pytest.approx(scorer.thresholds["50"])


async def test_health_and_reflection(router_app) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router_app.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "router.v1.RouterService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    # What grpcurl does: list services and resolve a method over reflection. The
    # reflection client is synchronous, so it runs off the server's event loop.
    def reflect() -> tuple[set[str], str]:
        from google.protobuf.descriptor_pool import DescriptorPool

        with grpc.insecure_channel(f"127.0.0.1:{router_app.port}") as sync_channel:
            database = ProtoReflectionDescriptorDatabase(sync_channel)
            service = DescriptorPool(database).FindServiceByName("router.v1.RouterService")
            return set(database.get_services()), service.methods_by_name["Route"].input_type.full_name

    services, route_input = await asyncio.to_thread(reflect)
    assert {"router.v1.RouterService", "grpc.health.v1.Health"} <= services
    assert route_input == "router.v1.RouteRequest"


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (RouteRequest(), "no input: set prompt"),
        (RouteRequest(prompt="   "), "prompt is empty"),
        (RouteRequest(prompt="x" * 100_001), "limits.max_prompt_chars=100000"),
        (RouteRequest(prompt="hi", threshold=1.5), "threshold must be within [0, 1], got 1.5"),
        (RouteRequest(prompt="hi", threshold=float("nan")), "threshold must be within [0, 1]"),
        (RouteRequest(prompt="hi", strong_share=-0.1), "strong_share must be within [0, 1]"),
        (RouteRequest(chat=Chat(messages=[ChatMessage(role="system", content="be nice")])), "chat has no user message"),
        (RouteRequest(chat=Chat(messages=[ChatMessage(role="wizard", content="hi")])), "role 'wizard' is not one of"),
        (RouteRequest(prompt="hi", candidates=[router_pb2.Candidate(model="only")]), "is not configured in routing.models"),
        (RouteRequest(prompt="hi", candidates=[router_pb2.Candidate(model="a", scorer_model="nope")]), "scorer_model 'nope'"),
    ],
)
async def test_bad_requests_are_invalid_argument(stub, request_, expected) -> None:
    code, details = await status_of(stub.Route(request_, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in details


async def test_bad_batch_names_the_index(stub) -> None:
    batch = router_pb2.RouteBatchRequest(requests=[RouteRequest(prompt="fine"), RouteRequest(prompt="")])
    code, details = await status_of(stub.RouteBatch(batch, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("requests[1]: prompt is empty")
    too_many = router_pb2.RouteBatchRequest(requests=[RouteRequest(prompt="p")] * 1025)
    code, details = await status_of(stub.RouteBatch(too_many, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "limits.max_batch=1024" in details


async def test_unknown_scorer_is_not_found(stub) -> None:
    code, details = await status_of(stub.Route(RouteRequest(prompt="hi", scorer="gpt-router"), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND and "scorer 'gpt-router' is not configured; available: ['difficulty']" in details


async def remote_router(backend: str, base_url: str, **embedder: Any) -> Any:
    section = {"base_url": base_url, "model": "all-minilm", "dim": 384, "timeout_s": 5, **embedder}
    return await build_router(router_settings(embedder={"backend": backend, backend: section}))


async def test_unreachable_embedder_is_unavailable_naming_the_url() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    app = await remote_router("ollama", url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            code, details = await status_of(stub.Route(RouteRequest(prompt="hi"), timeout=10))
    finally:
        await app.stop()
    assert code == grpc.StatusCode.UNAVAILABLE
    assert f"{url}/api/embed is unreachable" in details and "embedder.ollama.base_url" in details


async def test_routes_through_a_remote_embedder_like_the_local_one(local_embedder, router_app) -> None:
    state = EmbeddingServerState(embed=local_embedder.embed_sync)
    prompt = "Design a lock-free queue in C++."
    async with serve_app(embedding_app(state)) as url:
        app = await remote_router("openai", f"{url}/v1")
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
                remote = await router_pb2_grpc.RouterServiceStub(channel).Route(RouteRequest(prompt=prompt), timeout=10)
        finally:
            await app.stop()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router_app.port}") as channel:
        local = await router_pb2_grpc.RouterServiceStub(channel).Route(RouteRequest(prompt=prompt), timeout=10)
    assert remote.score == pytest.approx(local.score, abs=1e-5)
    assert state.requests[-1]["body"]["input"] == [prompt]


async def test_deadline_exceeded_while_embedding(local_embedder) -> None:
    state = EmbeddingServerState(embed=local_embedder.embed_sync, delay_s=3.0)
    async with serve_app(embedding_app(state)) as url:
        app = await remote_router("ollama", url)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
                stub = router_pb2_grpc.RouterServiceStub(channel)
                code, _ = await status_of(stub.Route(RouteRequest(prompt="hi"), timeout=0.3))
                # The server gives up too, saying where the time went.
                engine_error = None
                try:
                    await app.engine.route([RouteQuery(prompt="hello")], timeout=0.2)
                except Exception as exc:  # noqa: BLE001 - inspected below
                    engine_error = exc
        finally:
            state.delay_s = 0
            await app.stop()
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    from router_service.errors import DeadlineExceeded

    assert isinstance(engine_error, DeadlineExceeded) and "while embedding (ollama:all-minilm)" in str(engine_error)


async def test_sigterm_path_fails_health_then_drains_in_flight_calls(local_embedder) -> None:
    """What serve() does on SIGTERM: NOT_SERVING, a delay for load balancers, drain, exit."""
    state = EmbeddingServerState(embed=local_embedder.embed_sync, delay_s=0.6)
    async with serve_app(embedding_app(state)) as url:
        section = {"base_url": url, "model": "all-minilm", "dim": 384}
        settings = router_settings(
            embedder={"backend": "ollama", "ollama": section},
            server={"host": "127.0.0.1", "port": 0, "grace_s": 5, "shutdown_delay_s": 0.3},
        )
        app = await build_router(settings)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            in_flight = asyncio.ensure_future(stub.Route(RouteRequest(prompt="a slow one"), timeout=10))
            await asyncio.sleep(0.2)
            stopping = asyncio.create_task(app.stop())
            await asyncio.sleep(0.05)
            reply = await health.Check(health_pb2.HealthCheckRequest(service="router.v1.RouterService"), timeout=2)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            response = await in_flight
            await stopping
            code, _ = await status_of(stub.Route(RouteRequest(prompt="after the stop"), timeout=2))
    assert response.model  # the in-flight call finished with an answer
    assert code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(("payload", "reason"), [(b"\x0a\x02\xff\xfe", "bad UTF-8"), (b"\xff\xff\xff", "corrupt")])
async def test_undecodable_requests_are_invalid_argument(router_app, payload, reason) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router_app.port}") as channel:
        raw = channel.unary_unary(
            "/router.v1.RouterService/Route", request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        code, details = await status_of(raw(payload, timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("request is not a valid router.v1.RouteRequest") and reason in details


async def test_token_auth_guards_route_but_not_health() -> None:
    app = await build_router(router_settings(auth={"token": "s3cret-token"}))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            code, details = await status_of(stub.Route(RouteRequest(prompt="hi"), timeout=10))
            assert code == grpc.StatusCode.UNAUTHENTICATED and "auth.token" in details
            assert "s3cret" not in details
            code, _ = await status_of(
                stub.Route(RouteRequest(prompt="hi"), timeout=10, metadata=(("authorization", "Bearer wrong"),))
            )
            assert code == grpc.StatusCode.UNAUTHENTICATED
            ok = await stub.Route(RouteRequest(prompt="hi"), timeout=10, metadata=(("authorization", "Bearer s3cret-token"),))
            assert ok.model
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await app.stop()


async def test_prometheus_metrics() -> None:
    import httpx

    app = await build_router(router_settings(server={"host": "127.0.0.1", "port": 0, "metrics_port": 0}))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            await stub.Route(RouteRequest(prompt="Name three prime numbers.", threshold=0.0), timeout=10)
            await stub.Route(RouteRequest(prompt="Name three prime numbers.", threshold=0.0), timeout=10)
            await status_of(stub.Route(RouteRequest(prompt=""), timeout=10))
            candidates = [router_pb2.Candidate(model=f"user-model-{i}", cost=i, scorer_model="weak") for i in range(3)]
            await stub.Route(RouteRequest(prompt="x", candidates=candidates, threshold=0.0), timeout=10)
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{app.metrics_port}/metrics")).text
    finally:
        await app.stop()
    assert 'router_route_decisions_total{model="llama3.1:8b",scorer="difficulty"} 2.0' in text
    assert 'router_route_decisions_total{model="other",scorer="difficulty"} 1.0' in text  # request-chosen names stay bounded
    assert "router_embedding_cache_hits_total 1.0" in text
    assert 'router_errors_total{code="INVALID_ARGUMENT"} 1.0' in text
    assert "router_embed_seconds_count 2.0" in text and "router_route_score_bucket" in text


HARD = "Prove that every finite group of prime order is cyclic, then compute the number of Sylow 3-subgroups of S_4."
EASY = "Say hello."


async def test_bundled_scorers_can_be_chosen_per_request(mf_stub) -> None:
    by_difficulty = [await mf_stub.Route(RouteRequest(prompt=p, scorer="difficulty"), timeout=10) for p in (HARD, EASY)]
    by_mf = await mf_stub.Route(RouteRequest(prompt=HARD), timeout=10)
    assert {r.scorer_name for r in by_difficulty} == {"difficulty"} and by_mf.scorer_name == "mf"
    assert by_difficulty[0].score > by_difficulty[1].score  # the harder prompt needs the strong model more


async def test_static_embedder_serves_with_its_own_difficulty_scorer() -> None:
    app = await build_router(router_settings(embedder={"backend": "static"}))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            described = await stub.Describe(router_pb2.DescribeRequest(), timeout=10)
            hard, easy = [await stub.Route(RouteRequest(prompt=p), timeout=10) for p in (HARD, EASY)]
    finally:
        await app.stop()
    (scorer,) = described.scorers
    assert described.embedder_backend == "static" and scorer.name == "difficulty"
    assert scorer.embedder == "static:static-minilm-m2v" and scorer.embedding_dim == 256
    assert hard.score > easy.score and hard.model == "llama3.1:8b"


def test_bundled_scorer_follows_the_embedder_backend() -> None:
    from router_service.config import ScorerSettings
    from router_service.errors import ConfigError

    assert ScorerSettings().resolve_path("static").name == "difficulty-static.onnx"
    assert ScorerSettings().resolve_path("local").name == "difficulty-minilm.onnx"
    assert ScorerSettings().resolve_path("ollama").name == "difficulty-minilm.onnx"  # all-minilm: the same model
    with pytest.raises(ConfigError, match=r"trained on MiniLM vectors.*use \['difficulty'\]"):
        ScorerSettings(name="mf").resolve_path("static")


def test_unknown_bundled_scorer_is_a_config_error() -> None:
    from router_service.config import ScorerSettings
    from router_service.errors import ConfigError

    with pytest.raises(ConfigError, match="'gpt-router' is not a bundled scorer"):
        ScorerSettings(name="gpt-router").resolve_path()
