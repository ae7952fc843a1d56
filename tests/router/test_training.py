"""The scorer pipeline: metrics, data loading, and train -> calibrate -> eval on a slice of the real data."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from router_service.training.data import ANCHOR, HeldOut, load_battles, mean_correctness
from router_service.training.metrics import routing_curve, thresholds_for_shares
from tests.conftest import ROOT, SHARED_DATA


def test_apgr_of_oracle_random_and_reversed_routers() -> None:
    rng = np.random.default_rng(0)
    gain = rng.choice([1.0, -1.0, 0.0], size=2000, p=[0.2, 0.05, 0.75])
    oracle = routing_curve(gain + rng.random(2000) * 1e-3, gain)
    reversed_ = routing_curve(-gain + rng.random(2000) * 1e-3, gain)
    random = np.mean([routing_curve(rng.random(2000), gain).apgr for _ in range(50)])
    assert oracle.apgr > 1.0 > 0.0 > reversed_.apgr  # over 1: the weak-only wins are routed last
    assert random == pytest.approx(0.5, abs=0.03)
    assert oracle.cpt(0.5) < 0.2 and oracle.cpt(1.0) <= 0.21
    assert routing_curve(np.zeros(10), np.ones(10)).shares.tolist() == [0.0, 1.0]  # ties route together


def test_thresholds_give_the_share_they_promise() -> None:
    scores = np.random.default_rng(1).random(10_000)
    for share, threshold in thresholds_for_shares(scores, np.array([0.1, 0.5, 0.9])).items():
        assert np.mean(scores >= threshold) == pytest.approx(float(share), abs=0.002)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with gzip.open(path, "wt") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")


def test_battles_from_pairwise_and_score_files(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "pairs.jsonl.gz", [
        {"prompt": "p1", "model_a": "gpt4_1106_preview", "model_b": "Mixtral-8x7B-Instruct-v0.1", "winner": "model_a", "p_a": 0.8},
        {"prompt": "p2", "model_a": "x", "model_b": "y", "winner": "tie", "p_a": 0.5},
    ])
    write_jsonl(tmp_path / "scores.jsonl.gz", [{"prompt": "p3", "scores": {"a": 1.0, "b": 0.0, "c": 1.0, "d": None}}])
    files = sorted(tmp_path.glob("*.gz"))
    battles = load_battles(files)
    pairs = {
        (battles.models[a], battles.models[b], round(float(p), 3))
        for a, b, p in zip(battles.model_a, battles.model_b, battles.p_a, strict=True)
    }
    assert pairs == {
        ("gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1", 0.8),  # aliases unified
        ("x", "y", 0.5),
        ("a", "b", 1.0),  # decisive score pairs only; a-c is a tie, d was not evaluated
        ("b", "c", 0.0),
    }
    assert len(load_battles(files, keep_ties=False)) == 3
    anchored = load_battles(files, anchored=True)
    assert sum(anchored.models[b] == ANCHOR for b in anchored.model_b) == 3


def test_held_out_prompts_never_reach_training_even_reformatted(tmp_path: Path) -> None:
    eval_question = "Find the degree of Q(sqrt(2), sqrt(3)) over Q.\nA. 2\nB. 4\nAnswer:"
    write_jsonl(tmp_path / "pairs.jsonl.gz", [
        {"prompt": "FIND the degree of Q(sqrt(2),  sqrt(3)) over Q?  A) 2  B) 4  Answer", "model_a": "a", "model_b": "b",
         "winner": "model_a", "p_a": 1.0},
        {"prompt": "Write a poem.", "model_a": "a", "model_b": "b", "winner": "model_b", "p_a": 0.0},
    ])
    write_jsonl(tmp_path / "scores.jsonl.gz", [
        {"prompt": eval_question, "scores": {"a": 1.0, "b": 0.0}},
        {"prompt": "What is 7 x 6?", "scores": {"a": 1.0, "b": 1.0}},
    ])
    files = sorted(tmp_path.glob("*.gz"))
    held_out = HeldOut([eval_question])
    battles = load_battles(files, held_out=held_out)
    assert battles.prompts == ["Write a poem."] and held_out.dropped == 2
    prompts, accuracy = mean_correctness(files, skip=held_out)
    assert prompts == ["What is 7 x 6?"] and accuracy.tolist() == [1.0]


@pytest.fixture(scope="module")
def data_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first lines of every shared data file: real data, small enough for CI."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: CI and developers have ../shared beside the project")
    root = tmp_path_factory.mktemp("data")
    for source in SHARED_DATA.glob("*/*.jsonl.gz"):
        (root / source.parent.name).mkdir(exist_ok=True)
        with gzip.open(source, "rt") as lines:
            head = list(itertools.islice(lines, 150 if source.parent.name == "train" else 400))
        with gzip.open(root / source.parent.name / source.name, "wt") as out:
            out.writelines(head)
    return root


@pytest.fixture(scope="session")
def embedding_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedding cache for the training CLI tests: each used to embed the same slice again (~400 s of
    the suite); the cache is keyed by text, so sharing it changes no result."""
    return tmp_path_factory.mktemp("embedding-cache")


def cli(*args: str, cache: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    env["XDG_CACHE_HOME"] = str(cache)  # the test's own embedding cache
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "router_service", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_train_calibrate_eval_round_trip(data_slice: Path, tmp_path: Path, embedding_cache: Path) -> None:
    cache, scorer = embedding_cache, tmp_path / "scorer.onnx"
    mf = ("--method", "mf", "--epochs", "2", "--dim", "16")
    trained = cli("train", "--data-dir", str(data_slice), "--out", str(scorer), *mf, cache=cache)
    assert trained.returncode == 0, trained.stderr
    assert "embedding prompts" in trained.stderr  # a progress bar on the long step
    card = json.loads({p.key: p.value for p in onnx.load(str(scorer)).metadata_props}["scorer.training"])
    assert card["method"] == "mf" and card["eval_prompts_dropped"] == 0  # the shared data is decontaminated
    again = tmp_path / "again.onnx"
    cli("train", "--data-dir", str(data_slice), "--out", str(again), *mf, cache=cache)
    # Reproducible from the seed, up to float rounding (BLAS sums may differ in the last bits).
    first, second = onnx.load(str(scorer)), onnx.load(str(again))
    for a, b in zip(first.graph.initializer, second.graph.initializer, strict=True):
        np.testing.assert_allclose(numpy_helper.to_array(a), numpy_helper.to_array(b), rtol=1e-3, atol=1e-5)

    prompts = tmp_path / "traffic.txt"
    prompts.write_text("\n".join(f"Question {i}: what is {i} squared?" for i in range(60)))
    before = scorer.read_bytes()
    calibrated = cli("calibrate", "--prompts", str(prompts), "--scorer", str(scorer), cache=cache, cwd=tmp_path)
    assert calibrated.returncode == 0, calibrated.stderr
    assert "strong share  50%: threshold" in calibrated.stdout
    # Issue #27: it rewrote the scorer in place without a word; now a new file, said, with a warning on 60 prompts.
    written = tmp_path / "scorer-calibrated.onnx"
    assert scorer.read_bytes() == before and written.is_file()
    assert f"wrote {written.name} (thresholds from 60 prompts)" in calibrated.stdout
    assert "60 prompts give each share to within about +/-13 points" in calibrated.stderr
    in_place = cli("calibrate", "--prompts", str(prompts), "--scorer", str(again), "--in-place", cache=cache)
    assert in_place.returncode == 0 and f"wrote {again}" in in_place.stdout and again.read_bytes() != before

    plot = tmp_path / "curve.png"
    evaluated = cli("eval", "--data-dir", str(data_slice), "--scorer", str(scorer), "--plot", str(plot), "--json", cache=cache)
    assert evaluated.returncode == 0, evaluated.stderr
    summary = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert {"apgr", "cpt50", "cpt80"} <= summary.keys()
    assert set(summary["benchmarks"]) == {"routellm_gsm8k", "routellm_mmlu", "routellm_mtbench", "sanity_chat"}
    sanity = summary["benchmarks"]["sanity_chat"]["scorer"]
    assert 0 <= sanity["auc"] <= 1 and 0 <= sanity["weak_share_at_50"] <= 1
    assert "weak@50%" in evaluated.stdout and "sanity_chat" in evaluated.stdout
    assert "random" in evaluated.stdout and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_defaults_to_the_difficulty_scorer(data_slice: Path, tmp_path: Path, embedding_cache: Path) -> None:
    from router_service.adapters.scorer import OnnxScorer

    out = tmp_path / "difficulty.onnx"
    trained = cli("train", "--data-dir", str(data_slice), "--out", str(out), "--no-eval", cache=embedding_cache)
    assert trained.returncode == 0, trained.stderr
    scorer = OnnxScorer("difficulty", out)
    assert scorer.models == ("gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1")
    # Standardised on the training prompts: half of them score above ~0.5.
    assert 0.35 < scorer.threshold_for_share(0.5) < 0.65


def test_calibrate_refuses_too_few_prompts(tmp_path: Path) -> None:
    prompts = tmp_path / "few.txt"
    prompts.write_text("one\ntwo\n")
    result = cli("calibrate", "--prompts", str(prompts), "--out", str(tmp_path / "x.onnx"), cache=tmp_path / "cache")
    assert result.returncode == 2 and "too few to calibrate" in result.stderr


def test_embedding_store_round_trips_every_key(tmp_path: Path) -> None:
    """Keys are raw digests; one that ends in a NUL byte must survive the file (it once did not)."""
    from router_service.training.embeddings import EmbeddingStore, _key

    texts = [f"prompt {i}" for i in range(3000)]
    assert any(_key(t).endswith(b"\0") for t in texts)
    calls: list[int] = []

    def embed(batch: list[str]) -> np.ndarray:
        calls.append(len(batch))
        return np.array([[len(t), sum(map(ord, t))] for t in batch], np.float32)

    first = EmbeddingStore(tmp_path / "cache.npz", embed).get(texts, progress=False)
    again = EmbeddingStore(tmp_path / "cache.npz", embed).get(texts, progress=False)
    assert sum(calls) == len(texts)  # the second store embedded nothing
    np.testing.assert_array_equal(first, again)


def test_training_embeds_many_chunks_through_a_remote_embedder(local_embedder, tmp_path: Path, monkeypatch) -> None:
    """train/calibrate/eval with the openai backend: one event loop for the whole run, not one per
    256-prompt chunk (the second chunk once failed with "Event loop is closed")."""
    from router_service.config import RouterSettings
    from router_service.training.pipeline import embedding_store
    from tests.http_servers import EmbeddingServerState, embedding_app, serve_app_in_thread

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the test's own embedding cache
    state = EmbeddingServerState(embed=local_embedder.embed_sync)
    prompts = [f"Question {i}: what is {i} times {i + 1}?" for i in range(600)]
    with serve_app_in_thread(embedding_app(state)) as url:
        settings = RouterSettings(embedder={"backend": "openai", "openai": {"base_url": f"{url}/v1", "model": "all-minilm"}})
        with embedding_store(settings) as (name, store):
            vectors = store.get(prompts, progress=False)
    assert name == "openai:all-minilm" and vectors.shape == (600, 384)
    assert [len(r["body"]["input"]) for r in state.requests] == [256, 256, 88]
    np.testing.assert_allclose(vectors[:3], local_embedder.embed_sync(prompts[:3]), atol=1e-5)


def test_roc_auc_counts_ties_as_half() -> None:
    from router_service.training.metrics import roc_auc

    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert roc_auc(np.array([0.5, 0.5, 0.2]), np.array([0, 1, 0])) == 0.75
    with pytest.raises(ValueError, match="both positive and negative"):
        roc_auc(np.array([0.1, 0.2]), np.array([1, 1]))


def test_training_never_sees_eval_or_sanity_prompts(data_slice: Path) -> None:
    from router_service.training.data import read_jsonl
    from router_service.training.pipeline import held_out

    held = held_out(data_slice)
    sanity = next(read_jsonl(data_slice / "sanity" / "sanity_chat.jsonl.gz"))["prompt"]
    mtbench = next(read_jsonl(data_slice / "eval" / "routellm_mtbench.jsonl.gz"))["prompt"]
    assert sanity in held and mtbench in held and f"  {sanity.upper()}!! " in held


def own_labels(root: Path, strong: str, weak: str) -> Path:
    """A label output folder whose judge, unusually, prefers the strong model on small talk and the weak one on maths."""
    talk = [f"Say hello to my friend number {i} and wish them a nice day." for i in range(30)]
    # Fewer maths prompts: over the eval part the strong model must win on balance, or there is no gap to recover.
    maths = [f"Prove that the sum of the first {i} odd numbers is a perfect square, by induction." for i in range(27)]
    for split, part in (("train", slice(0, 24)), ("eval", slice(24, 30))):
        (root / split).mkdir(parents=True)
        rows = [
            {"source": "own-traffic", "judge": "judge (rubric pairwise-v1, both orders)", "prompt": prompt,
             "model_a": strong, "model_b": weak, "winner": winner, "p_a": p_a}
            for prompts, winner, p_a in ((talk, "model_a", 1.0), (maths, "model_b", 0.0)) for prompt in prompts[part]
        ]
        (root / split / "own_traffic.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_own_labels_train_beside_the_shared_data_with_a_weight(
    data_slice: Path, tmp_path: Path, embedding_cache: Path
) -> None:
    from router_service.adapters.scorer import OnnxScorer

    strong, weak = "llama3.1:70b", "llama3.1:8b"
    labels = own_labels(tmp_path / "labels", strong, weak)
    cache = embedding_cache
    base, mine = tmp_path / "base.onnx", tmp_path / "mine.onnx"
    pair = ("--strong", strong, "--weak", weak)
    trained = cli("train", "--data-dir", str(data_slice), "--data-dir", f"{labels}:5", *pair, "--out", str(mine), cache=cache)
    assert trained.returncode == 0, trained.stderr
    # Without the labels the pair is unknown to the shared data.
    refused = cli("train", "--data-dir", str(data_slice), *pair, "--out", str(base), "--no-eval", cache=cache)
    assert refused.returncode == 2 and "'llama3.1:70b' is not in the training data" in refused.stderr

    scorer = OnnxScorer("mine", mine)
    assert scorer.models == (strong, weak)
    card = scorer.training
    assert card["folders"] == [{"path": str(labels), "weight": 5.0}] and "own_traffic.jsonl" in card["data"]
    assert "own_traffic" in card["eval"]  # evaluated on the held-out part of the labels too
    # The labels steer it: this judge's taste (small talk needs the strong model) is learnt.
    talk, maths = "Say hello to my neighbour and wish her a nice day.", "Prove by induction that 1 + 3 + ... + (2n-1) = n^2."
    store_scores = cli("route", talk, "--scorer", "mine", "--threshold", "0.5", "--config", str(_config(tmp_path, mine)), cache=cache)
    assert store_scores.returncode == 0, store_scores.stderr
    talk_score = json.loads(store_scores.stdout)["score"]
    maths_score = json.loads(
        cli("route", maths, "--scorer", "mine", "--threshold", "0.5", "--config", str(_config(tmp_path, mine)), cache=cache).stdout
    )["score"]
    assert talk_score > maths_score

    evaluated = cli("eval", "--data-dir", str(labels), "--scorer", str(mine), "--json", "--plot", str(tmp_path / "p.png"), cache=cache)
    assert evaluated.returncode == 0, evaluated.stderr
    own = json.loads(evaluated.stdout.strip().splitlines()[-1])["benchmarks"]["own_traffic"]["scorer"]
    assert own["apgr"] > 0.6  # held-out labels of the same taste: routed well above random (0.5)


def _config(tmp_path: Path, scorer: Path) -> Path:
    config = tmp_path / "router.toml"
    config.write_text(f'[[scorers]]\nname = "mine"\npath = "{scorer}"\n')
    return config
