"""`gateway-service serve --workers N`: N processes on the same ports, so every core streams.

Each worker is a whole gateway (HTTP and gRPC listeners, upstream pools, router client)
bound with SO_REUSEPORT, so the kernel spreads new connections over them; nothing is
shared at run time. Limits are split: each worker enforces ceil(limit / N) of
``max_streams``, ``max_streams_per_key`` and ``max_connections``, so the totals hold
while the kernel spreads connections evenly (per key only approximately: one key's
connections may land unevenly). Metrics are summed over the workers (prometheus_client's
multiprocess mode, in a folder the parent makes). The parent only starts, watches and stops
them: SIGTERM or SIGINT is passed on and each worker drains its streams; a worker that dies
stops the rest, and a parent that is killed outright takes its workers with it.

The default is one worker per CPU this process may use: its affinity, capped by a cgroup
CPU quota, since in a container os.cpu_count() is the host's.
"""

from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from service_core.cpus import usable_cpus
from service_core.errors import ConfigError
from service_core.settings import with_section

from .config import GatewaySettings, load_settings

__all__ = ["per_worker", "run_workers", "worker_count"]

logger = logging.getLogger(__name__)


def worker_count(settings: GatewaySettings, flag: int | None) -> int:
    """``--workers``, else ``server.workers``; 0: one per usable CPU, or one where a port is 0 (picked at
    random, so it cannot be shared)."""
    wanted = settings.server.workers if flag is None else flag
    if wanted < 0:
        raise ConfigError(f"--workers {wanted}: give 1 or more, or 0 for one per CPU")
    if wanted:
        return wanted
    if not settings.server.http_port or not settings.server.grpc_port:
        return 1
    return usable_cpus()


def per_worker(settings: GatewaySettings, workers: int) -> GatewaySettings:
    """One worker's share of the limits."""
    limits, server = settings.limits, settings.server
    share = {
        "max_streams": math.ceil(limits.max_streams / workers),
        "max_streams_per_key": math.ceil(limits.max_streams_per_key / workers),
    }
    settings = with_section(settings, "limits", **share)
    return with_section(settings, "server", max_connections=math.ceil(server.max_connections / workers))


def _die_with(parent: int) -> None:
    """SIGTERM this worker (it drains, then exits) when the parent dies, even by SIGKILL, which leaves
    the parent no chance to pass anything on: workers must not serve on alone (Linux; elsewhere a no-op)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before prctl took effect
        sys.exit(0)


def _worker(config_file: Path | None, workers: int, index: int, parent: int) -> None:
    import asyncio

    from .server import serve

    _die_with(parent)
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
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # the operator's own (empty at start, as prometheus_client asks)
        return _run(settings, config_file, workers)
    metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # the workers inherit it
    try:
        return _run(settings, config_file, workers)
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _run(settings: GatewaySettings, config_file: Path | None, workers: int) -> int:
    server = settings.server
    context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no event loop or socket inherited
    children: list[BaseProcess] = [
        context.Process(target=_worker, args=(config_file, workers, i, os.getpid()), name=f"gateway-worker-{i}")
        for i in range(workers)
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
