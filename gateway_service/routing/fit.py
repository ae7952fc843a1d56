"""Context windows: a conservative estimate of the tokens a request needs, against the window each model is served with.

Ollama serves 4k tokens by default on small GPUs and silently drops what does not fit; an agent's request is
~15k tokens before the user's first word. The estimate counts 3 characters a token (English prose is ~4; code and
JSON fewer: conservative on purpose), every message's text, tool calls and tool definitions, 800 tokens an image,
and the output the request asks for (its max_tokens, at most 4,096 of it, 1,024 where it set none: agents ask
for 128k they will not use).
"""

from __future__ import annotations

import math

from ..domain import ChatParams

__all__ = ["estimate_request_tokens"]

CHARS_PER_TOKEN = 3
IMAGE_TOKENS = 800


def estimate_request_tokens(params: ChatParams) -> int:
    images = sum(len(m.images) for m in params.messages)
    return math.ceil(params.prompt_chars() / CHARS_PER_TOKEN) + images * IMAGE_TOKENS + params.output_expected()
