"""The deploy checks in the job graph: a candidate whose licence blocks it is recorded unscored
and judged BLOCKED without a weight download; a fine-tune that allows the licence in its own
``deploy:`` gets the candidate benchmarked in the same release; the shipped defaults still judge
the zoo's releases (apache-2.0) on their merits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.sides import BenchmarkScores
from config.settings import FineTune
from core.constants import TASK_NOTIFY, TASK_VERDICT
from supersede.demo.zoo import Zoo
from tests.conftest import REPO, SHIPPED_TASK
from tests.support.hub_server import HubServer
from tests.support.serving import served
from tests.support.settings import build_settings
from tests.workers.test_pipeline import Notes, Recorder, release
from workers.jobs import Job, JobStore
from workers.pipeline import Pipeline

NON_COMMERCIAL = {"cardData": {"license": "cc-by-nc-4.0"}, "tags": ["license:cc-by-nc-4.0"]}


@pytest.fixture
def hub() -> Iterator[HubServer]:
    yield from served(HubServer())


def reviews(name: str, zoo: Zoo, **fields: Any) -> FineTune:
    return FineTune(name=name, task=str(SHIPPED_TASK), base=str(zoo.base),
                    adapter=str(zoo.adapter), **fields)  # fmt: skip


def pipeline_for(tmp_path: Path, hub: HubServer, *finetunes: FineTune, **sections: Any) -> tuple[
    Pipeline, Recorder, Notes
]:  # fmt: skip
    settings = build_settings(tmp_path, endpoint=hub, hub={"timeout_s": 10},
                              finetunes=finetunes, **sections)  # fmt: skip
    sent, notes = Recorder(), Notes()
    return Pipeline(settings, JobStore(settings.store.url), sent, notes), sent, notes


def run_through(pipeline: Pipeline, sent: Recorder, key: str) -> dict[str, Job]:
    """The benchmark job ``key``, its verdict jobs and their notifications; the verdict jobs by
    fine-tune."""
    assert pipeline.run_benchmark(key, "w1").outcome == "done"
    for verdict_key in [k for name, k, _ in sent.sent if name == TASK_VERDICT]:
        assert pipeline.run_verdict(verdict_key, "w1").outcome == "done"
    for note in [k for name, k, _ in sent.sent if name == TASK_NOTIFY]:
        assert pipeline.notify(note)
    jobs = {job.finetune: job for job in pipeline.jobs.children(key)}
    return {str(name): job for name, job in jobs.items()}


def weights_requested(hub: HubServer, repo_id: str) -> list[str]:
    return [path for _, path in hub.requests if repo_id in path and ".safetensors" in path]


def test_a_licence_blocked_release_is_judged_without_a_download(
    tmp_path: Path, zoo: Zoo, hub: HubServer
) -> None:
    repo = "acme/Stronger-nc"
    sha = hub.add_repo(repo, zoo.stronger, extra=NON_COMMERCIAL)
    pipeline, sent, notes = pipeline_for(tmp_path, hub, reviews("reviews", zoo),
                                         reviews("reviews-2", zoo))  # fmt: skip
    (key,) = pipeline.plan(release(repo, revision=sha))
    verdicts = run_through(pipeline, sent, key)
    bench = pipeline.jobs.get(key)
    assert bench is not None and bench.state == "done" and bench.result is not None
    pairs = BenchmarkScores.model_validate(bench.result).pairs
    for name in ("reviews", "reviews-2"):
        pair = pairs[name]
        assert pair.candidate is None and pair.finetune is None and pair.n == 0
        assert pair.candidate_name == repo
        assert pair.deploy is not None and not pair.deploy.benchmarked
        assert pair.deploy.blockers == ("licence cc-by-nc-4.0 not allowed",)
        result = verdicts[name].result
        assert result is not None and result["verdict"] == "BLOCKED"
        assert "licence cc-by-nc-4.0 not allowed" in result["reason"]
        assert result["benchmarked"] is False and result["candidate"] == repo
    assert weights_requested(hub, repo) == []
    # Two fine-tunes, one release: its metadata and config.json are read from the Hub once.
    info = [m for m, p in hub.requests if p.startswith(f"/api/models/{repo}")]
    config = [m for m, p in hub.requests if p == f"/{repo}/resolve/{sha}/config.json"]
    assert (info, config) == (["GET"], ["HEAD", "GET"])
    assert sorted(str(j.result["verdict"]) for j in notes.jobs if j.result) == ["BLOCKED"] * 2


def test_a_fine_tune_that_allows_the_licence_gets_it_benchmarked(
    tmp_path: Path, zoo: Zoo, hub: HubServer
) -> None:
    repo = "acme/Stronger-nc"
    sha = hub.add_repo(repo, zoo.stronger, extra=NON_COMMERCIAL)
    research = reviews("reviews-research", zoo,
                       deploy={"licenses": ["cc-by-nc-4.0", "apache-2.0"]})  # fmt: skip
    pipeline, sent, _ = pipeline_for(tmp_path, hub, reviews("reviews", zoo), research)
    (key,) = pipeline.plan(release(repo, revision=sha))
    verdicts = run_through(pipeline, sent, key)
    bench = pipeline.jobs.get(key)
    assert bench is not None and bench.result is not None
    pairs = BenchmarkScores.model_validate(bench.result).pairs
    assert pairs["reviews"].candidate is None
    scored = pairs["reviews-research"]
    assert scored.candidate is not None and scored.finetune is not None and scored.n == 300
    assert scored.candidate.score > scored.finetune.score
    assert scored.deploy is not None and scored.deploy.blockers == ()
    blocked, judged = verdicts["reviews"].result, verdicts["reviews-research"].result
    assert blocked is not None and blocked["verdict"] == "BLOCKED"
    assert judged is not None
    assert judged["verdict"] == "SUPERSEDED", judged["reason"]
    assert judged["license"] == "cc-by-nc-4.0" and judged["benchmarked"] is True
    assert weights_requested(hub, repo)  # downloaded once, for the fine-tune that allows it


def test_the_shipped_defaults_judge_the_zoo_releases_on_their_merits(
    tmp_path: Path, zoo: Zoo, hub: HubServer
) -> None:
    shipped = yaml.safe_load((REPO / "config" / "supersede.yaml").read_text(encoding="utf-8"))
    sections = {name: shipped[name] for name in ("deploy", "verdict", "serving")}
    pipeline, sent, _ = pipeline_for(tmp_path, hub, reviews("reviews", zoo), **sections)
    outcomes = {}
    for repo, folder in (("acme/Release-strong", zoo.stronger), ("acme/Release-weak", zoo.weaker)):
        sha = hub.add_repo(repo, folder)  # the zoo's card: apache-2.0
        sent.sent.clear()
        (key,) = pipeline.plan(release(repo, revision=sha))
        result = run_through(pipeline, sent, key)["reviews"].result
        assert result is not None and result["license"] == "apache-2.0"
        assert result["blockers"] == [] and result["reviews"] == [], result["reviews"]
        outcomes[repo] = result["verdict"]
    assert outcomes == {"acme/Release-strong": "SUPERSEDED", "acme/Release-weak": "HOLDS"}
