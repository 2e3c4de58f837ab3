"""A judged task in the topology Supersede ships: the GPU-queue worker (bfloat16) generates both
sides' answers and has an API judge compare them in the benchmark job; the default worker
(float32, no torch, and a judge key the judge refuses) computes the verdict from the judgement
that job stored, asking the judge nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.sides import BenchmarkScores
from core.constants import TASK_BENCHMARK
from supersede.demo.zoo import Zoo
from tests.support.hub_server import HubServer
from tests.support.judge import prefer_longer
from tests.support.openai_server import OpenAIServer
from tests.workers.conftest import wait_for
from tests.workers.test_judged_pipeline import small_copy_task
from tests.workers.test_topology import (
    FLOW_S,
    MakeClient,
    StartWorker,
    all_notified,
    jobs_of,
    released,
)

pytestmark = pytest.mark.slow

JUDGE_KEY = "sk-judge-topology"
ROWS = 6


def test_the_gpu_worker_judges_and_the_default_worker_reads_the_judgement(
    tmp_path: Path,
    zoo: Zoo,
    hub: HubServer,
    redis_url: str,
    write_config: Callable[..., Path],
    start_worker: StartWorker,
    client: MakeClient,
    no_torch: dict[str, str],
) -> None:
    task = small_copy_task(tmp_path / "task", rows=ROWS)
    with OpenAIServer(prefer_longer, model="judge-1") as judge:
        judge.require_key(JUDGE_KEY)
        api = {"name": "house-judge", "model": "judge-1", "base_url": judge.url,
               "api_key_env": "SUPERSEDE_TEST_JUDGE_KEY", "max_retries": 0,
               "input_usd_per_1m": 2.0, "output_usd_per_1m": 8.0}  # fmt: skip
        finetune = {"name": "copy", "task": str(task), "base": "acme/base",
                    "adapter": "acme/lora", "judge": {"api": "house-judge"}}  # fmt: skip
        common = {"finetunes": [finetune], "api_candidates": [api]}
        gpu_config = write_config(
            hub, broker_url=redis_url, runtime={"dtype": "bfloat16"}, **common
        )
        default_config = write_config(
            hub, broker_url=redis_url, runtime={"dtype": "float32"}, **common
        )
        gpu = start_worker(gpu_config, "gpu-24g", env={"SUPERSEDE_TEST_JUDGE_KEY": JUDGE_KEY})
        # The default worker holds a key the judge refuses: had it asked, the judgement failed.
        default = start_worker(
            default_config, "default", concurrency=2,
            env={**no_torch, "SUPERSEDE_TEST_JUDGE_KEY": "sk-refused"},
        )  # fmt: skip
        jobs = client(default_config)

        jobs.pipeline.plan(released(hub, zoo))
        wait_for(all_notified(jobs, 1, gpu, default), FLOW_S, "the judged verdict notified")

        (bench,) = jobs_of(jobs, "benchmark")
        assert (bench.state, bench.queue) == ("done", "gpu-24g")
        pair = BenchmarkScores.model_validate(bench.result).pairs["copy"]
        assert pair.candidate is not None
        assert (pair.candidate.hardware, pair.candidate.dtype) == ("gpu-24g", "bfloat16")
        judgement = pair.judge
        assert judgement is not None and judgement.failed is None, judgement
        assert judgement.n == ROWS and judgement.judge == "judge-1"
        # Every call carried the GPU worker's key: none came from the default worker.
        asked = judge.requests
        assert asked and all(r.status == 200 for r in asked)
        assert all(r.headers.get("authorization") == f"Bearer {JUDGE_KEY}" for r in asked)
        assert judgement.calls == len(asked) and judgement.cost_usd > 0

        (verdict,) = jobs_of(jobs, "verdict")
        assert verdict.result is not None and verdict.attempts == 1
        judged = verdict.result["judged"]
        assert judged["calls"] == judgement.calls
        assert judged["wins"] + judged["ties"] + judged["losses"] == ROWS
        assert verdict.result["verdict"] in ("SUPERSEDED", "HOLDS", "AT_RISK", "INCONCLUSIVE")
        assert not verdict.result["reason"].startswith("judging failed")
        assert len(judge.requests) == len(asked)  # the verdict asked nothing more
        assert "torch is not installed" not in default.output()
        assert default.succeeded(TASK_BENCHMARK) == []
        assert gpu.succeeded("supersede.verdict") == []
