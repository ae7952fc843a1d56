"""Opt-in capture of routed prompts and their route decisions, for labelling and retraining.

A sampled request's record is written when its stream ends: one JSON line with the prompt
the router was asked about (the user's words of the last user turn, client boilerplate set
aside, and the names of what was set aside), the decision (model, score, threshold,
scorer and version) and, only when ``capture.completions`` is on, the answer's text. Never
the API key, other messages, or headers.

Writing goes through the standard library's logging machinery: a QueueHandler (no file
I/O on the event loop) drained by a QueueListener thread into a RotatingFileHandler
(size-bounded files, a fixed number kept). It is well tested and does exactly this.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import random
from dataclasses import dataclass, field
from logging.handlers import QueueHandler, QueueListener, RotatingFileHandler
from typing import Any

from service_core.errors import ConfigError

from ..config import CaptureSettings
from ..domain import ChatParams, RouteDecision

__all__ = ["Capture", "CaptureRecord"]

logger = logging.getLogger(__name__)


@dataclass
class CaptureRecord:
    """One sampled request, filled in as its stream goes."""

    request_id: str
    requested: str
    prompt: str
    completion: list[str] | None  # the answer's pieces; None when completions are not captured
    route: RouteDecision | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    caller: str = ""  # the caller's name (never its key)


class _CaptureFile(RotatingFileHandler):
    """A failed write (disk full, the folder gone) is one warning line, not logging's traceback on stderr,
    and never the request's problem: the record is dropped. A write that works again re-arms the warning."""

    failing = False
    _wrote = True

    def emit(self, record: logging.LogRecord) -> None:
        self._wrote = True
        super().emit(record)  # calls handleError instead of raising
        if self._wrote:
            self.failing = False

    def handleError(self, record: logging.LogRecord) -> None:
        self._wrote = False
        if not self.failing:
            self.failing = True
            logger.warning("capture: writing %s failed; records are dropped until it works again", self.baseFilename)


class Capture:
    def __init__(self, settings: CaptureSettings) -> None:
        self._settings = settings
        self._listener: QueueListener | None = None
        self._logger = logging.getLogger(f"gateway_service.capture.{id(self)}")  # one per gateway (tests run several)
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        if not settings.enabled:
            return
        try:
            settings.dir.mkdir(parents=True, exist_ok=True)
            path = settings.dir / settings.file_name
            handler = _CaptureFile(
                path, maxBytes=int(settings.max_file_mb * 1024 * 1024), backupCount=settings.max_files, encoding="utf-8"
            )
        except OSError as exc:
            raise ConfigError(f"capture.dir: cannot write {settings.dir / settings.file_name} ({exc})") from exc
        handler.setFormatter(logging.Formatter("%(message)s"))
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._logger.addHandler(QueueHandler(records))
        self._listener = QueueListener(records, handler)
        self._listener.start()
        logger.info(
            "capturing %g%% of routed prompts to %s%s", settings.rate * 100, path,
            " with their completions" if settings.completions else " (prompts and decisions, no completions)",
        )

    @property
    def enabled(self) -> bool:
        return self._listener is not None

    def sample(self, request_id: str, requested: str, params: ChatParams, caller: str = "") -> CaptureRecord | None:
        """A record to fill for this request, if it is sampled (routed requests only: the caller checks)."""
        if self._listener is None or random.random() >= self._settings.rate:
            return None
        users = [m.content for m in params.messages if m.role == "user"]
        if not users:
            return None
        return CaptureRecord(
            request_id, requested, users[-1], [] if self._settings.completions else None, caller=caller
        )

    def write(self, record: CaptureRecord, outcome: str, finish_reason: str | None) -> None:
        route = record.route
        if route is None or not route.routed or route.fallback:
            return  # concrete, failed-open and fallback answers say nothing about the router's choice
        line: dict[str, Any] = {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "request_id": record.request_id,
            **({"caller": record.caller} if record.caller else {}),
            "prompt": route.routed_on or record.prompt,
            **({"set_aside": list(route.set_aside)} if route.set_aside else {}),
            "requested": record.requested,
            "model": route.model,
            "routed_strong": route.routed_strong,
            "score": round(route.score, 6),
            "threshold": round(route.threshold, 6),
            "scorer": route.scorer,
            "scorer_version": route.scorer_version,
            "budget_limited": route.budget_limited,
            "outcome": outcome,
        }
        if record.completion is not None:
            line["completion"] = "".join(record.completion)
            line["finish_reason"] = finish_reason
        self._logger.info(json.dumps(line, ensure_ascii=False, separators=(",", ":")))

    def close(self) -> None:
        """Write what is queued and close the file."""
        if self._listener is not None:
            self._listener.stop()
            for handler in self._listener.handlers:
                handler.close()
            self._listener = None
