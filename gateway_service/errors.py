"""The gateway's domain errors, each with the HTTP status and OpenAI error type a client sees.

They carry no gRPC code; ``grpc_status.py`` maps them for the gRPC API.
"""

from __future__ import annotations

import logging
import uuid

from service_core.errors import ServiceError

from .domain import RouteDecision

__all__ = [
    "GatewayError",
    "InternalError",
    "InvalidRequest",
    "MethodNotAllowed",
    "ModelNotFound",
    "NotFound",
    "OverLimit",
    "PolicyDenied",
    "ShuttingDown",
    "StoreUnavailable",
    "TooLarge",
    "TooManyStreams",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpstreamBusy",
    "UpstreamError",
    "UpstreamStreamError",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "internal_error",
]


class GatewayError(ServiceError):
    """An error a client sees: HTTP status and OpenAI error type (and code, where OpenAI has one).

    ``route``: how the model was chosen, when the error came after routing."""

    http_status = 500
    error_type = "server_error"
    code: str | None = None
    route: RouteDecision | None = None
    upstream_status: int | None = None  # the HTTP status an upstream answered, where one did


class InvalidRequest(GatewayError):
    http_status = 400
    error_type = "invalid_request_error"


class Unauthorized(GatewayError):
    http_status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class NotFound(GatewayError):
    """No such path (HTTP only)."""

    http_status = 404
    error_type = "invalid_request_error"


class MethodNotAllowed(GatewayError):
    http_status = 405
    error_type = "invalid_request_error"


class UnsupportedMediaType(GatewayError):
    """A body in a type HTML forms send (text/plain, form data) where JSON is wanted: refused, as a cross-site form
    could send it with a browser's cached credentials."""

    http_status = 415
    error_type = "invalid_request_error"


class ShuttingDown(GatewayError):
    """The shutdown grace ended with this request still running: it ends with this error, not torn."""

    http_status = 503
    error_type = "server_error"
    code = "shutting_down"


class InternalError(GatewayError):
    """A bug: the client sees an id that is also in the one log line with the traceback."""


class TooLarge(GatewayError):
    http_status = 413
    error_type = "invalid_request_error"


class TooManyStreams(GatewayError):
    """Refused at once, with Retry-After: never an unbounded queue."""

    http_status = 429
    error_type = "rate_limit_error"
    code = "too_many_streams"


class PolicyDenied(GatewayError):
    """The caller's policy does not allow this request (a model it may not name, a share it may not pick)."""

    http_status = 403
    error_type = "permission_error"
    code = "policy_denied"


class OverLimit(GatewayError):
    """The caller is past one of its limits (requests or tokens per minute, a strong budget): Retry-After says when
    it frees."""

    http_status = 429
    error_type = "rate_limit_error"
    code = "caller_limit"


class StoreUnavailable(GatewayError):
    """The shared counters (Redis) are gone and redis.on_unavailable is 'refuse'."""

    http_status = 503
    error_type = "server_error"
    code = "budget_store_unavailable"


class ModelNotFound(GatewayError):
    http_status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class UpstreamUnreachable(GatewayError):
    """Could not connect: the message names the upstream's URL."""

    http_status = 502
    error_type = "upstream_error"


class UpstreamTimeout(GatewayError):
    http_status = 504
    error_type = "upstream_error"


class UpstreamBusy(GatewayError):
    """429 or 503 from the upstream: passed on with its Retry-After."""

    error_type = "upstream_error"

    def __init__(self, message: str, *, status: int, retry_after: str | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.http_status = status


class UpstreamError(GatewayError):
    """The upstream refused the request (a 4xx/5xx that retrying will not fix)."""

    http_status = 502
    error_type = "upstream_error"


class UpstreamStreamError(GatewayError):
    """The stream broke: cut early, a malformed chunk, or an error event."""

    http_status = 502
    error_type = "upstream_error"


def internal_error(log: logging.Logger, where: str) -> str:
    """Log the exception being handled under a new id; return what the client sees instead of it."""
    error_id = uuid.uuid4().hex[:12]
    log.exception("internal error %s in %s", error_id, where)
    return f"internal error (id {error_id}); see the gateway log"
