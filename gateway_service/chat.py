"""The gateway's core, shared by HTTP and gRPC: resolve the model, route, stream, fall back.

A request names a concrete model (routing is bypassed) or a router spec:
``router`` (the default policy), a configured alias such as ``router-mf-50``,
or RouteLLM's ``router-mf-<threshold>``. The upstream stream is opened up to
its first event before anything is sent to the client, so a failure before
the first token can still switch to the fallback model, and the response
headers can say which model answered.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from .config import GatewaySettings, LimitSettings
from .errors import GatewayError, InvalidRequest, ModelNotFound, TooLarge, TooManyStreams, UpstreamStreamError
from .metrics import GatewayMetrics
from .router_client import RouterClient
from .upstreams import ChatParams, Delta, Finish, Upstream

__all__ = ["ChatService", "ChatStream", "ModelSpec", "RouteInfo"]

logger = logging.getLogger(__name__)
# One JSON line per request: id, route, latencies, usage, outcome. Never prompts or keys.
access_log = logging.getLogger("gateway_service.access")

ROUTELLM_SPEC = re.compile(r"^router-mf-(?P<threshold>[0-9]*\.?[0-9]+)$")
ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


@dataclass(frozen=True)
class RouteInfo:
    model: str
    routed: bool = False
    score: float = 0.0
    threshold: float = 0.0
    degraded: bool = False
    fallback: bool = False
    reason: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """What the request's ``model`` means."""

    name: str
    concrete: bool
    threshold: float | None = None
    strong_share: float | None = None


class ChatStream:
    """An opened completion: the route, then its events (deltas, one finish)."""

    def __init__(
        self,
        route: RouteInfo,
        first: Delta | Finish,
        rest: AsyncIterator[Delta | Finish],
        *,
        upstream: str = "",
        metrics: GatewayMetrics | None = None,
        request_id: str = "",
    ) -> None:
        self.on_close: Callable[[], None] | None = None  # frees the stream's admission slot
        self.route = route
        self._first: Delta | Finish | None = first
        self._rest = rest
        self._upstream = upstream
        self._metrics = metrics or GatewayMetrics()
        self.record: dict[str, object] = {"request_id": request_id, "upstream": upstream}
        self._first_at = time.perf_counter()

    async def events(self) -> AsyncIterator[Delta | Finish]:
        """The events; counts them in flight, times them, and logs one line when done."""
        deltas, outcome = 0, "cancelled"
        self._metrics.inflight.inc()
        try:
            if self._first is not None:
                first, self._first = self._first, None
                deltas += isinstance(first, Delta)
                yield first
                if isinstance(first, Finish):
                    outcome = self._finished(first, deltas)
                    return
            async for event in self._rest:
                if isinstance(event, Finish):
                    outcome = self._finished(event, deltas)
                else:
                    deltas += 1
                yield event
        except GatewayError as exc:
            outcome = f"error:{type(exc).__name__}"
            self._metrics.upstream_errors.labels(upstream=self._upstream, kind=type(exc).__name__).inc()
            raise
        finally:
            self._metrics.inflight.dec()
            self.record.update(outcome=outcome, chunks=deltas, stream_ms=round((time.perf_counter() - self._first_at) * 1e3, 2))
            access_log.info(json.dumps(self.record, separators=(",", ":")))
            await self.aclose()

    def _finished(self, finish: Finish, deltas: int) -> str:
        tokens = finish.usage.completion_tokens if finish.usage else deltas
        elapsed = time.perf_counter() - self._first_at
        if tokens > 1 and elapsed > 0:
            self._metrics.tokens_per_second.labels(upstream=self._upstream).observe((tokens - 1) / elapsed)
        if finish.usage:
            self.record["usage"] = {"prompt_tokens": finish.usage.prompt_tokens, "completion_tokens": finish.usage.completion_tokens}
        self.record["finish_reason"] = finish.reason
        return "ok"

    async def aclose(self) -> None:
        """Close the upstream request (client gone, cancelled, or done); idempotent."""
        release, self.on_close = self.on_close, None
        if release is not None:
            release()
        await self._rest.aclose()  # type: ignore[attr-defined]


class ChatService:
    def __init__(
        self,
        settings: GatewaySettings,
        router: RouterClient,
        upstreams: dict[str, Upstream],
        metrics: GatewayMetrics | None = None,
        *,
        keys_checked: bool = False,
    ) -> None:
        self.metrics = metrics or GatewayMetrics()
        self._settings = settings
        self.limits = settings.limits
        self._router = router
        self._upstreams = upstreams  # by upstream name
        self._by_model = {model: upstreams[u.name] for u in settings.upstreams for model in u.models}
        self._policies = {p.name: p for p in settings.policies}
        self._in_flight = 0
        self._per_key: dict[str, int] = {}
        # A bearer token is an identity only when auth checks it; without auth, one per-key
        # budget shared by every anonymous (or dummy-keyed) client would cap the whole gateway.
        self._keys_checked = keys_checked

    def models(self) -> list[tuple[str, str, str]]:
        """(id, owned_by, description) for /v1/models and ListModels."""
        out = [("router", "router", "the router's default policy")]
        out += [(p.name, "router", p.description or "router policy") for p in self._settings.policies]
        out += [(model, upstream.name, "") for model, upstream in self._by_model.items()]
        return out

    def resolve(self, model: str) -> ModelSpec:
        if not model:
            raise InvalidRequest("model is required: a served model or a router spec such as 'router-mf-50'")
        if model in self._by_model:
            return ModelSpec(model, concrete=True)
        if model == "router":
            return ModelSpec(model, concrete=False)
        if model in self._policies:
            policy = self._policies[model]
            return ModelSpec(model, False, threshold=policy.threshold, strong_share=policy.strong_share)
        match = ROUTELLM_SPEC.match(model)
        if match:
            threshold = float(match["threshold"])
            if not 0.0 <= threshold <= 1.0:
                raise InvalidRequest(f"model {model!r}: the threshold in router-mf-<threshold> must be within [0, 1]")
            return ModelSpec(model, False, threshold=threshold)
        known = ", ".join(sorted(self._by_model) + ["router", *self._policies])
        raise ModelNotFound(f"model {model!r} is not served here; available: {known}")

    async def open(self, model: str, params: ChatParams, request_id: str, client_key: str | None = None) -> ChatStream:
        """Admit, route, then open the upstream stream up to its first event (falling back before the first token)."""
        _validate(params, self._settings.limits)
        spec = self.resolve(model)
        release = self._admit(client_key)
        try:
            stream = await self._open(spec, params, request_id)
        except BaseException:
            release()
            raise
        stream.on_close = release
        return stream

    def _admit(self, client_key: str | None) -> Callable[[], None]:
        """Take a stream slot, overall and (with auth on) per key, or refuse now with Retry-After."""
        limits = self._settings.limits
        key = client_key if self._keys_checked else None
        if self._in_flight >= limits.max_streams:
            raise TooManyStreams(
                f"{self._in_flight} completions in flight, the limit (limits.max_streams); retry shortly", retry_after="1"
            )
        if key is not None and self._per_key.get(key, 0) >= limits.max_streams_per_key:
            raise TooManyStreams(
                f"this API key has {self._per_key[key]} completions in flight, the limit (limits.max_streams_per_key)",
                retry_after="1",
            )
        self._in_flight += 1
        if key is not None:
            self._per_key[key] = self._per_key.get(key, 0) + 1

        def release() -> None:
            self._in_flight -= 1
            if key is not None:
                self._per_key[key] -= 1
                if not self._per_key[key]:
                    del self._per_key[key]

        return release

    async def _open(self, spec: ModelSpec, params: ChatParams, request_id: str) -> ChatStream:
        started = time.perf_counter()
        route = await self._route(spec, params, request_id)
        route_ms = (time.perf_counter() - started) * 1e3
        if not spec.concrete:
            self.metrics.router_overhead.observe(route_ms / 1e3)
        if route.degraded:
            self.metrics.fail_open.inc()
        try:
            stream = await self._open_upstream(route, params, request_id)
        except GatewayError as exc:
            fallback = self._settings.fallback_model
            if isinstance(exc, InvalidRequest) or not fallback or fallback == route.model:
                raise
            logger.warning("request %s: %s; falling back to %s", request_id, exc, fallback)
            route = replace(route, model=fallback, fallback=True, reason=f"{route.reason}; fallback after: {exc}")
            stream = await self._open_upstream(route, params, request_id)
        self.metrics.decisions.labels(
            model=route.model, routed=str(route.routed).lower(), degraded=str(route.degraded).lower(),
            fallback=str(route.fallback).lower(),
        ).inc()
        stream.record.update(
            model=route.model, requested=spec.name, routed=route.routed,
            degraded=route.degraded, fallback=route.fallback, score=round(route.score, 4),
            threshold=round(route.threshold, 4), route_ms=round(route_ms, 2),
        )
        return stream

    async def _route(self, spec: ModelSpec, params: ChatParams, request_id: str) -> RouteInfo:
        if spec.concrete:
            return RouteInfo(spec.name, reason="a concrete model was requested: no routing")
        decision = await self._router.route(
            params.messages,
            threshold=spec.threshold,
            strong_share=spec.strong_share,
            default_model=self._settings.default_model,
            request_id=request_id,
        )
        if decision.model not in self._by_model:
            raise GatewayError(
                f"the router chose {decision.model!r}, which no upstream serves: make routing.strong_model/weak_model "
                "in the router's config match models listed in the gateway's upstreams"
            )
        return RouteInfo(
            decision.model, routed=not decision.degraded, score=decision.score, threshold=decision.threshold,
            degraded=decision.degraded, reason=decision.reason,
        )

    async def _open_upstream(self, route: RouteInfo, params: ChatParams, request_id: str) -> ChatStream:
        upstream = self._by_model[route.model]
        started = time.perf_counter()
        events = upstream.stream(route.model, params)
        try:
            try:
                first = await events.__anext__()
            except StopAsyncIteration:
                raise UpstreamStreamError(f"model {route.model!r}: the upstream stream was empty") from None
        except BaseException as exc:
            if isinstance(exc, GatewayError):
                self.metrics.upstream_errors.labels(upstream=upstream.name, kind=type(exc).__name__).inc()
            await events.aclose()  # type: ignore[attr-defined]
            raise
        ttft = time.perf_counter() - started
        self.metrics.ttft.labels(upstream=upstream.name).observe(ttft)
        stream = ChatStream(route, first, events, upstream=upstream.name, metrics=self.metrics, request_id=request_id)
        stream.record["ttft_ms"] = round(ttft * 1e3, 2)
        return stream


def _validate(params: ChatParams, limits: LimitSettings) -> None:
    if not params.messages:
        raise InvalidRequest("messages is empty: send at least one message")
    if len(params.messages) > limits.max_messages:
        raise InvalidRequest(f"{len(params.messages)} messages, more than limits.max_messages={limits.max_messages}")
    chars = sum(len(m.content) for m in params.messages)
    if chars > limits.max_prompt_chars:
        raise TooLarge(f"the messages hold {chars} characters, more than limits.max_prompt_chars={limits.max_prompt_chars}")
    for i, message in enumerate(params.messages):
        if message.role not in ROLES:
            raise InvalidRequest(f"messages[{i}].role {message.role!r} is not one of {sorted(ROLES)}")
    if params.max_tokens is not None and params.max_tokens < 1:
        raise InvalidRequest("max_tokens must be >= 1")
    for name in ("temperature", "top_p"):
        value = getattr(params, name)
        if value is not None and not 0.0 <= value <= 2.0:
            raise InvalidRequest(f"{name} must be within [0, 2]")
