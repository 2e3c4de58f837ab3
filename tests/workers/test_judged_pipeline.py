"""A judged task through the job graph: the benchmark job generates both sides' answers and has
a local Hub model judge them through the engine (no API); the verdict job reads the judgement
it recorded; a second benchmark asks the judge nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from benchmarks.sides import BenchmarkScores
from config.settings import FineTune
from core.clock import now
from core.constants import TASK_VERDICT
from supersede.demo.zoo import Zoo
from tests.conftest import REPO
from tests.support.hub_server import HubServer
from tests.support.settings import build_settings
from tests.workers.conftest import SMALL
from tests.workers.test_slack_app import Sent
from watcher.events import ModelReleased
from workers.jobs import JobStore
from workers.pipeline import Pipeline


def small_copy_task(folder: Path, rows: int = 6) -> Path:
    """The shipped product-copy task on its first ``rows`` test documents, short answers."""
    shutil.copytree(REPO / "config" / "tasks" / "product_copy", folder)
    test = folder / "test.jsonl"
    test.write_text("".join(test.read_text().splitlines(keepends=True)[:rows]))
    path = folder / "product_copy.yaml"
    config = yaml.safe_load(path.read_text())
    config["generation_kwargs"]["max_gen_toks"] = 6
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_a_local_hub_judge_runs_in_the_benchmark_job_and_its_answers_are_kept(
    tmp_path: Path, zoo: Zoo, hub: HubServer
) -> None:
    judge_sha = hub.add_repo("acme/tiny-judge", zoo.base, extra=SMALL)
    task = small_copy_task(tmp_path / "task")
    ft = FineTune(name="copy", task=str(task), base=str(zoo.base), adapter=str(zoo.adapter),
                  judge={"model": f"acme/tiny-judge@{judge_sha}", "max_new_tokens": 8})  # fmt: skip
    settings = build_settings(tmp_path, endpoint=hub, finetunes=[ft], runtime={"latency_sample": 0})
    sent = Sent()
    pipeline = Pipeline(settings, JobStore(settings.store.url), sent)
    event = ModelReleased(source="hub", detected_at=now(), repo_id=str(zoo.stronger), params=1000)

    (key,) = pipeline.plan(event)
    assert pipeline.run_benchmark(key, "w").outcome == "done"
    job = pipeline.jobs.get(key)
    assert job is not None and job.result is not None
    judgement = BenchmarkScores.model_validate(job.result).pairs["copy"].judge
    assert judgement is not None and judgement.n == 6
    assert judgement.judge == f"acme/tiny-judge@{judge_sha}"
    # The tiny judge answers nothing readable: asked in both orders, each once more, then a
    # failed judgement with the reason (never a crashed job).
    assert judgement.calls > 0 and judgement.cost_usd == 0.0
    assert judgement.failed is not None and "no readable answer" in judgement.failed

    (verdict_key,) = [k for name, k, _ in sent.sent if name == TASK_VERDICT]
    assert pipeline.run_verdict(verdict_key, "w").outcome == "done"
    verdict = pipeline.jobs.get(verdict_key)
    assert verdict is not None and verdict.result is not None
    assert verdict.result["verdict"] == "INCONCLUSIVE"
    assert verdict.result["reason"].startswith("judging failed:")
    assert verdict.result["judged"]["calls"] == judgement.calls

    # Benchmarked again: the sides come from the result store and the judge from its cache.
    (again,) = pipeline.plan(event, rerun=True)
    assert pipeline.run_benchmark(again, "w").outcome == "done"
    job = pipeline.jobs.get(again)
    assert job is not None and job.result is not None
    second = BenchmarkScores.model_validate(job.result).pairs["copy"].judge
    assert second is not None and second.calls == 0
    assert second.cached_calls == judgement.calls and second.outcomes == judgement.outcomes


def test_bench_scores_a_judged_task_1_to_5_with_the_task_files_judge(
    tmp_path: Path, zoo: Zoo
) -> None:
    from tests.support.cli import supersede
    from tests.support.judge import score_by_words
    from tests.support.openai_server import OpenAIServer
    from tests.support.settings import write_settings

    task = small_copy_task(tmp_path / "task", rows=4)
    config = yaml.safe_load(task.read_text())
    config["judge"]["api"] = "house-judge"
    task.write_text(yaml.safe_dump(config, sort_keys=False))
    with OpenAIServer(score_by_words, model="judge-1") as server:
        api = {"name": "house-judge", "model": "judge-1", "base_url": server.url}
        settings = write_settings(tmp_path, api_candidates=[api])
        args = ("bench", "-m", str(zoo.base), "--task", str(task), "--json", "-c", str(settings))
        first = supersede(*args, cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        row = json.loads(first.stdout)
        assert row["metric"] == "judge (1-5)" and row["n"] == 4
        assert row["judge"]["calls"] == 4 and row["judge"]["failed"] is None
        assert 1 <= row["score"] <= 5 or row["judge"]["unparsed"] == 4
        second = json.loads(supersede(*args, cwd=tmp_path).stdout)
        assert second["judge"]["calls"] == 0 and second["judge"]["cached_calls"] == 4
        assert second["score"] == row["score"]
        assert len(server.requests) == 4


def test_a_judged_and_a_plain_fine_tune_share_one_benchmark_job(
    tmp_path: Path, zoo: Zoo, hub: HubServer
) -> None:
    """Two fine-tunes at once, as a deployment has them: only the judged task's pair is judged,
    and each verdict job reads its own pair."""
    from tests.conftest import SHIPPED_TASK
    from tests.support.judge import prefer_longer
    from tests.support.openai_server import OpenAIServer

    task = small_copy_task(tmp_path / "task")
    with OpenAIServer(prefer_longer, model="judge-1") as server:
        api = {"name": "house-judge", "model": "judge-1", "base_url": server.url}
        finetunes = [
            FineTune(name="copy", task=str(task), base=str(zoo.base), adapter=str(zoo.adapter),
                     judge={"api": "house-judge"}),
            FineTune(name="reviews", task=str(SHIPPED_TASK), base=str(zoo.base),
                     adapter=str(zoo.adapter)),
        ]  # fmt: skip
        settings = build_settings(tmp_path, endpoint=hub, finetunes=finetunes,
                                  api_candidates=[api], runtime={"latency_sample": 0})  # fmt: skip
        sent = Sent()
        pipeline = Pipeline(settings, JobStore(settings.store.url), sent)
        event = ModelReleased(source="hub", detected_at=now(), repo_id=str(zoo.stronger),
                              params=1000)  # fmt: skip
        (key,) = pipeline.plan(event)
        assert pipeline.run_benchmark(key, "w").outcome == "done"
        job = pipeline.jobs.get(key)
        assert job is not None and job.result is not None
        pairs = BenchmarkScores.model_validate(job.result).pairs
        copy, reviews = pairs["copy"].judge, pairs["reviews"].judge
        assert reviews is None
        assert copy is not None and copy.failed is None and copy.n == 6
        assert copy.calls == len(server.requests) > 0
        verdicts = [k for name, k, _ in sent.sent if name == TASK_VERDICT]
        for verdict_key in verdicts:
            assert pipeline.run_verdict(verdict_key, "w").outcome == "done"
    results = {j.finetune: j.result for j in map(pipeline.jobs.get, verdicts) if j is not None}
    assert set(results) == {"copy", "reviews"}
    assert results["copy"] is not None and results["copy"]["judged"]["calls"] == copy.calls
    assert results["reviews"] is not None and results["reviews"]["judged"] is None
    assert results["reviews"]["metric"] == "acc"
