"""Property-based fuzzing of the gateway's request handling, over real sockets (hypothesis).

A real stack runs in subprocesses: router + gateway (`gateway-service up`) and a
test upstream in Ollama's format. Random and malformed HTTP bodies (wrong types,
huge strings, invalid UTF-8, odd roles) and random gRPC requests and bytes may
only get a correct answer or a clear 4xx / INVALID_ARGUMENT-style status: never a
5xx, a traceback, or a hang. About 10,000 cases per run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.stack import local_stack
from routing_api.gateway.v1 import gateway_pb2, gateway_pb2_grpc

MODELS = ["llama3.1:8b", "llama3.2:1b", "router", "router-mf-50", "router-mf-0.3", "router-mf-9", "nope", ""]
ROLES = ["user", "system", "assistant", "tool", "developer", "User", "", "wizard", "\x00"]
# 2,500 cases per test, 10,000 per run; FUZZ_EXAMPLES=25000 for the long run the README quotes.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "2500"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    limits = "[limits]\nmax_body_bytes = 65536\nmax_prompt_chars = 20000\n"
    with (tmp / "stack.log").open("wb") as log, local_stack(tmp, gateway_toml=limits, log=log) as running:
        yield running.completions_url, f"127.0.0.1:{running.grpc_port}"
    assert "Traceback" not in (tmp / "stack.log").read_text(errors="replace"), "a traceback reached the log"


@pytest.fixture(scope="module")
def http(stack: tuple[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


STATUSES: dict[int, int] = {}  # HTTP status -> count, over the whole run


def check_http(response: httpx.Response) -> None:
    STATUSES[response.status_code] = STATUSES.get(response.status_code, 0) + 1
    assert response.status_code < 500, response.text[:300]
    body = response.json()
    if response.status_code == 200:
        assert body["choices"][0]["message"]["content"] == "Hello, world!"
        assert body["model"] in ("llama3.1:8b", "llama3.2:1b")
    else:
        assert response.status_code in (400, 404, 413, 422), response.status_code
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]


text = st.text(max_size=60) | st.sampled_from(["", " ", "x" * 30000, "\ud800".encode("utf-8", "surrogatepass").decode("latin-1")])
content = text | st.integers() | st.none() | st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]), "text": text}), max_size=2)
message = st.fixed_dictionaries({"role": st.sampled_from(ROLES) | text, "content": content}) | st.dictionaries(text, text, max_size=3)
json_value = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | text, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=6)
good_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant"]), "content": st.text(max_size=200)}
)
good_request = st.fixed_dictionaries(
    {"model": st.sampled_from(MODELS[:5]), "messages": st.lists(good_message, min_size=1, max_size=3).map(
        lambda ms: [*ms, {"role": "user", "content": ms[0]["content"] or "hi"}])},
    optional={"temperature": st.floats(0, 2), "max_tokens": st.integers(1, 4096), "seed": st.integers(0, 2**31),
              "stop": st.lists(st.text(max_size=5), max_size=2)},
)
odd_request = st.fixed_dictionaries(
    {"model": st.sampled_from(MODELS) | text | st.integers(), "messages": st.lists(message, max_size=4) | json_value},
    optional={
        "stream": st.just(False) | st.integers(),
        "temperature": st.floats(allow_nan=True, allow_infinity=True) | text,
        "top_p": st.floats(min_value=-1, max_value=3),
        "max_tokens": st.integers(min_value=-5, max_value=10**12) | text,
        "stop": text | st.lists(text, max_size=3) | st.integers(),
        "seed": st.integers(min_value=-(2**70), max_value=2**70),
        "n": st.integers(min_value=0, max_value=3),
    },
)
# Half well-formed (they must be answered), half odd (they must be refused clearly).
request = good_request | odd_request


@FUZZ
@given(body=request)
def test_http_json_requests(http: httpx.Client, stack: tuple[str, str], body: dict) -> None:
    raw = json.dumps(body, allow_nan=True).encode()
    check_http(http.post(stack[0], content=raw, headers={"content-type": "application/json"}))


@FUZZ
@given(raw=st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_http_malformed_bodies(http: httpx.Client, stack: tuple[str, str], raw: bytes) -> None:
    check_http(http.post(stack[0], content=raw, headers={"content-type": "application/json"}))


@pytest.fixture(scope="module")
def grpc_stub(stack: tuple[str, str]) -> Iterator[tuple[gateway_pb2_grpc.GatewayServiceStub, grpc.Channel]]:
    with grpc.insecure_channel(stack[1]) as channel:
        yield gateway_pb2_grpc.GatewayServiceStub(channel), channel


ALLOWED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}


@FUZZ
@given(
    model=st.sampled_from(MODELS) | st.text(max_size=30),
    messages=st.lists(st.tuples(st.sampled_from(ROLES) | st.text(max_size=10), st.text(max_size=80)), max_size=4),
    max_tokens=st.none() | st.integers(min_value=-(2**31), max_value=2**31 - 1),
    temperature=st.none() | st.floats(allow_nan=True, allow_infinity=True),
)
def test_grpc_chat_requests(grpc_stub, model, messages, max_tokens, temperature) -> None:
    stub, _ = grpc_stub
    request = gateway_pb2.ChatRequest(model=model, messages=[gateway_pb2.ChatMessage(role=r, content=c) for r, c in messages])
    if max_tokens is not None:
        request.max_tokens = max_tokens
    if temperature is not None:
        request.temperature = temperature
    try:
        chunks = list(stub.Chat(request, timeout=30))
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED, (exc.code(), exc.details())
        assert exc.details()
        return
    assert "".join(c.delta for c in chunks) == "Hello, world!" and chunks[-1].finish_reason == "stop"


@FUZZ
@given(raw=st.binary(max_size=200))
def test_grpc_raw_bytes(grpc_stub, raw: bytes) -> None:
    _, channel = grpc_stub
    call = channel.unary_stream("/gateway.v1.GatewayService/Chat", request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        for _ in call(raw, timeout=30):
            pass
    except grpc.RpcError as exc:
        assert exc.code() in ALLOWED, (exc.code(), exc.details())


def test_fuzzing_reached_both_outcomes() -> None:
    """The run above must have exercised answers as well as refusals, or it proved little."""
    if not STATUSES:
        pytest.skip("run with the fuzz tests above")
    assert STATUSES.get(200, 0) >= 500 and sum(n for code, n in STATUSES.items() if code >= 400) >= 500, STATUSES
    print(f"HTTP outcomes over the fuzz run: {dict(sorted(STATUSES.items()))}")
