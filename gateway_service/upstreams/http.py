"""What both upstream kinds share: one pooled client over the upstream's hosts, retries, health checks.

Each request takes a host from the pool (hosts.py) and is opened up to its first
event; a failure of the host before that (connect, timeout, 429, 5xx, a broken or
empty stream) is retried on another host, so a client sees an error before the
first token only when no host could answer.

The client is aiohttp's, used directly: this is the gateway's hot path, and httpx's
client layer over aiohttp's pool added ~30% to the client's CPU per request
(bench/upstream_client_bench.py prices the stacks) and ~20% to the gateway's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
from aiohttp.http_exceptions import LineTooLong

from service_core.redact import Redactor
from service_core.upstream_errors import error_message

from ..config import UpstreamSettings
from ..domain import ChatParams, Delta, Embedded, Finish, HostState
from ..errors import (
    GatewayError,
    UpstreamBusy,
    UpstreamError,
    UpstreamStreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from ..metrics import GatewayMetrics
from .hosts import Host, HostPool

__all__ = ["MODEL_LIST_BYTES", "HttpUpstream", "body_chunks", "body_lines", "read_at_most"]

logger = logging.getLogger(__name__)

HOST_FAULTS = (UpstreamUnreachable, UpstreamTimeout, UpstreamBusy, UpstreamStreamError)
READ_BUFFER = 2**19  # aiohttp refuses a line (Ollama NDJSON, SSE) longer than twice this: 1 MiB
ERROR_BODY_BYTES = 64 * 1024  # of an error answer, only this much is read: enough for any message
MODEL_LIST_BYTES = 16 * 2**20  # a model list larger than this is not read


async def read_at_most(content: aiohttp.StreamReader, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of a body, and whether there was more (left unread: the connection is dropped)."""
    chunks: list[bytes] = []
    size = 0
    async for data in content.iter_any():
        chunks.append(data)
        size += len(data)
        if size > limit:
            return b"".join(chunks)[:limit], True
    return b"".join(chunks), False


async def body_lines(content: aiohttp.StreamReader) -> AsyncGenerator[bytes, None]:
    """The body's lines as they arrive; if the connection breaks, the whole lines that had arrived, then the error."""
    try:
        async for line in content:
            yield line
    except aiohttp.ClientPayloadError:
        for line in _arrived(content).splitlines(keepends=True):
            if line.endswith(b"\n"):  # a line cut short is not data
                yield line
        raise


async def body_chunks(content: aiohttp.StreamReader) -> AsyncGenerator[bytes, None]:
    """The body's bytes as they arrive; if the connection breaks, what had arrived, then the error."""
    try:
        async for data in content.iter_any():
            yield data
    except aiohttp.ClientPayloadError:
        rest = _arrived(content)
        if rest:
            yield rest
        raise


def _arrived(content: aiohttp.StreamReader) -> bytes:
    """Bytes that reached aiohttp before the connection broke but that it will not hand out: its reads raise
    the break first (asyncio's StreamReader does the same: cpython#75044), which would drop the last tokens an
    upstream sent before failing. Taken from its buffer, which is not public API: nothing if that changes."""
    buffer, offset = getattr(content, "_buffer", None), getattr(content, "_buffer_offset", 0)
    if not buffer or not isinstance(offset, int):
        return b""
    data = b"".join(buffer)[offset:]
    buffer.clear()
    return data


def _connect_failure(exc: aiohttp.ClientConnectorError) -> str:
    """The cause in words: "connection refused: nothing listens there", not "[Errno 111] Connect call failed (...)"."""
    error = exc.os_error
    if isinstance(error, ConnectionRefusedError):
        return "connection refused: nothing listens there"
    if error is not None and error.errno:
        return os.strerror(error.errno).lower()
    return str(error or exc)


class HttpUpstream:
    path = ""  # the chat endpoint, under a host's base URL
    models_path = ""  # the model list, under a host's base URL

    def __init__(
        self,
        settings: UpstreamSettings,
        redact: Redactor | None = None,
        metrics: GatewayMetrics | None = None,
        answer_limit: int = 64 * 2**20,
    ) -> None:
        self.name = settings.name
        self._answer_limit = answer_limit  # limits.max_upstream_answer_bytes
        self._settings = settings
        self._metrics = metrics
        self._headers = {"Content-Type": "application/json"}
        key = settings.resolve_api_key()
        if key:
            self._headers.update(self.auth_headers(key))
        self._key_missing = settings.api_key is None and bool(settings.api_key_env) and not key
        if self._key_missing:
            logger.warning(
                "upstream %r: api_key_env names %s, which is not set (or empty) in this environment: its requests go "
                "without a key; set %s, or drop api_key_env for a server that needs none",
                settings.name, settings.api_key_env, settings.api_key_env,
            )
        # Upstream text (error bodies, broken chunks, model lists) is shown to clients and logged: never with a secret.
        self.redact = redact or Redactor([key])
        self.pool = HostPool(settings, metrics, redact=self.redact)
        self._trace_configs: list[aiohttp.TraceConfig] = []
        self._session: aiohttp.ClientSession | None = None  # made in the event loop, on first use
        self._health: asyncio.Task[None] | None = None

    @property
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            settings = self._settings
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=settings.max_concurrency * len(settings.hosts)),
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(sock_connect=settings.connect_timeout_s, sock_read=settings.read_timeout_s),
                read_bufsize=READ_BUFFER,
                trust_env=False,  # no ambient proxy or netrc credentials
                trace_configs=self._trace_configs or None,
            )
        return self._session

    def auth_headers(self, key: str) -> dict[str, str]:
        """How this upstream kind is given its key (Bearer; Anthropic's is x-api-key)."""
        return {"Authorization": f"Bearer {key}"}

    def request_body(self, model: str, params: ChatParams) -> dict[str, Any]:
        raise NotImplementedError

    def adaptations(self, params: ChatParams) -> tuple[str, ...]:
        """What this upstream kind does not take as asked (emulated, dropped): said in the access line."""
        return ()

    def events(self, host: Host, model: str, body: dict[str, Any]) -> AsyncGenerator[Delta | Finish, None]:
        """One host's answer as deltas, then exactly one Finish; raises a GatewayError on failure."""
        raise NotImplementedError

    def model_names(self, payload: Any) -> list[str]:
        """The model names in the answer of ``models_path``."""
        raise NotImplementedError

    async def embed(self, model: str, inputs: list[str], options: dict[str, Any]) -> Embedded:
        raise NotImplementedError

    def where(self, host: Host, model: str, path: str | None = None) -> str:
        return f"upstream {self.name!r} ({self._settings.provider}) at {host.url}{path or self.path} for model {model!r}"

    async def call(self, model: str, path: str, body: dict[str, Any]) -> Any:
        """A one-shot JSON request (embeddings) to the first host that answers, with the stream's retries,
        ejection and back-off; the answer's JSON."""
        host, _, trial, answer, rest = await self._open(model, lambda host: self._json(host, model, path, body))
        await rest.aclose()
        self.pool.release(host, trial)
        return answer

    async def _json(self, host: Host, model: str, path: str, body: dict[str, Any]) -> AsyncGenerator[Any, None]:
        async with self.post(host, model, body, path) as response:
            payload, more = await read_at_most(response.content, self._answer_limit)
        if more:
            raise UpstreamError(
                f"{self.where(host, model, path)} answered more than limits.max_upstream_answer_bytes="
                f"{self._answer_limit} bytes; it was not read further"
            )
        try:
            answer = json.loads(payload)
        except ValueError:
            raise UpstreamStreamError(f"{self.where(host, model, path)} answered with something that is not JSON") from None
        yield answer

    async def stream(self, model: str, params: ChatParams) -> AsyncGenerator[Delta | Finish, None]:
        """Deltas, then exactly one Finish, from the first host that answers; ``aclose()`` ends the request."""
        body = self.request_body(model, params)
        host, epoch, trial, first, events = await self._open(model, lambda host: self.events(host, model, body))
        try:
            yield first
            async for event in events:
                yield event
        except HOST_FAULTS as exc:
            self.pool.failed(host, type(exc).__name__, str(exc), epoch)
            raise
        finally:
            await events.aclose()
            self.pool.release(host, trial)

    async def _open(
        self, model: str, events_of: Callable[[Host], AsyncGenerator[Any, None]]
    ) -> tuple[Host, int, bool, Any, AsyncGenerator[Any, None]]:
        """The first host whose answer gets as far as its first item: (host, epoch, trial, first item, the rest).
        The caller releases the host. A failure before the first item is retried on another host."""
        tried: list[Host] = []
        failure: GatewayError | None = None
        while True:
            host = await self.pool.acquire(model, tried)
            if host is None:  # every host was tried
                assert failure is not None
                raise failure
            if failure is not None:
                logger.info("%s; trying %s", failure, host.url)
                if self._metrics is not None:
                    self._metrics.retries.labels(upstream=self.name).inc()
            tried.append(host)
            epoch, trial = host.epoch, bool(host.ejected_until)  # taken while ejected: the trial request
            events = events_of(host)
            try:
                try:
                    first = await anext(events)
                except StopAsyncIteration:
                    raise UpstreamStreamError(f"{self.where(host, model)} sent an empty stream") from None
            except GatewayError as exc:
                await events.aclose()
                self.pool.release(host, trial)
                if not self._another_host_may_answer(host, model, exc, epoch):
                    raise
                failure = exc
                continue
            except BaseException:
                await events.aclose()
                self.pool.release(host, trial)
                raise
            self.pool.succeeded(host)
            return host, epoch, trial, first, events

    def _another_host_may_answer(self, host: Host, model: str, exc: GatewayError, epoch: int) -> bool:
        """Record what the failure says about ``host``; whether it is worth asking another."""
        status = exc.upstream_status
        if isinstance(exc, HOST_FAULTS) or (status is not None and status >= 500):
            self.pool.failed(host, type(exc).__name__, str(exc), epoch)
            return True
        self.pool.count(host, type(exc).__name__)
        if status == 404:  # this host lacks the model (Ollama) or the path: another may have it
            self.pool.lacks(host, model)
            return True
        return False  # the request or its credentials: every host would say the same

    @asynccontextmanager
    async def post(
        self, host: Host, model: str, body: dict[str, Any], path: str | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST to one host (the chat path unless ``path``) and stream the response; HTTP and connection
        failures become GatewayErrors."""
        try:
            async with self._http.post(host.target + (path or self.path), data=orjson.dumps(body)) as response:
                if response.status >= 400:
                    payload, _ = await read_at_most(response.content, ERROR_BODY_BYTES)
                    raise self._status_error(host, model, response, payload, path)
                yield response
        except (aiohttp.ClientError, LineTooLong, TimeoutError) as exc:
            raise self._transport_error(host, model, exc, path) from exc

    def _transport_error(
        self, host: Host, model: str, exc: aiohttp.ClientError | LineTooLong | TimeoutError, path: str | None = None
    ) -> GatewayError:
        """The right cause: an error must not say "timeout" when the server is simply not there."""
        where = self.where(host, model, path)
        if isinstance(exc, aiohttp.ClientConnectorError):
            return UpstreamUnreachable(
                f"{where} is unreachable ({_connect_failure(exc)}); is the server running? Check {self._settings.url_setting}"
            )
        if isinstance(exc, LineTooLong):  # a bound on what one chunk may hold in memory, not a broken connection
            return UpstreamStreamError(f"{where} sent a line longer than {2 * READ_BUFFER // 2**20} MiB, the most one chunk may be")
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return UpstreamStreamError(f"{where} closed the connection without an answer")
        if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError is one too
            return UpstreamTimeout(
                f"{where} went silent for longer than its timeout ({type(exc).__name__}); "
                f"see upstreams[{self.name}].read_timeout_s / connect_timeout_s"
            )
        return UpstreamStreamError(f"{where} broke the connection: {type(exc).__name__}: {self.redact(str(exc))}")

    @staticmethod
    async def finish_reading(rest: AsyncIterator[object], limit: int = 100) -> None:
        """Read what follows the last event (the chunked body's end) from the same iterator, so the
        connection goes back to the pool: a response left unread is closed, and the next request
        pays a new TCP connection. More than ``limit`` items is a stream, not an end: stop reading."""
        count = 0
        async for _ in rest:
            count += 1
            if count > limit:
                return

    def _status_error(
        self, host: Host, model: str, response: aiohttp.ClientResponse, payload: bytes, path: str | None = None
    ) -> GatewayError:
        status = response.status
        detail = self.redact(error_message(payload, response.reason or str(status)))
        where = f"{self.where(host, model, path)} answered HTTP {status}: {detail}"
        error: GatewayError
        if status in (429, 503):
            error = UpstreamBusy(where, status=status, retry_after=response.headers.get("retry-after"))
        elif status in (401, 403) and self._key_missing:
            variable = self._settings.api_key_env
            error = UpstreamError(f"{where}; upstreams[{self.name}].api_key_env names {variable}, which is not set in "
                                  f"the gateway's environment: set {variable} to a valid key")
        elif status in (401, 403) and self._settings.api_key_env:
            error = UpstreamError(f"{where}; the key in {self._settings.api_key_env} "
                                  f"(upstreams[{self.name}].api_key_env) was refused: set it to a valid key")
        elif status in (401, 403):
            error = UpstreamError(f"{where}; set upstreams[{self.name}].api_key_env to the variable holding a valid key")
        elif status == 404:
            error = UpstreamError(f"{where}; check {self._settings.url_setting} and that it serves {model!r}")
        else:
            error = UpstreamError(where)
        error.upstream_status = status
        return error

    # -- health checks --------------------------------------------------------------------

    def hosts(self) -> list[HostState]:
        return self.pool.states()

    def start(self) -> None:
        """Start the health checks (model lists, and bringing ejected hosts back); needs a running loop."""
        if self._settings.health_interval_s > 0 and self._health is None:
            self._health = asyncio.create_task(self._check_forever(), name=f"gateway-health-{self.name}")

    async def _check_forever(self) -> None:
        while True:
            for host in self.pool.hosts:  # one at a time: no task per check
                await self.check(host)
            await asyncio.sleep(self._settings.health_interval_s)

    def windows(self) -> dict[str, int]:
        """The context window each model is served with, as the upstream reports it (Ollama); none here."""
        return {}

    async def check(self, host: Host) -> bool:
        """Fetch ``host``'s model list; a host that answers is up, one that cannot is failing. Whether it answered."""
        settings = self._settings
        url, shown = host.target + self.models_path, host.url + self.models_path
        try:
            timeout = aiohttp.ClientTimeout(total=10.0, sock_connect=settings.connect_timeout_s)
            async with self._http.get(url, timeout=timeout) as response:
                status, (payload, more) = response.status, await read_at_most(response.content, MODEL_LIST_BYTES)
            if more:
                self.pool.check_failed(host, f"GET {shown} answered a model list over {MODEL_LIST_BYTES} bytes")
                return False
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc  # without "ssl:default"
            self.pool.check_failed(host, f"GET {shown}: {type(exc).__name__}: {self.redact(str(reason))}")
            return False
        if status >= 500:
            self.pool.check_failed(host, f"GET {shown} answered HTTP {status}")
            return False
        models: frozenset[str] | None = None
        if status == 200:
            try:
                models = frozenset(self.model_names(json.loads(payload)))
            except (ValueError, KeyError, TypeError, AttributeError):
                logger.warning("upstream %r: host %s sent a model list this gateway cannot read", self.name, host.url)
        self.pool.checked(host, models)  # reachable; a server without a model list (4xx) serves whatever it serves
        return True

    def instrument(self, tracer_provider: Any) -> None:
        """Trace this upstream's requests (OpenTelemetry), on this client only, never by global patching;
        called before the first request."""
        from opentelemetry.instrumentation.aiohttp_client import create_trace_config

        self._trace_configs.append(create_trace_config(tracer_provider=tracer_provider))

    async def aclose(self) -> None:
        if self._health is not None:
            self._health.cancel()
            await asyncio.gather(self._health, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
