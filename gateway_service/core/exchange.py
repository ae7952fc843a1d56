"""One request of any API, from its first byte to its access line: what the front door and the chat core share.

The front door (``apis/frontdoor.py``) makes an ``Exchange`` for every request, HTTP or gRPC; the
chat core reads the request id and the caller from it, and an opened stream leaves its record
in it when it ends, so the one access line carries both the request and its stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..accounting.policy import ANYONE, Caller
from ..errors import GatewayError, InternalError

__all__ = ["Exchange"]


@dataclass(eq=False)
class Exchange:
    api: str  # the endpoint, e.g. "openai/chat", "ollama/embed", "grpc/Chat": a bounded metric label
    request_id: str
    id_note: str | None = None  # why the caller's x-request-id was replaced, if it was
    client_key: str | None = None  # the caller's bearer token: an identity only where auth checks it
    caller: Caller = ANYONE  # who the key belongs to (named by the front door); its name is what logs show
    started: float = field(default_factory=time.perf_counter)
    requested: str = ""  # the model the request named
    status: int | str = 200  # HTTP status, or a gRPC status name
    outcome: str = "ok"
    error: str = ""
    stream: dict[str, Any] | None = None  # an opened stream's record, left here when it closes
    cut: bool = False  # the gateway is ending this request: the shutdown grace is over
    headers: Mapping[str, str] = field(default_factory=dict)  # HTTP headers or gRPC metadata, for gateway rules

    def id_headers(self) -> dict[str, str]:
        headers = {"x-request-id": self.request_id}
        if self.id_note:
            headers["x-request-id-note"] = self.id_note
        return headers

    def take_back_cut(self) -> bool:
        """After a CancelledError: true when it was the shutdown cut, now withdrawn so the request may still say
        why it ends; false when something else cancelled the task, which must go on cancelling."""
        task = asyncio.current_task()
        if not self.cut or task is None:
            return False
        task.uncancel()
        return True

    def ended(self, status: int | str, outcome: str, error: str = "") -> None:
        self.status, self.outcome, self.error = status, outcome, error

    def refused(self, error: GatewayError, status: int | str) -> None:
        """Ended by a domain error: its class is the outcome (a bug's is "internal_error")."""
        outcome = "internal_error" if isinstance(error, InternalError) else type(error).__name__
        self.ended(status, outcome, str(error))

    def record(self) -> dict[str, Any]:
        """The access line: the request, how it ended, and its stream's figures when one opened. Never
        prompts or keys."""
        record: dict[str, Any] = {
            "request_id": self.request_id, "api": self.api, "caller": self.caller.name,
            "requested": self.requested or None,  # null: the body was refused before its model was read
            "status": self.status,
            "outcome": self.outcome, "total_ms": round((time.perf_counter() - self.started) * 1e3, 2),
        }
        if self.error:
            record["error"] = self.error[:500]
        if self.stream is not None:
            record.update(self.stream)
        return record
