"""What a request's ``model`` means: a served model, ``router``, a policy alias, or ``router-mf-<threshold>``."""

from __future__ import annotations

from fnmatch import fnmatchcase

from ..config import ROUTELLM_SPEC, GatewaySettings
from ..domain import ModelSpec
from ..errors import InvalidRequest, ModelNotFound

__all__ = ["ModelCatalog"]


class ModelCatalog:
    def __init__(self, settings: GatewaySettings) -> None:
        self._served = {model: u.name for u in settings.upstreams for model in u.models}  # model -> upstream name
        self._policies = {p.name: p for p in settings.policies}
        self._aliases = tuple((a.name, a.model) for a in settings.model_aliases)

    def upstream_of(self, model: str) -> str | None:
        return self._served.get(model)

    def listing(self) -> list[tuple[str, str, str]]:
        """(id, owned_by, description) for /v1/models and ListModels."""
        out = [("router", "router", "the router's default policy")]
        out += [(p.name, "router", p.description or "router policy") for p in self._policies.values()]
        out += [(model, upstream, "") for model, upstream in self._served.items()]
        return out

    def resolve(self, model: str) -> ModelSpec:
        spec = self._resolve(model)
        if spec is not None:
            return spec
        for pattern, target in self._aliases:  # names clients send that nothing here is called
            if fnmatchcase(model, pattern):
                aliased = self._resolve(target)
                if aliased is not None:
                    return aliased
        known = ", ".join([*sorted(self._served), "router", *self._policies])
        raise ModelNotFound(
            f"model {model!r} is not served here; available: {known} (or map the name in [[model_aliases]])"
        )

    def _resolve(self, model: str) -> ModelSpec | None:
        if not model:
            raise InvalidRequest("model is required: a served model or a router spec such as 'router-mf-50'")
        if model in self._served:
            return ModelSpec(model, concrete=True)
        if model == "router":
            return ModelSpec(model, concrete=False)
        if model in self._policies:
            policy = self._policies[model]
            return ModelSpec(model, False, threshold=policy.threshold, strong_share=policy.strong_share)
        match = ROUTELLM_SPEC.match(model)
        if match:
            threshold = float(match["threshold"])
            if not 0.0 <= threshold <= 1.0:
                aliases = ", ".join(sorted(self._policies)) or "none configured"
                raise InvalidRequest(
                    f"model {model!r}: router-mf-<threshold> takes RouteLLM's threshold within [0, 1] (e.g. "
                    f"router-mf-0.11593); for a share of strong calls use a configured alias ({aliases}), or add "
                    "one under [[policies]]"
                )
            return ModelSpec(model, False, threshold=threshold)
        return None
