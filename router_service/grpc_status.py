"""The one table from the router's domain errors to gRPC status codes, and the handler decorator."""

from __future__ import annotations

from typing import Any

import grpc

from service_core.errors import ServiceError
from service_core.grpc_handlers import mapped_errors, status_lookup

from .errors import (
    BudgetStoreUnavailable,
    DeadlineExceeded,
    EmbedderMisconfigured,
    EmbedderUnavailable,
    InvalidRequest,
    OverLimit,
    Overloaded,
    PolicyDenied,
    ReloadRejected,
    Uncalibrated,
    UnknownScorer,
)

__all__ = ["STATUS", "grpc_errors", "grpc_status"]

STATUS: dict[type[ServiceError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    UnknownScorer: grpc.StatusCode.NOT_FOUND,
    EmbedderUnavailable: grpc.StatusCode.UNAVAILABLE,
    EmbedderMisconfigured: grpc.StatusCode.FAILED_PRECONDITION,
    Uncalibrated: grpc.StatusCode.INVALID_ARGUMENT,  # this scorer cannot honour a share: the request must change
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    OverLimit: grpc.StatusCode.RESOURCE_EXHAUSTED,
    PolicyDenied: grpc.StatusCode.PERMISSION_DENIED,
    BudgetStoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    ReloadRejected: grpc.StatusCode.FAILED_PRECONDITION,  # the file is wrong; the serving scorers stay
}


grpc_status = status_lookup(STATUS)


def _count(servicer: Any, status: grpc.StatusCode) -> None:
    servicer.metrics.errors.labels(code=status.name).inc()


grpc_errors = mapped_errors(grpc_status, invalid=InvalidRequest, log_name="router", count=_count)
