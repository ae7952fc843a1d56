"""Context windows: a conservative estimate of the tokens a request needs, against the window each model is served with.

Ollama serves 4k tokens by default on small GPUs and silently drops what does not fit; an agent's request is
~15k tokens before the user's first word. The estimate counts 3 characters a token (English prose is ~4; code and
JSON fewer: conservative on purpose), every message's text, tool calls and tool definitions, 800 tokens an image,
and the output the request asks for (its max_tokens, at most 4,096 of it, 1,024 where it set none: agents ask
for 128k they will not use).
"""

from __future__ import annotations

import json
import math

from ..domain import ChatParams

__all__ = ["estimate_request_tokens"]

CHARS_PER_TOKEN = 3
IMAGE_TOKENS = 800
OUTPUT_DEFAULT, OUTPUT_MAX = 1024, 4096


def estimate_request_tokens(params: ChatParams) -> int:
    chars = 0
    images = 0
    for message in params.messages:
        chars += len(message.content) + sum(len(c.name) + len(c.arguments) for c in message.tool_calls)
        images += len(message.images)
    chars += sum(len(t.name) + len(t.description) + len(json.dumps(t.parameters)) for t in params.tools)
    output = min(params.max_tokens or OUTPUT_DEFAULT, OUTPUT_MAX)
    return math.ceil(chars / CHARS_PER_TOKEN) + images * IMAGE_TOKENS + output
