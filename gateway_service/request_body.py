"""Reading a JSON request body, the same way for the OpenAI and the Ollama APIs: auth, size, schema."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from service_core.auth import bearer_matches

from .errors import GatewayError, InvalidRequest, TooLarge
from .openai_schema import describe

__all__ = ["UNAUTHORIZED", "Unauthorized", "read_body", "read_request"]

UNAUTHORIZED = "missing or invalid API key: send 'Authorization: Bearer <key>' (see auth.api_keys)"
Body = TypeVar("Body", bound=BaseModel)


class Unauthorized(GatewayError):
    http_status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes ``limit`` bytes, declared or not (chunked uploads)."""
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


async def read_request(request: Request, schema: type[Body], keys: tuple[str, ...], limit: int) -> Body:
    """The body as ``schema``, after the client's key (when keys are configured); GatewayErrors otherwise."""
    if keys and not bearer_matches(request.headers.get("authorization"), keys):
        raise Unauthorized(UNAUTHORIZED)
    raw = await read_body(request, limit)
    try:
        return schema.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidRequest(describe(exc)) from None
