"""`gateway-service serve --workers N`: N processes on the same ports, so every core streams.

Each worker is a whole gateway (HTTP and gRPC listeners, upstream pools, router client)
bound with SO_REUSEPORT, so the kernel spreads new connections over them; nothing is
shared at run time. Limits are split: each worker enforces ceil(limit / N) of
``max_streams``, ``max_streams_per_key`` and ``max_connections``, so the totals hold
while the kernel spreads connections evenly (per key only approximately: one key's
connections may land unevenly). The parent only starts, watches and stops them: SIGTERM
or SIGINT is passed on and each worker drains its streams; a worker that dies stops the rest.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
import sys
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from service_core.errors import ConfigError
from service_core.settings import with_section

from .config import GatewaySettings, load_settings

__all__ = ["per_worker", "run_workers", "worker_count"]

logger = logging.getLogger(__name__)


def worker_count(settings: GatewaySettings, flag: int | None) -> int:
    wanted = settings.server.workers if flag is None else flag
    if wanted < 0:
        raise ConfigError(f"--workers {wanted}: give 1 or more, or 0 for one per core")
    return wanted or os.cpu_count() or 1


def per_worker(settings: GatewaySettings, workers: int) -> GatewaySettings:
    """One worker's share of the limits."""
    limits, server = settings.limits, settings.server
    share = {
        "max_streams": math.ceil(limits.max_streams / workers),
        "max_streams_per_key": math.ceil(limits.max_streams_per_key / workers),
    }
    settings = with_section(settings, "limits", **share)
    return with_section(settings, "server", max_connections=math.ceil(server.max_connections / workers))


def _worker(config_file: Path | None, workers: int, index: int) -> None:
    import asyncio

    from .server import serve

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C during start-up: the parent passes it on as SIGTERM
    settings = per_worker(load_settings(config_file), workers)
    name = Path(settings.capture.file_name)  # one capture file per worker: rotation is per process
    settings = with_section(settings, "capture", file_name=f"{name.stem}.w{index}{name.suffix}")
    logging.basicConfig(
        level=settings.server.log_level, stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s [worker {index}] %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(serve(settings, reuse_port=True))


def run_workers(settings: GatewaySettings, config_file: Path | None, workers: int) -> int:
    """Start ``workers`` gateway processes on the configured ports; return when they have all stopped."""
    server = settings.server
    if not server.http_port or not server.grpc_port:
        raise ConfigError("server.workers > 1 needs fixed ports: set server.http_port and server.grpc_port (not 0)")
    context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no event loop or socket inherited
    children: list[BaseProcess] = [
        context.Process(target=_worker, args=(config_file, workers, i), name=f"gateway-worker-{i}") for i in range(workers)
    ]
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            logger.info("stopping %d workers (they drain their streams for up to %gs)", workers, server.grace_s)
            for child in children:
                if child.is_alive():
                    child.terminate()  # SIGTERM: the worker drains, then exits

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        child.start()
    logger.info(
        "gateway: %d workers on http://%s:%d/v1 and gRPC %s:%d, limits split among them (pids %s)",
        workers, server.host, server.http_port, server.host, server.grpc_port, [c.pid for c in children],
    )
    failed = False
    while any(child.is_alive() for child in children):
        for child in children:
            child.join(0.2)
            if not child.is_alive() and child.exitcode not in (0, None) and not stopping:
                logger.error("%s exited with code %s; stopping the others", child.name, child.exitcode)
                failed = True
                stop(signal.SIGTERM, None)
        time.sleep(0.05)
    return 1 if failed else 0
