"""The one table from the gateway's domain errors to gRPC status codes."""

from __future__ import annotations

import grpc

from service_core.errors import ServiceError
from service_core.grpc_handlers import status_lookup

from ..errors import (
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    OverLimit,
    PolicyDenied,
    ShuttingDown,
    StoreUnavailable,
    TooLarge,
    TooManyStreams,
    Unauthorized,
    UpstreamBusy,
    UpstreamError,
    UpstreamStreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)

__all__ = ["grpc_status"]

STATUS: dict[type[ServiceError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    TooLarge: grpc.StatusCode.INVALID_ARGUMENT,
    TooManyStreams: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    PolicyDenied: grpc.StatusCode.PERMISSION_DENIED,
    OverLimit: grpc.StatusCode.RESOURCE_EXHAUSTED,
    StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    Unauthorized: grpc.StatusCode.UNAUTHENTICATED,
    ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    UpstreamUnreachable: grpc.StatusCode.UNAVAILABLE,
    UpstreamTimeout: grpc.StatusCode.DEADLINE_EXCEEDED,
    UpstreamError: grpc.StatusCode.UNAVAILABLE,
    UpstreamStreamError: grpc.StatusCode.UNAVAILABLE,
}


_by_class = status_lookup(STATUS)


def grpc_status(error: GatewayError) -> grpc.StatusCode:
    """The status of ``error``'s nearest class in the table; INTERNAL for any other."""
    if isinstance(error, UpstreamBusy):  # the upstream's 429 is back-pressure; its 503 is "unavailable"
        return grpc.StatusCode.UNAVAILABLE if error.http_status == 503 else grpc.StatusCode.RESOURCE_EXHAUSTED
    return _by_class(error)
