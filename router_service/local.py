"""The router as a plug-in of ``gateway-service up``: both services in one process, for local use.

The gateway never imports the router: it finds this function through the
``routestack.local_router`` entry point (pyproject.toml), so a gateway-only
install simply has none to find.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from .config import load_settings
from .server import build_router

__all__ = ["local_router"]


@asynccontextmanager
async def local_router(config_file: Path | None) -> AsyncIterator[str]:
    """Start the router configured by ``config_file`` (or ROUTER_* / ROUTER_CONFIG); yield the address to call."""
    settings = load_settings(config_file)
    router = await build_router(settings)
    try:
        yield f"127.0.0.1:{router.port}"
    finally:
        await router.stop()
