"""What both upstream kinds share: one pooled client, the request, and error mapping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from service_core.redact import Redactor
from service_core.upstream_errors import error_detail

from ..config import UpstreamSettings
from ..errors import (
    GatewayError,
    UpstreamBusy,
    UpstreamError,
    UpstreamStreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)

__all__ = ["HttpUpstream"]


class HttpUpstream:
    path = ""

    def __init__(self, settings: UpstreamSettings, redact: Redactor | None = None) -> None:
        self.name = settings.name
        self.url = settings.base_url.rstrip("/") + self.path
        self._settings = settings
        headers = {}
        key = settings.resolve_api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        # Upstream text (error bodies, broken chunks) is shown to clients and logged: never with a secret in it.
        self.redact = redact or Redactor([key])
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s),
            limits=httpx.Limits(max_connections=settings.max_concurrency, max_keepalive_connections=settings.max_concurrency),
            trust_env=False,  # no ambient proxy or netrc credentials
        )
        self._slots = asyncio.Semaphore(settings.max_concurrency)

    def where(self, model: str) -> str:
        return f"upstream {self.name!r} ({self._settings.provider}) at {self.url} for model {model!r}"

    @asynccontextmanager
    async def post(self, model: str, body: dict[str, Any]) -> AsyncIterator[httpx.Response]:
        """POST and stream the response; HTTP and connection failures become GatewayErrors.

        Past max_concurrency a request waits at most queue_timeout_s for a slot, then is
        refused as busy (429, which falls back to the fallback model before the first token)."""
        await self._take_slot(model)
        try:
            try:
                async with self._client.stream("POST", self.url, json=body) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise self._status_error(model, response)
                    yield response
            except httpx.ConnectError as exc:
                raise UpstreamUnreachable(
                    f"{self.where(model)} is unreachable ({exc}); is the server running? "
                    f"Check upstreams[{self.name}].base_url"
                ) from exc
            except httpx.TimeoutException as exc:
                raise UpstreamTimeout(
                    f"{self.where(model)} went silent for longer than its timeout ({type(exc).__name__}); "
                    f"see upstreams[{self.name}].read_timeout_s / connect_timeout_s"
                ) from exc
            except httpx.HTTPError as exc:
                raise UpstreamStreamError(
                    f"{self.where(model)} broke the connection: {type(exc).__name__}: {self.redact(str(exc))}"
                ) from exc
        finally:
            self._slots.release()

    async def _take_slot(self, model: str) -> None:
        settings = self._settings
        try:
            async with asyncio.timeout(settings.queue_timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise UpstreamBusy(
                f"{self.where(model)} has {settings.max_concurrency} requests in flight and none finished within "
                f"{settings.queue_timeout_s:g}s (upstreams[{self.name}].max_concurrency / queue_timeout_s)",
                status=429, retry_after="1",
            ) from None

    def _status_error(self, model: str, response: httpx.Response) -> GatewayError:
        status = response.status_code
        detail = self.redact(error_detail(response))
        where = f"{self.where(model)} answered HTTP {status}: {detail}"
        if status in (429, 503):
            return UpstreamBusy(where, status=status, retry_after=response.headers.get("retry-after"))
        if status in (401, 403):
            return UpstreamError(f"{where}; set upstreams[{self.name}].api_key_env to the variable holding a valid key")
        if status == 404:
            return UpstreamError(f"{where}; check upstreams[{self.name}].base_url and that it serves {model!r}")
        return UpstreamError(where)

    def instrument(self, tracer_provider: Any) -> None:
        """Trace this upstream's requests (OpenTelemetry), on this client only, never by global patching."""
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor.instrument_client(self._client, tracer_provider=tracer_provider)

    async def aclose(self) -> None:
        await self._client.aclose()
