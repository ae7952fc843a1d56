"""The gateway's chat core, shared by HTTP and gRPC: validate, admit, dispatch, stream.

A request names a concrete model (routing is bypassed) or a router spec:
``router`` (the default policy), a configured alias such as ``router-mf-50``,
or RouteLLM's ``router-mf-<threshold>`` (see models.py).
"""

from __future__ import annotations

from collections import deque
from contextlib import ExitStack
from dataclasses import replace

from service_core.callers import window_of
from service_core.quota import Counters

from ..accounting.capture import Capture
from ..accounting.policy import Allowance, CallerPolicies
from ..accounting.spend import SpendBook, Usage, estimate_tokens
from ..config import GatewaySettings, LimitSettings
from ..domain import ROLES, ChatParams, Finish, ModelSpec, RecentShare, RouteDecision, RoutingStatus
from ..errors import InvalidRequest, TooLarge
from ..metrics import GatewayMetrics
from ..routing.catalog import ModelCatalog
from ..routing.router_client import RouterClient
from ..upstreams import Upstream
from .admission import Admission
from .conversations import ConversationStore
from .dispatch import Ask, Dispatcher
from .embeddings import EmbeddingService
from .exchange import Exchange
from .stream import ChatStream, Opened

__all__ = ["ChatService"]

RECENT = 500  # routed completions remembered per caller for the routing page's realised share


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
        counters: Counters | None = None,
    ) -> None:
        self.metrics = metrics or GatewayMetrics()
        self.counters = counters or Counters(settings.redis)
        self.capture = capture
        self.limits = settings.limits
        self.catalog = ModelCatalog(settings)
        self.admission = Admission(settings.limits, keys_checked=keys_checked, workers=workers)
        self.dispatch = Dispatcher(settings, router, upstreams, self.metrics, self.counters.shared)
        self.embeddings = EmbeddingService(self.catalog, self.dispatch.by_model, settings.limits)
        self.policies = CallerPolicies(settings, self.counters, self.metrics)
        self.spend = SpendBook(settings, self.counters, self.metrics, self.dispatch.routable())
        self.conversations = ConversationStore(self.counters.shared, settings.conversations)
        self._recent: dict[str, deque[bool]] = {}  # caller -> strong or not, last RECENT routed completions
        self._recent_all: deque[bool] = deque(maxlen=RECENT)

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

    async def route(
        self, model: str, params: ChatParams, x: Exchange, scorer: str = "", preview: bool = False
    ) -> RouteDecision:
        """The decision a chat request would get, without opening any upstream (POST /v1/route); ``scorer``: as
        that scorer of the router's would decide. It counts against the caller's requests per minute; a strong
        call it reserves is given back. ``preview``: the router records nothing of it either (its live-share
        windows and budget, its metrics), nor is the turn remembered: for looking, not routing."""
        validate(params, self.limits)
        spec, allowance = await self._admit(model, x, params)
        if scorer and not spec.concrete:
            spec = replace(spec, scorer=scorer)
        try:
            decision = await self.dispatch.decide(spec, params, replace(self._ask(x, allowance), preview=preview))
        finally:
            await self.policies.answered(allowance, strong=False)
        return self._flagged(decision, allowance)

    def context_window(self, model: str) -> int | None:
        """The window ``model`` is served with (configured, else what its upstream reports); a router name: the
        smallest among the models it may route to (what a client may count on whichever answers); None where unknown."""
        spec = self.catalog.resolve(model)
        dispatch = self.dispatch
        if spec.concrete:
            return dispatch.window_of(spec.name)
        known = [w for m in dispatch.routable() if (w := dispatch.window_of(m)) is not None]
        return min(known) if known and len(known) == len(dispatch.routable()) else None

    def count_tokens(self, model: str, params: ChatParams) -> int:
        """A request's prompt tokens, estimated (4 characters a token) without asking any model; an unknown model
        is refused as a chat request naming it would be (Anthropic's /v1/messages/count_tokens)."""
        validate(params, self.limits)
        self.catalog.resolve(model)
        return estimate_tokens(params.prompt_chars())

    async def status(self, x: Exchange) -> RoutingStatus:
        """What the router serves now, the caller's policy and its recent strong share here, and (admin callers)
        the upstream hosts: GET /v1/router and the routing page."""
        policy = x.caller.policy
        return RoutingStatus(
            router=await self.dispatch.router_view(),
            caller=x.caller.name,
            policy=policy.name if policy is not None else "",
            strong_share_asked=policy.strong_share if policy is not None else None,
            strong_calls=policy.strong_calls if policy is not None else None,
            models=tuple(self.dispatch.routable()),
            recent_caller=_share(self._recent.get(x.caller.name, ())),
            recent_all=_share(self._recent_all),
            hosts=tuple(self.dispatch.host_states()) if x.caller.admin else None,
        )

    async def open(self, model: str, params: ChatParams, x: Exchange) -> ChatStream:
        """Validate, apply the caller's policy, take a stream slot, route, and open the upstream up to its
        first event.

        Use the result as ``async with stream:``; it owns the slot from here on, and leaves its record
        in ``x`` (and its spend in the book) when it closes."""
        validate(params, self.limits)
        spec, allowance = await self._admit(model, x, params)
        capture = self.capture
        captured = None if spec.concrete or capture is None else capture.sample(x.request_id, model, params, x.caller.name)
        resources = ExitStack()
        strong = False  # the model that answers decides what is counted, however it was chosen
        try:
            resources.enter_context(self.admission.slot(x.client_key))
            opened, first, rest = await self.dispatch.open(spec, params, self._ask(x, allowance))
            strong = opened.route.strong
        except BaseException:
            resources.close()
            raise
        finally:
            await self.policies.answered(allowance, strong)
        opened = replace(opened, route=self._flagged(opened.route, allowance))
        if opened.route.routed:
            policy = x.caller.policy.name if x.caller.policy is not None else "none"
            tier = "strong" if strong else "weak"
            self.metrics.routed.labels(caller=x.caller.name, policy=policy, tier=tier).inc()
            self._recent.setdefault(x.caller.name, deque(maxlen=RECENT)).append(strong)
            self._recent_all.append(strong)
        prompt_chars = sum(len(m.content) for m in params.messages)

        reserved_cost = allowance.cost_reserved if strong else 0

        def settle(finish: Finish | None, completion_chars: int) -> None:
            self._settle(x, opened, finish, prompt_chars, completion_chars, reserved_cost)

        if captured is not None and capture is not None:
            captured.route = opened.route
            return ChatStream(x, opened, first, rest, resources, self.metrics, (capture, captured), settle)
        return ChatStream(x, opened, first, rest, resources, self.metrics, settle=settle)

    async def _admit(self, model: str, x: Exchange, params: ChatParams) -> tuple[ModelSpec, Allowance]:
        spec = self.policies.spec(x.caller, self.catalog.resolve(model))
        await self.dispatch.router_known()
        policy = x.caller.policy
        reserve = 0
        if policy is not None and policy.strong_cost_usd is not None:  # the dollars a strong answer may cost, reserved
            estimate = Usage(estimate_tokens(params.prompt_chars()), params.output_expected(), estimated=True)
            reserve = self.spend.cost_nano(self.dispatch.strong_model, estimate)
        return spec, await self.policies.admit(x.caller, spec, self.dispatch.strong_model, reserve)

    @staticmethod
    def _ask(x: Exchange, allowance: Allowance) -> Ask:
        policy = x.caller.policy
        models = policy.models if policy is not None else None
        return Ask(x.request_id, x.headers, window_of(x.caller.name), allowance.strong_spent, models=models)

    def _flagged(self, route: RouteDecision, allowance: Allowance) -> RouteDecision:
        if allowance.unenforced:
            self.metrics.budget_unenforced.inc()
            route = replace(route, budget_unenforced=True)
        if route.budget_limited and allowance.strong_spent:
            self.metrics.budget_limited.labels(caller=allowance.caller.name).inc()
        return route

    def _settle(
        self, x: Exchange, opened: Opened, finish: Finish | None, prompt_chars: int, completion_chars: int, reserved_cost: int
    ) -> None:
        """A finished (or ended) completion's tokens and spend, for the caller's book and limits."""
        usage = finish.usage if finish is not None else None
        counted = (
            Usage(usage.prompt_tokens, usage.completion_tokens, estimated=False) if usage is not None
            else Usage(estimate_tokens(prompt_chars), estimate_tokens(completion_chars), estimated=True)
        )
        route = opened.route
        self.spend.record(x.caller, route.model, counted, routed=route.routed, strong=route.strong, reserved_nano=reserved_cost)


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


def _share(recent: deque[bool] | tuple[()]) -> RecentShare:
    return RecentShare(RECENT, len(recent), sum(recent))
