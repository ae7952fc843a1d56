"""The router as a plug-in of ``gateway-service up``: both services in one process, for local use.

The gateway never imports the router: it finds this function through the
``routestack.local_router`` entry point (pyproject.toml), so a gateway-only
install simply has none to find.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from .config import load_settings
from .server import build_router, reload_on_hangup

__all__ = ["local_router"]


@asynccontextmanager
async def local_router(config_file: Path | None) -> AsyncIterator[tuple[str, Callable[[], Awaitable[None]]]]:
    """Start the router configured by ``config_file`` (or ROUTER_* / ROUTER_CONFIG); yield the address to call,
    and what SIGHUP does (re-read the config's [[scorers]], as the router's own ``serve`` does)."""
    settings = load_settings(config_file)
    router = await build_router(settings)
    try:
        yield f"127.0.0.1:{router.port}", lambda: reload_on_hangup(router, lambda: load_settings(config_file))
    finally:
        await router.stop()
