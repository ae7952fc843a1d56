"""The short CI version of bench/soak.py: a fixed time of concurrent streams with random upstream faults."""

from __future__ import annotations

from bench.soak import run_soak

MEMORY_GROWTH_BOUND_MB = 50


def test_short_soak_with_random_faults() -> None:
    result = run_soak(seconds=8, concurrency=100, chaos=0.05)
    allowed = {"ok", "ok (fallback)", "terminal error event", "http 502"}
    assert result.requests > 200
    assert set(result.outcomes) <= allowed, result.outcomes  # never truncated silently, never a client error
    assert result.outcomes["ok"] + result.outcomes["ok (fallback)"] > 0.8 * result.requests
    assert result.rss_end_mb - result.rss_start_mb < MEMORY_GROWTH_BOUND_MB, result.summary()
