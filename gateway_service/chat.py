"""The gateway's chat core, shared by HTTP and gRPC: validate, admit, dispatch, stream.

A request names a concrete model (routing is bypassed) or a router spec:
``router`` (the default policy), a configured alias such as ``router-mf-50``,
or RouteLLM's ``router-mf-<threshold>`` (see models.py).
"""

from __future__ import annotations

from contextlib import ExitStack

from .admission import Admission
from .capture import Capture
from .config import GatewaySettings, LimitSettings
from .dispatch import Dispatcher
from .domain import ChatParams, RouteDecision
from .embeddings import EmbeddingService
from .errors import InvalidRequest, TooLarge
from .exchange import Exchange
from .metrics import GatewayMetrics
from .models import ModelCatalog
from .router_client import RouterClient
from .stream import ChatStream
from .upstreams import Upstream

__all__ = ["ChatService"]

ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


class ChatService:
    def __init__(
        self,
        settings: GatewaySettings,
        router: RouterClient,
        upstreams: dict[str, Upstream],
        metrics: GatewayMetrics | None = None,
        *,
        keys_checked: bool = False,
        capture: Capture | None = None,
        workers: int = 1,
    ) -> None:
        self.metrics = metrics or GatewayMetrics()
        self.capture = capture
        self.limits = settings.limits
        self.catalog = ModelCatalog(settings)
        self.admission = Admission(settings.limits, keys_checked=keys_checked, workers=workers)
        self.dispatch = Dispatcher(settings, router, upstreams, self.metrics)
        self.embeddings = EmbeddingService(self.catalog, self.dispatch.by_model, settings.limits)

    def models(self) -> list[tuple[str, str, str]]:
        """(id, owned_by, description) for /v1/models and ListModels."""
        return self.catalog.listing()

    def capabilities(self, model: str) -> frozenset[str]:
        """What ``model`` can take (a router name: what some model it may route to can); raises for an unknown name."""
        spec = self.catalog.resolve(model)
        every = frozenset({"vision", "tools", "json_schema"})
        if spec.concrete:
            return every - self.dispatch.lacks(model, every)
        return frozenset().union(*(every - self.dispatch.lacks(m, every) for m in self.dispatch.routable()))

    async def route(self, model: str, params: ChatParams, x: Exchange) -> RouteDecision:
        """The decision a chat request would get, without opening any upstream (POST /v1/route)."""
        validate(params, self.limits)
        return await self.dispatch.decide(self.catalog.resolve(model), params, x.request_id, x.headers)

    async def open(self, model: str, params: ChatParams, x: Exchange) -> ChatStream:
        """Validate, take a stream slot, route, and open the upstream up to its first event.

        Use the result as ``async with stream:``; it owns the slot from here on, and leaves its record
        in ``x`` when it closes."""
        validate(params, self.limits)
        spec = self.catalog.resolve(model)
        captured = None if spec.concrete or self.capture is None else self.capture.sample(x.request_id, model, params)
        resources = ExitStack()
        resources.enter_context(self.admission.slot(x.client_key))
        try:
            opened, first, rest = await self.dispatch.open(spec, params, x.request_id, x.headers)
        except BaseException:
            resources.close()
            raise
        if captured is not None and self.capture is not None:
            captured.route = opened.route
            return ChatStream(x, opened, first, rest, resources, self.metrics, (self.capture, captured))
        return ChatStream(x, opened, first, rest, resources, self.metrics)


def validate(params: ChatParams, limits: LimitSettings) -> None:
    if not params.messages:
        raise InvalidRequest("messages is empty: send at least one message")
    if len(params.messages) > limits.max_messages:
        raise InvalidRequest(f"{len(params.messages)} messages, more than limits.max_messages={limits.max_messages}")
    chars = sum(len(m.content) for m in params.messages)
    if chars > limits.max_prompt_chars:
        raise TooLarge(f"the messages hold {chars} characters, more than limits.max_prompt_chars={limits.max_prompt_chars}")
    for i, message in enumerate(params.messages):
        if len(message.content) > limits.max_message_chars:
            raise TooLarge(
                f"messages[{i}].content has {len(message.content)} characters, "
                f"more than limits.max_message_chars={limits.max_message_chars}"
            )
        if message.role not in ROLES:
            raise InvalidRequest(f"messages[{i}].role {message.role!r} is not one of {sorted(ROLES)}")
    if params.max_tokens is not None and params.max_tokens < 1:
        raise InvalidRequest("max_tokens must be >= 1")
    for name in ("temperature", "top_p"):
        value = getattr(params, name)
        if value is not None and not 0.0 <= value <= 2.0:
            raise InvalidRequest(f"{name} must be within [0, 2]")
