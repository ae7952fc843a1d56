"""Redaction of secrets from text that came from elsewhere (upstream error bodies) before it is shown or logged.

An upstream that echoes the key it received (in a 401 body, say) must not put that key
into a client's error message or the service log.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["REDACTED", "Redactor"]

REDACTED = "[redacted]"
# Anything shaped like a credential, configured or not.
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
_KEY_LIKE = re.compile(r"\b(?:sk|pk|rk|api|key)[-_][A-Za-z0-9_-]{8,}")


class Redactor:
    """Replaces every configured secret value, and bearer tokens and API-key-shaped words, with [redacted]."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        # Longest first, so a secret that contains another is replaced whole; very short
        # values would redact ordinary words, so they are left to the patterns.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        text = _BEARER.sub(rf"\1 {REDACTED}", text)
        return _KEY_LIKE.sub(REDACTED, text)
