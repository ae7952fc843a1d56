"""The upstream's own error message, from OpenAI's or Ollama's error JSON (embedders and LLM upstreams)."""

from __future__ import annotations

import httpx

__all__ = ["error_detail"]


def error_detail(response: httpx.Response, limit: int = 300) -> str:
    """``{"error": {"message": ...}}`` (OpenAI), ``{"error": "..."}`` (Ollama), or the raw text."""
    try:
        body = response.json()
    except ValueError:  # includes JSONDecodeError and UnicodeDecodeError
        return response.text[:limit] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", error))[:limit]
    return str(error or body)[:limit]
