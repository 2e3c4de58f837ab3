"""The offline demo: the whole product on a laptop, with tiny models and local servers.

A local server speaking the Hub's API serves a tiny base model and a LoRA fine-tune (the
"deployed fine-tune" of a retailer's review-sentiment task); a local RSS feed plays a vendor's
blog. Three releases are then published one after the other: one on the Hub under a watched
organisation (found by polling), one only announced in the feed (found through the post's link),
and a research-only one under a non-commercial licence (blocked before any download). Last, a
judged task: the first release writes product descriptions against a fine-tune of the same base,
and a local OpenAI-compatible server plays the judge by a fixed rule. The real daemon path runs:
scheduler -> queue -> worker -> benchmark -> verdict -> notifier, on the embedded default, or on
Redis with a worker subprocess when a broker URL is given.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import yaml

TASK_DIR = Path(__file__).resolve().parents[2] / "config" / "tasks" / "review_sentiment"
FINETUNE = "review-sentiment"
WATCHED = "newlab"
BASE, ADAPTER = "acme-retail/tiny-base", "acme-retail/reviews-lora"
FIRST, SECOND = "newlab/Tiny-Chat-2", "otherlab/Tiny-Mini"
#: The stronger model again, published for research only: blocked by its licence.
THIRD, THIRD_LICENSE = "newlab/Tiny-Chat-2-Research", "cc-by-nc-4.0"
FEED_PATH = "/otherlab/blog/rss.xml"
#: The judged task: product descriptions, a fine-tune of the same tiny base, a scripted judge.
COPY_DIR = TASK_DIR.parent / "product_copy"
COPY_FINETUNE, JUDGE = "product-copy", "demo-judge"


@dataclass(frozen=True)
class Outcome:
    """One release's way through the product."""

    release: str
    found_via: str
    verdict: str
    summary: str
    seconds_to_verdict: float
    #: True when the verdict is ready but its notification has not been delivered yet (Slack
    #: unreachable): the daemon keeps trying; the demo does not wait for it.
    delivery_pending: bool = False


def _feed(items: list[tuple[str, str, str]]) -> bytes:
    """An RSS 2.0 document with ``(guid, title, link)`` items."""
    from datetime import UTC, datetime
    from xml.sax.saxutils import escape

    date = format_datetime(datetime.now(UTC), usegmt=True)
    body = "".join(
        f"<item><guid>{escape(g)}</guid><title>{escape(t)}</title><link>{escape(u)}</link>"
        f"<pubDate>{date}</pubDate><description>{escape(t)}</description></item>"
        for g, t, u in items
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
        "<title>Other Lab blog</title><link>https://otherlab.example/blog/</link>"
        f"<description>News from Other Lab</description>{body}</channel></rss>"
    ).encode()


def write_config(workdir: Path, hub_url: str, feed_url: str, broker: str | None) -> Path:
    """The demo's config: one fine-tune, the watched org, the vendor feed, fast schedules."""
    config: dict[str, Any] = {
        "store": {"url": f"sqlite:///{workdir / 'supersede.db'}"},
        "hub": {"endpoint": hub_url, "cache_dir": str(workdir / "hf-cache")},
        "finetunes": [
            {
                "name": FINETUNE,
                "task": str(TASK_DIR / "review_sentiment.yaml"),
                "base": BASE,
                "adapter": ADAPTER,
                "economics": {
                    "tuning_cost_usd": 18000,
                    "monthly_upkeep_usd": 1200,
                    "monthly_requests": 2000000,
                    "switching_cost_usd": 15000,
                    # The same adapter on a new base: no prompt migration, a canary.
                    "retune_switching_cost_usd": 2000,
                    "candidate_monthly_upkeep_usd": 200,
                    "horizon_months": 12,
                    "value_per_point_usd": 100,
                },
                "deploy": {"gpu_memory_gb": 24, "latency_p95_ms": 2000},
                # Keep, switch or re-tune: the adapter's recipe trained on each open release,
                # on the train split less the reviews the test split repeats.
                "retune": {"data_file": str(workdir / "retune-train.jsonl"), "when": "always"},
            }
        ],
        "retune": {
            "store_dir": str(workdir / "retune"),
            "max_steps": 200,
            "learning_rate": 3e-3,
            "batch_size": 32,
            "max_length": 64,
        },
        "watch": {
            "hub": {"authors": [WATCHED], "interval": 10},
            "feeds": [
                {
                    "name": "otherlab-blog",
                    "url": feed_url,
                    "interval": 10,
                    # The blog's posts may link only Other Lab's own repos.
                    "accept_from": [SECOND.partition("/")[0]],
                }
            ],
            "jitter_s": 0,
        },
        "workers": {"broker_url": broker, "reconcile_every": 5, "queued_timeout": 120},
        "notify": {"console_dir": str(workdir / "notifications")},
        "observability": {"metrics_port": 0},
    }
    tested = {json.loads(line)["text"] for line in (TASK_DIR / "test.jsonl").open()}
    with (TASK_DIR / "train.jsonl").open() as rows:
        kept = [row for row in rows if row.strip() and json.loads(row)["text"] not in tested]
    (workdir / "retune-train.jsonl").write_text("".join(kept))
    path = workdir / "supersede.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _fresh(workdir: Path) -> None:
    """A new store each run (the zoo and the download cache are kept)."""
    for name in ("supersede.db", "queue.db", "notifications", "worker.log"):
        target = workdir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


@dataclass(frozen=True)
class Serving:
    """What ``supersede demo --serve`` keeps up after the demo: the local Hub and feed."""

    hub_url: str
    feed_url: str
    config: Path

    @property
    def publish_url(self) -> str:
        """``POST`` a JSON object here (``{"repo": "newlab/...", "like": "stronger"}``, both
        optional) to publish another release on the local Hub."""
        return f"{self.hub_url}/api/demo/publish"


def run_demo(
    workdir: Path,
    *,
    broker: str | None = None,
    say: Callable[[str], None] = print,
    timeout_s: float = 300.0,
    then: Callable[[list[Outcome], Serving], None] | None = None,
) -> tuple[list[Outcome], Path]:
    """Run the demo; returns each release's outcome and the config file written. ``then``, when
    given, is called with the outcomes while the local Hub, the feed and the daemon are still up
    (``supersede demo --serve`` waits there for Ctrl-C)."""
    from config.settings import load_settings
    from supersede.demo.localhub.feeds import FeedServer
    from supersede.demo.localhub.hub import HubServer
    from supersede.demo.localhub.judge import JudgeServer
    from supersede.demo.zoo import build_zoo, read_jsonl
    from supersede.wiring import build_system
    from workers.app import queue_names
    from workers.jobs import JobStore
    from workers.preflight import preflight

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    _fresh(workdir)
    with HubServer() as hub, FeedServer() as feeds, JudgeServer() as judge:
        feed_url = feeds.publish(FEED_PATH, _feed([]))
        config = write_config(workdir, hub.url, feed_url, broker)
        settings = load_settings(config)
        # The demo is `supersede run`: the same checks, before the zoo takes its minute.
        preflight(settings, "run")
        started = time.monotonic()
        say("Building the tiny model zoo (reused after the first run)...")
        zoo = build_zoo(workdir / "zoo", read_jsonl(TASK_DIR / "train.jsonl"))
        say(f"  ready in {time.monotonic() - started:.0f} s")
        hub.add_repo(BASE, zoo.base, extra={"pipeline_tag": "text-generation"})
        hub.add_repo(ADAPTER, zoo.adapter, extra={"tags": [f"base_model:adapter:{BASE}"]})
        # The system `supersede run` builds from the same settings; on Redis its workers are
        # separate processes, so the demo starts one, as a deployment would.
        system = build_system(settings)
        process: subprocess.Popen[bytes] | None = None
        if broker is not None:
            process = _worker_process(config, queue_names(settings), workdir / "worker.log")
        system.start()
        say(f"Daemon running ({'Redis: ' + broker if broker else 'embedded queue'}); "
            f"watching {WATCHED} on the Hub and the otherlab blog feed.")  # fmt: skip
        jobs = JobStore(settings.store.url)
        outcomes: list[Outcome] = []
        try:
            say(f"\nRelease 1: {FIRST} appears on the Hub.")
            published = time.monotonic()
            hub.add_repo(FIRST, zoo.stronger, extra={"pipeline_tag": "text-generation"})
            outcomes.append(_await(jobs, FIRST, "Hub polling", published, timeout_s, say))
            say(f"\nRelease 2: {SECOND} is announced on the otherlab blog (its Hub page linked).")
            published = time.monotonic()
            hub.add_repo(SECOND, zoo.weaker, extra={"pipeline_tag": "text-generation"})
            link = f"{hub.url}/{SECOND}"
            feeds.publish(FEED_PATH, _feed([("otherlab-1", f"Introducing {SECOND}", link)]))
            outcomes.append(_await(jobs, SECOND, "the vendor feed", published, timeout_s, say))
            say(f"\nRelease 3: {THIRD} appears on the Hub, licensed {THIRD_LICENSE}.")
            published = time.monotonic()
            card = {"license": THIRD_LICENSE}
            hub.add_repo(THIRD, zoo.stronger, extra={
                "pipeline_tag": "text-generation", "cardData": card,
                "tags": [f"license:{THIRD_LICENSE}"],
            })  # fmt: skip
            outcomes.append(_await(jobs, THIRD, "Hub polling", published, timeout_s, say))
            say(
                f"\nA judged task: {FIRST} writes product descriptions against the "
                f"{COPY_FINETUNE} fine-tune; a scripted judge compares them in both orders."
            )
            outcomes.append(_judged(settings, workdir, judge.base_url, say))
            if then is not None:
                hub.publisher = _publisher(hub, zoo)
                then(outcomes, Serving(hub.url, feed_url, config))
        finally:
            system.stop()
            if process is not None:
                process.terminate()
                process.wait(timeout=60)
    return outcomes, config


def _judged(settings: Any, workdir: Path, judge_url: str, say: Callable[[str], None]) -> Outcome:
    """``supersede compare`` on the shipped product-copy task: the tiny base with its adapter
    against the first release, judged by the local scripted judge (an api_candidates entry)."""
    from benchmarks.compare import compare
    from config.api import ApiCandidate
    from config.settings import FineTune
    from workers.notify import words

    folder = workdir / "product-copy"
    shutil.copytree(COPY_DIR, folder, dirs_exist_ok=True)
    task = yaml.safe_load((COPY_DIR / "product_copy.yaml").read_text())
    # Short answers: the tiny models write word salad, and a dozen words are enough to judge.
    task["generation_kwargs"]["max_gen_toks"] = 12
    (folder / "product_copy.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    judge = ApiCandidate(name=JUDGE, model="scripted-judge", base_url=judge_url,
                         input_usd_per_1m=0.15, output_usd_per_1m=0.6)  # fmt: skip
    ft = FineTune(name=COPY_FINETUNE, task=str(folder / "product_copy.yaml"), base=BASE,
                  adapter=ADAPTER, judge={"api": JUDGE},
                  economics={"monthly_requests": 500_000, "tuning_cost_usd": 6000})  # fmt: skip
    judged = settings.model_copy(
        update={"finetunes": (ft,), "api_candidates": (*settings.api_candidates, judge)}
    )
    started = time.monotonic()
    report = compare(judged, COPY_FINETUNE, FIRST)
    line = words.judged(report)
    if line:
        say(f"  judged by {line}")
    return Outcome(
        release=f"{FIRST} vs {COPY_FINETUNE}",
        found_via="a judged task",
        verdict=str(report.verdict),
        summary=report.summary,
        seconds_to_verdict=time.monotonic() - started,
    )


def _publisher(hub: Any, zoo: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Publishes another release on request: a copy of the stronger (or weaker) tiny model under
    a watched organisation's name, ``newlab/Tiny-Chat-3`` and on by default."""
    count = [2]

    def publish(request: dict[str, Any]) -> dict[str, Any]:
        from supersede.demo.localhub.hub_repos import Reply

        like = request.get("like", "stronger")
        if like not in ("stronger", "weaker"):
            raise Reply(400, 'like must be "stronger" or "weaker"')
        count[0] += 1
        repo = request.get("repo") or f"{WATCHED}/Tiny-Chat-{count[0]}"
        if not isinstance(repo, str) or not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
            raise Reply(400, "repo must look like org/name")
        sha = hub.add_repo(repo, zoo.stronger if like == "stronger" else zoo.weaker,
                           extra={"pipeline_tag": "text-generation"})  # fmt: skip
        return {"repo": repo, "sha": sha, "watched": repo.split("/")[0] == WATCHED}

    return publish


def _worker_process(config: Path, queues: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SUPERSEDE_CONFIG": str(config)}
    command = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", ",".join(queues),
               "-c", "1", "--loglevel", "INFO"]  # fmt: skip
    with log.open("wb") as sink:
        return subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                cwd=Path(__file__).resolve().parents[2])  # fmt: skip


def _await(
    jobs: Any, repo: str, via: str, published: float, timeout_s: float, say: Callable[[str], None]
) -> Outcome:
    """Wait for the release's verdict to be notified; report its way through."""
    deadline = published + timeout_s
    shown: set[str] = set()
    while time.monotonic() < deadline:
        mine = [j for j in jobs.list(limit=1000) if j.candidate.startswith(repo + "@")]
        for job in mine:
            step = f"{job.kind}:{job.state}"
            if step not in shown and job.state in ("queued", "running", "done", "notified"):
                shown.add(step)
                say(f"  {time.monotonic() - published:5.1f} s  {job.kind} job {job.state}")
        verdicts = [j for j in mine if j.kind == "verdict"]
        if verdicts and all(_settled(j) for j in verdicts):
            job = verdicts[0]
            report = job.verdict()
            return Outcome(
                release=repo,
                found_via=via,
                verdict=str(report.verdict) if report else job.state.upper(),
                summary=report.summary if report else job.reason or "",
                seconds_to_verdict=time.monotonic() - published,
                delivery_pending=any(j.state == "done" for j in verdicts),
            )
        time.sleep(0.5)
    raise TimeoutError(f"no verdict for {repo} within {timeout_s:.0f} s")


def _settled(job: Any) -> bool:
    """Nothing more to wait for: notified, ended, or ready with its delivery failing (retried
    later by the daemon's reconciler)."""
    return job.state in ("notified", "failed", "skipped") or (
        job.state == "done" and bool(job.notify_error)
    )
