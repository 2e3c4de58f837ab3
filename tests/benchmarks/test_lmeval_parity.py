"""Same task file, same model: the same score as lm-evaluation-harness (run here, in-process)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks.models import ModelResolver, load_model
from benchmarks.runner import run_task
from benchmarks.scoring import RunResult
from benchmarks.tasks import load_task
from config.settings import Settings
from supersede.demo.zoo import Zoo
from tests.support.tasks import GENERATE, MULTI_TOKEN, shipped_task_copy, write_task

pytestmark = [pytest.mark.lmeval, pytest.mark.slow]
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

LIMIT = 120


def lm_eval_run(
    task_file: Path,
    pretrained: Path,
    adapter: Path | None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> dict[str, Any]:
    """Run lm-eval's `hf` model on ``task_file``, from the task's folder as lm-eval expects."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    import lm_eval
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(task_file.parent)
    name = load_task(task_file).name
    args = f"pretrained={pretrained},dtype=float32" + (f",peft={adapter}" if adapter else "")
    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=args,
        device="cpu",
        tasks=[name],
        task_manager=TaskManager(include_path=str(task_file.parent), include_defaults=False),
        batch_size=8,
        limit=LIMIT,
        log_samples=True,
    )
    assert out is not None
    return {
        "results": out["results"][name],
        "samples": sorted(out["samples"][name], key=lambda s: s["doc_id"]),
    }


def supersede_run(
    task_file: Path, pretrained: Path, adapter: Path | None, *, exact: bool = False
) -> RunResult:
    settings = Settings()
    resolver = ModelResolver(settings.hub)
    loaded = load_model(
        resolver.resolve(str(pretrained)),
        settings.runtime.model_copy(update={"device": "cpu"}),
        [resolver.resolve(str(adapter), "adapter")] if adapter else [],
    )
    return run_task(loaded, load_task(task_file), limit=LIMIT, batch_size=16, exact=exact)


def assert_same_choices(ours: RunResult, theirs: dict[str, Any], metric: str) -> None:
    assert ours.score == pytest.approx(theirs["results"][f"{metric},none"], abs=1e-12)
    assert ours.stderr == pytest.approx(theirs["results"][f"{metric}_stderr,none"], abs=1e-9)
    assert ours.n == len(theirs["samples"]) == LIMIT
    for sample, prediction, outcome in zip(
        theirs["samples"], ours.predictions, ours.outcomes, strict=True
    ):
        lls = [float(resp[0][0]) for resp in sample["resps"]]
        assert prediction == max(range(len(lls)), key=lambda i: (lls[i], -i))
        assert outcome == sample[metric]


@pytest.mark.parametrize("with_adapter", [False, True], ids=["base", "base+lora"])
def test_multiple_choice_single_token(
    zoo: Zoo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_adapter: bool
) -> None:
    task = shipped_task_copy(tmp_path / "task")
    adapter = zoo.adapter if with_adapter else None
    theirs = lm_eval_run(task, zoo.base, adapter, monkeypatch, tmp_path)
    for exact in (False, True):
        ours = supersede_run(task, zoo.base, adapter, exact=exact)
        assert_same_choices(ours, theirs, "acc")
        if with_adapter:
            assert ours.score > 0.7  # the adapter matters: the comparison is not trivially equal


def test_multiple_choice_multi_token_with_adapter(
    zoo: Zoo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = write_task(tmp_path / "task", MULTI_TOKEN)
    theirs = lm_eval_run(task, zoo.base, zoo.adapter, monkeypatch, tmp_path)
    # lm-eval runs once; both of our paths (shared-prefix by default, exact) must match it.
    for exact in (False, True):
        ours = supersede_run(task, zoo.base, zoo.adapter, exact=exact)
        assert_same_choices(ours, theirs, "acc")


def test_generate_until_exact_match(
    zoo: Zoo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = write_task(tmp_path / "task", GENERATE)
    ours = supersede_run(task, zoo.base, zoo.adapter)
    theirs = lm_eval_run(task, zoo.base, zoo.adapter, monkeypatch, tmp_path)
    assert ours.score == pytest.approx(theirs["results"]["exact_match,none"], abs=1e-12)
    assert ours.score > 0.5
    generated = [sample["filtered_resps"][0] for sample in theirs["samples"]]
    assert list(ours.predictions) == generated


def test_few_shot_prompts_match(zoo: Zoo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = dict(MULTI_TOKEN, task="review_fewshot", num_fewshot=2, fewshot_split="train")
    task = write_task(tmp_path / "task", config)
    ours = load_task(task).requests(LIMIT)
    theirs = lm_eval_run(task, zoo.base, None, monkeypatch, tmp_path)
    for request, sample in zip(ours, theirs["samples"], strict=True):
        contexts = {argument[0] for argument in sample["arguments"]}
        assert contexts == {request.context}
