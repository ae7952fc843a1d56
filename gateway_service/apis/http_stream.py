"""A streamed HTTP answer: the start, each chunk as it comes, the end.

Starlette's StreamingResponse runs an anyio task group per response to notice a client that
leaves (uvicorn declares ASGI 2.3); the front door already watches every request for that and
cancels its task, so this only writes. Written out (a dozen lines) rather than calling into
Starlette's internals, which the hot path would then depend on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["EventStream"]


class EventStream(Response):
    def __init__(self, chunks: AsyncIterator[bytes], media_type: str, headers: Mapping[str, str]) -> None:
        self._chunks = chunks
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)  # no content-length: the body is chunked

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self._chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
