"""The router's domain errors: what went wrong, and what to fix, in the message.

They carry no transport status; ``grpc_status.py`` maps them to gRPC codes.
"""

from __future__ import annotations

from service_core.errors import ConfigError, ServiceError

__all__ = [
    "BudgetStoreUnavailable",
    "ConfigError",
    "DeadlineExceeded",
    "EmbedderMisconfigured",
    "EmbedderUnavailable",
    "InvalidRequest",
    "OverLimit",
    "Overloaded",
    "PolicyDenied",
    "ReloadRejected",
    "RouterError",
    "Uncalibrated",
    "UnknownScorer",
]


class RouterError(ServiceError):
    """An error a caller of the router sees."""


class InvalidRequest(RouterError):
    """The request is wrong; the message names the field and the limit."""


class UnknownScorer(RouterError):
    """The request names a scorer that is not configured."""


class Uncalibrated(RouterError):
    """A strong-call share was asked of a scorer that has no calibrated thresholds (an imported one)."""


class EmbedderUnavailable(RouterError):
    """The embedding backend could not be reached or failed for now; retrying may work."""


class EmbedderMisconfigured(RouterError):
    """The embedding backend answered, but the router's settings for it are wrong."""


class Overloaded(RouterError):
    """Too much work is queued: refused at once, so callers can go elsewhere (fail open) instead of waiting."""


class DeadlineExceeded(RouterError):
    """The caller's deadline passed; the router stopped work on it."""


class ReloadRejected(RouterError):
    """A scorer reload found a bad file (or a mismatch); the serving scorers were kept."""


class PolicyDenied(RouterError):
    """The caller's policy does not allow this call (its own threshold or share, with may_choose = false)."""


class OverLimit(RouterError):
    """The caller is past its requests_per_minute (the message says when it frees)."""


class BudgetStoreUnavailable(RouterError):
    """The shared counters (Redis) are gone and redis.on_unavailable is 'refuse'."""
