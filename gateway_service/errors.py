"""Gateway errors and the one table that maps them to HTTP and gRPC statuses."""

from __future__ import annotations

import grpc

__all__ = [
    "GatewayError",
    "InvalidRequest",
    "ModelNotFound",
    "TooLarge",
    "TooManyStreams",
    "UpstreamBusy",
    "UpstreamError",
    "UpstreamStreamError",
    "UpstreamTimeout",
    "UpstreamUnreachable",
]


class GatewayError(Exception):
    """An error a client sees: HTTP status, OpenAI error type, gRPC status."""

    http_status = 500
    error_type = "server_error"
    grpc_status = grpc.StatusCode.INTERNAL
    code: str | None = None

    def __init__(self, message: str, *, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidRequest(GatewayError):
    http_status = 400
    error_type = "invalid_request_error"
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT


class TooLarge(GatewayError):
    http_status = 413
    error_type = "invalid_request_error"
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT


class TooManyStreams(GatewayError):
    """Refused at once, with Retry-After: never an unbounded queue."""

    http_status = 429
    error_type = "rate_limit_error"
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED
    code = "too_many_streams"


class ModelNotFound(GatewayError):
    http_status = 404
    error_type = "invalid_request_error"
    grpc_status = grpc.StatusCode.NOT_FOUND
    code = "model_not_found"


class UpstreamUnreachable(GatewayError):
    """Could not connect: the message names the upstream's URL."""

    http_status = 502
    error_type = "upstream_error"
    grpc_status = grpc.StatusCode.UNAVAILABLE


class UpstreamTimeout(GatewayError):
    http_status = 504
    error_type = "upstream_error"
    grpc_status = grpc.StatusCode.DEADLINE_EXCEEDED


class UpstreamBusy(GatewayError):
    """429 or 503 from the upstream: passed on with its Retry-After."""

    error_type = "upstream_error"
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, status: int, retry_after: str | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.http_status = status
        if status == 503:
            self.grpc_status = grpc.StatusCode.UNAVAILABLE


class UpstreamError(GatewayError):
    """The upstream refused the request (a 4xx/5xx that retrying will not fix)."""

    http_status = 502
    error_type = "upstream_error"
    grpc_status = grpc.StatusCode.UNAVAILABLE


class UpstreamStreamError(GatewayError):
    """The stream broke: cut early, a malformed chunk, or an error event."""

    http_status = 502
    error_type = "upstream_error"
    grpc_status = grpc.StatusCode.UNAVAILABLE
