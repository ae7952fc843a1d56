"""Scorers swapped into a running router (RouterAdmin.ReloadScorers, SIGHUP) and shadow scorers."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import onnx
import pytest

from router_service.config import BUNDLED_SCORERS
from router_service.server import build_router
from routing_api.router.v1 import router_pb2, router_pb2_grpc
from routing_api.router.v1.router_pb2 import ReloadScorersRequest, RouteRequest
from tests.conftest import router_settings

DIFFICULTY = BUNDLED_SCORERS["difficulty"]["local"]
MF = BUNDLED_SCORERS["mf"]["local"]
STATIC_DIFFICULTY = BUNDLED_SCORERS["difficulty"]["static"]
PROMPTS = [
    "hi there",
    "Prove that the square root of 2 is irrational.",
    "Translate 'good morning' into French.",
    "Write a thread-safe LRU cache in Rust with a TTL per entry and explain the locking.",
    "What is 2 + 2?",
    "Plan a 5-day trip to Japan on a budget of $1,500, with trains, and list the costs.",
]


def variant(source: Path, out: Path, version: str) -> Path:
    """A copy of a scorer file under another version (what retraining writes)."""
    model = onnx.load(str(source))
    props = {p.key: p.value for p in model.metadata_props}
    props["scorer.version"] = version
    onnx.helper.set_model_props(model, props)
    onnx.save_model(model, str(out))
    return out


async def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Any]:
    variant(DIFFICULTY, tmp_path / "v1.onnx", "v1")
    router = await build_router(router_settings(
        scorers=[{"name": "main", "path": tmp_path / "v1.onnx"}],
        server={"host": "127.0.0.1", "port": 0, "metrics_port": 0, "grace_s": 5},
    ))
    try:
        yield router
    finally:
        await router.stop()


@pytest.fixture
async def stubs(app) -> AsyncIterator[tuple[router_pb2_grpc.RouterServiceStub, router_pb2_grpc.RouterAdminStub]]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield router_pb2_grpc.RouterServiceStub(channel), router_pb2_grpc.RouterAdminStub(channel)


async def test_reload_swaps_the_scorer_and_says_which_version_serves(app, stubs, tmp_path) -> None:
    route, admin = stubs
    assert (await route.Route(RouteRequest(prompt=PROMPTS[1]), timeout=10)).scorer_version == "v1"
    variant(MF, tmp_path / "v2.onnx", "v2")

    reply = await admin.ReloadScorers(ReloadScorersRequest(paths={"main": str(tmp_path / "v2.onnx")}), timeout=30)

    assert list(reply.swapped) == ["main"]
    (main,) = reply.serving.scorers
    assert (main.version, main.path) == ("v2", str(tmp_path / "v2.onnx"))
    assert len(main.models) > 2  # the MF file's models, not the difficulty scorer's two
    assert (await route.Route(RouteRequest(prompt=PROMPTS[1]), timeout=10)).scorer_version == "v2"
    assert (await route.Describe(router_pb2.DescribeRequest(), timeout=10)).scorers[0].version == "v2"
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"http://127.0.0.1:{app.metrics_port}/metrics")).text
    assert 'router_scorer_info{role="serving",scorer="main",version="v2"} 1.0' in metrics
    assert 'version="v1"' not in metrics
    assert 'router_scorer_reloads_total{outcome="swapped"} 1.0' in metrics


async def test_an_unchanged_file_is_kept_and_a_rewritten_one_is_picked_up(stubs, tmp_path) -> None:
    route, admin = stubs
    unchanged = await admin.ReloadScorers(ReloadScorersRequest(), timeout=30)
    assert list(unchanged.swapped) == [] and unchanged.serving.scorers[0].version == "v1"

    await asyncio.sleep(0.01)  # a new mtime even on coarse clocks
    variant(DIFFICULTY, tmp_path / "v1.onnx", "v1-recalibrated")  # rewritten in place, as calibrate does
    rewritten = await admin.ReloadScorers(ReloadScorersRequest(), timeout=30)

    assert list(rewritten.swapped) == ["main"] and rewritten.serving.scorers[0].version == "v1-recalibrated"
    assert (await route.Route(RouteRequest(prompt="hello"), timeout=10)).scorer_version == "v1-recalibrated"


@pytest.mark.parametrize(
    ("make_file", "expected"),
    [
        (lambda d: (d / "garbage.onnx").write_bytes(b"not a model") and d / "garbage.onnx", "is not a router scorer"),
        (lambda d: d / "missing.onnx", "does not exist"),
        (lambda d: shutil.copy(STATIC_DIFFICULTY, d / "static.onnx"), "embedding dimension mismatch"),
    ],
    ids=["garbage", "missing", "wrong-dimension"],
)
async def test_a_bad_file_is_refused_and_the_serving_scorer_stays(stubs, tmp_path, make_file, expected) -> None:
    route, admin = stubs
    bad = Path(make_file(tmp_path))

    code, details = await status_of(admin.ReloadScorers(ReloadScorersRequest(paths={"main": str(bad)}), timeout=30))

    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert expected in details and "the serving scorers stay" in details and str(bad) in details
    assert (await route.Route(RouteRequest(prompt=PROMPTS[0]), timeout=10)).scorer_version == "v1"


def with_props(source: Path, out: Path, **changes: str) -> Path:
    """A copy of a scorer file with changed metadata: what a careless hand or tool might write."""
    model = onnx.load(str(source))
    props = {p.key: p.value for p in model.metadata_props} | {k.replace("__", "."): v for k, v in changes.items()}
    onnx.helper.set_model_props(model, props)
    onnx.save_model(model, str(out))
    return out


BROKEN = {
    "more models than outputs": (
        {"scorer__models": '["a", "b", "gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1"]'}, "scores 2 models a prompt but lists 4"),
    "NaN threshold": ({"scorer__thresholds": '{"0.5": NaN}'}, "calibrated threshold nan"),
    "strong model missing": ({"scorer__strong_model": "gone"}, "strong model 'gone' is not among its models"),
    "no models": ({"scorer__models": "[]"}, "scorer.models must list model names"),
}


@pytest.mark.parametrize("broken", list(BROKEN), ids=list(BROKEN))
async def test_a_broken_scorer_file_is_refused_before_it_serves(stubs, tmp_path, broken: str) -> None:
    """Issue #28.8: a models list longer than the output reloaded, then every Route was INTERNAL; a NaN
    threshold sent every share request strong; a missing strong model or none at all gave INTERNAL."""
    route, admin = stubs
    changes, expected = BROKEN[broken]
    bad = with_props(DIFFICULTY, tmp_path / "broken.onnx", **changes)
    code, details = await status_of(admin.ReloadScorers(ReloadScorersRequest(paths={"main": str(bad)}), timeout=30))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and expected in details, details
    assert (await route.Route(RouteRequest(prompt=PROMPTS[1], strong_share=0.5), timeout=10)).scorer_version == "v1"


@pytest.mark.parametrize("path", ["bad\0path.onnx", "x" * 10_000], ids=["NUL", "10 KB"])
async def test_an_unusable_path_is_invalid_argument(stubs, path: str) -> None:
    _, admin = stubs
    code, details = await status_of(admin.ReloadScorers(ReloadScorersRequest(paths={"main": path}), timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "give a file path" in details


async def test_a_scorer_for_another_pair_is_swapped_in_with_a_warning(stubs, tmp_path) -> None:
    """Issue #27: a scorer trained for 70b/8b went in while routing stays on 8b/1b, without a word."""
    _, admin = stubs
    other = with_props(DIFFICULTY, tmp_path / "other-pair.onnx", scorer__models='["llama3.1:70b", "llama3.1:8b"]',
                       scorer__strong_model="llama3.1:70b", scorer__weak_model="llama3.1:8b")
    reply = await admin.ReloadScorers(ReloadScorersRequest(paths={"main": str(other)}), timeout=30)
    assert list(reply.swapped) == ["main"] and len(reply.warnings) == 1
    assert "trained for llama3.1:70b (strong) / llama3.1:8b (weak), but routing uses llama3.1:8b / llama3.2:1b" in reply.warnings[0]
    assert list(reply.serving.warnings) == list(reply.warnings)  # and Describe says so while it serves
    bundled = await admin.ReloadScorers(ReloadScorersRequest(paths={"main": str(DIFFICULTY)}), timeout=30)
    assert list(bundled.warnings) == []  # public benchmarks' models: no name in common, nothing to say


async def test_unknown_scorer_name_is_invalid_argument(stubs, tmp_path) -> None:
    _, admin = stubs
    code, details = await status_of(admin.ReloadScorers(ReloadScorersRequest(paths={"nope": str(MF)}), timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'nope' is not configured" in details and "main" in details


async def test_a_file_the_model_mapping_does_not_fit_is_refused(tmp_path) -> None:
    """routing.models maps a model onto one of the MF's models; the difficulty scorer does not have it."""
    app = await build_router(router_settings(
        scorers=[{"name": "mf"}],
        routing={"models": [{"name": "my-llama", "scorer_model": "Ein-70B-v0.1"}]},
    ))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            admin = router_pb2_grpc.RouterAdminStub(channel)
            code, details = await status_of(
                admin.ReloadScorers(ReloadScorersRequest(paths={"mf": str(DIFFICULTY)}), timeout=30)
            )
    finally:
        await app.stop()
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "'Ein-70B-v0.1' is not a model of scorer 'mf'" in details


async def test_twenty_swaps_under_load_fail_no_call(app, stubs, tmp_path) -> None:
    """Route at concurrency 32 while the scorer is swapped 20 times: every call answers, on either version."""
    route, admin = stubs
    files = [tmp_path / "v1.onnx", variant(MF, tmp_path / "v2.onnx", "v2")]
    stop = asyncio.Event()
    versions: list[str] = []
    failures: list[str] = []

    async def caller(worker: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:  # unique prompts: every call embeds, so calls are in flight across each swap
                reply = await route.Route(RouteRequest(prompt=f"{PROMPTS[i % len(PROMPTS)]} ({worker}-{i})"), timeout=30)
                versions.append(reply.scorer_version)
            except grpc.aio.AioRpcError as exc:
                failures.append(f"{exc.code().name}: {exc.details()}")

    callers = [asyncio.create_task(caller(w)) for w in range(32)]
    try:
        await asyncio.sleep(0.2)
        for swap in range(20):
            reply = await admin.ReloadScorers(ReloadScorersRequest(paths={"main": str(files[(swap + 1) % 2])}), timeout=30)
            assert list(reply.swapped) == ["main"]
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*callers)

    assert failures == []
    assert set(versions) == {"v1", "v2"} and len(versions) > 100
    await asyncio.sleep(0.1)
    assert not app.engine._closing  # every retired generation's pipeline was closed once its calls had left


async def test_admin_token_guards_reload_but_not_route(tmp_path) -> None:
    app = await build_router(router_settings(auth={"token": "caller-token", "admin_token": "admin-token"}))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            admin = router_pb2_grpc.RouterAdminStub(channel)
            as_caller = (("authorization", "Bearer caller-token"),)
            code, details = await status_of(admin.ReloadScorers(ReloadScorersRequest(), timeout=30, metadata=as_caller))
            assert code == grpc.StatusCode.UNAUTHENTICATED and "auth.admin_token" in details
            reply = await admin.ReloadScorers(
                ReloadScorersRequest(), timeout=30, metadata=(("authorization", "Bearer admin-token"),)
            )
            assert reply.serving.scorers[0].name == "difficulty"
            route = router_pb2_grpc.RouterServiceStub(channel)
            assert (await route.Route(RouteRequest(prompt="hi"), timeout=10, metadata=as_caller)).model
    finally:
        await app.stop()


async def test_a_shadow_scorer_is_compared_and_never_decides(tmp_path) -> None:
    app = await build_router(router_settings(
        scorers=[
            {"name": "difficulty"},
            {"name": "twin", "path": variant(DIFFICULTY, tmp_path / "twin.onnx", "twin"), "shadow_of": "difficulty"},
            {"name": "mf-candidate", "path": MF, "shadow_of": "difficulty"},
        ],
        server={"host": "127.0.0.1", "port": 0, "metrics_port": 0},
    ))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            route = router_pb2_grpc.RouterServiceStub(channel)
            replies = [await route.Route(RouteRequest(prompt=p), timeout=10) for p in PROMPTS]
            await route.Route(RouteRequest(prompt=PROMPTS[0], threshold=0.5), timeout=10)
            described = {s.name: s for s in (await route.Describe(router_pb2.DescribeRequest(), timeout=10)).scorers}
            default = (await route.Describe(router_pb2.DescribeRequest(), timeout=10)).default_scorer
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{app.metrics_port}/metrics")).text
    finally:
        await app.stop()

    assert default == "difficulty" and {r.scorer_name for r in replies} == {"difficulty"}
    twin, candidate = described["twin"], described["mf-candidate"]
    assert (twin.shadow_of, twin.shadow.samples) == ("difficulty", len(PROMPTS) + 1)
    # The same model as the serving one: it agrees on every call and scores identically.
    assert twin.shadow.agreement == 1.0 and twin.shadow.score_correlation == pytest.approx(1.0)
    assert candidate.shadow.samples == len(PROMPTS) + 1
    assert 0.0 <= candidate.shadow.agreement <= 1.0 and -1.0 <= candidate.shadow.score_correlation <= 1.0
    assert described["difficulty"].shadow_of == "" and described["difficulty"].shadow.samples == 0
    assert f'router_shadow_routes_total{{agree="true",scorer="difficulty",shadow="twin"}} {len(PROMPTS) + 1}.0' in metrics
    assert 'router_shadow_agreement{scorer="difficulty",shadow="twin"} 1.0' in metrics
    assert 'router_scorer_info{role="shadow",scorer="mf-candidate"' in metrics


def test_a_shadow_of_an_unknown_or_shadow_scorer_is_a_config_error(tmp_path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="'nope' is not a serving scorer"):
        router_settings(scorers=[{"name": "difficulty"}, {"name": "mf", "shadow_of": "nope"}])
    with pytest.raises(ValidationError, match="at least one scorer that is not a shadow"):
        router_settings(scorers=[{"name": "mf", "shadow_of": "mf"}])


async def test_sighup_reloads_scorers_from_the_config_file(tmp_path) -> None:
    """The real command: `router-service serve --config`, the file edited, SIGHUP, a new version answers."""
    variant(DIFFICULTY, tmp_path / "v1.onnx", "v1")
    variant(MF, tmp_path / "v2.onnx", "v2")
    config = tmp_path / "router.toml"

    def write_config(scorer: str, log_level: str = "INFO") -> None:
        config.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {port}\nlog_level = "{log_level}"\n\n'
            f'[[scorers]]\nname = "main"\npath = "{tmp_path / scorer}"\n'
        )

    from tests.conftest import closed_port

    port = closed_port()
    write_config("v1.onnx")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    log = (tmp_path / "router.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "router_service", "serve", "--config", str(config)], env=env, stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            route = router_pb2_grpc.RouterServiceStub(channel)
            reply = await route.Route(RouteRequest(prompt="hi"), timeout=120, wait_for_ready=True)
            assert reply.scorer_version == "v1"
            write_config("v2.onnx", log_level="DEBUG")
            process.send_signal(signal.SIGHUP)
            for _ in range(100):
                described = await route.Describe(router_pb2.DescribeRequest(), timeout=10)
                if described.scorers[0].version == "v2":
                    break
                await asyncio.sleep(0.1)
            assert (await route.Route(RouteRequest(prompt="hi"), timeout=10)).scorer_version == "v2"
            write_config("missing.onnx")
            process.send_signal(signal.SIGHUP)
            await asyncio.sleep(1.0)
            assert (await route.Route(RouteRequest(prompt="hello"), timeout=10)).scorer_version == "v2"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
    text = (tmp_path / "router.log").read_text()
    assert process.returncode == 0, text
    assert "changes to server take a restart" in text  # the log level changed too: named, not applied
    assert "scorer reload rejected, the serving scorers stay" in text and "missing.onnx does not exist" in text
    assert "Traceback" not in text
