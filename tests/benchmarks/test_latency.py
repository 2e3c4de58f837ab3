"""Per-request latency after the batched run: recorded, spread over the task, and harmless.

Timings are never compared with each other here (a loaded machine makes that flaky); where a
bound is asserted it is a lower bound that a deliberately slowed forward pass guarantees.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from benchmarks.api import run_api_task
from benchmarks.engine import Engine
from benchmarks.latency import measure_latency, sample_indices, summarize
from benchmarks.models import LoadedModel
from benchmarks.runner import run_task
from benchmarks.tasks.task import Task
from config.api import ApiCandidate
from tests.support.openai_server import OpenAIServer
from tests.support.serving import served

LIMIT = 40
MC_KEYS = {"sample", "p50_ms", "p95_ms", "mean_ms", "batch_size"}
GEN_KEYS = MC_KEYS | {"ttft_p50_ms", "ttft_p95_ms", "per_token_ms"}


@pytest.fixture
def slowed(tuned: LoadedModel) -> Iterator[float]:
    """Every forward pass of the model (batched run included) sleeps this long first."""
    pause = 0.02
    handle = tuned.model.get_input_embeddings().register_forward_pre_hook(
        lambda module, args: time.sleep(pause)
    )
    try:
        yield pause * 1000
    finally:
        handle.remove()


@pytest.mark.parametrize("kind", ["single", "multi", "generate"])
def test_latency_leaves_scores_and_run_statistics_alone(
    tuned: LoadedModel, tasks: dict[str, Task], kind: str
) -> None:
    task = tasks[kind]
    plain = run_task(tuned, task, limit=LIMIT, batch_size=8, latency_sample=0)
    timed = run_task(tuned, task, limit=LIMIT, batch_size=8, latency_sample=16)
    assert "latency" not in plain.extra
    assert timed.predictions == plain.predictions
    assert timed.outcomes == plain.outcomes
    assert timed.metrics == plain.metrics
    # The latency pass runs on its own counters: the batched run's are what they were.
    assert timed.stats.tokens == plain.stats.tokens
    assert timed.stats.batches == plain.stats.batches
    for key in ("max_prompt_tokens", "max_output_tokens"):
        assert timed.extra[key] == plain.extra[key] > 0

    latency = timed.extra["latency"]
    assert set(latency) == (MC_KEYS if kind != "generate" else GEN_KEYS)
    assert latency["sample"] == 16 and latency["batch_size"] == 1
    assert 0 < latency["p50_ms"] <= latency["p95_ms"]
    assert 0 < latency["mean_ms"] <= latency["p95_ms"] * 16
    if kind == "generate":
        assert 0 < latency["ttft_p50_ms"] <= latency["p50_ms"]
        assert latency["ttft_p50_ms"] <= latency["ttft_p95_ms"] <= latency["p95_ms"]
        assert latency["per_token_ms"] >= 0


@pytest.mark.parametrize("kind", ["multi", "generate"])
def test_latency_pass_keeps_the_engine_counters(
    tuned: LoadedModel, tasks: dict[str, Task], kind: str
) -> None:
    task = tasks[kind]
    requests = task.requests(12)
    engine = Engine(tuned, 4, None)
    generation = None if kind == "multi" else (task.until, task.max_gen_toks)
    with torch.inference_mode(), tuned.scoring_model():
        if generation is None:
            engine.loglikelihoods(requests, None)
        else:
            engine.generate(requests, task.until, task.max_gen_toks, None)
        before = (list(engine.batch_times), engine.tokens, engine.max_prompt_tokens)
        latency = measure_latency(engine, requests, 6, generation=generation)
    assert latency is not None and latency["sample"] == 6
    assert (engine.batch_times, engine.tokens, engine.max_prompt_tokens) == before


@pytest.mark.parametrize("kind", ["multi", "generate"])
def test_sample_is_clipped_to_the_requests(
    tuned: LoadedModel, tasks: dict[str, Task], kind: str
) -> None:
    result = run_task(tuned, tasks[kind], limit=5, batch_size=4, latency_sample=16)
    assert result.extra["latency"]["sample"] == 5


def test_requests_are_spread_over_the_task() -> None:
    assert sample_indices(100, 4) == [12, 37, 62, 87]
    assert sample_indices(5, 16) == [0, 1, 2, 3, 4]
    assert sample_indices(3, 0) == [] and sample_indices(0, 16) == []
    spread = sample_indices(1000, 16)
    assert len(set(spread)) == 16 and spread[0] < 63 and spread[-1] > 937


def test_summary_uses_the_median_and_nearest_rank() -> None:
    record = summarize([i / 1000 for i in range(1, 21)], ttft_s=[0.001] * 20, per_token_s=[0.002])
    assert record["sample"] == 20 and record["batch_size"] == 1
    assert record["p50_ms"] == pytest.approx(10.5)
    assert record["p95_ms"] == pytest.approx(19.0)  # rank ceil(0.95 * 20) = 19
    assert record["mean_ms"] == pytest.approx(10.5)
    assert record["ttft_p95_ms"] == pytest.approx(1.0)
    assert record["per_token_ms"] == pytest.approx(2.0)
    assert "network" not in record
    assert summarize([0.5], network=True)["network"] is True


def test_max_tokens_are_the_longest_input_and_output(
    tuned: LoadedModel, tasks: dict[str, Task]
) -> None:
    tok = tuned.tokenizer
    task = tasks["multi"]
    result = run_task(tuned, task, limit=LIMIT, latency_sample=0)
    requests = task.requests(LIMIT)
    whole = [len(tok.encode(r.context + c)) for r in requests for c in r.continuations]
    continuation = [
        len(tok.encode(r.context + c)) - len(tok.encode(r.context.rstrip()))
        for r in requests
        for c in r.continuations
    ]
    assert result.extra["max_prompt_tokens"] == max(whole)
    assert result.extra["max_output_tokens"] == max(continuation) > 1

    generate = tasks["generate"]
    made = run_task(tuned, generate, limit=LIMIT, batch_size=16, latency_sample=0)
    prompts = [len(tok.encode(r.context)) for r in generate.requests(LIMIT)]
    assert made.extra["max_prompt_tokens"] == max(prompts)
    assert 1 <= made.extra["max_output_tokens"] <= generate.max_gen_toks


@pytest.mark.parametrize("kind", ["multi", "generate"])
def test_latency_covers_the_forward_passes(
    tuned: LoadedModel, tasks: dict[str, Task], kind: str, slowed: float
) -> None:
    # Every request runs at least one (slowed) forward pass; a generated token after the
    # first needs one more each. A loaded machine only makes these larger.
    latency = run_task(tuned, tasks[kind], limit=6, batch_size=8, latency_sample=4).extra["latency"]
    assert latency["p50_ms"] >= slowed
    if kind == "generate":
        assert latency["ttft_p50_ms"] >= slowed
        assert latency["p50_ms"] >= latency["ttft_p50_ms"]


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    yield from served(OpenAIServer())


def test_api_candidate_records_every_request(server: OpenAIServer, tasks: dict[str, Task]) -> None:
    server.set_delay(0.03)
    candidate = ApiCandidate(
        name="vendor-x", base_url=server.url, model="vendor-x-large", max_concurrency=4
    )
    result = run_api_task(candidate, tasks["single"], api_key=None, limit=12)
    latency: dict[str, Any] = result.extra["latency"]
    assert latency["sample"] == result.extra["requests"] == len(server.answered) == 12
    assert latency["network"] is True and latency["batch_size"] == 1
    assert 30 <= latency["p50_ms"] <= latency["p95_ms"]
    assert latency["mean_ms"] >= 30
