"""The upstream's own error message, from OpenAI's or Ollama's error JSON (embedders and LLM upstreams)."""

from __future__ import annotations

import json

import httpx

__all__ = ["error_detail", "error_message"]


def error_detail(response: httpx.Response, limit: int = 300) -> str:
    """An httpx response's error message (see error_message)."""
    return error_message(response.content, response.reason_phrase, limit)


def error_message(payload: bytes, reason: str, limit: int = 300) -> str:
    """``{"error": {"message": ...}}`` (OpenAI), ``{"error": "..."}`` (Ollama), or the raw text (else ``reason``)."""
    try:
        body = json.loads(payload)
    except ValueError:  # includes JSONDecodeError and UnicodeDecodeError
        return payload.decode("utf-8", "replace")[:limit] or reason
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", error))[:limit]
    return str(error or body)[:limit]
