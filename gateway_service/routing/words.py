"""The user's words: what the router scores for a turn, with the client's own boilerplate set aside.

Agents wrap what the user typed. Claude Code puts ``<system-reminder>`` blocks into user turns (and into tool
results); Codex sends its AGENTS.md instructions and an ``<environment_context>`` as user messages of their own
before the prompt; Open WebUI wraps a question asked over attached files or a web search in its RAG template
(``### Task: Respond to the user query using the provided context ... <user_query>...</user_query>``). Routed as
they come, every turn of a session looks alike (and Open WebUI's RAG questions look like its background tasks).
So the routed text is the last user message that still holds words once the client's wrappers are set aside;
each wrapper set aside is named, for the access line and the capture record.

Only whole, well-formed wrappers are set aside, by the patterns below (each tested on every recorded request of
its client): a user who types a tag of their own loses nothing but that tag's well-formed span. A request whose
user messages are boilerplate only is routed on them as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..domain import ChatParams

__all__ = ["ROUTED_HEAD", "ROUTED_TAIL", "SYSTEM_HEAD", "RoutedText", "users_words"]

ROUTED_HEAD = 24_000  # characters of a long user message the router is sent from its start (its rules read 20k) ...
ROUTED_TAIL = 4_000  # ... and from its end: a pasted log is routed on its ask, never refused for its size
SYSTEM_HEAD = 2_000  # characters of the system instruction sent along (the background-task detector reads it)

# Spans inside a user message's text: set aside, the rest kept (found with str.find: linear in the text, where a
# lazy regular expression over many unclosed tags is quadratic).
_SPANS = (
    ("claude-code:system-reminder", "<system-reminder>", "</system-reminder>"),
    ("claude-code:local-command-caveat", "<local-command-caveat>", "</local-command-caveat>"),
)


def _without_spans(text: str, opening: str, closing: str) -> tuple[str, int]:
    """``text`` without each well-formed ``opening ... closing`` span (and the blank after it); how many."""
    kept: list[str] = []
    at = count = 0
    while (start := text.find(opening, at)) >= 0:
        end = text.find(closing, start + len(opening))
        if end < 0:
            break  # no closing after it: none after it either
        kept.append(text[at:start])
        at = end + len(closing)
        while at < len(text) and text[at].isspace():
            at += 1
        count += 1
    kept.append(text[at:])
    return "".join(kept), count


# Whole text parts that are the client's own context: Codex's, one part each (or several joined in one message).
_CODEX_BLOCKS = ("environment_context", "user_instructions", "recommended_plugins", "skills_instructions",
                 "permissions instructions", "collaboration_mode")
_WHOLE = (
    ("codex:agents-md", re.compile(r"\s*# AGENTS\.md instructions for [^\n]*(?:\n\s*<INSTRUCTIONS>.*?</INSTRUCTIONS>)?\s*",
                                   re.DOTALL)),
    *((f"codex:{tag.replace(' ', '-').replace('_', '-')}", re.compile(rf"\s*<{tag}>.*?</{tag}>\s*", re.DOTALL)) for tag in _CODEX_BLOCKS),
)
# Templates around the user's question: the question is what is routed.
_WRAPPED = (
    # Open WebUI's RAG templates, today's ("### Task: Respond to the user query using the provided context") and its
    # older ones ("You are given a user query, some textual context and rules, all inside xml tags"): a <context>
    # block, and the question last in <user_query>
    ("open-webui:rag", re.compile(
        r"\A.*?<context>.*</context>.*<user_query>\s*(?P<words>.*?)\s*</user_query>\s*\Z", re.DOTALL,
    )),
)


@dataclass(frozen=True, slots=True)
class RoutedText:
    """The user's words of the turn being routed, the head of the system instruction, and what was set aside."""

    words: str
    system: str = ""
    set_aside: tuple[str, ...] = ()
    tools: int = 0  # the request's shape, for the router's background-task detector
    max_tokens: int = 0


def _clean(text: str) -> tuple[str, list[str]]:
    """A text's words, and the names of what was set aside."""
    aside: list[str] = []
    while text.strip():  # Codex joins several context blocks in one message: peel them off its start
        for name, whole in _WHOLE:
            found = whole.match(text)
            if found is not None:
                aside.append(name)
                text = text[found.end():]
                break
        else:
            break
    wrapped_at_all = text.rstrip().endswith("</user_query>") and "<context>" in text  # cheap: most text is not
    for name, wrapped in _WRAPPED if wrapped_at_all else ():
        found = wrapped.match(text)
        if found is not None:
            text = found.group("words")
            aside.append(name)
    for name, opening, closing in _SPANS:
        if opening in text:
            text, count = _without_spans(text, opening, closing)
            if count:
                aside.append(name)
    return text.strip(), aside


def _bounded(text: str) -> str:
    if len(text) <= ROUTED_HEAD + ROUTED_TAIL:
        return text
    return f"{text[:ROUTED_HEAD]}\n…\n{text[-ROUTED_TAIL:]}"


def users_words(params: ChatParams) -> RoutedText | None:
    """What the router is asked about for this request; None when it has no user message."""
    users = [m for m in params.messages if m.role == "user"]
    if not users:
        return None
    aside: list[str] = []
    words = ""
    for message in reversed(users):
        words, dropped = _clean(message.content)
        aside += dropped
        if words:
            break
    if not words:  # boilerplate only: route on the last user message as it came
        words, aside = users[-1].content, []
    system = "\n".join(m.content for m in params.messages if m.role in ("system", "developer") and m.content)
    return RoutedText(
        _bounded(words), system[:SYSTEM_HEAD], tuple(dict.fromkeys(aside)), len(params.tools),
        min(params.max_tokens or 0, 2**31 - 1),
    )
