"""The runner: batching never changes an answer, fast paths equal the plain computation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks.engine import Engine
from benchmarks.models import LoadedModel
from benchmarks.runner import run_task
from benchmarks.tasks.task import load_task
from config.settings import Settings
from supersede.demo.zoo import Zoo
from tests.support.tasks import MULTI_TOKEN, write_task


def naive_loglikelihoods(
    loaded: LoadedModel, context: str, continuations: tuple[str, ...], max_length: int
) -> list[float]:
    """One sequence at a time, full logits, lm-eval's slicing: the reference to match."""
    engine = Engine(loaded, 1, max_length)
    scores = []
    with torch.inference_mode(), loaded.scoring_model():
        for continuation in continuations:
            ctx, cont = engine.encode_pair(context, continuation)
            inp = (ctx + cont)[-(max_length + 1) :][:-1]
            logits = loaded.model(input_ids=torch.tensor([inp])).logits[0].log_softmax(-1)
            window = logits[len(inp) - len(cont) : len(inp)]
            scores.append(float(window.gather(-1, torch.tensor(cont).unsqueeze(-1)).sum()))
    return scores


@pytest.mark.parametrize(
    ("kind", "exact"),
    [("single", False), ("multi", False), ("multi", True), ("generate", False)],
)
def test_batched_equals_unbatched(
    tuned: LoadedModel, tasks: dict[str, Any], kind: str, exact: bool
) -> None:
    task = tasks[kind]
    one = run_task(tuned, task, limit=60, batch_size=1, exact=True)
    for batch_size in (7, 64):
        many = run_task(tuned, task, limit=60, batch_size=batch_size, exact=exact)
        assert many.predictions == one.predictions
        assert many.outcomes == one.outcomes
        assert many.score == one.score


@pytest.mark.parametrize("kind", ["single", "multi"])
@pytest.mark.parametrize("max_length", [None, 9])
@pytest.mark.parametrize("exact", [False, True], ids=["shared", "exact"])
def test_fast_path_equals_plain_computation(
    tuned: LoadedModel, tasks: dict[str, Any], kind: str, max_length: int | None, exact: bool
) -> None:
    task = tasks[kind]
    requests = task.requests(12)
    engine = Engine(tuned, 5, max_length, exact=exact)
    with torch.inference_mode(), tuned.scoring_model():
        fast = engine.loglikelihoods(requests, None)
    for request, got in zip(requests, fast, strict=True):
        want = naive_loglikelihoods(
            tuned, request.context, request.continuations, engine.max_length
        )
        assert got == pytest.approx(want, abs=1e-4)


def test_adapter_measurably_changes_scores(tuned: LoadedModel, tasks: dict[str, Any]) -> None:
    with_adapter = run_task(tuned, tasks["single"])
    tuned.use_adapter(None)
    try:
        base_only = run_task(tuned, tasks["single"])
    finally:
        tuned.use_adapter(_first_adapter(tuned))
    assert with_adapter.score > base_only.score + 0.2
    assert with_adapter.outcomes != base_only.outcomes


def _first_adapter(loaded: LoadedModel) -> str:
    from benchmarks.models import adapter_name

    return adapter_name(loaded.adapters[0])


def test_result_carries_outcomes_and_stats(tuned: LoadedModel, tasks: dict[str, Any]) -> None:
    seen: list[int] = []
    result = run_task(tuned, tasks["single"], limit=50, batch_size=8, progress=seen.append)
    assert sum(seen) == 50
    assert result.n == 50 and len(result.outcomes) == 50 and len(result.predictions) == 50
    assert result.score == pytest.approx(sum(result.outcomes) / 50)
    assert set(result.outcomes) <= {0.0, 1.0}
    stats = result.stats
    assert stats.tokens > 0 and stats.tokens_per_s > 0 and stats.examples_per_s > 0
    assert 0 < stats.p50_batch_s <= stats.p95_batch_s
    assert stats.peak_memory_mb > 10


def test_generation_stops_at_stop_sequences(tuned: LoadedModel, tasks: dict[str, Any]) -> None:
    result = run_task(tuned, tasks["generate"], limit=40, batch_size=16)
    assert all("\n" not in text and "." not in text for text in result.predictions)
    assert all(text.startswith(" ") for text in result.predictions if text)
    assert result.score > 0.6  # the fine-tune answers with the right word most of the time


def test_single_token_choices_share_one_forward_pass(
    tuned: LoadedModel, tasks: dict[str, Any]
) -> None:
    engine = Engine(tuned, 64, None)
    with torch.inference_mode(), tuned.scoring_model():
        engine.loglikelihoods(tasks["single"].requests(64), None)
    single_rows = engine.batch_times
    engine_multi = Engine(tuned, 64, None, exact=True)
    with torch.inference_mode(), tuned.scoring_model():
        engine_multi.loglikelihoods(tasks["multi"].requests(64), None)
    # 64 documents x 2 one-token choices fit one 64-row batch; 64 x 3 multi-token rows need three.
    assert len(single_rows) == 1
    assert len(engine_multi.batch_times) == 3


def test_exact_is_in_the_result_key_only_when_set(
    zoo: Zoo, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    from benchmarks.bench import bench

    settings = make_settings()
    task = write_task(tmp_path / "task", MULTI_TOKEN)
    shared = bench(settings, str(zoo.base), task, limit=8)
    exact = bench(settings, str(zoo.base), task, limit=8, exact=True)
    assert "exact" not in shared.identity and exact.identity["exact"] is True
    assert exact.key != shared.key and not exact.cached
    assert exact.result.predictions == shared.result.predictions
    again = bench(settings, str(zoo.base), task, limit=8)
    assert again.cached and again.key == shared.key


def test_empty_context_scores_after_the_prefix_token(tuned: LoadedModel, tmp_path: Path) -> None:
    config = dict(MULTI_TOKEN, task="empty_ctx", doc_to_text="")
    task = load_task(write_task(tmp_path, config, test_rows=5))
    engine = Engine(tuned, 4, None)
    with torch.inference_mode(), tuned.scoring_model():
        got = engine.loglikelihoods(task.requests(), None)
    prefix = tuned.tokenizer.bos_token_id
    with torch.inference_mode(), tuned.scoring_model():
        for request, scores in zip(task.requests(), got, strict=True):
            for continuation, score in zip(request.continuations, scores, strict=True):
                cont = tuned.tokenizer.encode(continuation)
                inp = [prefix, *cont][:-1]
                logits = tuned.model(input_ids=torch.tensor([inp])).logits[0].log_softmax(-1)
                want = float(
                    logits[-len(cont) :].gather(-1, torch.tensor(cont).unsqueeze(-1)).sum()
                )
                assert score == pytest.approx(want, abs=1e-4)


def test_chat_template_wraps_the_prompt_and_drops_the_delimiter(
    tuned: LoadedModel, tasks: dict[str, Any]
) -> None:
    from benchmarks.runner import apply_chat_template, uses_chat_template
    from config.settings import PromptSettings

    tokenizer = tuned.tokenizer
    assert not uses_chat_template(tokenizer, PromptSettings(chat_template="auto"))
    assert uses_chat_template(tokenizer, PromptSettings(chat_template="on"))
    assert not uses_chat_template(tokenizer, PromptSettings(chat_template="off"))
    template = (
        "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    tokenizer.chat_template = template
    try:
        assert uses_chat_template(tokenizer, PromptSettings(chat_template="auto"))
        prompt = PromptSettings(chat_template="on", system_prompt="Be brief.")
        task = tasks["single"]
        (plain,) = task.requests(1)
        (wrapped,) = apply_chat_template([plain], tokenizer, prompt, task)
        assert wrapped.context == f"[system]Be brief.[user]{plain.context}[assistant]"
        assert wrapped.continuations == ("negative", "positive")
        result = run_task(tuned, task, limit=20, prompt=prompt)
        assert result.n == 20  # scores through the wrapped prompt
    finally:
        tokenizer.chat_template = None


def test_prompt_num_fewshot_overrides_the_task_file(tasks: dict[str, Any]) -> None:
    from core.errors import TaskFileError

    task = tasks["single"]
    two = task.with_num_fewshot(2)
    (plain,) = task.requests(1)
    (shot,) = two.requests(1)
    assert shot.context.endswith(plain.context) and shot.context.count("Sentiment:") == 3
    assert task.with_num_fewshot(0) is task
    with pytest.raises(TaskFileError, match="num_fewshot"):
        task.with_num_fewshot(len(task.fewshot_docs) + 1)
