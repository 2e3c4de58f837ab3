"""The topology Supersede ships, on real Redis and real worker processes: a worker consuming the
GPU queue, with a runtime of its own (bfloat16), and a default worker (float32, concurrency 2)
that cannot import torch at all. Benchmarks run on the first; verdicts and notifications on the
second, from the results the benchmark stored, without a Hub request or a model."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from benchmarks.cache import BenchmarkResult, ResultStore
from benchmarks.sides import BenchmarkScores
from core.constants import TASK_BENCHMARK
from supersede.demo.zoo import Zoo
from tests.support.cli import supersede
from tests.support.hub_server import HubServer
from tests.support.slack_server import SlackServer
from tests.workers.conftest import SHIPPED_TASK, CeleryWorker, Client, publish, wait_for
from watcher.events import ModelReleased
from workers.jobs import Job

pytestmark = pytest.mark.slow

FLOW_S = 180.0
RELEASE = "acme/Stronger-1B"
TOKEN = "xoxb-topology"
CHANNEL = "C0TOPOLOGY"

StartWorker = Callable[..., CeleryWorker]
MakeClient = Callable[[Path], Client]


def two_finetunes() -> list[dict[str, Any]]:
    return [
        {"name": name, "task": str(SHIPPED_TASK), "base": "acme/base", "adapter": "acme/lora"}
        for name in ("reviews", "reviews-eu")
    ]


def released(hub: HubServer, zoo: Zoo) -> ModelReleased:
    shas = publish(hub, zoo, **{RELEASE: zoo.stronger})
    return ModelReleased(
        source="hub", detected_at=datetime.now(UTC), repo_id=RELEASE, revision=shas[RELEASE],
        params=1000,
    )  # fmt: skip


def jobs_of(client: Client, kind: str) -> list[Job]:
    return [job for job in client.all_jobs() if job.kind == kind]


def all_notified(client: Client, count: int, *workers: CeleryWorker) -> Callable[[], bool]:
    def check() -> bool:
        for worker in workers:
            if worker.process is not None and worker.process.poll() is not None:
                pytest.fail(f"worker {worker.name} died:\n{worker.tail()}")
        verdicts = jobs_of(client, "verdict")
        failed = [j for j in verdicts if j.state in ("failed", "skipped")]
        assert not failed, [j.to_dict() for j in failed]
        return len(verdicts) == count and all(j.state == "notified" for j in verdicts)

    return check


def benchmark_done(client: Client) -> Callable[[], Job | None]:
    def check() -> Job | None:
        (job,) = jobs_of(client, "benchmark")
        assert job.state not in ("failed", "skipped"), job.to_dict()
        return job if job.state == "done" else None

    return check


def configs(
    write_config: Callable[..., Path], hub: HubServer, redis_url: str, **sections: Any
) -> tuple[Path, Path]:
    """The GPU-queue worker's config (bfloat16) and the default worker's (float32)."""
    common = {"finetunes": two_finetunes(), **sections}
    gpu = write_config(hub, broker_url=redis_url, runtime={"dtype": "bfloat16"}, **common)
    default = write_config(hub, broker_url=redis_url, runtime={"dtype": "float32"}, **common)
    return gpu, default


def test_verdicts_are_judged_from_stored_results_on_the_default_worker(
    zoo: Zoo,
    hub: HubServer,
    redis_url: str,
    write_config: Callable[..., Path],
    start_worker: StartWorker,
    client: MakeClient,
    no_torch: dict[str, str],
) -> None:
    stamped: list[tuple[float, str, str]] = []
    record = hub._record

    def stamp(method: str, path: str) -> Any:
        stamped.append((time.time(), method, path))
        return record(method, path)

    hub._record = stamp  # type: ignore[method-assign]
    gpu_config, default_config = configs(write_config, hub, redis_url)
    gpu = start_worker(gpu_config, "gpu-24g", concurrency=1)
    default = start_worker(default_config, "default", concurrency=2, env=no_torch)
    jobs = client(default_config)

    jobs.pipeline.plan(released(hub, zoo))
    wait_for(all_notified(jobs, 2, gpu, default), FLOW_S, "both verdicts notified")

    (bench,) = jobs_of(jobs, "benchmark")
    assert (bench.state, bench.queue, bench.attempts) == ("done", "gpu-24g", 1)
    pairs = BenchmarkScores.model_validate(bench.result).pairs
    for pair in pairs.values():
        for side in (pair.finetune, pair.candidate):
            assert (side.hardware, side.device, side.dtype) == ("gpu-24g", "cpu", "bfloat16")
    verdicts = jobs_of(jobs, "verdict")
    for verdict in verdicts:
        assert verdict.started_at is not None and verdict.finished_at is not None
        during = [
            (method, path) for at, method, path in stamped
            if verdict.started_at.timestamp() <= at <= verdict.finished_at.timestamp()
        ]  # fmt: skip
        assert during == [], f"the verdict job asked the Hub: {during}"
        took = (verdict.finished_at - verdict.started_at).total_seconds()
        assert took < 1.0, f"verdict job {verdict.key[:12]} took {took:.2f} s"
        assert verdict.attempts == 1 and verdict.result is not None
        details = verdict.result["details"]
        assert details["finetune"]["scored_on"] == details["candidate"]["scored_on"]
        assert details["candidate"]["scored_on"] == "gpu-24g: cpu, bfloat16"
    # The default worker never imported torch (it cannot) and never ran a benchmark.
    assert "torch is not installed" not in default.output()
    assert default.succeeded(TASK_BENCHMARK) == []
    assert gpu.succeeded("supersede.verdict") == []
    print(f"Hub requests for the release: {len(stamped)}; verdict jobs took "
          f"{[round((v.finished_at - v.started_at).total_seconds(), 3) for v in verdicts]} s")  # type: ignore[operator]  # fmt: skip

    # `supersede compare --stored` gives the same verdict on the same stored results.
    for verdict in verdicts:
        shown = supersede(
            "compare", "--finetune", str(verdict.finetune), "--candidate", RELEASE, "--stored",
            "--json", "-c", str(default_config), cwd=default_config.parent,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout) == verdict.result


def test_a_verdict_arrives_with_the_hub_stopped_after_the_benchmark(
    zoo: Zoo,
    hub: HubServer,
    redis_url: str,
    write_config: Callable[..., Path],
    start_worker: StartWorker,
    client: MakeClient,
    no_torch: dict[str, str],
) -> None:
    gpu_config, default_config = configs(write_config, hub, redis_url)
    gpu = start_worker(gpu_config, "gpu-24g", concurrency=1)
    jobs = client(default_config)
    jobs.pipeline.plan(released(hub, zoo))
    wait_for(benchmark_done(jobs), FLOW_S, "the benchmark")
    hub.close()  # the Hub is gone before any verdict job starts
    default = start_worker(default_config, "default", concurrency=2, env=no_torch)
    wait_for(all_notified(jobs, 2, gpu, default), FLOW_S, "both verdicts notified")
    assert {j.result["verdict"] for j in jobs_of(jobs, "verdict") if j.result} == {"SUPERSEDED"}


def test_results_wiped_before_the_verdict_send_the_benchmark_back(
    zoo: Zoo,
    hub: HubServer,
    redis_url: str,
    write_config: Callable[..., Path],
    start_worker: StartWorker,
    client: MakeClient,
    no_torch: dict[str, str],
) -> None:
    with SlackServer(token=TOKEN) as slack:
        slack_env = {"SLACK_BOT_TOKEN": TOKEN, "SLACK_API_URL": slack.api_url}
        notify = {"slack": {"channel": CHANNEL}}
        gpu_config, default_config = configs(write_config, hub, redis_url, notify=notify)
        gpu = start_worker(gpu_config, "gpu-24g", concurrency=1, env=slack_env)
        jobs = client(default_config)
        jobs.pipeline.plan(released(hub, zoo))
        wait_for(benchmark_done(jobs), FLOW_S, "the benchmark")
        store = ResultStore(jobs.settings.store.url)
        with store.engine.begin() as connection:
            connection.execute(delete(BenchmarkResult))
        default = start_worker(
            default_config, "default", concurrency=2, env={**no_torch, **slack_env}
        )
        wait_for(all_notified(jobs, 2, gpu, default), FLOW_S, "both verdicts notified")

        assert len(gpu.succeeded(TASK_BENCHMARK)) == 2  # scored again, on its own queue
        (bench,) = jobs_of(jobs, "benchmark")
        assert (bench.state, bench.queue) == ("done", "gpu-24g")
        assert store.count() == 2  # the fine-tune (once for both) and the candidate
        (parent,) = slack.posts(CHANNEL)
        replies = slack.replies(parent["ts"])
        assert sorted(r["text"].split(":")[0] for r in replies) == ["SUPERSEDED", "SUPERSEDED"]
        assert len(replies) == 2 and slack.errors == []


def test_the_re_tune_job_trains_on_the_gpu_worker_and_the_default_worker_judges_three_ways(
    zoo: Zoo,
    hub: HubServer,
    redis_url: str,
    write_config: Callable[..., Path],
    start_worker: StartWorker,
    client: MakeClient,
    no_torch: dict[str, str],
    tmp_path: Path,
) -> None:
    from tests.workers.test_retune_pipeline import QUICK, training_file

    finetune = {
        **two_finetunes()[0],
        "retune": {"data_file": str(training_file(tmp_path)), "when": "always"},
        # Requests priced: with none, timing noise alone could make the re-tuned adapter look
        # dearer per request, an unpriceable difference that keeps it from being recommended.
        "economics": {"value_per_point_usd": 100.0, "monthly_requests": 10_000},
    }
    common = {"finetunes": [finetune], "retune": QUICK}
    gpu_config = write_config(hub, broker_url=redis_url, runtime={"dtype": "bfloat16"}, **common)
    default_config = write_config(hub, broker_url=redis_url, runtime={"dtype": "float32"},
                                  **common)  # fmt: skip
    gpu = start_worker(gpu_config, "gpu-24g", concurrency=1)
    default = start_worker(default_config, "default", concurrency=2, env=no_torch)
    jobs = client(default_config)
    shas = publish(hub, zoo, **{"acme/Weaker-1B": zoo.weaker})
    event = ModelReleased(source="hub", detected_at=datetime.now(UTC), repo_id="acme/Weaker-1B",
                          revision=shas["acme/Weaker-1B"], params=1000)  # fmt: skip
    jobs.pipeline.plan(event)
    wait_for(all_notified(jobs, 1, gpu, default), FLOW_S, "the three-way verdict notified")

    (retune,) = jobs_of(jobs, "retune")
    assert (retune.state, retune.queue) == ("done", "gpu-24g")
    (verdict,) = jobs_of(jobs, "verdict")
    assert verdict.parent == retune.key and verdict.result is not None
    assert verdict.result["verdict"] == "RETUNE", verdict.result["hint"]
    # Trained and scored where the other sides were: the GPU worker's runtime (bfloat16).
    assert verdict.result["details"]["retuned"]["scored_on"] == "gpu-24g: cpu, bfloat16"
    assert gpu.succeeded("supersede.retune_job") != []
    assert default.succeeded("supersede.retune_job") == []
    assert "torch is not installed" not in default.output()
