"""How long a verdict job takes, and how many Hub requests one release costs, by job.

A performance benchmark, not a test. It builds the tiny model zoo, publishes the fine-tune (base
+ LoRA) and one release on a local Hub server, and runs one release with two fine-tunes in the
shipped topology: the benchmark job on the GPU queue with ``runtime.dtype: bfloat16`` and the
verdict jobs on the default queue with ``float32`` (both on this CPU). Two ways:

* ``embedded``: the pipeline's functions called in this process, one job after the other (what
  the embedded worker of ``supersede run`` does), each side with its own settings;
* ``redis``: ``celery -A workers worker`` subprocesses on Redis, one per queue, each with its own
  config (``--redis URL``; the database is flushed).

It prints the seconds of each verdict job (from the job store) and the Hub requests made during
the benchmark job and during the verdict jobs. It uses only what every version of the pipeline
has, so it can be pointed at another checkout with ``--repo`` to compare versions::

    .venv/bin/python perf/verdict_job.py
    .venv/bin/python perf/verdict_job.py --mode redis --redis redis://127.0.0.1:6379/13
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("embedded", "redis"), default="embedded")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--repo", type=Path, default=HERE, help="The checkout to measure.")
    args = parser.parse_args()
    sys.path.insert(0, str(args.repo))
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    with tempfile.TemporaryDirectory(prefix="verdict-job-") as tmp:
        figures = run(Path(tmp), args.mode, args.redis, args.repo)
    print(json.dumps(figures, indent=2))
    return 0


def run(tmp: Path, mode: str, redis_url: str, repo: Path) -> dict[str, Any]:
    from supersede.demo.localhub.hub import HubHandler, HubServer
    from supersede.demo.zoo import build_zoo, read_jsonl

    task = repo / "config" / "tasks" / "review_sentiment" / "review_sentiment.yaml"
    zoo = build_zoo(tmp / "zoo", read_jsonl(task.parent / "train.jsonl"))
    stamps: list[float] = []

    class Stamped(HubHandler):
        """Notes when each Hub request arrives (the downloads' share of the job's time)."""

        def answer(self) -> None:
            stamps.append(time.time())
            super().answer()

    class StampedHub(HubServer):
        handler_class = Stamped

    with StampedHub() as hub:
        small = {"safetensors": {"parameters": {"F32": 1000}, "total": 1000}}
        hub.add_repo("acme/base", zoo.base, extra=small)
        hub.add_repo("acme/lora", zoo.adapter, extra=small)
        sha = hub.add_repo("acme/Stronger-1B", zoo.stronger, extra=small)
        configs = {
            dtype: write_config(tmp, hub.url, task, dtype, redis_url if mode == "redis" else None)
            for dtype in ("bfloat16", "float32")
        }
        if mode == "embedded":
            jobs = embedded(configs, sha)
        else:
            jobs = on_redis(configs, sha, redis_url, repo, tmp)
    bench = next(j for j in jobs if j.kind == "benchmark")
    verdicts = [j for j in jobs if j.kind == "verdict"]

    def during(job: Any) -> int:
        start, end = job.started_at.timestamp(), job.finished_at.timestamp()
        return sum(1 for at in stamps if start <= at <= end)

    return {
        "mode": mode,
        "benchmark_s": round((bench.finished_at - bench.started_at).total_seconds(), 3),
        "verdict_s": [round((v.finished_at - v.started_at).total_seconds(), 3) for v in verdicts],
        "verdicts": [str(r.verdict) if (r := v.verdict()) else None for v in verdicts],
        "hub_requests": {
            "total": len(stamps),
            "benchmark_job": during(bench),
            "verdict_jobs": sum(during(v) for v in verdicts),
        },
    }


def write_config(tmp: Path, hub_url: str, task: Path, dtype: str, broker: str | None) -> Path:
    document = {
        "store": {"url": f"sqlite:///{tmp / 'store.db'}"},
        "hub": {"endpoint": hub_url, "cache_dir": str(tmp / f"hf-cache-{dtype}")},
        "runtime": {"device": "cpu", "dtype": dtype},
        "finetunes": [
            {"name": name, "task": str(task), "base": "acme/base", "adapter": "acme/lora"}
            for name in ("reviews", "reviews-eu")
        ],
        "notify": {"console_dir": str(tmp / "notifications")},
        "workers": {"broker_url": broker} if broker else {},
    }
    path = tmp / f"supersede-{dtype}.yaml"
    path.write_text(json.dumps(document))
    return path


def release(sha: str) -> Any:
    from watcher.events import ModelReleased

    return ModelReleased(source="hub", detected_at=datetime.now(UTC), repo_id="acme/Stronger-1B",
                         revision=sha, params=1000)  # fmt: skip


def embedded(configs: dict[str, Path], sha: str) -> list[Any]:
    from config.settings import load_settings
    from core.constants import TASK_BENCHMARK, TASK_VERDICT
    from workers.jobs import JobStore
    from workers.pipeline import Pipeline

    sent: list[tuple[str, str, str]] = []

    def send(name: str, key: str, queue: str) -> None:
        sent.append((name, key, queue))

    gpu_settings, default_settings = (load_settings(configs[d]) for d in ("bfloat16", "float32"))
    jobs = JobStore(default_settings.store.url)
    gpu = Pipeline(gpu_settings, jobs, send)
    default = Pipeline(default_settings, jobs, send)
    default.plan(release(sha))
    for name, key, _ in list(sent):
        if name == TASK_BENCHMARK:
            gpu.run_benchmark(key, "gpu worker")
    for name, key, _ in list(sent):
        if name == TASK_VERDICT:
            default.run_verdict(key, "default worker")
    return jobs.list(limit=100)


def on_redis(
    configs: dict[str, Path], sha: str, redis_url: str, repo: Path, tmp: Path
) -> list[Any]:
    import redis

    from config.settings import load_settings
    from workers.app import make_app
    from workers.jobs import JobStore
    from workers.pipeline import Pipeline

    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    workers: list[Any] = []
    try:
        workers.append(worker(configs["bfloat16"], "gpu-24g", 1, repo, tmp / "gpu.log"))
        workers.append(worker(configs["float32"], "default", 2, repo, tmp / "default.log"))
        settings = load_settings(configs["float32"])
        app = make_app(settings)
        jobs = JobStore(settings.store.url)

        def send(name: str, key: str, queue: str) -> None:
            app.send_task(name, args=[key], queue=queue)

        Pipeline(settings, jobs, send).plan(release(sha))
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            verdicts = [j for j in jobs.list(limit=100) if j.kind == "verdict"]
            if verdicts and all(j.state in ("notified", "failed", "skipped") for j in verdicts):
                return jobs.list(limit=100)
            time.sleep(0.2)
        raise TimeoutError("no verdicts within 30 minutes")
    finally:
        for process in workers:
            process.terminate()
        for process in workers:
            process.wait(60)


def worker(config: Path, queue: str, concurrency: int, repo: Path, log: Path) -> Any:
    env = {**os.environ, "SUPERSEDE_CONFIG": str(config), "PYTHONPATH": str(repo)}
    command = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queue, "-c",
               str(concurrency), "--without-mingle", "--without-gossip", "-n", f"{queue}@%h",
               "-l", "INFO"]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, env=env, cwd=repo, stdout=sink, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 120
    while b" ready." not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"worker for {queue} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return process


if __name__ == "__main__":
    sys.exit(main())
