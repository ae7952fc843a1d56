"""Gateway rules: routed requests decided by what only the gateway sees, before the router is asked.

The router's rules match the prompt; these match the request around it: a small ``max_tokens``
(a title or a tag rarely needs more than a few dozen tokens), a header a client or a proxy sets,
OpenAI's ``metadata``. The first rule whose every condition holds names the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import RuleSettings
from ..domain import ChatParams

__all__ = ["GatewayRules"]


def _wanted(spec: str, sep: str) -> tuple[str, str | None]:
    name, _, value = spec.partition(sep)
    return name.strip().lower(), (value.strip().lower() if value.strip() else None)


class GatewayRules:
    def __init__(self, rules: tuple[RuleSettings, ...]) -> None:
        self._rules = rules

    def match(self, params: ChatParams, headers: Mapping[str, str]) -> RuleSettings | None:
        for rule in self._rules:
            if self._holds(rule, params, headers):
                return rule
        return None

    @staticmethod
    def _holds(rule: RuleSettings, params: ChatParams, headers: Mapping[str, str]) -> bool:
        if rule.max_tokens_below is not None and not (params.max_tokens and params.max_tokens < rule.max_tokens_below):
            return False
        if rule.header is not None:
            name, value = _wanted(rule.header, ":")
            given = headers.get(name)
            if given is None or (value is not None and given.strip().lower() != value):
                return False
        if rule.metadata is not None:
            key, value = _wanted(rule.metadata, "=")
            metadata: Any = params.metadata
            given_value = metadata.get(key) if isinstance(metadata, dict) else None
            if given_value is None or (value is not None and str(given_value).strip().lower() != value):
                return False
        return True
