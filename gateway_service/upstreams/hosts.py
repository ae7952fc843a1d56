"""Several hosts behind one upstream: least-outstanding balancing, ejection with back-off, model lists.

A host is *up*, *ejected* (after ``eject_after`` failures in a row, for a back-off
that doubles with each ejection in a row, up to ``eject_max_s``), or on *trial*
(its ejection ran out: one request may go; success brings it back, failure
ejects it again for longer). A successful health check brings a host back at once.
When every host is ejected the upstream fails fast, naming each host and its last
error: the circuit is open, no request waits for a connect timeout.

Model lists come from the health checks. Requests go to hosts that list the model;
if none does (or no list is known), to every host: some servers (llama.cpp's)
answer any model name and list another. A host that answers 404 for a model is
not asked for it again until its next health check.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from ..config import UpstreamSettings
from ..domain import HostState
from ..errors import UpstreamBusy, UpstreamUnreachable
from ..metrics import GatewayMetrics

__all__ = ["Host", "HostPool"]

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Host:
    target: str  # the base URL requests go to, credentials (user:password@) included
    outstanding: int = 0
    failures: int = 0  # in a row
    ejections: int = 0  # in a row: sets the next back-off
    ejected_until: float = 0.0  # 0: not ejected
    epoch: int = 0  # ejections so far: a request's failure counts only against the epoch it started in
    trial: bool = False  # the one request allowed after an ejection ran out is in flight
    models: frozenset[str] | None = None  # from the last health check; None: not known
    missing: set[str] = field(default_factory=set)  # answered 404 since the last health check
    last_error: str = ""

    @property
    def url(self) -> str:
        """The base URL as every message, log line and metric label shows it: never with its credentials."""
        return public_url(self.target)

    def lists(self, model: str) -> bool | None:
        """Whether this host's model list has ``model`` (Ollama names untagged models ``:latest``)."""
        if self.models is None:
            return None
        return model in self.models or f"{model}:latest" in self.models


class HostPool:
    def __init__(
        self,
        settings: UpstreamSettings,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        redact: Callable[[str], str] = str,
    ) -> None:
        self.hosts = [Host(url) for url in settings.hosts]
        self._redact = redact  # a model list is upstream text: it may echo a key
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._waiters: list[asyncio.Future[None]] = []
        for host in self.hosts:
            self._gauge_up(host)
            if metrics is not None:  # known label values start at 0, so rate() and increase() see the first one
                metrics.host_ejections.labels(upstream=settings.name, host=host.url)
        if metrics is not None:
            metrics.retries.labels(upstream=settings.name)

    # -- choosing a host ------------------------------------------------------------------

    async def acquire(self, model: str, tried: list[Host]) -> Host | None:
        """A host for ``model`` not in ``tried``, its slot taken; None when ``tried`` left no other host.

        Raises UpstreamUnreachable when every host is ejected (fail fast), and UpstreamBusy
        when every candidate is at max_concurrency for longer than queue_timeout_s."""
        settings = self._settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.queue_timeout_s
        while True:
            candidates = self._candidates(model, tried)
            if not candidates:
                if tried:
                    return None
                raise self._all_ejected(model)
            host = self._least_outstanding(candidates)
            if host is not None:
                self._take(host)
                return host
            remaining = deadline - loop.time()
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    await waiter
            except BaseException as exc:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake()  # woken, but leaving: pass the freed slot on
                if isinstance(exc, TimeoutError):
                    raise UpstreamBusy(
                        f"upstream {settings.name!r}: every host has {settings.max_concurrency} requests in flight "
                        f"and none finished within {settings.queue_timeout_s:g}s "
                        f"(upstreams[{settings.name}].max_concurrency / queue_timeout_s)",
                        status=429, retry_after="1",
                    ) from None
                raise

    def _candidates(self, model: str, tried: list[Host]) -> list[Host]:
        now = self._clock()
        usable = [
            h for h in self.hosts
            if h not in tried and model not in h.missing and (not h.ejected_until or (h.ejected_until <= now and not h.trial))
        ]
        listing = [h for h in usable if h.lists(model) is not False]
        return listing or usable

    def _least_outstanding(self, candidates: list[Host]) -> Host | None:
        free = [h for h in candidates if h.outstanding < self._settings.max_concurrency]
        if not free:
            return None
        least = min(h.outstanding for h in free)
        return random.choice([h for h in free if h.outstanding == least])

    def _take(self, host: Host) -> None:
        host.outstanding += 1
        if host.ejected_until:
            host.trial = True
        if self._metrics is not None:
            self._metrics.host_inflight.labels(upstream=self._settings.name, host=host.url).inc()

    def release(self, host: Host, trial: bool) -> None:
        """Give the slot back; ``trial``: this was the request let through after an ejection (only
        its end frees the trial, not the end of a stream that began before the ejection)."""
        host.outstanding -= 1
        if trial:
            host.trial = False
        if self._metrics is not None:
            self._metrics.host_inflight.labels(upstream=self._settings.name, host=host.url).dec()
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return

    def _all_ejected(self, model: str) -> UpstreamUnreachable:
        now = self._clock()
        settings = self._settings
        states = "; ".join(
            f"{h.url} ({h.last_error or 'no error recorded'}; it will be tried again in "
            f"{max(0.0, h.ejected_until - now):.1f} s)"
            if h.ejected_until else f"{h.url} (does not serve {model!r})"
            for h in self.hosts
        )
        return UpstreamUnreachable(
            f"upstream {settings.name!r} ({settings.provider}) has no host to serve model {model!r}: {states}. "
            f"Check the servers at {settings.url_setting}"
        )

    # -- what happened --------------------------------------------------------------------

    def succeeded(self, host: Host) -> None:
        host.failures = 0
        host.ejections = 0
        if host.ejected_until:
            host.ejected_until = 0.0
            logger.info("upstream %r: host %s is back", self._settings.name, host.url)
            self._gauge_up(host)
        self.count(host, "ok")

    def failed(self, host: Host, kind: str, error: str, epoch: int | None = None) -> None:
        """A failure of the host itself (connect, timeout, 429, 5xx, a broken stream); a failed trial ejects at once.

        ``epoch``: the host's epoch when the failing request took it; a request begun before the
        latest ejection has been paid for by it, so its failure does not eject the host again."""
        self.count(host, kind)
        if epoch is not None and epoch != host.epoch:
            return
        host.failures += 1
        host.last_error = error[:300]
        if host.ejected_until or host.failures >= self._settings.eject_after:
            self._eject(host)

    def lacks(self, host: Host, model: str) -> None:
        """The host answered 404 for ``model``: ask the others until its next health check."""
        host.missing.add(model)

    def _eject(self, host: Host) -> None:
        settings = self._settings
        back_off = min(settings.eject_base_s * 2**host.ejections, settings.eject_max_s)
        was_up = not host.ejected_until
        host.ejections += 1
        host.epoch += 1
        host.failures = 0
        host.ejected_until = self._clock() + back_off
        # One warning when a host goes down (and an info line when it is back); while it stays down, each longer
        # back-off is a debug line, not a warning every health check
        logger.log(
            logging.WARNING if was_up else logging.DEBUG,
            "upstream %r: host %s ejected: it will be tried again in %.1f s (the back-off doubles while it keeps "
            "failing, up to %.0f s); last error: %s", settings.name, host.url, back_off, settings.eject_max_s,
            host.last_error,
        )
        if self._metrics is not None:
            self._metrics.host_ejections.labels(upstream=settings.name, host=host.url).inc()
        self._gauge_up(host)

    def checked(self, host: Host, models: frozenset[str] | None) -> None:
        """A health check passed: the host is up, with this model list (None: it keeps none)."""
        first = host.models is None and models is not None
        host.models = models
        host.missing.clear()
        if host.ejected_until:
            host.ejected_until = 0.0
            host.failures = 0
            logger.info("upstream %r: host %s passed its health check and is back", self._settings.name, host.url)
            self._gauge_up(host)
        if first and models is not None:
            unlisted = [m for m in self._settings.models if host.lists(m) is False]
            if unlisted:
                # Ollama's list is what it serves (a model to pull); an OpenAI-compatible server's may not be
                # (llama.cpp's answers any name): there, it is news, not a problem.
                level = logging.WARNING if self._settings.provider == "ollama" else logging.INFO
                logger.log(
                    level, "upstream %r: host %s does not list %s (it lists %s); those go to other hosts that list "
                    "them, or are tried anyway where none does", self._settings.name, host.url, unlisted,
                    self._redact(str(sorted(models)[:20])),
                )

    def check_failed(self, host: Host, error: str) -> None:
        self.failed(host, "HealthCheck", f"health check: {error}")

    def states(self) -> list[HostState]:
        """Each host now: up or ejected (and for how long), requests in flight, its last error."""
        now = self._clock()
        return [
            HostState(
                self._settings.name, host.url, up=not host.ejected_until,
                back_in_s=round(max(host.ejected_until - now, 0.0), 1) if host.ejected_until else 0.0,
                in_flight=host.outstanding, last_error=self._redact(host.last_error),
            )
            for host in self.hosts
        ]

    def count(self, host: Host, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.host_requests.labels(upstream=self._settings.name, host=host.url, outcome=outcome).inc()

    def _gauge_up(self, host: Host) -> None:
        if self._metrics is not None:
            self._metrics.host_up.labels(upstream=self._settings.name, host=host.url).set(0 if host.ejected_until else 1)


def public_url(url: str) -> str:
    """``url`` without user and password, to show to clients."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
