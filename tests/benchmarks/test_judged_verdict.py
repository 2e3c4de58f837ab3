"""Judged tasks end to end through the verdict: the shipped product-copy task, both sides'
answers, a scripted judge on the local OpenAI-compatible server, and the judge's cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.compare import Scored, judge, judged
from benchmarks.scoring import RunResult, RunStats
from benchmarks.sides import ScoredSide
from benchmarks.tasks.task import load_task
from benchmarks.verdict import Verdict, VerdictReport
from config.settings import FineTune, Settings
from core.errors import ConfigError
from tests.conftest import REPO
from tests.support.judge import always_first, garbage, prefer_longer
from tests.support.openai_server import OpenAIServer
from tests.support.serving import served
from tests.support.settings import build_settings
from workers.notify import words
from workers.notify.blocks import Message, verdict

TASK = REPO / "config" / "tasks" / "product_copy" / "product_copy.yaml"
JUDGE = "house-judge"


def side(model: str, answers: list[str]) -> Scored:
    """A side that answered ``answers`` (as the engine records a generate_until run)."""
    n = len(answers)
    stats = RunStats(scoring_s=2.0, examples_per_s=n / 2, tokens_per_s=400.0, p50_batch_s=0.1,
                     p95_batch_s=0.2, peak_memory_mb=100.0, batches=2, tokens=800)  # fmt: skip
    result = RunResult(
        task="product_copy", metric="judge", score=0.0, stderr=0.0, n=n, outcomes=(0.0,) * n,
        predictions=tuple(answers), metrics={"judge": (0.0, 0.0)}, stats=stats,
        extra={"input_tokens": 60 * n, "output_tokens": 20 * n},
    )  # fmt: skip
    record = ScoredSide(key=model, kind="self-hosted", model=model, device="cpu",
                        dtype="float32", hardware="local", score=0.0, stderr=0.0)  # fmt: skip
    return Scored(record, result)


def answers(long: bool) -> list[str]:
    docs = load_task(TASK).docs
    if long:
        return [str(d["description"]) for d in docs]
    return [f"A {d['colour']} {d['category']}." for d in docs]


@pytest.fixture
def judge_server() -> Iterator[OpenAIServer]:
    yield from served(OpenAIServer(prefer_longer, model="judge-1"))


def settings_for(tmp_path: Path, server: OpenAIServer, **judging: Any) -> tuple[Settings, FineTune]:
    api = {"name": JUDGE, "model": "judge-1", "base_url": server.url,
           "input_usd_per_1m": 2.0, "output_usd_per_1m": 8.0, "max_retries": 1}  # fmt: skip
    ft = FineTune(name="copywriter", task=str(TASK), model="acme/copy-ft",
                  judge={"api": JUDGE, **judging})  # fmt: skip
    settings = build_settings(tmp_path, finetunes=[ft], api_candidates=[api])
    return settings, settings.finetunes[0]


def verdict_of(settings: Settings, ft: FineTune, ft_long: bool) -> VerdictReport:
    ft_side = side("acme/copy-ft", answers(long=ft_long))
    cand_side = side("vendor/new-model", answers(long=not ft_long))
    judgement = judged(settings, ft, ft_side, cand_side)
    assert judgement is not None
    return judge(settings, ft, "vendor/new-model", finetune_side=ft_side,
                 candidate_side=cand_side, judgement=judgement)  # fmt: skip


def test_a_judge_preferring_the_fine_tunes_longer_answers_holds_it(
    tmp_path: Path, judge_server: OpenAIServer
) -> None:
    settings, ft = settings_for(tmp_path, judge_server)
    report = verdict_of(settings, ft, ft_long=True)
    assert report.verdict is Verdict.HOLDS, report.reason
    judged_ = report.judged
    assert judged_ is not None and (judged_.wins, judged_.losses, judged_.ties) == (0, 24, 0)
    assert judged_.calls == 48 and judged_.cached_calls == 0 and judged_.position_bias == 0.0
    assert judged_.cost_usd > 0 and report.delta == -1.0 and report.test == "sign"
    # Both orders asked of each example: the candidate's answer first, then second.
    assert len(judge_server.requests) == 48


def test_reversed_the_candidate_supersedes_and_a_second_run_asks_nothing(
    tmp_path: Path, judge_server: OpenAIServer
) -> None:
    settings, ft = settings_for(tmp_path, judge_server)
    first = verdict_of(settings, ft, ft_long=False)
    assert first.verdict is Verdict.SUPERSEDED, first.reason
    asked = len(judge_server.requests)
    again = verdict_of(settings, ft, ft_long=False)
    assert len(judge_server.requests) == asked  # every answer from the store
    assert again.judged is not None and (again.judged.calls, again.judged.cached_calls) == (0, 48)
    assert again.judged.cost_usd == 0.0
    assert (again.verdict, again.delta, again.ci_low) == (first.verdict, first.delta, first.ci_low)


def test_a_judge_answering_garbage_is_inconclusive_with_the_reason(tmp_path: Path) -> None:
    with OpenAIServer(garbage, model="judge-1") as server:
        settings, ft = settings_for(tmp_path, server)
        report = verdict_of(settings, ft, ft_long=True)
    assert report.verdict is Verdict.INCONCLUSIVE
    assert report.reason.startswith("judging failed: the judge 'judge-1' gave no readable answer")
    assert "24 of 24 examples" in report.reason and "judging failed" in report.summary
    assert report.judged is not None and report.judged.failed


def test_a_judge_that_flips_with_the_order_gives_all_ties_and_says_so(tmp_path: Path) -> None:
    with OpenAIServer(always_first, model="judge-1") as server:
        settings, ft = settings_for(tmp_path, server)
        report = verdict_of(settings, ft, ft_long=True)
    judged_ = report.judged
    assert judged_ is not None and judged_.ties == 24 and judged_.position_bias == 1.0
    assert report.delta == 0.0
    assert any("order" in w for w in report.warnings), report.warnings
    shown = words.judged(report)
    assert shown is not None and "orders disagreed on 100%" in shown


def test_the_judged_verdict_in_slack_and_json(tmp_path: Path, judge_server: OpenAIServer) -> None:
    from tests.workers.test_slack import job, valid

    settings, ft = settings_for(tmp_path, judge_server)
    report = verdict_of(settings, ft, ft_long=False)
    message: Message = verdict(job(result=report.to_dict()), "https://hf.example")
    valid(message.blocks)
    text = json.dumps(message.blocks)
    assert "Judged" in text and "wins 24 of 24" in text and "judge-1" in text
    assert "Fine-tune score" not in text  # a judged pair has no per-side score
    assert report.to_dict()["judged"]["wins"] == 24


def test_a_judged_task_without_a_judge_is_a_config_error(tmp_path: Path) -> None:
    ft = FineTune(name="copywriter", task=str(TASK), model="acme/copy-ft")
    settings = build_settings(tmp_path, finetunes=[ft])
    with pytest.raises(ConfigError, match="needs a judge"):
        judged(settings, settings.finetunes[0], side("a", ["x"]), side("b", ["y"]))
    unknown = FineTune(name="copywriter", task=str(TASK), model="acme/copy-ft",
                       judge={"api": "nope"})  # fmt: skip
    settings = build_settings(tmp_path, finetunes=[unknown])
    with pytest.raises(ConfigError, match="not an api_candidates entry"):
        judged(settings, settings.finetunes[0], side("a", ["x"]), side("b", ["y"]))
