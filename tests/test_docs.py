"""Docs that cannot drift (#35): README.md and every page of docs/ are checked against the code.

- every TOML block loads through the config classes (another program's file, or a block that says it is a
  fragment, is only parsed);
- every command line names a real entry point, subcommand and flag (the parsers themselves, in process; bench
  modules by their own add_argument lines; make targets in the Makefile);
- every metric name mentioned is one the services export;
- every link between pages resolves, anchors included;
- each message quoted in docs/failure-modes.md is still in the code.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([a-z]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(kind: str) -> list[tuple[Path, str]]:
    return [(page, m.group(2)) for page in PAGES for m in FENCE.finditer(page.read_text()) if m.group(1) == kind]


def _prose(page: Path) -> str:
    return FENCE.sub("", page.read_text())


def test_the_readme_is_a_door_and_every_page_is_linked_from_it() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 400
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, f"README links no {page.name}"


@pytest.mark.parametrize(("page", "block"), _blocks("toml"), ids=lambda v: v.name if isinstance(v, Path) else "")
def test_every_toml_block_loads_through_the_config_classes(page: Path, block: str, tmp_path: Path) -> None:
    tomllib.loads(block)
    first = block.lstrip().splitlines()[0] if block.strip() else ""
    if first.startswith(("# ~/.codex/", "# fragment")):  # another program's file, or a part of a config: parsed only
        return
    from gateway_service.config import load_settings as load_gateway
    from router_service.config import load_settings as load_router

    path = tmp_path / "example.toml"
    path.write_text(block)
    errors = []
    for load in (load_router, load_gateway):
        try:
            load(path)
            return
        except Exception as exc:  # noqa: BLE001 - either service's config may be meant; both refusing fails
            errors.append(f"{load.__module__}: {exc}")
    pytest.fail(f"{page.name}: a TOML block loads as neither service's config:\n" + "\n".join(errors) + f"\n{block}")


def _parsers() -> dict[str, argparse.ArgumentParser]:
    from gateway_service.__main__ import _parser as gateway_parser
    from routellm_compat.server import parser as routellm_parser
    from router_service.__main__ import _parser as router_parser

    return {"router-service": router_parser(), "gateway-service": gateway_parser(), "routestack-routellm": routellm_parser()}


def _options(parser: argparse.ArgumentParser, words: list[str]) -> tuple[argparse.ArgumentParser, set[str]]:
    """The (sub)parser the words select, and the flags it takes."""
    for action in parser._actions:  # argparse (stdlib) lists subcommands only here, unchanged since 3.2
        if isinstance(action, argparse._SubParsersAction) and words and words[0] in action.choices:
            return _options(action.choices[words[0]], words[1:])
    flags = {s for a in parser._actions for s in a.option_strings}
    return parser, flags


def _command_lines() -> list[tuple[Path, str]]:
    found = []
    for page, block in _blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                found.append((page, line))
    return found


def test_every_command_line_names_a_real_entry_point_and_flags() -> None:
    parsers = _parsers()
    makefile = (ROOT / "Makefile").read_text()
    checked = 0
    for page, line in _command_lines():
        try:
            words = shlex.split(line)
        except ValueError:
            continue  # a line cut inside a quoted JSON body: its command is on the line before
        for i, word in enumerate(words):
            name = word.rsplit("/", 1)[-1]
            if name in parsers:
                args = [w for w in words[i + 1:] if w not in ("|", "&&", ";")]
                sub, flags = _options(parsers[name], [w for w in args if not w.startswith("-")])
                for flag in (w.split("=", 1)[0] for w in args if w.startswith("--")):
                    assert flag in flags, f"{page.name}: `{line}`: {name} {sub.prog} has no {flag}"
                checked += 1
            elif word == "-m" and i + 1 < len(words) and words[i + 1].startswith(("bench", "gateway_service", "router_service")):
                module = words[i + 1]
                assert importlib.util.find_spec(module) is not None, f"{page.name}: `{line}`: no module {module}"
                if module.startswith("bench"):
                    source = Path(importlib.util.find_spec(module).origin or "").read_text()  # type: ignore[union-attr]
                    for flag in (w.split("=", 1)[0] for w in words[i + 2:] if w.startswith("--")):
                        assert f'"{flag}"' in source, f"{page.name}: `{line}`: {module} takes no {flag}"
                checked += 1
            elif word == "make" and i + 1 < len(words) and not words[i + 1].startswith("-"):
                target = words[i + 1]
                assert re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE), f"{page.name}: no make {target}"
                checked += 1
    assert checked >= 15


def _exported_metrics() -> set[str]:
    from gateway_service.metrics import GatewayMetrics
    from router_service.metrics import RouterMetrics

    names = set()
    for registry in (GatewayMetrics().registry, RouterMetrics(set(), set()).registry):
        for family in registry.collect():
            names.add(family.name)
            names.update(f"{family.name}{suffix}" for suffix in ("_total", "_bucket", "_count", "_sum", "_created"))
    return names


NOT_METRICS = {"router_service", "gateway_service", "router_pb2", "router_bench", "gateway_bench", "router_client",
               "router_settings", "router_app"}


def test_every_metric_named_in_the_docs_is_exported() -> None:
    exported = _exported_metrics()
    named = {
        (page.name, m.group(1))
        for page in PAGES for m in re.finditer(r"`((?:router|gateway)_[a-z0-9_]+)(?:\{[^`]*\})?`", page.read_text())
        if m.group(1) not in NOT_METRICS
    }
    missing = sorted((page, name) for page, name in named if name not in exported)
    assert len(named) >= 15 and not missing, missing


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", _prose(page), re.MULTILINE)}


def test_every_link_between_pages_resolves() -> None:
    checked = 0
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page)):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            assert resolved.exists(), f"{page.name}: link to {target}: no such file"
            if anchor:
                assert resolved.suffix == ".md" and anchor in _anchors(resolved), f"{page.name}: {target}: no such heading"
            checked += 1
    assert checked >= 15


def test_the_failure_modes_quote_the_code() -> None:
    page = (ROOT / "docs" / "failure-modes.md").read_text()
    source = "".join(p.read_text() for folder in ("gateway_service", "router_service", "service_core", "routellm_compat")
                     for p in (ROOT / folder).rglob("*.py"))
    rows = [line.split("|")[1] for line in page.splitlines() if line.startswith("| `")]
    quoted = [piece for row in rows for piece in re.findall(r"`([^`]+)`", row)]
    assert len(rows) >= 10
    missing = [piece for piece in quoted if piece not in source]
    assert not missing, missing


@pytest.mark.parametrize(("page", "block"), _blocks("python"), ids=lambda v: v.name if isinstance(v, Path) else "")
def test_every_python_snippet_parses_and_its_imports_resolve(page: Path, block: str) -> None:
    """Run against a live stack they cannot be here; what they import and how they are written can."""
    import ast

    tree = ast.parse(block)
    modules: list[tuple[str, str | None]]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules = [(node.module, alias.name) for alias in node.names]
        else:
            continue
        for module, name in modules:
            imported = importlib.import_module(module)
            assert name is None or hasattr(imported, name), f"{page.name}: {module} has no {name}"
