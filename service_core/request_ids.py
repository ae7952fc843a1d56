"""Request ids given by callers: kept when they are short printable ASCII, replaced otherwise.

A caller's ``x-request-id`` is echoed in headers, forwarded as gRPC metadata and written
to access logs: a TAB, a non-ASCII byte or 20 KB of it would break the first two and
bloat the third, so such an id is replaced by a fresh one (and the reply says so).
"""

from __future__ import annotations

import re
import uuid

__all__ = ["MAX_REQUEST_ID", "accept_request_id"]

MAX_REQUEST_ID = 128
_PRINTABLE_ASCII = re.compile(rf"[!-~]{{1,{MAX_REQUEST_ID}}}")


def accept_request_id(given: str | None) -> tuple[str, str | None]:
    """(the id to use, why the given one was replaced or None)."""
    if not given:
        return uuid.uuid4().hex, None
    if _PRINTABLE_ASCII.fullmatch(given):
        return given, None
    return uuid.uuid4().hex, f"replaced: x-request-id must be 1-{MAX_REQUEST_ID} printable ASCII characters"
