"""The error base of both services; status mappings live with each service's gRPC/HTTP glue."""

from __future__ import annotations

__all__ = ["ConfigError", "ServiceError"]


class ConfigError(Exception):
    """A setting is wrong: the service refuses to start and says which one."""


class ServiceError(Exception):
    """An error a client sees; each service maps its subclasses to gRPC (and HTTP) statuses.

    ``retry_after``: seconds a client should wait before retrying, when that is known."""

    def __init__(self, message: str, *, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
