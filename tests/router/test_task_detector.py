"""The learned background-task detector (#37): clients' own tasks go weak in words nobody tuned to, users' never.

Held-out clients' templates (router_service/training/task_templates.py, never trained on) are filled from real
training prompts with another seed than training's and routed through the real engine; every eval/ and sanity/
prompt is routed too (with the static embedder's detector, which reads all 15,681 in seconds; the MiniLM one on
the sanity set and MT-Bench here, on all of them in `router-service train-tasks`, whose figures its file keeps).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from router_service.adapters.task_detector import SHAPE, TaskDetector, task_view
from router_service.config import BUNDLED_TASK_DETECTORS, RouterSettings
from router_service.domain import ChatMessage, RouteQuery
from router_service.engine import open_engine
from router_service.errors import ConfigError
from router_service.training import tasks
from router_service.training.data import read_jsonl
from router_service.training.task_templates import HELD_OUT
from tests.conftest import ROOT, SHARED_DATA

pytestmark = pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not beside this checkout")
CLAUDE_CODE = ROOT.parent / "shared" / "clients" / "claude-code-2.1.328" / "requests.jsonl"


def _train_prompts() -> list[str]:
    rows = (row for path in sorted((SHARED_DATA / "train").glob("*.jsonl.gz")) for row in read_jsonl(path))
    return list(dict.fromkeys(r["prompt"] for r in rows if isinstance(r.get("prompt"), str) and r["prompt"].strip()))


def _query(view_words: str, system: str, max_tokens: int, tools: int = 0) -> RouteQuery:
    messages = (*((ChatMessage("system", system),) if system else ()), ChatMessage("user", view_words))
    return RouteQuery(messages=messages, max_tokens=max_tokens, tools=tools)


def _eval_prompts(*names: str) -> list[str]:
    files = [*sorted((SHARED_DATA / "eval").glob("*.jsonl.gz")), *sorted((SHARED_DATA / "sanity").glob("*.jsonl.gz"))]
    prompts = []
    for path in files:
        if names and not any(n in path.name for n in names):
            continue
        with gzip.open(path, "rt") as lines:
            prompts += [json.loads(line)["prompt"] for line in lines]
    return prompts


async def test_held_out_clients_tasks_route_weak() -> None:
    """Six clients' tasks (titles, tags, summaries, commit messages) the detector never saw: 87.5% taken at training,
    more with the patterns beside it; a quarter were scored strong before (patterns alone)."""
    held = tasks.held_out_examples(_train_prompts(), seed=1, per_template=10)
    queries = [_query(e.view.words, e.view.system, 64 if e.view.shape[SHAPE.index("short_output")] else 0) for e in held]
    async with open_engine(RouterSettings()) as engine:
        answers = await engine.route(queries)
    weak = [a.model == engine.policy.weak_model for a in answers]
    by_client = {c: np.mean([w for e, w in zip(held, weak, strict=True) if e.client == c]) for c in HELD_OUT}
    rules = Counter(a.rule for a in answers)
    print(f"held-out weak {np.mean(weak):.3f}", {c: round(float(v), 2) for c, v in by_client.items()}, dict(rules))
    assert np.mean(weak) >= 0.9, by_client
    unmatched = len(answers) - rules["client-utility"]  # what the patterns did not know: the detector's work
    assert rules["background-task"] >= 0.75 * unmatched, rules
    taken = [a for a in answers if a.rule == "background-task"]
    assert all(a.score > 0 and a.scorer_name == "difficulty" and not a.routed_strong for a in taken)  # scored, kept


async def test_no_evaluation_or_sanity_prompt_is_taken_for_a_task() -> None:
    """All 15,681 with the static detector; the default's figure on them is in its file (0)."""
    prompts = _eval_prompts()
    assert len(prompts) == 15_681
    async with open_engine(RouterSettings(embedder={"backend": "static"})) as engine:
        answers = []
        for start in range(0, len(prompts), 500):
            answers += await engine.route([RouteQuery(prompt=p) for p in prompts[start:start + 500]])
    taken = [p[:80] for p, a in zip(prompts, answers, strict=True) if a.rule == "background-task"]
    assert taken == []
    default = TaskDetector(BUNDLED_TASK_DETECTORS["local"])
    assert default.training["eval_sanity_prompts"] == 15_681 and default.training["eval_sanity_taken"] == 0


async def test_the_default_detector_takes_no_sanity_or_mt_bench_prompt_however_it_arrives() -> None:
    prompts = _eval_prompts("sanity", "mtbench")
    async with open_engine(RouterSettings()) as engine:
        bare = await engine.route([RouteQuery(prompt=p) for p in prompts])
        in_an_agent = await engine.route([
            _query(p, "You are a helpful coding agent. Use the tools to answer.", 4096, tools=13) for p in prompts
        ])
    assert [a.rule for a in bare + in_an_agent if a.rule == "background-task"] == []


@pytest.mark.skipif(not CLAUDE_CODE.exists(), reason="../shared/clients is not beside this checkout")
async def test_claude_code_s_session_title_goes_weak_and_its_user_turns_are_scored() -> None:
    """Its title request (the instruction in the system prompt, the user's words quoted in <session>) goes weak; its
    user turns are never taken for a task, though they carry a system prompt and short words."""
    from gateway_service.apis.anthropic_wire import MessagesRequest
    from gateway_service.routing.words import users_words

    queries, titles = [], []
    for line in CLAUDE_CODE.read_text().splitlines():
        body = json.loads(line)["body"]
        text = users_words(MessagesRequest.model_validate(body).params())
        assert text is not None
        titles.append(not body.get("tools"))
        queries.append(_query(text.words, text.system, body["max_tokens"], len(body.get("tools") or ())))
    async with open_engine(RouterSettings()) as engine:
        answers = await engine.route(queries)
    # the titles: weak, by the patterns (its "Write the title" line) or the detector (it scored them 0.99)
    assert [a.rule in ("client-utility", "background-task") for a in answers] == titles
    assert sum(titles) == 2 and all(a.model == engine.policy.weak_model for a, t in zip(answers, titles, strict=True) if t)


async def test_switched_off_or_a_file_that_does_not_fit() -> None:
    async with open_engine(RouterSettings(routing={"task_detector": False})) as engine:
        assert engine.detector is None
    with pytest.raises(ConfigError, match="train-tasks"):  # the MiniLM detector under the static embedder
        async with open_engine(RouterSettings(embedder={"backend": "static"},
                                              routing={"task_detector_path": str(BUNDLED_TASK_DETECTORS["local"])})):
            pass
    with pytest.raises(ConfigError, match="does not exist"):
        TaskDetector(Path("/nonexistent/tasks.onnx"))


def test_the_exported_file_scores_as_the_fit_did(tmp_path: Path) -> None:
    """Fit on features, export, load: the ONNX row head and the metadata reproduce the fit's probabilities."""
    rng = np.random.default_rng(0)
    dim = 8
    x = rng.normal(size=(400, 3 * dim + len(SHAPE))).astype(np.float32)
    y = (x[:, 0] + x[:, dim + 1] + x[:, 2 * dim + 2] > 0).astype(int)
    fitted = tasks.fit_detector(x, y)
    out = tmp_path / "tasks.onnx"
    tasks.export_detector(fitted, out, embedder="test", dim=dim, version="t1", training={"note": "synthetic"})
    detector = TaskDetector(out)
    expected = tasks.score_views(fitted, x[:20])
    for row, want in zip(x[:20], expected, strict=True):
        words, tail, system = (detector.model_scores_sync(row[i * dim:(i + 1) * dim][None, :])[0] for i in range(3))
        view = task_view("w")
        view = type(view)("w", "t", "s", tuple(float(v) for v in row[3 * dim:]))
        assert detector.probability(view, words, tail, system) == pytest.approx(float(want), abs=1e-5)
    assert detector.threshold == fitted.threshold and detector.training == {"note": "synthetic"}


async def test_the_request_shape_travels_over_grpc(router_app) -> None:
    """A client's title task in OpenCode's style (its instruction in the system prompt, the user's message after
    it, a short output limit), as the gateway sends it."""
    import grpc

    from routing_api.router.v1 import router_pb2, router_pb2_grpc

    chat = router_pb2.Chat(messages=[
        router_pb2.ChatMessage(role="system", content="Generate a short title for the user's message. Output only the "
                               "title, never an answer to it."),
        router_pb2.ChatMessage(role="user", content="Prove that there are infinitely many primes."),
    ])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router_app.port}") as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        task = await stub.Route(router_pb2.RouteRequest(chat=chat, shape=router_pb2.RequestShape(max_tokens=30)))
        asked = await stub.Route(router_pb2.RouteRequest(prompt="Prove that there are infinitely many primes."))
    assert (task.rule, task.routed_strong) == ("background-task", False) and task.score > 0.5
    assert (asked.rule, asked.routed_strong) == ("", True)
