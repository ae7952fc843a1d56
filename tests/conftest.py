"""Shared fixtures: settings for tests, the real local embedder, a real router on a free port."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from router_service.config import LocalEmbedderSettings, RouterSettings, default_cache_dir

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _no_router_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build settings explicitly; the developer's ROUTER_* variables must not leak in."""
    for name in list(os.environ):
        if name.startswith("ROUTER_"):
            monkeypatch.delenv(name)


def router_settings(**sections: object) -> RouterSettings:
    """Settings on a free port with the local embedder cached where the CLI caches it."""
    values: dict[str, Any] = {"server": {"host": "127.0.0.1", "port": 0, "grace_s": 5}}
    values.update(sections)
    return RouterSettings(**values)


@pytest.fixture(scope="session")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


@pytest.fixture(scope="session")
def local_embedder():
    from router_service.adapters.local_embedder import LocalEmbedder

    return LocalEmbedder(LocalEmbedderSettings(cache_dir=default_cache_dir()))


@pytest.fixture
async def router_app() -> AsyncIterator[object]:
    from router_service.server import build_router

    app = await build_router(router_settings())
    try:
        yield app
    finally:
        await app.stop()


def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
