"""Checks on what an upstream sends: a wrong type is a ``ValueError`` that names the field.

Upstream answers are as untrusted as client requests; the parsers turn these errors into a
502 that names the upstream, streamed or not, instead of letting a bad value reach a client.
"""

from __future__ import annotations

from typing import Any

__all__ = ["count", "text"]


def text(value: Any, field: str) -> str:
    """A string field; missing or null is empty."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{field} is {type(value).__name__}, not a string")
    return value


def count(value: Any, field: str) -> int:
    """A token count: a whole number >= 0."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{field} is {value!r}, not a whole number >= 0")
    return value
