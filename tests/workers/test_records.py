"""A job's typed records: written through their TypeAdapter, read back as the same model, and rows
written before (plain JSON of the same shape) still read."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from benchmarks.sides import BenchmarkScores, PairScores, ScoredSide
from benchmarks.verdict import Verdict, VerdictReport
from core.constants import JobKind, JobState
from watcher.events import Announcement, ApiRelease, ModelReleased
from workers.jobs import JobStore

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
RELEASE = ModelReleased(
    source="hub", detected_at=T0, repo_id="acme/Acme-7B", revision="0" * 40, params=7_000_000_000
)
REPORT = VerdictReport(
    verdict=Verdict.AT_RISK, finetune="support-triage", candidate="acme/Acme-7B",
    task="review_sentiment", metric="acc", n=300, score_finetune=0.81, score_candidate=0.80,
    delta=-0.01, ci_low=-0.03, ci_high=0.01, p_value=0.4, test="exact McNemar", confidence=0.95,
    margin=0.02, cost_per_1k_finetune=0.42, cost_per_1k_candidate=0.2,
    monthly_cost_finetune=2040.0, monthly_cost_candidate=400.0, monthly_savings_usd=1640.0,
    tuning_cost_usd=18000.0, reason="not significant either way", summary="Too close to call.",
    warnings=("few examples",), details={"finetune": {"stderr": 0.01}},
)  # fmt: skip
#: A verdict row exactly as the code before typed records stored it (``report.to_dict()``).
LEGACY_RESULT = json.loads(
    '{"verdict": "AT_RISK", "finetune": "support-triage", "candidate": "acme/Acme-7B", '
    '"task": "review_sentiment", "metric": "acc", "n": 300, "score_finetune": 0.81, '
    '"score_candidate": 0.8, "delta": -0.01, "ci_low": -0.03, "ci_high": 0.01, "p_value": 0.4, '
    '"test": "exact McNemar", "confidence": 0.95, "margin": 0.02, "cost_per_1k_finetune": 0.42, '
    '"cost_per_1k_candidate": 0.2, "monthly_cost_finetune": 2040.0, '
    '"monthly_cost_candidate": 400.0, "monthly_savings_usd": 1640.0, "tuning_cost_usd": 18000.0, '
    '"reason": "not significant either way", "summary": "Too close to call.", "hint": null, '
    '"warnings": ["few examples"], "cost_basis_finetune": null, "cost_basis_candidate": null, '
    '"details": {"finetune": {"stderr": 0.01}}}'
)


@pytest.fixture
def jobs(tmp_path: Path) -> JobStore:
    return JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")


def finished(jobs: JobStore, key: str, kind: str, result: object, event: object) -> None:
    jobs.add(key=key, kind=kind, candidate="acme/Acme-7B@0", queue="default", state="queued",
             payload={"event": event})  # fmt: skip
    assert jobs.claim(key, "w", lease_s=60, max_attempts=3).outcome == "run"
    assert jobs.finish(key, "w", result)  # type: ignore[arg-type]


def test_a_verdict_is_stored_as_today_and_read_back_as_the_model(jobs: JobStore) -> None:
    finished(jobs, "v", "verdict", REPORT, RELEASE.model_dump(mode="json"))
    job = jobs.get("v")
    assert job is not None
    assert job.kind is JobKind.VERDICT and job.state is JobState.DONE
    # Today's record is the earlier one plus the money and deploy fields (all with defaults).
    assert job.result == REPORT.to_dict()
    assert LEGACY_RESULT.items() <= job.result.items()
    assert job.verdict() == REPORT and job.event() == RELEASE and job.release() == RELEASE
    assert job.scores() is None
    assert json.loads(json.dumps(job.to_dict()))["state"] == "done"


def test_a_row_written_before_typed_records_still_reads(jobs: JobStore) -> None:
    finished(jobs, "old", "verdict", LEGACY_RESULT, RELEASE.model_dump(mode="json"))
    job = jobs.get("old")
    assert job is not None and job.verdict() == REPORT


def test_benchmark_scores_and_announcements_round_trip(jobs: JobStore) -> None:
    side = ScoredSide(key="k", kind="api", model="acme-mini", score=0.5, stderr=0.1)
    scores = BenchmarkScores(
        pairs={"t": PairScores(task="t", metric="acc", n=1, finetune=side, candidate=side)}
    )
    api = ModelReleased(
        source="feed:acme", detected_at=T0,
        api=ApiRelease(model="acme-mini", rule="acme-mini"),
    )  # fmt: skip
    finished(jobs, "b", "benchmark", scores, api.model_dump(mode="json"))
    bench = jobs.get("b")
    assert bench is not None and bench.scores() == scores and bench.verdict() is None
    assert bench.event() == api and api.api is not None
    assert api.api.rule == "acme-mini" and not api.api.endpoint_fields

    post = Announcement(source="feed:acme", detected_at=T0, title="News", entry_id="p-1")
    jobs.add(key="a", kind="announcement", candidate="News", queue="default", state="done",
             payload={"event": post.model_dump(mode="json")})  # fmt: skip
    job = jobs.get("a")
    assert job is not None and job.event() == post
    with pytest.raises(ValueError, match="holds no release"):
        job.release()


def test_a_damaged_record_is_an_error_not_a_guess(jobs: JobStore) -> None:
    finished(jobs, "bad", "verdict", {"verdict": "NEW_KIND"}, {"kind": "model_released"})
    job = jobs.get("bad")
    assert job is not None
    with pytest.raises(ValidationError):
        job.verdict()
    with pytest.raises(ValidationError):
        job.event()
