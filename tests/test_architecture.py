"""The shape of the code: two services that share only service_core, and protobuf only at the edges.

routellm_compat composes both (RouteLLM's command and Controller); nothing imports it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("service_core", "router_service", "gateway_service")
# The only modules that may touch the generated protobuf code: servicers, clients, server set-up.
EDGES = {
    "router_service/servicer.py", "router_service/proto.py", "router_service/client.py", "router_service/server.py",
    "gateway_service/apis/grpc.py", "gateway_service/routing/router_client.py", "gateway_service/server.py",
}


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module) for every import in ``path``, relative ones resolved."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield node.lineno, ".".join([*base, node.module] if node.module else base)
            else:
                yield node.lineno, node.module or ""


def edges(package: str) -> list[tuple[str, int, str]]:
    return [
        (str(path.relative_to(ROOT)), line, module)
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, module in imports(path)
    ]


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("gateway_service", ("router_service", "routellm_compat")),
        ("router_service", ("gateway_service", "routellm_compat")),
        ("service_core", ("router_service", "gateway_service", "routing_api", "routellm_compat")),
    ],
)
def test_no_import_crosses_a_service_boundary(package: str, forbidden: tuple[str, ...]) -> None:
    crossing = [
        f"{where}:{line} imports {module}"
        for where, line, module in edges(package)
        if module.split(".")[0] in forbidden
    ]
    assert not crossing, "\n".join(crossing)


def test_the_walk_sees_relative_and_absolute_imports() -> None:
    """The boundary test is only as good as this walk: it must resolve what the packages really write."""
    found = {module for _, _, module in edges("gateway_service")}
    assert {"gateway_service.config", "gateway_service.upstreams", "service_core.settings", "routing_api.gateway.v1"} <= found


def test_protobuf_stays_at_the_edges() -> None:
    inside = [
        f"{where}:{line} imports {module}"
        for package in PACKAGES
        for where, line, module in edges(package)
        if module.split(".")[0] == "routing_api" and where not in EDGES
    ]
    assert not inside, "\n".join(inside)


# The gateway's layers: client APIs and upstream kinds meet only in the domain and the core; the domain is a leaf.
GATEWAY_LAYERS = [
    ("gateway_service.apis", ("gateway_service.upstreams",)),
    ("gateway_service.upstreams", ("gateway_service.apis", "gateway_service.core", "gateway_service.routing",
                                   "gateway_service.accounting")),
    ("gateway_service.domain", ("gateway_service.apis", "gateway_service.upstreams", "gateway_service.core",
                                "gateway_service.routing", "gateway_service.accounting", "gateway_service.config")),
    ("gateway_service.core", ("gateway_service.apis",)),
    ("gateway_service.routing", ("gateway_service.apis", "gateway_service.upstreams")),
    ("gateway_service.accounting", ("gateway_service.apis", "gateway_service.upstreams")),
]


@pytest.mark.parametrize(("layer", "forbidden"), GATEWAY_LAYERS, ids=[layer for layer, _ in GATEWAY_LAYERS])
def test_the_gateway_s_layers_import_only_downwards(layer: str, forbidden: tuple[str, ...]) -> None:
    """apis -> core -> domain <- upstreams: a new client API is a codec, a new upstream kind a module, and neither
    knows the other."""
    crossing = [
        f"{where}:{line} imports {module}"
        for where, line, module in edges("gateway_service")
        if where.startswith(layer.replace(".", "/") + "/") and any(module == f or module.startswith(f + ".") for f in forbidden)
    ]
    assert not crossing, "\n".join(crossing)
