"""The gateway's one front door: every request of every API (OpenAI, Anthropic, Ollama, gRPC) enters here.

It owns what every request has: the request id, auth, the timer, the outcome metric, the one
access line, the client leaving, the shutdown cut and the catch-all (an error id in the answer
and in the one log line with the traceback). Each API is a codec beside it, which says how a
refusal looks on its wire; handlers raise the gateway's domain errors and never catch them.

HTTP: ``HttpFrontDoor`` is the whole ASGI app (a path table, no framework router: every request
takes the path the chat completions once took alone). gRPC: ``grpc_exchange`` wraps each method.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from service_core.auth import api_key
from service_core.request_ids import accept_request_id

from ..accounting.policy import Caller
from ..core.exchange import Exchange
from ..errors import (
    GatewayError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PolicyDenied,
    ShuttingDown,
    Unauthorized,
    UnsupportedMediaType,
    internal_error,
)
from ..metrics import GatewayMetrics
from .grpc_status import grpc_status

__all__ = ["Codec", "Endpoint", "FrontDoor", "HttpFrontDoor", "grpc_exchange"]

logger = logging.getLogger(__name__)
access_log = logging.getLogger("gateway_service.access")

UNAUTHORIZED = (
    "missing or invalid API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>' (see callers and auth.api_keys)"
)
GONE = "the client went away before its answer was sent"


class Codec(Protocol):
    """How one API says no: its error body, with the exchange's id headers."""

    def refusal(self, error: GatewayError, x: Exchange) -> Response: ...


Handler = Callable[[Request, Exchange], Awaitable[Response]]
Identify = Callable[[str | None], Caller | None]  # a bearer token's caller; None: refused


@dataclass(frozen=True)
class Endpoint:
    api: str  # the metric label and the access line's "api"
    methods: frozenset[str]
    handler: Handler
    codec: Codec
    auth: bool = True
    browser: bool = False  # the routing page and what it calls: the only endpoints HTTP Basic (a browser's) may open


FORM_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")  # what an HTML form can send
SAME_SITE = frozenset({"same-origin", "none"})


def browser_checks(endpoint: Endpoint, scope: Scope, headers: Headers) -> None:
    """A request authenticated by HTTP Basic: credentials a browser caches and sends by itself, to any page that asks,
    so they are taken only where the routing page needs them, from the page's own origin, with a JSON body."""
    if not endpoint.browser:
        raise Unauthorized(
            "HTTP Basic auth opens only the routing page (/ui) and what it calls; an API client sends "
            "'Authorization: Bearer <key>' (or x-api-key)"
        )
    site, origin = headers.get("sec-fetch-site"), headers.get("origin")
    if site is not None and site not in SAME_SITE:
        raise PolicyDenied(f"refused: a browser request from another site (Sec-Fetch-Site: {site}) with cached credentials")
    if origin is not None and origin != "null" and origin.split("://", 1)[-1] != headers.get("host", ""):
        raise PolicyDenied(f"refused: a browser request from another origin ({origin[:100]}) with cached credentials")
    if origin == "null":
        raise PolicyDenied("refused: a browser request from an opaque origin with cached credentials")
    kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if scope["method"] == "POST" and kind != "application/json":
        raise UnsupportedMediaType(f"send the body as Content-Type: application/json (got {kind or 'none'})")


class FrontDoor:
    """The requests in flight, their auth, and their end: one metric and one access line each."""

    def __init__(self, metrics: GatewayMetrics, identify: Identify, grace_s: float) -> None:
        self.metrics = metrics
        self._identify = identify
        self._grace_s = grace_s
        self._in_flight: dict[asyncio.Task[Any], Exchange] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(
        self, api: str, request_id: str | None, authorization: str | None, headers: Mapping[str, str] | None = None
    ) -> Exchange:
        request_id, note = accept_request_id(request_id)
        x = Exchange(api, request_id, note, api_key(authorization), headers=headers or {})
        task = asyncio.current_task()
        if task is not None:
            self._in_flight[task] = x
            self._idle.clear()
        return x

    def check_auth(self, x: Exchange) -> None:
        """Name the caller of the exchange's key, or refuse it."""
        caller = self._identify(x.client_key)
        if caller is None:
            raise Unauthorized(UNAUTHORIZED)
        x.caller = caller

    def leave(self, x: Exchange) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.pop(task, None)
            if not self._in_flight:
                self._idle.set()
        self.metrics.requests.labels(api=x.api, outcome=x.outcome).inc()
        if access_log.isEnabledFor(logging.INFO):  # the record is built only when it is written
            access_log.info(json.dumps(x.record(), separators=(",", ":")))

    def cut(self) -> int:
        """End every request still running (the shutdown grace is over): each ends with a ShuttingDown
        error on its own wire (a last SSE event, an Ollama error line, a gRPC status), never torn."""
        for task, x in list(self._in_flight.items()):
            x.cut = True
            task.cancel("the shutdown grace is over")
        return len(self._in_flight)

    async def settle(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the requests in flight to end; whether they all did."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def shutting_down(self) -> ShuttingDown:
        return ShuttingDown(
            f"the gateway is shutting down and ended this request after server.grace_s={self._grace_s:g}s; "
            "retry it (another replica answers)"
        )


class _Body:
    """The request's ``receive``, watched: once the body has arrived, a task waits for the client to
    leave and cancels the request's task, wherever it waits (an upstream's first token, a stream)."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.complete = False
        self.gone = False
        self._watcher: asyncio.Task[None] | None = None

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.gone = True
        elif not message.get("more_body", False) and self._watcher is None:
            self.complete = True
            request = asyncio.current_task()
            assert request is not None
            self._watcher = asyncio.create_task(self._watch(request))
        return message

    async def _watch(self, request: asyncio.Task[Any]) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        request.cancel("the client went away")

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()


class HttpFrontDoor:
    """The gateway's ASGI app. ``quiet`` endpoints (health probes, /metrics) skip the access line."""

    def __init__(
        self, door: FrontDoor, endpoints: dict[str, Endpoint], quiet: dict[str, Handler], codec_of: Callable[[str], Codec]
    ) -> None:
        self._door = door
        self._endpoints = endpoints
        self._quiet = quiet
        self._codec_of = codec_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; a websocket upgrade is not served here
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        path, method = scope["path"], scope["method"]
        quiet = self._quiet.get(path)
        if quiet is not None and method in ("GET", "HEAD"):
            probe = await quiet(Request(scope, receive), Exchange(path, ""))
            await probe(scope, receive, send)
            return
        endpoint = self._endpoints.get(path)
        headers = Headers(scope=scope)
        authorization = headers.get("authorization")
        if authorization is None and "x-api-key" in headers:  # Anthropic's clients send their key so
            authorization = f"Bearer {headers['x-api-key']}"
        x = self._door.enter(endpoint.api if endpoint else "http/unknown", headers.get("x-request-id"), authorization, headers)
        codec = endpoint.codec if endpoint else self._codec_of(path)
        body = _Body(receive)
        try:
            response = await self._answer(scope, endpoint, body, x, codec, authorization)
            if response is not None:
                if not body.complete and method != "GET":  # the rest of the body is not wanted: no reading on
                    response.headers["connection"] = "close"
                await response(scope, receive, send)
        except asyncio.CancelledError:
            if body.gone:  # the client left mid-stream: the stream has closed its upstream request
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
                if x.stream is None:
                    x.ended(499, "client_disconnected", GONE)
            elif not x.take_back_cut():
                raise
        except OSError:  # a server that reports the client gone by raising on send (ASGI 2.4)
            if x.stream is None:
                x.ended(499, "client_disconnected", GONE)
        except Exception:  # noqa: BLE001 - a bug after the answer started: the id in the log, one line
            message = internal_error(logger, f"request {x.request_id}")
            x.ended(x.status, "internal_error", message)
        finally:
            body.close()
            self._door.leave(x)

    async def _answer(
        self, scope: Scope, endpoint: Endpoint | None, body: _Body, x: Exchange, codec: Codec, authorization: str | None
    ) -> Response | None:
        """The handler's answer, or the codec's refusal; None when nobody is left to answer."""
        try:
            if endpoint is None:
                raise NotFound(_no_route(scope["method"], scope["path"]))
            if scope["method"] not in endpoint.methods:
                raise MethodNotAllowed(f"{scope['method']} is not allowed on {scope['path']}; use {', '.join(sorted(endpoint.methods))}")
            if endpoint.auth:
                if authorization is not None and authorization.startswith("Basic "):
                    browser_checks(endpoint, scope, Headers(scope=scope))
                self._door.check_auth(x)
            return await endpoint.handler(Request(scope, body.receive), x)
        except GatewayError as exc:
            return self._refuse(codec, exc, x)
        except ClientDisconnect:
            x.ended(499, "client_disconnected", "the client went away while sending its body")
            return None
        except asyncio.CancelledError:
            if not body.gone and x.take_back_cut():  # the client gone: __call__ ends it, as it does mid-stream
                return self._refuse(codec, self._door.shutting_down(), x)
            raise
        except Exception:  # noqa: BLE001 - any bug: a 500 with an id that is also in the log, never a traceback
            return self._refuse(codec, InternalError(internal_error(logger, f"request {x.request_id}")), x)

    @staticmethod
    def _refuse(codec: Codec, error: GatewayError, x: Exchange) -> Response:
        x.refused(error, error.http_status)
        return codec.refusal(error, x)


def _no_route(method: str, path: str) -> str:
    message = f"no route for {method} {path}"
    for known in ("/chat/completions", "/embeddings", "/models"):
        if path.rstrip("/").endswith(known) and not path.startswith("/v1/"):
            return f"{message}: did you mean /v1{known}? (an OpenAI client's base_url ends in /v1)"
    return message


@asynccontextmanager
async def grpc_exchange(door: FrontDoor, context: grpc.aio.ServicerContext[Any, Any], api: str) -> AsyncIterator[Exchange]:
    """One gRPC call through the front door: domain errors become the call's status (before the first
    message or after it: a terminal status, never a fake last chunk); anything else INTERNAL with an id."""
    metadata = dict(context.invocation_metadata() or ())
    given, authorization = metadata.get("x-request-id"), metadata.get("authorization")
    authorization = authorization if isinstance(authorization, str) else None
    text = {k: v for k, v in metadata.items() if isinstance(v, str)}
    x = door.enter(api, given if isinstance(given, str) else None, authorization, text)
    x.status = "OK"
    try:
        door.check_auth(x)
        yield x
    except GatewayError as exc:
        await _abort(context, x, exc)
    except asyncio.CancelledError:
        if not x.take_back_cut():
            if x.stream is None:
                x.ended("CANCELLED", "client_disconnected", GONE)
            raise
        await _abort(context, x, door.shutting_down())
    except GeneratorExit:  # the client cancelled between two messages
        if x.stream is None:
            x.ended("CANCELLED", "client_disconnected", GONE)
        raise
    except Exception:  # noqa: BLE001 - any bug: INTERNAL with an id that is also in the log
        await _abort(context, x, InternalError(internal_error(logger, f"request {x.request_id}")))
    finally:
        door.leave(x)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], x: Exchange, error: GatewayError) -> None:
    status = grpc_status(error)
    if x.stream is None or isinstance(error, ShuttingDown):
        x.refused(error, status.name)
    await context.abort(status, str(error))
