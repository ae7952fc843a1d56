"""An opened completion as an async context manager: its slot, its upstream request, its record.

``async with stream:`` owns everything the stream holds; leaving the block, on
any path (done, error, client gone, cancelled), closes the upstream request,
gives the admission slot back and leaves the stream's record in its exchange,
for the front door's one access line. While it runs, whatever goes wrong comes
out of ``events()`` as a GatewayError, so each API writes its last event one way:
an upstream failure, a bug (with an id in the log), and the shutdown cut alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ..accounting.capture import Capture, CaptureRecord
from ..domain import Delta, Finish, RouteDecision
from ..errors import GatewayError, InternalError, ShuttingDown, internal_error
from ..metrics import GatewayMetrics
from .exchange import Exchange

__all__ = ["ChatStream", "Opened"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Opened:
    """How a stream was opened: the request, the route, and the time to get there."""

    request_id: str
    requested: str
    upstream: str
    route: RouteDecision
    route_ms: float
    ttft_ms: float
    adapted: tuple[str, ...] = ()  # what the upstream does not take as asked, and what the client API ignored


@dataclass
class _Progress:
    """How far the events got (updated as they pass)."""

    chunks: int = 0
    chars: int = 0  # of text passed on: the token estimate when the upstream sends no usage
    outcome: str = "cancelled"
    finish: Finish | None = None


def access_record(opened: Opened, progress: _Progress, stream_ms: float) -> dict[str, Any]:
    route = opened.route
    record: dict[str, Any] = {
        "upstream": opened.upstream,
        "model": route.model,
        "routed": route.routed,
        "degraded": route.degraded,
        "fallback": route.fallback,
        "budget_limited": route.budget_limited,
        **({"rule": route.rule} if route.rule else {}),
        "score": round(route.score, 4),
        "threshold": round(route.threshold, 4),
        "route_ms": round(opened.route_ms, 2),
        "ttft_ms": round(opened.ttft_ms, 2),
        **({"adapted": list(opened.adapted)} if opened.adapted else {}),
        **({"rerouted_for": route.rerouted_for} if route.rerouted_for else {}),
        **({"set_aside": list(route.set_aside)} if route.set_aside else {}),
        "outcome": progress.outcome,
        "chunks": progress.chunks,
        "stream_ms": round(stream_ms, 2),
    }
    finish = progress.finish
    if finish is not None:
        if finish.usage:
            usage = finish.usage
            record["usage"] = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}
        record["finish_reason"] = finish.reason
    return record


class ChatStream:
    """The route, then the events: deltas and exactly one finish (or a GatewayError)."""

    def __init__(
        self,
        exchange: Exchange,
        opened: Opened,
        first: Delta | Finish,
        rest: AsyncGenerator[Delta | Finish, None],
        resources: ExitStack,
        metrics: GatewayMetrics,
        captured: tuple[Capture, CaptureRecord] | None = None,
        settle: Callable[[Finish | None, int], None] | None = None,
    ) -> None:
        self._exchange = exchange
        self._settle = settle  # told the finish (or None) and the characters passed, once, at close
        self.opened = opened
        self._captured = captured
        self._completion = captured[1].completion if captured is not None else None
        self.route = opened.route
        self._first: Delta | Finish | None = first
        self._rest = rest
        self._resources = resources
        self._metrics = metrics
        self._progress = _Progress()
        self._started = time.perf_counter()
        self._closed = False
        metrics.inflight.inc()

    async def __aenter__(self) -> ChatStream:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def events(self) -> AsyncIterator[Delta | Finish]:
        progress = self._progress
        try:
            if self._first is not None:
                first, self._first = self._first, None
                yield self._passed(first)
                if isinstance(first, Finish):
                    return
            async for event in self._rest:
                yield self._passed(event)
        except GatewayError as exc:
            progress.outcome = f"error:{type(exc).__name__}"
            self._metrics.upstream_errors.labels(upstream=self.opened.upstream, kind=type(exc).__name__).inc()
            if exc.route is None:
                exc.route = self.route
            raise
        except asyncio.CancelledError:
            if not self._exchange.take_back_cut():  # the client left (or a cancel not ours): go on cancelling
                raise
            progress.outcome = "error:ShuttingDown"
            raise ShuttingDown(
                "the gateway is shutting down: this stream was ended when its shutdown grace (server.grace_s) ran out"
            ) from None
        except Exception:  # noqa: BLE001 - a bug: the client gets an error event with an id that is also in the log
            progress.outcome = "internal_error"
            raise InternalError(internal_error(logger, f"stream {self.opened.request_id}")) from None

    def _passed(self, event: Delta | Finish) -> Delta | Finish:
        progress = self._progress
        if isinstance(event, Delta):
            progress.chunks += 1
            progress.chars += len(event.text)
            if self._completion is not None:
                self._completion.append(event.text)
            return event
        progress.finish, progress.outcome = event, "ok"
        tokens = event.usage.completion_tokens if event.usage else progress.chunks
        elapsed = time.perf_counter() - self._started
        if tokens > 1 and elapsed > 0:
            self._metrics.tokens_per_second.labels(upstream=self.opened.upstream).observe((tokens - 1) / elapsed)
        return event

    async def aclose(self) -> None:
        """Close the upstream request, free the slot, leave the record; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._rest.aclose()
        finally:
            self._resources.close()
            self._metrics.inflight.dec()
            if self._captured is not None:
                capture, captured = self._captured
                finish = self._progress.finish
                capture.write(captured, self._progress.outcome, finish.reason if finish else None)
            if self._settle is not None:
                self._settle(self._progress.finish, self._progress.chars)
            stream_ms = (time.perf_counter() - self._started) * 1e3
            self._exchange.stream = access_record(self.opened, self._progress, stream_ms)
            self._exchange.outcome = self._progress.outcome
