"""`gateway-service serve --workers N`: N processes on the same ports, so every core streams.

Each worker is a whole gateway (HTTP and gRPC listeners, upstream pools, router client)
bound with SO_REUSEPORT, so the kernel spreads new connections over them; nothing is
shared at run time. Limits are split: each worker enforces ceil(limit / N) of
``max_streams``, ``max_streams_per_key`` and ``max_connections``, so the totals hold
while the kernel spreads connections evenly (per key only approximately: one key's
connections may land unevenly); a refusal names the configured limit and the share. Metrics
are summed over the workers (prometheus_client's multiprocess mode, in a folder the parent
makes).

The parent supervises: the first worker must come up before the others start (a config
error is then one line and exit 2, not a traceback per worker); a worker that exits or is
killed is restarted with a back-off (1 s, doubling to 30 s; reset after a minute up), the
others serving meanwhile; a worker whose heartbeat stops for ``server.worker_hang_s`` (a
stuck event loop, a SIGSTOP) is killed, so the kernel stops handing it connections, and
restarted. SIGTERM or SIGINT is passed on and each worker drains its streams; a parent that
is killed outright takes its workers with it.

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
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from types import FrameType

from prometheus_client import multiprocess

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
    """One worker's share of the connection limit (its stream limits are shared by ``Admission``, which
    knows both the share and the configured total, and names both when it refuses)."""
    server = settings.server
    return with_section(settings, "server", max_connections=math.ceil(server.max_connections / workers))


def _die_with(parent: int) -> None:
    """SIGTERM this worker (it drains, then exits) when the parent dies, even by SIGKILL, which leaves
    the parent no chance to pass anything on: workers must not serve on alone (Linux; elsewhere a no-op)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before prctl took effect
        sys.exit(0)


def _worker(config_file: Path | None, workers: int, index: int, parent: int, heartbeat: Synchronized[float]) -> None:
    import asyncio

    from .server import serve

    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C during start-up: the parent passes it on as SIGTERM
    try:
        settings = per_worker(load_settings(config_file), workers)
        name = Path(settings.capture.file_name)  # one capture file per worker: rotation is per process
        settings = with_section(settings, "capture", file_name=f"{name.stem}.w{index}{name.suffix}")
        logging.basicConfig(
            level=settings.server.log_level, stream=sys.stderr,
            format=f"%(asctime)s %(levelname)s [worker {index}] %(name)s: %(message)s",
        )
        logging.getLogger("httpx").setLevel(logging.WARNING)

        def beat() -> None:
            heartbeat.value = time.monotonic()

        asyncio.run(serve(settings, reuse_port=True, workers=workers, heartbeat=beat))
    except ConfigError as exc:  # one line, as the single process says it; the parent stops at the first
        print(f"gateway-service: error: {exc}", file=sys.stderr)
        sys.exit(2)


def run_workers(settings: GatewaySettings, config_file: Path | None, workers: int) -> int:
    """Start ``workers`` gateway processes on the configured ports; return when they have all stopped."""
    server = settings.server
    if not server.http_port or not server.grpc_port:
        raise ConfigError("server.workers > 1 needs fixed ports: set server.http_port and server.grpc_port (not 0)")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # the operator's own (empty at start, as prometheus_client asks)
        return _Supervisor(settings, config_file, workers).run()
    metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # the workers inherit it
    try:
        return _Supervisor(settings, config_file, workers).run()
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(metrics_dir, ignore_errors=True)


BACKOFF_S, BACKOFF_MAX_S, HEALTHY_S = 1.0, 30.0, 60.0


class _Slot:
    """One worker position: its current process, heartbeat and restart back-off."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: BaseProcess | None = None
        self.heartbeat: Synchronized[float] | None = None
        self.started = 0.0
        self.backoff = BACKOFF_S
        self.restart_at: float | None = None
        self.announced = False  # its first heartbeat has been logged

    @property
    def ready(self) -> bool:
        return self.heartbeat is not None and self.heartbeat.value > 0

    def describe(self) -> str:
        assert self.process is not None
        code = self.process.exitcode
        how = f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exited with code {code}"
        return f"worker {self.index} (pid {self.process.pid}) {how}"


class _Supervisor:
    def __init__(self, settings: GatewaySettings, config_file: Path | None, workers: int) -> None:
        self._settings = settings
        self._config_file = config_file
        self._workers = workers
        self._context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no loop or socket inherited
        self._slots = [_Slot(i) for i in range(workers)]
        self._stopping = False
        self._kill_at = math.inf  # once stopping: a worker still alive past the grace (and a margin) will not drain

    def _start(self, slot: _Slot) -> None:
        slot.heartbeat = self._context.Value("d", 0.0, lock=False)
        slot.process = self._context.Process(
            target=_worker, args=(self._config_file, self._workers, slot.index, os.getpid(), slot.heartbeat),
            name=f"gateway-worker-{slot.index}",
        )
        slot.process.start()
        slot.started, slot.restart_at, slot.announced = time.monotonic(), None, False

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping:
            self._stopping = True
            self._kill_at = time.monotonic() + self._settings.server.grace_s + 10
            logger.info("stopping %d workers (they drain their streams for up to %gs)", self._workers,
                        self._settings.server.grace_s)
            for slot in self._slots:
                if slot.process is not None and slot.process.is_alive():
                    slot.process.terminate()  # SIGTERM: the worker drains, then exits

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        first = self._slots[0]
        self._start(first)  # the first alone: a config error is its one line, then exit 2
        assert first.process is not None
        while not first.ready and first.process.is_alive() and not self._stopping:
            time.sleep(0.05)
        if not first.ready:
            first.process.join()
            if self._stopping:
                return 0
            logger.error("%s before it served; not starting the others", first.describe())
            return 2 if first.process.exitcode == 2 else 1
        first.announced = True
        logger.info("worker 0 (pid %s) serving; starting the others", first.process.pid)
        for slot in self._slots[1:]:
            self._start(slot)
        server = self._settings.server
        logger.info(
            "gateway: %d workers on http://%s:%d/v1 and gRPC %s:%d, limits split among them (pids %s)",
            self._workers, server.host, server.http_port, server.host, server.grpc_port,
            [s.process.pid for s in self._slots if s.process is not None],
        )
        while True:
            alive = [s for s in self._slots if s.process is not None and s.process.is_alive()]
            if self._stopping and not alive:
                return 0
            for slot in self._slots:
                self._watch(slot)
            time.sleep(0.2)

    def _watch(self, slot: _Slot) -> None:
        process, now = slot.process, time.monotonic()
        assert process is not None
        if self._stopping:
            if process.is_alive() and now > self._kill_at:
                process.kill()  # a stopped (SIGSTOP) worker cannot drain
            return
        if process.is_alive() and slot.ready and not slot.announced:
            slot.announced = True
            logger.info("worker %d (pid %s) serving", slot.index, process.pid)
        if process.is_alive():
            hang_s = self._settings.server.worker_hang_s
            if slot.ready and slot.heartbeat is not None and now - slot.heartbeat.value > hang_s:
                logger.error(
                    "worker %d (pid %s) has given no heartbeat for %gs (server.worker_hang_s): a stuck event loop or "
                    "a stopped process; killing it, so no more connections go to it, and starting another",
                    slot.index, process.pid, hang_s,
                )
                process.kill()
                process.join(5)
            else:
                return
        if slot.restart_at is None:
            multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]  # its live gauges go
            if now - slot.started > HEALTHY_S:
                slot.backoff = BACKOFF_S
            slot.restart_at = now + slot.backoff
            logger.error("%s; the others serve on; starting another in %gs", slot.describe(), slot.backoff)
            slot.backoff = min(slot.backoff * 2, BACKOFF_MAX_S)
        elif now >= slot.restart_at:
            self._start(slot)
            logger.info("worker %d restarted (pid %s)", slot.index, slot.process.pid if slot.process else None)
