"""What a long-running service does with the heap it built at start: take it out of the garbage collector's sweeps.

A full (generation 2) collection walks every object the process holds; with the start-up objects in
it (models, tables, imported modules: ~80k in the gateway with its in-process router) one took up to
36 ms, stopping the event loop and every stream with it, several times a minute under agent traffic
(bench/agents_bench.py). ``gc.freeze()`` after start moves those objects to a generation no sweep
visits: the same sweeps then take under 1 ms. Objects made later are collected as before.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["freeze_startup_heap"]

logger = logging.getLogger(__name__)


def freeze_startup_heap() -> None:
    gc.collect()
    gc.freeze()
    logger.debug("%d start-up objects frozen out of garbage collection", gc.get_freeze_count())
