"""The job graph without a broker: planning, running with tiny models, notifying, reconciling."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.sides import BenchmarkScores
from config.settings import FineTune, RuntimeSettings
from config.workers import WorkersSettings
from core.clock import now
from core.constants import DEFAULT_QUEUE, TASK_BENCHMARK, TASK_NOTIFY, TASK_VERDICT
from supersede.demo.zoo import Zoo
from tests.conftest import SHIPPED_TASK, copy_model
from tests.support.settings import build_settings
from watcher.events import Announcement, ApiRelease, ModelReleased
from workers.jobs import Job, JobStore
from workers.pipeline import Pipeline


class Recorder:
    """Stands in for the broker: what would have been sent, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    def __call__(self, name: str, key: str, queue: str) -> None:
        self.sent.append((name, key, queue))

    def names(self) -> list[str]:
        return [name for name, _, _ in self.sent]


class Notes:
    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def send(self, job: Job) -> None:
        self.jobs.append(job)


def make(
    tmp_path: Path, zoo: Zoo | None = None, *, api_candidates: Any = (), **workers: Any
) -> tuple[Pipeline, Recorder, Notes]:
    finetunes = ()
    if zoo is not None:
        finetunes = (
            FineTune(name="reviews", task=str(SHIPPED_TASK), base=str(zoo.base),
                     adapter=str(zoo.adapter)),
            FineTune(name="reviews-2", task=str(SHIPPED_TASK), base=str(zoo.base),
                     adapter=str(zoo.adapter)),
        )  # fmt: skip
    settings = build_settings(
        tmp_path, finetunes=finetunes, workers=workers, api_candidates=api_candidates
    )
    sent, notes = Recorder(), Notes()
    return Pipeline(settings, JobStore(settings.store.url), sent, notes), sent, notes


def release(repo: str | Path, params: int | None = 1_000_000, **fields: Any) -> ModelReleased:
    return ModelReleased(source="hub", detected_at=now(), repo_id=str(repo), params=params,
                         **fields)  # fmt: skip


@pytest.fixture
def planned(tmp_path: Path, zoo: Zoo) -> tuple[Pipeline, Recorder, Notes, str]:
    pipeline, sent, notes = make(tmp_path, zoo)
    (key,) = pipeline.plan(release(zoo.stronger))
    return pipeline, sent, notes, key


def test_a_release_plans_one_benchmark_and_a_verdict_per_finetune(
    planned: tuple[Pipeline, Recorder, Notes, str],
) -> None:
    pipeline, sent, _, key = planned
    job = pipeline.jobs.get(key)
    assert job is not None and (job.kind, job.state, job.queue) == (
        "benchmark",
        "queued",
        "gpu-24g",
    )
    children = pipeline.jobs.children(key)
    assert sorted((c.finetune, c.state) for c in children) == [
        ("reviews", "waiting"),
        ("reviews-2", "waiting"),
    ]
    assert sent.sent == [(TASK_BENCHMARK, key, "gpu-24g")]
    # The same release again (a redelivery, a second watcher): nothing new is sent.
    assert pipeline.plan(ModelReleased.model_validate(job.payload["event"])) == [key]
    assert len(sent.sent) == 1


def test_the_job_graph_runs_to_notified_verdicts(
    planned: tuple[Pipeline, Recorder, Notes, str],
) -> None:
    pipeline, sent, notes, key = planned
    assert pipeline.run_benchmark(key, "w1").outcome == "done"
    bench = pipeline.jobs.get(key)
    assert bench is not None and bench.state == "done" and bench.attempts == 1
    assert bench.result is not None
    pairs = BenchmarkScores.model_validate(bench.result).pairs
    assert set(pairs) == {"reviews", "reviews-2"}
    assert pairs["reviews"].candidate.score > pairs["reviews"].finetune.score
    # Both sides scored here, on the job's queue: the costs compare like with like.
    for side in (pairs["reviews"].finetune, pairs["reviews"].candidate):
        assert (side.hardware, side.device, side.dtype) == ("gpu-24g", "cpu", "float32")
    # The second fine-tune is the same model on the same task: its baseline is a stored result.
    assert pairs["reviews-2"].finetune.key == pairs["reviews"].finetune.key
    verdicts = [k for name, k, _ in sent.sent if name == TASK_VERDICT]
    assert len(verdicts) == 2
    # A duplicated benchmark message afterwards does nothing.
    assert pipeline.run_benchmark(key, "w2").outcome == "finished"
    for verdict_key in verdicts:
        assert pipeline.run_verdict(verdict_key, "w1").outcome == "done"
        assert pipeline.run_verdict(verdict_key, "w2").outcome == "finished"
    notify = [k for name, k, _ in sent.sent if name == TASK_NOTIFY]
    assert sorted(notify) == sorted(verdicts)
    for verdict_key in notify + notify:  # each notification delivered, twice asked
        pipeline.notify(verdict_key)
    assert len(notes.jobs) == 2
    assert {job.result["verdict"] for job in notes.jobs if job.result} == {"SUPERSEDED"}
    assert {pipeline.jobs.get(k).state for k in verdicts} == {"notified"}  # type: ignore[union-attr]


def test_a_model_too_large_for_every_queue_is_skipped_and_notified(
    tmp_path: Path, zoo: Zoo
) -> None:
    pipeline, sent, notes = make(tmp_path, zoo)
    (key,) = pipeline.plan(release("acme/Huge-405B", params=405_000_000_000))
    job = pipeline.jobs.get(key)
    assert job is not None and job.state == "skipped" and "too large" in str(job.reason)
    assert TASK_BENCHMARK not in sent.names()
    assert sent.names() == [TASK_NOTIFY, TASK_NOTIFY]
    for _, child, _ in sent.sent:
        assert pipeline.notify(child)
    assert [j.state for j in notes.jobs] == ["skipped", "skipped"]
    assert all("benchmark skipped: too large" in str(j.reason) for j in notes.jobs)


def test_a_refused_candidate_is_skipped_with_the_reason(tmp_path: Path, zoo: Zoo) -> None:
    pickled = copy_model(zoo.stronger, tmp_path / "pickled", drop=(".safetensors",),
                         add={"pytorch_model.bin": b"not really"})  # fmt: skip
    pipeline, sent, _ = make(tmp_path, zoo)
    (key,) = pipeline.plan(release(pickled))
    step = pipeline.run_benchmark(key, "w1")
    assert step.outcome == "failed" and "pickle" in str(step.reason).lower()
    job = pipeline.jobs.get(key)
    assert job is not None and job.state == "skipped" and job.attempts == 1
    children = pipeline.jobs.children(key)
    assert {c.state for c in children} == {"skipped"}
    assert sent.names().count(TASK_NOTIFY) == 2


def test_a_retryable_failure_is_retried_then_capped(tmp_path: Path, zoo: Zoo) -> None:
    pipeline, _, _ = make(tmp_path, zoo, max_attempts=2, retry_backoff=7)
    # A Hub id on an unreachable endpoint: HubUnavailable, every time.
    (key,) = pipeline.plan(release("acme/Unreachable-1B"))
    first = pipeline.run_benchmark(key, "w1")
    assert (first.outcome, first.retry_in) == ("retry", 7)
    second = pipeline.run_benchmark(key, "w1")
    assert second.outcome == "failed"
    job = pipeline.jobs.get(key)
    assert job is not None and (job.state, job.attempts) == ("failed", 2)
    assert "unreachable" in str(job.reason).lower()
    assert {c.state for c in pipeline.jobs.children(key)} == {"failed"}


def test_api_models_and_announcements(tmp_path: Path, zoo: Zoo) -> None:
    pipeline, sent, notes = make(
        tmp_path, zoo, api_candidates=[{"name": "acme", "model": "acme-mini",
                                        "base_url": "http://127.0.0.1:9/v1"}],
    )  # fmt: skip
    model = ApiRelease(model="acme-mini", rule="acme")
    api = ModelReleased(source="manual", detected_at=now(), api=model)
    (key,) = pipeline.plan(api)
    job = pipeline.jobs.get(key)
    assert job is not None and job.queue == DEFAULT_QUEUE and job.candidate == "api:acme-mini"
    post = Announcement(source="feed:acme", detected_at=now(), title="Safety report",
                        entry_id="post-1")  # fmt: skip
    (note,) = pipeline.plan(post)
    assert pipeline.plan(post) == [note]
    assert sent.sent[-1] == (TASK_NOTIFY, note, DEFAULT_QUEUE)
    assert sent.names().count(TASK_NOTIFY) == 1
    assert pipeline.notify(note) and not pipeline.notify(note)
    assert [j.kind for j in notes.jobs] == ["announcement"]


def test_without_finetunes_nothing_is_planned(tmp_path: Path) -> None:
    pipeline, sent, _ = make(tmp_path)
    assert pipeline.plan(release("acme/x")) == [] and sent.sent == []


def test_the_reconciler_resends_what_was_lost(tmp_path: Path, zoo: Zoo) -> None:
    pipeline, sent, _ = make(tmp_path, zoo, queued_timeout=1, lease=2)
    (key,) = pipeline.plan(release(zoo.weaker))
    sent.sent.clear()
    assert pipeline.reconcile()["resent"] == 0  # not stuck yet
    time.sleep(1.2)  # the message was lost (a Redis restart): the job sits in "queued"
    assert pipeline.reconcile()["resent"] == 1
    assert sent.sent == [(TASK_BENCHMARK, key, "gpu-24g")]
    # A worker dies mid-benchmark: its lease runs out, the job is sent again and taken over.
    pipeline.jobs.claim(key, "dead worker", lease_s=0.2, max_attempts=3)
    time.sleep(0.4)
    sent.sent.clear()
    assert pipeline.reconcile()["resent"] == 1
    assert pipeline.run_benchmark(key, "w2").outcome == "done"
    job = pipeline.jobs.get(key)
    assert job is not None and job.attempts == 2
    # A crash between the benchmark and the verdicts' release is repaired too.
    children = pipeline.jobs.children(key)
    assert {c.state for c in children} == {"queued"}


def test_a_rerun_resets_the_jobs(planned: tuple[Pipeline, Recorder, Notes, str]) -> None:
    pipeline, sent, _, key = planned
    pipeline.run_benchmark(key, "w1")
    event = ModelReleased.model_validate(pipeline.jobs.get(key).payload["event"])  # type: ignore[union-attr]
    sent.sent.clear()
    assert pipeline.plan(event, rerun=True, queue="gpu-80g") == [key]
    job = pipeline.jobs.get(key)
    assert job is not None and (job.state, job.attempts) == ("queued", 0)
    assert sent.sent == [(TASK_BENCHMARK, key, "gpu-80g")]
    assert {c.state for c in pipeline.jobs.children(key)} == {"waiting"}


def test_a_verdict_from_the_pipeline_reaches_slack_once(
    tmp_path: Path, zoo: Zoo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from config.notify import NotifySettings, SlackSettings
    from tests.support.slack_server import SlackServer
    from workers.notify import make_notifier

    with SlackServer(token="xoxb-pipeline") as slack:
        monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-pipeline")
        monkeypatch.setenv("SLACK_API_URL", slack.api_url)
        pipeline, sent, _ = make(tmp_path, zoo)
        pipeline.settings = pipeline.settings.model_copy(
            update={"notify": NotifySettings(slack=SlackSettings(channel="C0LEADS"))}
        )
        pipeline.notifier = make_notifier(pipeline.settings)
        (key,) = pipeline.plan(release(zoo.stronger))
        pipeline.run_benchmark(key, "w")
        for _, verdict_key, _ in [s for s in sent.sent if s[0] == TASK_VERDICT]:
            pipeline.run_verdict(verdict_key, "w")
        notify = [k for name, k, _ in sent.sent if name == TASK_NOTIFY]
        for note in notify * 3:  # redelivered notifications
            pipeline.notify(note)
        (parent,) = slack.posts("C0LEADS")
        replies = slack.replies(parent["ts"])
        assert len(replies) == 2
        assert all(r["text"].startswith("SUPERSEDED:") for r in replies)
        assert {pipeline.jobs.get(k).state for k in notify} == {"notified"}  # type: ignore[union-attr]
        assert slack.errors == []


def test_a_verdict_whose_results_are_gone_sends_the_benchmark_back(
    planned: tuple[Pipeline, Recorder, Notes, str],
) -> None:
    """The store's result rows are deleted between benchmark and verdict: the verdict does not
    score anything itself; it waits again, the benchmark job goes back to its own queue, and
    the second benchmark releases it."""
    from sqlalchemy import delete

    from benchmarks.cache import BenchmarkResult

    pipeline, sent, notes, key = planned
    pipeline.run_benchmark(key, "w1")
    verdicts = [k for name, k, _ in sent.sent if name == TASK_VERDICT]
    with pipeline.results.engine.begin() as connection:
        connection.execute(delete(BenchmarkResult))
    sent.sent.clear()
    step = pipeline.run_verdict(verdicts[0], "d1")
    assert step.outcome == "done" and "is gone" in str(step.reason)
    verdict = pipeline.jobs.get(verdicts[0])
    assert verdict is not None and verdict.state == "waiting" and verdict.result is None
    assert sent.sent == [(TASK_BENCHMARK, key, "gpu-24g")]
    # The other verdict meets the same: its benchmark is already queued, nothing more is sent.
    assert pipeline.run_verdict(verdicts[1], "d1").outcome == "done"
    assert sent.sent == [(TASK_BENCHMARK, key, "gpu-24g")]
    assert pipeline.run_benchmark(key, "w2").outcome == "done"
    again = [k for name, k, _ in sent.sent if name == TASK_VERDICT]
    assert sorted(again) == sorted(verdicts)
    for verdict_key in again:
        assert pipeline.run_verdict(verdict_key, "d2").outcome == "done"
    for verdict_key in [k for name, k, _ in sent.sent if name == TASK_NOTIFY] * 2:
        pipeline.notify(verdict_key)
    assert sorted(j.key for j in notes.jobs) == sorted(verdicts)  # one message each


def test_a_verdict_job_reads_the_store_only(
    planned: tuple[Pipeline, Recorder, Notes, str], tmp_path: Path
) -> None:
    """Judged on a pipeline whose Hub is unreachable and whose runtime differs from the
    benchmark's (a default worker): the same verdict as ``judge_stored`` on the same results."""
    from benchmarks.compare import judge_stored

    pipeline, sent, _, key = planned
    pipeline.run_benchmark(key, "w1")
    default = Pipeline(
        pipeline.settings.model_copy(update={"runtime": RuntimeSettings(device="cpu",
                                                                        dtype="bfloat16")}),
        pipeline.jobs, sent, None,
    )  # fmt: skip
    (verdict_key, *_) = [k for name, k, _ in sent.sent if name == TASK_VERDICT]
    assert default.run_verdict(verdict_key, "d1").outcome == "done"
    verdict = default.jobs.get(verdict_key)
    assert verdict is not None and verdict.result is not None
    bench = pipeline.jobs.get(key)
    assert bench is not None and bench.result is not None
    pair = BenchmarkScores.model_validate(bench.result).pairs[str(verdict.finetune)]
    ft = next(f for f in pipeline.settings.finetunes if f.name == verdict.finetune)
    assert verdict.result == judge_stored(pipeline.settings, ft, pair, pipeline.results).to_dict()
    for side in ("finetune", "candidate"):
        details = verdict.result["details"][side]
        assert (details["device"], details["dtype"], details["hardware"]) == (
            "cpu", "float32", "gpu-24g",
        )  # fmt: skip
        assert details["scored_on"] == "gpu-24g: cpu, float32"


def test_a_send_the_broker_refused_is_sent_again_at_the_next_pass(tmp_path: Path, zoo: Zoo) -> None:
    refused: list[str] = []

    def broker_down(name: str, key: str, queue: str) -> None:
        refused.append(key)
        raise ConnectionError("Redis is down")

    pipeline, sent, _ = make(tmp_path, zoo, queued_timeout=900)
    recorder = pipeline._send
    pipeline._send = broker_down
    (key,) = pipeline.plan(release(zoo.weaker))  # planned and kept; the send failed
    job = pipeline.jobs.get(key)
    assert refused == [key] and job is not None and job.state == "queued" and job.unsent
    assert pipeline.reconcile()["resent"] == 0  # still down: still marked
    assert pipeline.jobs.get(key).unsent  # type: ignore[union-attr]
    pipeline._send = recorder
    assert pipeline.reconcile()["resent"] == 1  # long before queued_timeout
    assert sent.sent == [(TASK_BENCHMARK, key, "gpu-24g")]
    assert not pipeline.jobs.get(key).unsent  # type: ignore[union-attr]
    assert pipeline.reconcile()["resent"] == 0


def a_verdict_done(pipeline: Pipeline, sent: Recorder, key: str) -> str:
    """Runs the planned benchmark ``key`` and its first verdict job; the verdict's key."""
    pipeline.run_benchmark(key, "w1")
    (verdict_key, *_) = [k for name, k, _ in sent.sent if name == TASK_VERDICT]
    pipeline.run_verdict(verdict_key, "w1")
    return verdict_key


def test_a_failed_notification_is_recorded_and_retried_with_back_off(
    planned: tuple[Pipeline, Recorder, Notes, str], caplog: pytest.LogCaptureFixture
) -> None:
    from core.errors import FatalError

    pipeline, sent, notes, key = planned
    verdict_key = a_verdict_done(pipeline, sent, key)

    class Archived:
        def send(self, job: Job) -> None:
            raise FatalError("Slack refused chat_postMessage: is_archived")

    pipeline.notifier = Archived()
    pipeline.settings = pipeline.settings.model_copy(
        update={"workers": WorkersSettings(notify_retry=30, notify_retry_max=100)}
    )
    pipeline.workers = pipeline.settings.workers
    with caplog.at_level("WARNING"):
        for _ in range(3):
            assert not pipeline.notify(verdict_key)
    job = pipeline.jobs.get(verdict_key)
    assert job is not None and job.state == "done"
    assert (job.notify_tries, job.notify_error) == (
        3,
        "Slack refused chat_postMessage: is_archived",
    )
    assert job.notify_due is not None
    wait = (job.notify_due - now()).total_seconds()
    assert 100 - 5 < wait <= 100  # 30, 60, then 120 capped at 100
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "SUPERSEDED" in errors[0].getMessage()  # the message, once
    # Not due yet: the reconciler does not send it again.
    sent.sent.clear()
    assert pipeline.reconcile()["renotified"] == 0 and sent.sent == []
    # Fixed: the next try delivers it, and the reason is cleared.
    pipeline.notifier = notes
    assert pipeline.notify(verdict_key)
    job = pipeline.jobs.get(verdict_key)
    assert job is not None and job.state == "notified" and job.notify_error is None


def test_a_verdict_record_this_version_cannot_read_is_a_recorded_notify_failure(
    planned: tuple[Pipeline, Recorder, Notes, str], caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    from workers.notify import blocks
    from workers.records import JobRow

    pipeline, sent, _, key = planned
    verdict_key = a_verdict_done(pipeline, sent, key)
    with Session(pipeline.jobs.engine) as session:  # as another version might have written it
        session.execute(
            update(JobRow).where(JobRow.key == verdict_key).values(result={"verdict": "MAYBE"})
        )
        session.commit()

    class Rendering:
        def send(self, job: Job) -> None:
            blocks.for_job(job, pipeline.settings.hub.endpoint)

    pipeline.notifier = Rendering()
    with caplog.at_level("ERROR"):
        assert not pipeline.notify(verdict_key)
    job = pipeline.jobs.get(verdict_key)
    assert job is not None and job.state == "done" and job.notify_tries == 1
    assert job.notify_error is not None
    assert job.notify_error.startswith("its stored record cannot be read")
    assert job.notify_due is not None  # tried again later, by a version that may read it
    assert any("cannot be read" in r.getMessage() for r in caplog.records)
