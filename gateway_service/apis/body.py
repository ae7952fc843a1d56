"""Reading a JSON request body, the same way for every HTTP API: size, JSON, shape, then the schema.

The body is refused as soon as it passes the limit (declared or chunked); it is parsed by orjson
and its shape counted before pydantic sees it, since validating a body of 150k parts takes
seconds of the event loop, and counting them milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from ..config import LimitSettings
from ..errors import InvalidRequest, TooLarge
from .openai_wire import describe

__all__ = ["read_json", "read_model", "validated"]

Body = TypeVar("Body", bound=BaseModel)


async def _read_bytes(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the request body is {declared} bytes, more than limits.max_body_bytes={limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the request body is more than limits.max_body_bytes={limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limits: LimitSettings) -> Any:
    raw = await _read_bytes(request, limits.max_body_bytes)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None


async def read_model(
    request: Request, schema: type[Body], limits: LimitSettings, shape: Callable[[Any, LimitSettings], None]
) -> Body:
    """The body as ``schema``; ``shape`` refuses what is too big about it before it is validated."""
    body = await read_json(request, limits)
    return validated(schema, body, limits, shape)


def validated(schema: type[Body], body: Any, limits: LimitSettings, shape: Callable[[Any, LimitSettings], None]) -> Body:
    """An already-parsed body (HTTP JSON, or a gRPC request in OpenAI's shape) checked the one way: fields, shape,
    schema, with the same messages for every API."""
    if isinstance(body, dict) and len(body) > limits.max_extra_fields:
        raise InvalidRequest(f"the request has {len(body)} fields, more than limits.max_extra_fields={limits.max_extra_fields}")
    shape(body, limits)
    if not isinstance(body, dict):
        raise InvalidRequest(f"the request body is a JSON {type(body).__name__}, not an object")
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest(describe(exc)) from None
