"""What a parsed body holds, counted before it is validated: every client API's limits on size, said the same way.

Validating a body of 150k content parts takes seconds of the event loop; counting them first costs
milliseconds. Each API says where its conversation is (``messages``, Responses' ``input``), what an image
part is called, and whether parts nest (Anthropic's tool results hold blocks of their own).
"""

from __future__ import annotations

from typing import Any

from ..config import LimitSettings
from ..errors import InvalidRequest, TooLarge

__all__ = ["count_shape"]


def count_shape(
    body: Any, limits: LimitSettings, *, items: str = "messages", noun: str = "messages", image: str = "image_url",
    nested: bool = False,
) -> None:
    """Refuse ``body`` when its conversation, its content parts, its images or its tools pass their limits."""
    if not isinstance(body, dict):
        return
    conversation = body.get(items)
    if isinstance(conversation, list):
        if len(conversation) > limits.max_messages:
            raise InvalidRequest(f"{len(conversation)} {noun}, more than limits.max_messages={limits.max_messages}")
        parts = images = 0
        for entry in conversation:
            content = entry.get("content") if isinstance(entry, dict) else None
            if not isinstance(content, list):
                continue
            parts += len(content)
            for part in content:
                if not isinstance(part, dict):
                    continue
                images += part.get("type") == image
                inner = part.get("content") if nested else None
                if isinstance(inner, list):
                    parts += len(inner)
                    images += sum(1 for p in inner if isinstance(p, dict) and p.get("type") == image)
        if parts > limits.max_content_parts:
            raise TooLarge(f"{parts} content parts, more than limits.max_content_parts={limits.max_content_parts}")
        if images > limits.max_images:
            raise TooLarge(f"{images} images, more than limits.max_images={limits.max_images}")
    tools = body.get("tools")
    if isinstance(tools, list) and len(tools) > limits.max_tools:
        raise TooLarge(f"{len(tools)} tools, more than limits.max_tools={limits.max_tools}")
