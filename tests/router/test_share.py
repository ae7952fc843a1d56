"""Live share control: the strong share asked for holds while the traffic drifts (issue #18)."""

from __future__ import annotations

import random

import numpy as np

from router_service.config import RouterSettings
from router_service.domain import RouteQuery
from router_service.engine import open_engine
from router_service.share import LiveShare
from router_service.training.data import read_jsonl
from tests.conftest import SHARED_DATA

WINDOW = 200


def drifting_stream(n: int = 2000, seed: int = 0) -> list[str]:
    """From easy prompts to hard ones (shared training data): the chance of a hard one rises from 0 to 1.

    The bundled static scorer's offline 50% threshold sends ~30% of the easy set strong and ~80% of the hard one."""
    easy = list(dict.fromkeys(r["prompt"] for r in read_jsonl(SHARED_DATA / "train" / "llmrouter_dcrouter_scores.jsonl.gz")))
    hard = list(dict.fromkeys(r["prompt"] for r in read_jsonl(SHARED_DATA / "train" / "routerdc_model7_scores.jsonl.gz")))
    rng = random.Random(seed)
    return [rng.choice(hard if rng.random() < i / n else easy) for i in range(n)]


async def realised_shares(live: bool, stream: list[str]) -> tuple[list[float], dict[str, float], int]:
    settings = RouterSettings(
        embedder={"backend": "static", "cache_size": 0},
        routing={"live_share": live, "live_window": WINDOW, "live_warmup": WINDOW},
    )
    async with open_engine(settings) as engine:
        strong = [(await engine.route([RouteQuery(prompt=p, strong_share=0.5)]))[0].routed_strong for p in stream]
        scorer = engine.describe().scorers[0]
    shares = [float(np.mean(strong[i : i + WINDOW])) for i in range(WINDOW, len(stream), WINDOW)]
    return shares, scorer.live_thresholds, scorer.live_samples


async def test_the_share_holds_on_drifting_traffic_and_drifts_without_live_control() -> None:
    stream = drifting_stream()
    fixed, no_live, _ = await realised_shares(False, stream)
    held, live_thresholds, samples = await realised_shares(True, stream)
    # After the warm-up, every window of 200 calls is within 5 points of the 50% asked for ...
    assert all(abs(share - 0.5) <= 0.05 for share in held), held
    # ... while the calibrated threshold alone drifts with the traffic.
    assert max(fixed) - 0.5 > 0.10 and fixed[-1] > held[-1], fixed
    assert no_live == {} and samples == WINDOW and set(live_thresholds) >= {"50", "20", "80"}


def test_warm_up_uses_the_calibrated_threshold_then_the_recent_quantile() -> None:
    live = LiveShare(window=100, warmup=10)
    assert live.threshold(0.5) is None  # too few prompts yet: the caller uses the calibrated one
    for score in np.linspace(0.0, 1.0, 100):
        live.observe(float(score))
    assert live.threshold(0.2) == np.quantile(np.linspace(0, 1, 100), 0.8, method="higher")
    assert (live.threshold(0.0), live.threshold(1.0)) == (1.0, 0.0)
    for _ in range(5):
        live.routed("20", True)  # this policy has just sent everything strong ...
    assert (live.threshold(0.2) or 0) > np.quantile(np.linspace(0, 1, 100), 0.8)  # ... so it tightens


async def test_a_restart_starts_from_the_calibrated_threshold() -> None:
    async with open_engine(RouterSettings(embedder={"backend": "static"})) as engine:
        scorer = engine.describe().scorers[0]
        calibrated = engine.policy.scorers[scorer.name].threshold_for_share(0.5)
        (decision,) = await engine.route([RouteQuery(prompt="hi", strong_share=0.5)])
    assert scorer.live_samples == 0 and scorer.live_thresholds == {}
    assert decision.threshold == calibrated
