"""One chat handler for every client API whose codec follows ``ChatCodec``: parse, open, stream or collect.

A codec says how its API's request becomes the domain's ``ChatParams`` and how the domain's events
look on its wire (a stream writer, a whole answer); this module owns the rest once: opening the
stream through the chat core, the ``x-route-*`` headers, a failure after the first event, and the
one assembler of a whole answer (text, reasoning, whole tool calls, the finish).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.responses import JSONResponse, Response

from ..core.chat import ChatService
from ..core.exchange import Exchange
from ..core.stream import ChatStream
from ..domain import ChatParams, Delta, Finish, RouteDecision, ToolCall
from ..errors import GatewayError
from ..toolcalls import ToolCallAssembler
from .headers import route_headers
from .http_stream import EventStream

__all__ = ["Answer", "ChatCodec", "ParsedChat", "StreamWriter", "collect", "serve_chat"]


@dataclass(frozen=True)
class ParsedChat:
    """A client's chat request, parsed by its codec: what to route and what the codec needs to answer."""

    model: str
    params: ChatParams
    stream: bool
    context: Any = None  # the codec's own (the request fields its answer echoes)
    kept: Callable[[Answer], Awaitable[None]] | None = None  # told the whole answer before its end is sent (a store)


@dataclass
class Answer:
    """A whole answer, assembled from the events of one stream."""

    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    signature: str = ""
    calls: ToolCallAssembler = field(default_factory=ToolCallAssembler)
    finish: Finish | None = None

    def add(self, event: Delta | Finish) -> None:
        if isinstance(event, Finish):
            self.finish = event
            return
        if event.text:
            self.text.append(event.text)
        if event.reasoning:
            self.reasoning.append(event.reasoning)
        if event.signature:
            self.signature = event.signature
        self.calls.add(event.tool_calls)

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.calls.calls()


class StreamWriter(Protocol):
    def event(self, event: Delta | Finish) -> bytes:
        """The bytes this event is on the wire (the first call also writes the stream's opening)."""
        ...

    def failed(self, error: GatewayError) -> bytes:
        """The last bytes of a stream that failed after it began: an error event, never a success."""
        ...


class ChatCodec(Protocol):
    media_type: str

    def writer(self, parsed: ParsedChat, route: RouteDecision, x: Exchange) -> StreamWriter: ...

    def whole(self, parsed: ParsedChat, route: RouteDecision, x: Exchange, answer: Answer) -> dict[str, Any]: ...


async def collect(stream: ChatStream) -> Answer:
    """Every event of ``stream`` into one answer; a failure is still the error's own status (nothing was sent)."""
    answer = Answer()
    async with stream:
        async for event in stream.events():
            answer.add(event)
    assert answer.finish is not None  # upstreams end with exactly one Finish
    return answer


async def serve_chat(chat: ChatService, codec: ChatCodec, parsed: ParsedChat, x: Exchange) -> Response:
    x.requested = parsed.model
    stream = await chat.open(parsed.model, parsed.params, x)
    headers = x.id_headers() | route_headers(stream.route)
    if parsed.stream:
        writer = codec.writer(parsed, stream.route, x)
        return EventStream(_written(stream, writer, parsed.kept), codec.media_type, {**headers, "cache-control": "no-cache"})
    answer = await collect(stream)
    if parsed.kept is not None:
        await parsed.kept(answer)
    return JSONResponse(codec.whole(parsed, stream.route, x, answer), headers=headers)


async def _written(
    stream: ChatStream, writer: StreamWriter, kept: Callable[[Answer], Awaitable[None]] | None
) -> AsyncIterator[bytes]:
    answer = Answer() if kept is not None else None
    async with stream:
        try:
            async for event in stream.events():
                if answer is not None and kept is not None:
                    answer.add(event)
                    if isinstance(event, Finish):  # kept before the client hears it ended: its next request may name it
                        await kept(answer)
                yield writer.event(event)
        except GatewayError as exc:  # after the first event: the API's last error event
            yield writer.failed(exc)
