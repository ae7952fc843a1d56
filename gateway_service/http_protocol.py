"""uvicorn's HTTP protocol with read deadlines, against slow or stalled clients (slowloris).

uvicorn times out idle keep-alive connections, but not a request that arrives slowly: a
client that sends half its headers, or half its body, would hold a connection (and a file
descriptor) forever. Here a request's headers must arrive within ``header_timeout_s`` (from
the connection, or from the first byte of a later request on it) and its body within
``body_timeout_s``; past that the client gets a 408 and the connection is closed.
"""

from __future__ import annotations

import asyncio
import json
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["timed_protocol"]

logger = logging.getLogger(__name__)


class _TimedHttpProtocol(HttpToolsProtocol):
    header_timeout_s = 10.0
    body_timeout_s = 30.0
    _read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s, "headers")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.header_timeout_s, "headers")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.body_timeout_s, "body")

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(seconds, self._too_slow, what, seconds)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _too_slow(self, what: str, seconds: float) -> None:
        if self.transport.is_closing():
            return
        logger.info("closing the connection of %s: its request %s did not arrive within %gs", self.client, what, seconds)
        if self.cycle is None or not self.cycle.response_started:
            setting = "server.header_timeout_s" if what == "headers" else "server.body_timeout_s"
            body = json.dumps({"error": {
                "message": f"the request {what} did not arrive within {seconds:g}s ({setting})",
                "type": "invalid_request_error", "param": None, "code": "request_timeout",
            }}).encode()
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
        self.transport.close()


def timed_protocol(header_timeout_s: float, body_timeout_s: float) -> type[HttpToolsProtocol]:
    """The protocol class for one server's settings (uvicorn takes a class, not an instance)."""
    return type("TimedHttpProtocol", (_TimedHttpProtocol,), {
        "header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s,
    })
