"""The gateway's one gRPC channel to the router, and fail-open routing."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import grpc

from routing_api.router.v1 import router_pb2, router_pb2_grpc

from .config import RouterClientSettings
from router_service.config import read_pem

from .errors import InvalidRequest
from .upstreams import Message

__all__ = ["RouteDecision", "RouterClient"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RouteDecision:
    model: str
    score: float = 0.0
    threshold: float = 0.0
    degraded: bool = False
    reason: str = ""


class RouterClient:
    def __init__(self, settings: RouterClientSettings, interceptors: list[Any] | None = None) -> None:
        self._settings = settings
        # round_robin: behind a headless Kubernetes Service the name resolves to every router
        # pod, and each call goes to the next one (HTTP/2 would otherwise pin one pod).
        options: list[tuple[str, str]] = [("grpc.lb_policy_name", "round_robin")]
        if settings.tls_ca is None:
            self._channel = grpc.aio.insecure_channel(settings.address, options=options, interceptors=interceptors)
        else:
            if settings.tls_server_name:
                options.append(("grpc.ssl_target_name_override", settings.tls_server_name))
            credentials = grpc.ssl_channel_credentials(
                root_certificates=read_pem(settings.tls_ca, "router.tls_ca"),
                private_key=read_pem(settings.tls_key, "router.tls_key"),
                certificate_chain=read_pem(settings.tls_cert, "router.tls_cert"),
            )
            self._channel = grpc.aio.secure_channel(settings.address, credentials, options=options, interceptors=interceptors)
        self._stub = router_pb2_grpc.RouterServiceStub(self._channel)
        token = settings.resolve_token()
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()

    async def route(
        self,
        messages: tuple[Message, ...],
        *,
        threshold: float | None,
        strong_share: float | None,
        default_model: str,
        request_id: str,
    ) -> RouteDecision:
        """Ask the router; if it is down or slow, answer with the default model, flagged."""
        request = router_pb2.RouteRequest(
            chat=router_pb2.Chat(messages=[router_pb2.ChatMessage(role=m.role, content=m.content) for m in messages])
        )
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
            reason = f"router at {self._settings.address} failed ({exc.code().name}: {exc.details()}); failed open"
            logger.warning("request %s: %s to default model %s", request_id, reason, default_model)
            return RouteDecision(default_model, degraded=True, reason=reason)
        side = "strong" if response.routed_strong else "weak"
        reason = f"router chose the {side} model: score {response.score:.4f} vs threshold {response.threshold:.4f}"
        return RouteDecision(response.model, response.score, response.threshold, reason=reason)

    async def aclose(self) -> None:
        await self._channel.close()
