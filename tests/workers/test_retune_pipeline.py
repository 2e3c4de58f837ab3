"""The re-tune job between a release's benchmark and a fine-tune's verdict: the fine-tune's LoRA
recipe trained on the release (on the benchmark's queue), scored, and judged three ways.

The zoo's weaker release is well behind the fine-tune as it is, yet the same LoRA recipe trained
on it beats the fine-tune: ``RETUNE``. On the stronger release re-tuning does not beat the release
as it is: the two-way verdict stands, with the re-tune's figures. A second run reuses the trained
adapter; training data that overlaps the evaluated split is refused with the count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.verdict import REPORT_ADAPTER, VerdictReport
from config.settings import FineTune
from core.constants import TASK_NOTIFY, TASK_RETUNE_JOB, TASK_VERDICT
from supersede.demo.zoo import Zoo, read_jsonl, write_jsonl
from tests.conftest import SHIPPED_TASK
from tests.support.settings import build_settings
from tests.workers.test_pipeline import Notes, Recorder, release
from workers.jobs import JobStore
from workers.pipeline import Pipeline

pytestmark = pytest.mark.slow

#: A recipe run long enough to learn the task on the tiny model (a few seconds on a CPU).
QUICK = {"max_steps": 200, "learning_rate": 3e-3, "batch_size": 32, "max_length": 64}


def training_file(folder: Path, *, leak: int = 0) -> Path:
    """The shipped train split without the reviews its test split repeats, plus ``leak`` test
    reviews."""
    test = read_jsonl(SHIPPED_TASK.parent / "test.jsonl")
    seen = {row["text"] for row in test}
    rows = [r for r in read_jsonl(SHIPPED_TASK.parent / "train.jsonl") if r["text"] not in seen]
    return write_jsonl(folder / "retune-train.jsonl", rows + test[:leak])


def pipeline_with(tmp_path: Path, zoo: Zoo, **retune: Any) -> tuple[Pipeline, Recorder, Notes]:
    ft = FineTune(
        name="reviews", task=str(SHIPPED_TASK), base=str(zoo.base), adapter=str(zoo.adapter),
        retune={"data_file": str(training_file(tmp_path, leak=retune.pop("leak", 0))), **retune},
        # Training is paid back by quality. Requests are priced too: with none, a serving cost
        # per request that timing noise puts above the fine-tune's could not be priced, and
        # that alone would keep the re-tune from being recommended on a loaded machine.
        economics={"value_per_point_usd": 100.0, "monthly_requests": 10_000},
    )  # fmt: skip
    # No per-request latency pass: not what these tests are about, and it is a third of a run.
    settings = build_settings(tmp_path, finetunes=[ft], retune=QUICK, runtime={"latency_sample": 0})
    sent, notes = Recorder(), Notes()
    return Pipeline(settings, JobStore(settings.store.url), sent, notes), sent, notes


def run_all(pipeline: Pipeline, sent: Recorder, key: str) -> VerdictReport:
    """Benchmark, re-tune and verdict jobs in the order they are sent; the verdict."""
    assert pipeline.run_benchmark(key, "gpu").outcome == "done"
    (retune,) = [(k, q) for name, k, q in sent.sent if name == TASK_RETUNE_JOB]
    assert retune[1] == "gpu-24g"  # on the benchmark's queue, not the default one
    assert pipeline.run_retune(retune[0], "gpu").outcome == "done"
    (verdict,) = [(k, q) for name, k, q in sent.sent if name == TASK_VERDICT]
    assert verdict[1] == "default"
    assert pipeline.run_verdict(verdict[0], "cpu").outcome == "done"
    assert [k for name, k, _ in sent.sent if name == TASK_NOTIFY] == [verdict[0]]
    job = pipeline.jobs.get(verdict[0])
    assert job is not None and job.parent == retune[0] and job.result is not None
    return REPORT_ADAPTER.validate_python(job.result)


def test_a_weaker_release_re_tuned_beats_the_fine_tune_and_a_second_run_trains_nothing(
    tmp_path: Path, zoo: Zoo
) -> None:
    pipeline, sent, _ = pipeline_with(tmp_path, zoo, when="always")
    (key,) = pipeline.plan(release(zoo.weaker))
    report = run_all(pipeline, sent, key)
    assert report.verdict == "RETUNE", (report.reason, report.hint)
    figures = report.retune
    assert figures is not None and figures.status == "trained" and figures.steps == 200
    assert report.delta is not None and report.delta < -0.05  # the release as is: well behind
    assert figures.ci_low_vs_finetune is not None and figures.ci_low_vs_finetune > 0
    assert figures.ci_low_vs_candidate is not None and figures.ci_low_vs_candidate > 0
    assert figures.training_cost_usd > 0 and len(figures.losses) == 50
    assert figures.losses[-1] < figures.losses[0]
    assert "Re-tune the adapter on" in report.summary and "Plain" in (report.hint or "")
    assert report.details["retuned"]["hardware"] == "gpu-24g"
    trained = sorted(p.name for p in (tmp_path / "retune").iterdir())
    # Again: the same adapter (cached), the same verdict, no training step.
    sent.sent.clear()
    pipeline.plan(release(zoo.weaker), rerun=True)
    again = run_all(pipeline, sent, key)
    assert again.retune is not None and again.retune.status == "cached"
    assert again.verdict == "RETUNE" and again.retune.steps == figures.steps
    assert again.retune.training_wall_s == figures.training_wall_s
    assert sorted(p.name for p in (tmp_path / "retune").iterdir()) == trained


def test_when_re_tuning_does_not_beat_the_release_the_two_way_verdict_stands(
    tmp_path: Path, zoo: Zoo
) -> None:
    pipeline, sent, _ = pipeline_with(tmp_path, zoo)  # retune.when: at_risk (the default)
    (key,) = pipeline.plan(release(zoo.stronger))
    report = run_all(pipeline, sent, key)
    assert report.verdict == "SUPERSEDED"
    assert report.retune is not None and report.retune.status == "trained"
    assert report.retune.ci_low_vs_finetune is not None
    assert report.retune.ci_low_vs_candidate is not None
    assert report.retune.ci_low_vs_candidate <= 0
    assert "not recommended" in (report.hint or "")


def test_at_risk_leaves_a_release_far_behind_untrained(tmp_path: Path, zoo: Zoo) -> None:
    pipeline, sent, _ = pipeline_with(tmp_path, zoo)
    (key,) = pipeline.plan(release(zoo.weaker))
    report = run_all(pipeline, sent, key)
    assert report.verdict == "HOLDS"
    assert report.retune is not None and report.retune.status == "not_run"
    assert "retune.holds_within" in (report.retune.reason or "")
    assert not (tmp_path / "retune").exists()


def test_training_rows_that_are_evaluated_refuse_the_re_tune_with_the_count(
    tmp_path: Path, zoo: Zoo
) -> None:
    pipeline, sent, _ = pipeline_with(tmp_path, zoo, when="always", leak=9)
    (key,) = pipeline.plan(release(zoo.weaker))
    report = run_all(pipeline, sent, key)
    assert report.verdict == "HOLDS"  # the two-way verdict stands
    assert report.retune is not None and report.retune.status == "refused"
    assert "9 training rows" in (report.retune.reason or "")
    assert "9 training rows" in (report.hint or "")


def test_no_training_data_no_re_tune_job(tmp_path: Path, zoo: Zoo) -> None:
    ft = FineTune(name="reviews", task=str(SHIPPED_TASK), base=str(zoo.base),
                  adapter=str(zoo.adapter))  # fmt: skip
    settings = build_settings(tmp_path, finetunes=[ft])
    pipeline = Pipeline(settings, JobStore(settings.store.url), Recorder(), Notes())
    (key,) = pipeline.plan(release(zoo.weaker))
    assert [job.kind for job in pipeline.jobs.children(key)] == ["verdict"]
