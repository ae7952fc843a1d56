"""The gateway's one gRPC channel to the router, and fail-open routing."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import grpc

from routing_api.router.v1 import router_pb2, router_pb2_grpc
from service_core.grpc_client import call_metadata, open_channel

from ..config import RouterClientSettings
from ..domain import RouteDecision, RouterView, ScorerView
from ..errors import InvalidRequest
from .words import RoutedText

__all__ = ["RouterClient", "route_request"]

logger = logging.getLogger(__name__)
DESCRIBE_AGAIN_S = 1.0  # how often Describe is asked again while the router has not answered it

RECONNECT_MIN_MS, RECONNECT_MAX_MS = 100, 250


def route_request(text: RoutedText) -> router_pb2.RouteRequest:
    """What the router is asked for a request: the system prompt's head, the user's words, the request's shape."""
    said = [router_pb2.ChatMessage(role="system", content=text.system)] if text.system else []
    said.append(router_pb2.ChatMessage(role="user", content=text.words))
    return router_pb2.RouteRequest(
        chat=router_pb2.Chat(messages=said), shape=router_pb2.RequestShape(tools=text.tools, max_tokens=text.max_tokens)
    )


class RouterClient:
    def __init__(self, settings: RouterClientSettings, interceptors: list[Any] | None = None) -> None:
        self._settings = settings
        # round_robin: behind a headless Kubernetes Service the name resolves to every router
        # pod, and each call goes to the next one (HTTP/2 would otherwise pin one pod).
        # A short, bounded reconnect back-off: gRPC's default grows to 120 s, so a gateway whose router was away
        # (every compose start where the gateway is up first, every router rollout) went on failing open for
        # up to two minutes after the router was back. Here it reconnects within RECONNECT_MAX_MS of that.
        options = [
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_MIN_MS),
            ("grpc.min_reconnect_backoff_ms", RECONNECT_MIN_MS),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
        ]
        self._channel = open_channel(settings, "router", options=options, interceptors=interceptors)
        self._stub = router_pb2_grpc.RouterServiceStub(self._channel)
        self._metadata = call_metadata(settings)
        self.routed: set[str] = set()  # the models the router may choose, once Describe has said
        self.strong_model: str | None = None  # its strong model, once Describe has said
        self.weak_model: str | None = None  # its weak model, once Describe has said
        self._described_at = -math.inf

    async def route(
        self,
        text: RoutedText,
        *,
        threshold: float | None,
        strong_share: float | None,
        default_model: str,
        request_id: str,
        caller: str = "",
        strong_spent: bool = False,
        scorer: str = "",
        preview: bool = False,
    ) -> RouteDecision:
        """Ask the router about the user's words (the head of the system instruction beside them); if it is down
        or slow, answer with the default model, flagged. ``caller``: whose live-share window; ``strong_spent``: the
        caller's strong budget here is spent (route weak)."""
        request = route_request(text)
        request.caller, request.strong_budget_spent, request.scorer, request.preview = caller, strong_spent, scorer, preview
        if threshold is not None:
            request.threshold = threshold
        elif strong_share is not None:
            request.strong_share = strong_share
        try:
            response = await self._stub.Route(
                request, timeout=self._settings.timeout_s, metadata=(("x-request-id", request_id), *self._metadata)
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidRequest(f"the router refused the messages: {exc.details()}") from None
            if exc.code() == grpc.StatusCode.NOT_FOUND and scorer:
                raise InvalidRequest(f"the router has no scorer {scorer!r}: {exc.details()}") from None
            reason = f"router at {self._settings.address} failed ({exc.code().name}: {exc.details()}); failed open"
            logger.warning("request %s: %s to default model %s", request_id, reason, default_model)
            return RouteDecision(default_model, degraded=True, reason=reason, routed_on=text.words,
                                 set_aside=text.set_aside)
        side = "strong" if response.routed_strong else "weak"
        reason = f"router chose the {side} model: score {response.score:.4f} vs threshold {response.threshold:.4f}"
        if response.rule:
            reason = f"router rule {response.rule!r} chose the {side} model (not scored)"
        if response.budget_limited:
            whose = "this caller's strong budget" if strong_spent else "the router's strong-call budget"
            reason += f" (the strong model was chosen, but {whose} is spent)"
        return RouteDecision(
            response.model, routed=True, score=response.score, threshold=response.threshold, reason=reason,
            budget_limited=response.budget_limited, routed_strong=response.routed_strong, scorer=response.scorer_name,
            scorer_version=response.scorer_version, rule=response.rule, routed_on=text.words, set_aside=text.set_aside,
        )

    async def _describe(self, timeout_s: float | None = None) -> router_pb2.DescribeResponse:
        """The router's Describe; raises its gRPC error."""
        reply: router_pb2.DescribeResponse = await self._stub.Describe(
            router_pb2.DescribeRequest(), timeout=timeout_s or max(self._settings.timeout_s, 5.0), metadata=self._metadata
        )
        return reply

    async def routed_models(self, timeout_s: float | None = None) -> set[str]:
        """Every model the router may answer with (its strong/weak pair and routing.models)."""
        reply = await self._describe(timeout_s)
        self.routed = {reply.strong_model, reply.weak_model, *(m.model for m in reply.models)}
        self.strong_model, self.weak_model = reply.strong_model, reply.weak_model
        return self.routed

    async def describe(self) -> RouterView:
        """What the router serves now, for the routing page; its error when it does not answer."""
        address = self._settings.address
        try:
            reply = await self._describe()
        except grpc.aio.AioRpcError as exc:
            return RouterView(address, error=f"{exc.code().name}: {exc.details()}")
        scorers = tuple(
            ScorerView(
                s.name, s.version, "shadow" if s.shadow_of else "serving", s.shadow_of, dict(s.thresholds),
                dict(s.live_thresholds), s.live_samples, s.shadow.samples, s.shadow.agreement, s.shadow.score_correlation,
            )
            for s in reply.scorers
        )
        return RouterView(
            address, default_scorer=reply.default_scorer, strong_model=reply.strong_model, weak_model=reply.weak_model,
            default_threshold=reply.default_threshold, embedder=reply.embedder_backend, scorers=scorers,
            warnings=tuple(reply.warnings),
        )

    async def ensure_described(self) -> None:
        """Ask Describe again when the router's strong model is still unknown (the gateway started before the router
        answered), at most every DESCRIBE_AGAIN_S: budgets must know which model is the strong one."""
        now = time.monotonic()
        if self.strong_model is not None or now - self._described_at < DESCRIBE_AGAIN_S:
            return
        self._described_at = now
        try:  # on a request's path: within a Route call's own deadline
            await self.routed_models(self._settings.timeout_s)
        except grpc.aio.AioRpcError:
            pass  # still not answering: the fail-open model stands in, as before

    async def check_models(self, served: set[str]) -> None:
        """Warn at start when the router may choose a model no upstream serves (each such request would fail)."""
        try:
            routed = await self.routed_models()
        except grpc.aio.AioRpcError as exc:
            logger.warning(
                "could not ask the router at %s which models it routes to (%s: %s); requests fail open until it answers",
                self._settings.address, exc.code().name, exc.details(),
            )
            return
        missing = sorted(routed - served)
        if missing:
            logger.warning(
                "the router at %s may choose %s, which no upstream serves: add them to an upstream's models, "
                "or change routing.strong_model / weak_model / models in the router's config",
                self._settings.address, missing,
            )

    async def aclose(self) -> None:
        await self._channel.close()
