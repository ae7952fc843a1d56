"""Tool calls: the one assembler of streamed fragments, and the checks an upstream's fragments must pass.

Every answer that needs whole calls (OpenAI's non-streamed answer, Ollama's API, which sends each
call whole) assembles them here; every upstream parser turns its wire fragments into
``ToolCallDelta`` through ``fragment_of``, so a malformed one is refused where it is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .domain import ToolCall, ToolCallDelta

__all__ = ["ToolCallAssembler", "arguments_object", "fragment_of", "wire_fragment"]


def fragment_of(raw: Any, position: int) -> ToolCallDelta:
    """An OpenAI streamed tool-call fragment, checked; ``ValueError`` says what is wrong with it."""
    if not isinstance(raw, dict):
        raise ValueError(f"tool_calls[{position}] is not an object")
    index = raw.get("index", position)
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 1024:
        raise ValueError(f"tool_calls[{position}].index is {index!r}, not a small whole number")
    call_id = raw.get("id")
    function = raw.get("function") or {}
    if not isinstance(function, dict):
        raise ValueError(f"tool_calls[{position}].function is not an object")
    name, arguments = function.get("name"), function.get("arguments")
    for field, value in (("id", call_id), ("function.name", name), ("function.arguments", arguments)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"tool_calls[{position}].{field} is {type(value).__name__}, not a string")
    return ToolCallDelta(index, call_id or None, name or None, arguments or "")


def wire_fragment(delta: ToolCallDelta) -> dict[str, Any]:
    """A fragment as OpenAI streams it: id, type and name only where this fragment carries them."""
    function: dict[str, Any] = {"arguments": delta.arguments}
    if delta.name is not None:
        function["name"] = delta.name
    fragment: dict[str, Any] = {"index": delta.index}
    if delta.id is not None:
        fragment.update(id=delta.id, type="function")
    fragment["function"] = function
    return fragment


class ToolCallAssembler:
    """Fragments joined into whole calls by index, as OpenAI's SDK joins them."""

    def __init__(self) -> None:
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]

    def add(self, fragments: Iterable[ToolCallDelta]) -> None:
        for fragment in fragments:
            call = self._calls.setdefault(fragment.index, [f"call_{fragment.index}", "", ""])
            if fragment.id:
                call[0] = fragment.id
            if fragment.name:
                call[1] = fragment.name
            call[2] += fragment.arguments

    def __bool__(self) -> bool:
        return bool(self._calls)

    def calls(self) -> list[ToolCall]:
        return [ToolCall(*self._calls[i]) for i in sorted(self._calls)]


def arguments_object(call: ToolCall) -> dict[str, Any]:
    """A call's arguments as the JSON object Ollama's API carries; ``ValueError`` when they are not one."""
    try:
        value = json.loads(call.arguments or "{}")
    except json.JSONDecodeError:
        raise ValueError(f"the model called {call.name!r} with arguments that are not JSON: {call.arguments[:200]!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"the model called {call.name!r} with arguments that are not a JSON object: {call.arguments[:200]!r}")
    return value
