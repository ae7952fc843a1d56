"""Rules before the scorer: prompts that are what they look like, decided without embedding them.

A chat client sends, beside each user turn, its own background tasks: a title for the sidebar,
tags, follow-up suggestions, search queries, autocompletion, language or topic detection. They
are templated instructions wrapped around the chat, so the scorer sees a long, structured,
demanding-looking prompt and sends most of them strong (Open WebUI's scored 0.78-0.85 against a
threshold of 0.49), though a small model does them as well. The built-in ``client-utility`` rule
(on by default: ``routing.utility_rule``) sends them weak; ``[[routing.rules]]`` adds your own:
a regular expression on the routed text (the last user message) and the tier it goes to.

The built-in patterns were written from what clients' templates ask for (a title, tags, follow-up
questions, search queries, a completion of the text before a cursor, the language or topic of a
text), in several clients' wordings, never from the evaluation or sanity sets; a test checks they
match none of those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config import RoutingSettings

__all__ = ["UTILITY", "Rule", "Rules"]

_CHAT = r"(?:conversation|chat|dialog(?:ue)?|discussion|thread|messages?|exchange|session|chat history|transcript)"
_TALK = r"(?:conversation|chat|dialog(?:ue)?|discussion|thread|chat history|transcript)"  # not "message": a MAC tag
UTILITY = (
    r"^\s*#{2,3}\s*task\s*:",  # Open WebUI's task template
    r"<chat_history>|</chat_history>",
    rf"\b(?:generate|create|write|suggest|give|provide|produce|come up with|make)\b[^.\n]{{0,60}}\b(?:title|headline|name|heading|subject line)s?\b[^.\n]{{0,80}}\b{_CHAT}\b",
    rf"\b(?:title|name)\s+(?:for\s+)?(?:this|the|our)\s+{_CHAT}\b",
    rf"\b{_TALK}\b[^\n]{{0,120}}\b(?:title|headline)\b|\b(?:title|headline)\b[^\n]{{0,120}}\b{_TALK}\b",
    rf"\bsummari[sz]e\b[^.\n]{{0,40}}\b{_CHAT}\b[^.\n]{{0,60}}\b(?:title|\d+|one|two|three|four|five|few)\s*(?:-|\s)?words?\b",
    rf"\b(?:generate|create|suggest|extract|assign|pick|choose|produce)\b[^.\n]{{0,50}}\b(?:tags|keywords|categor(?:y|ies)|labels|topics)\b[^.\n]{{0,80}}\b{_TALK}\b",
    r"\b(?:suggest|generate|propose|create|write|provide|produce|list)\b[^.\n]{0,50}\bfollow[- ]?up\s+(?:questions?|prompts?|suggestions?|queries)\b",
    r"\b(?:generate|create|write|produce|formulate|suggest)\b[^.\n]{0,50}\b(?:search|web|google|retrieval|rag)\s+(?:quer(?:y|ies)|terms?|keywords)\b",
    r"\bautocomplet(?:e|ion)\b[^\n]{0,120}\b(?:text|sentence|input|query|prompt|typ(?:ed|ing))\b",
    r"<\|?fim_(?:prefix|suffix|middle)\|?>|<(?:PRE|SUF|MID)>",
    r"\b(?:detect|identify|determine|classify)\b[^.\n]{0,40}\b(?:the\s+)?language\s+(?:of|used in|this)\b",
    r"\b(?:classify|categori[sz]e|detect|identify|determine)\b[^.\n]{0,40}\b(?:the\s+)?(?:topic|intent|category)\s+of\s+(?:this|the|following)\b",
)


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    tier: str  # "weak" or "strong"


class Rules:
    """The configured rules, then the built-in one; the first that matches decides."""

    def __init__(self, routing: RoutingSettings) -> None:
        rules = [Rule(r.name, re.compile(r.pattern, re.IGNORECASE | re.MULTILINE), r.tier) for r in routing.rules]
        if routing.utility_rule:
            rules.append(Rule("client-utility", re.compile("|".join(f"(?:{p})" for p in UTILITY), re.IGNORECASE | re.MULTILINE), "weak"))
        self._rules = tuple(rules)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(rule.name for rule in self._rules)

    def match(self, text: str) -> Rule | None:
        head = text[:20_000]  # templates put their instruction first or last; a huge prompt's middle is the chat
        tail = text[-4_000:] if len(text) > 20_000 else ""
        for rule in self._rules:
            if rule.pattern.search(head) or (tail and rule.pattern.search(tail)):
                return rule
        return None
