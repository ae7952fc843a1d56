"""The edge: router_pb2 messages to and from the domain types (servicer and clients only)."""

from __future__ import annotations

import dataclasses

from routing_api.router.v1 import router_pb2

from .domain import CandidateRequest, ChatMessage, Decision, Description, RouteQuery

__all__ = ["decision_to_pb", "description_to_pb", "query_from_pb", "query_to_pb"]


def query_from_pb(request: router_pb2.RouteRequest) -> RouteQuery:
    """Which oneof fields were set carries meaning (an explicitly empty prompt is "empty", not "missing")."""
    which_input = request.WhichOneof("input")
    which_policy = request.WhichOneof("policy")
    return RouteQuery(
        prompt=request.prompt if which_input == "prompt" else None,
        messages=(
            tuple(ChatMessage(m.role, m.content) for m in request.chat.messages) if which_input == "chat" else None
        ),
        threshold=request.threshold if which_policy == "threshold" else None,
        strong_share=request.strong_share if which_policy == "strong_share" else None,
        candidates=tuple(
            CandidateRequest(c.model, c.scorer_model, c.cost if c.HasField("cost") else None)
            for c in request.candidates
        ),
        scorer=request.scorer,
        caller=request.caller,
        strong_spent=request.strong_budget_spent,
        preview=request.preview,
        tools=max(request.shape.tools, 0),
        max_tokens=max(request.shape.max_tokens, 0),
    )


def query_to_pb(query: RouteQuery) -> router_pb2.RouteRequest:
    request = router_pb2.RouteRequest(
        scorer=query.scorer, caller=query.caller, strong_budget_spent=query.strong_spent, preview=query.preview
    )
    if query.tools or query.max_tokens:
        request.shape.tools, request.shape.max_tokens = query.tools, query.max_tokens
    if query.prompt is not None:
        request.prompt = query.prompt
    elif query.messages is not None:
        request.chat.messages.extend(router_pb2.ChatMessage(role=m.role, content=m.content) for m in query.messages)
    if query.threshold is not None:
        request.threshold = query.threshold
    elif query.strong_share is not None:
        request.strong_share = query.strong_share
    for c in query.candidates:
        candidate = request.candidates.add(model=c.model, scorer_model=c.scorer_model)
        if c.cost is not None:
            candidate.cost = c.cost
    return request


def decision_to_pb(decision: Decision) -> router_pb2.RouteResponse:
    # The domain types use the proto's field names, so the message is built from them as they are.
    return router_pb2.RouteResponse(**dataclasses.asdict(decision))


def description_to_pb(description: Description) -> router_pb2.DescribeResponse:
    return router_pb2.DescribeResponse(**dataclasses.asdict(description))
