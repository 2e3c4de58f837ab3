"""The job graph, without Celery: plan a release's jobs, run one, reconcile the stuck ones.

A ``ModelReleased`` event becomes one **benchmark** job (on the GPU queue that fits the model; an
API model on the default queue) that scores the candidate on every fine-tune's task and the
fine-tunes' own baselines (both kept in the result store, so a baseline is computed once per
fine-tune and engine version), and one **verdict** job per fine-tune that waits for it. When the
benchmark is done the store releases the verdict jobs (no chord: the store knows what is done);
each verdict, failure or skip is then notified once. Celery tasks (``workers/tasks.py``) only call
these functions; ``send(task_name, key, queue)`` is how they enqueue.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from benchmarks.cache import ResultStore
from config.constants import DEFAULT_QUEUE, TASK_BENCHMARK, TASK_NOTIFY, TASK_VERDICT
from config.errors import FatalError, ModelRefused, RetryableError
from config.settings import ApiCandidate, FineTune, Settings, task_path
from watcher.events import Announcement, ModelReleased
from workers.jobs import Job, JobStore, job_key
from workers.notify import Notifier
from workers.routing import route

log = logging.getLogger(__name__)

Send = Callable[[str, str, str], None]


@dataclass(frozen=True)
class Step:
    """What a task should do after a pipeline call: nothing more, or retry in ``retry_in`` s."""

    outcome: Literal["done", "failed", "skipped", "finished", "busy", "retry", "exhausted"]
    retry_in: float | None = None
    reason: str | None = None


def candidate_ref(event: ModelReleased) -> str:
    """How the engine is told to load the candidate (pinned), or ``api:<model>``."""
    if event.repo_id:
        return f"{event.repo_id}@{event.revision}" if event.revision else event.repo_id
    assert event.api is not None
    return f"api:{event.api.model}"


def api_candidate(event: ModelReleased) -> ApiCandidate | None:
    if event.api is None:
        return None
    return ApiCandidate(
        name=event.api.model,
        base_url=event.api.base_url,
        model=event.api.model,
        api_key_env=event.api.api_key_env,
        input_usd_per_1m=event.api.input_usd_per_1m,
        output_usd_per_1m=event.api.output_usd_per_1m,
    )


class Pipeline:
    """Plans and runs jobs against one store; thread-safe."""

    def __init__(
        self, settings: Settings, jobs: JobStore, send: Send, notifier: Notifier | None = None
    ) -> None:
        self.settings = settings
        self.workers = settings.workers
        self.jobs = jobs
        self.send = send
        self.notifier = notifier

    # ------------------------------------------------------------------ planning

    def plan(
        self,
        event: ModelReleased | Announcement,
        *,
        finetunes: tuple[str, ...] | None = None,
        queue: str | None = None,
        rerun: bool = False,
    ) -> list[str]:
        """Create (or, with ``rerun``, reset) the jobs of ``event``; send what can start now."""
        if isinstance(event, Announcement):
            key = job_key("announcement", event.source, event.entry_id)
            if self.jobs.add(
                key=key, kind="announcement", candidate=event.title[:600], queue=DEFAULT_QUEUE,
                state="done", payload={"event": event.model_dump(mode="json")},
                finished_at=event.detected_at,
            ):  # fmt: skip
                self.send(TASK_NOTIFY, key, DEFAULT_QUEUE)
            return [key]
        chosen = [ft for ft in self.settings.finetunes if finetunes is None or ft.name in finetunes]
        if not chosen:
            log.warning("%s: no fine-tune configured to compare it with", candidate_ref(event))
            return []
        ref = candidate_ref(event)
        task_hashes = sorted({self._task_hash(ft) for ft in chosen})
        bench_key = job_key("benchmark", ref, *task_hashes, *sorted(ft.name for ft in chosen))
        target = self._route(event, queue)
        payload = {"event": event.model_dump(mode="json"), "finetunes": [f.name for f in chosen]}
        created = self.jobs.add(
            key=bench_key, kind="benchmark", candidate=ref, queue=target.queue or DEFAULT_QUEUE,
            state="queued", payload=payload,
        )  # fmt: skip
        for ft in chosen:
            self.jobs.add(
                key=job_key("verdict", bench_key, ft.name), kind="verdict", candidate=ref,
                finetune=ft.name, parent=bench_key, queue=DEFAULT_QUEUE, state="waiting",
                payload={"event": payload["event"]},
            )  # fmt: skip
        if rerun:
            self.jobs.requeue(bench_key, reset_attempts=True, queue=target.queue)
            for child in self.jobs.children(bench_key):
                self.jobs.requeue(child.key, reset_attempts=True, state="waiting")
        job = self.jobs.get(bench_key)
        if target.queue is None:
            self._end(bench_key, "skipped", target.reason)
        elif (created or rerun) and job is not None and job.state == "queued":
            # Only a new (or reset) job is sent: planning the same release again sends nothing.
            # A send that failed (broker down) is repaired by the reconciler.
            self.send(TASK_BENCHMARK, bench_key, target.queue)
        return [bench_key]

    def _task_hash(self, ft: FineTune) -> str:
        from benchmarks.tasks import load_task

        task = load_task(task_path(self.settings, ft.task))
        return f"{task.content_hash}:{task.data_hash}"

    def _route(self, event: ModelReleased, queue: str | None) -> Any:
        from workers.routing import Route

        if queue is not None:
            return Route(queue, None, "chosen by hand")
        if event.api is not None:
            return Route(DEFAULT_QUEUE, None, "API model")
        return route(event.params, self.settings.runtime.dtype, self.workers)

    # ------------------------------------------------------------------ running

    @contextmanager
    def _leased(self, key: str, owner: str) -> Iterator[None]:
        """Renew the job's lease while the body runs (a killed worker stops renewing it)."""
        stop = threading.Event()
        lease = self.workers.lease

        def beat() -> None:
            while not stop.wait(lease / 3):
                if not self.jobs.heartbeat(key, owner, lease):
                    log.warning("%s: lease lost", key[:12])
                    return

        thread = threading.Thread(target=beat, name=f"lease-{key[:8]}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def _claim(self, key: str, owner: str) -> tuple[Job | None, Step | None]:
        claim = self.jobs.claim(key, owner, self.workers.lease, self.workers.max_attempts)
        if claim.outcome == "run":
            return claim.job, None
        if claim.outcome == "busy":
            return None, Step("busy", retry_in=max(1.0, claim.wait_s + 1))
        if claim.outcome == "exhausted" and claim.job is not None:
            if claim.job.kind == "benchmark":
                self._end(key, "failed", claim.job.reason or "gave up")
            else:
                self.send(TASK_NOTIFY, key, DEFAULT_QUEUE)
        return None, Step(claim.outcome)

    def _failed_try(self, key: str, owner: str, exc: BaseException) -> Step:
        retry = isinstance(exc, RetryableError)
        reason = str(exc) or type(exc).__name__
        final: Literal["skipped", "failed"] = (
            "skipped" if isinstance(exc, ModelRefused) else "failed"
        )
        state = self.jobs.fail(
            key, owner, reason, retry=retry, max_attempts=self.workers.max_attempts, final=final
        )
        if state == "queued":
            wait = getattr(exc, "retry_after_s", None) or self.workers.retry_backoff
            return Step("retry", retry_in=wait, reason=reason)
        job = self.jobs.get(key)
        if job is not None and job.kind == "benchmark":
            self._end(key, final, reason, already=True)
        elif job is not None:
            self.send(TASK_NOTIFY, key, DEFAULT_QUEUE)
        return Step("failed", reason=reason)

    def run_benchmark(self, key: str, owner: str) -> Step:
        """Score the candidate and the baselines on every task; release the verdict jobs."""
        job, step = self._claim(key, owner)
        if step is not None:
            return step
        assert job is not None
        event = ModelReleased.model_validate(job.payload["event"])
        try:
            with self._leased(key, owner):
                summary = self._score(event, job.payload["finetunes"])
        except (FatalError, RetryableError) as exc:
            return self._failed_try(key, owner, exc)
        except Exception as exc:  # a time limit or a bug: recorded, then retried up to the cap
            from celery.exceptions import SoftTimeLimitExceeded

            if isinstance(exc, SoftTimeLimitExceeded):
                limit = self.workers.soft_time_limit
                return self._failed_try(key, owner, FatalError(f"over the {limit:.0f} s limit"))
            log.exception("%s: benchmark crashed", key[:12])
            return self._failed_try(key, owner, RetryableError(f"{type(exc).__name__}: {exc}"))
        if not self.jobs.finish(key, owner, summary):
            return Step("finished", reason="lease lost: another worker recorded it")
        for child in self.jobs.release_waiting(key):
            if child.state == "queued":
                self.send(TASK_VERDICT, child.key, DEFAULT_QUEUE)
        return Step("done")

    def _score(self, event: ModelReleased, names: list[str]) -> dict[str, Any]:
        from benchmarks.bench import bench
        from benchmarks.compare import api_result

        store = ResultStore(self.settings.store.url)
        api = api_candidate(event)
        scores: dict[str, Any] = {}
        for ft in [f for f in self.settings.finetunes if f.name in names]:
            task_file = task_path(self.settings, ft.task)
            try:
                baseline = bench(
                    self.settings, ft.model_ref, task_file, adapter=ft.adapter,
                    prompt=ft.prompt, store=store,
                ).result  # fmt: skip
            except FatalError as exc:
                raise FatalError(f"the fine-tune {ft.name} could not be scored: {exc}") from None
            if api is not None:
                result = api_result(self.settings, api, task_file, None, store)
            else:
                result = bench(
                    self.settings, candidate_ref(event), task_file,
                    prompt=self.settings.candidates.prompt, store=store,
                ).result  # fmt: skip
            scores[ft.name] = {
                "task": result.task, "metric": result.metric,
                "finetune": baseline.score, "candidate": result.score, "n": result.n,
            }  # fmt: skip
        return scores

    def run_verdict(self, key: str, owner: str) -> Step:
        """Decide one fine-tune against the candidate, from the stored scores; then notify."""
        from benchmarks.compare import compare

        job, step = self._claim(key, owner)
        if step is not None:
            return step
        assert job is not None and job.finetune is not None
        event = ModelReleased.model_validate(job.payload["event"])
        try:
            with self._leased(key, owner):
                report = compare(
                    self.settings, job.finetune, candidate_ref(event), api=api_candidate(event)
                )
        except (FatalError, RetryableError) as exc:
            return self._failed_try(key, owner, exc)
        if self.jobs.finish(key, owner, report.to_dict()):
            self.send(TASK_NOTIFY, key, DEFAULT_QUEUE)
        return Step("done")

    def _end(self, key: str, state: Literal["skipped", "failed"], reason: str, *,
             already: bool = False) -> None:  # fmt: skip
        """A benchmark that will not run: its verdict jobs end with it and are notified."""
        if not already:
            self.jobs.finish_as(key, state, reason)
        for child in self.jobs.end_waiting(key, state, f"benchmark {state}: {reason}"):
            if child.state == state:
                self.send(TASK_NOTIFY, child.key, DEFAULT_QUEUE)

    # ------------------------------------------------------------------ notifying

    def notify(self, key: str) -> bool:
        """Tell the humans about a finished verdict, failure, skip or announcement, once."""
        job = self.jobs.get(key)
        if job is None or job.state not in ("done", "failed", "skipped"):
            return False
        if job.kind == "benchmark":
            return False  # told through its verdict jobs
        if self.notifier is not None:
            try:
                self.notifier.send(job)
            except FatalError as exc:
                # A misconfigured channel or token: kept un-notified (the reconciler tries again)
                # so the verdict reaches people once the configuration is fixed.
                log.error("notifying %s job %s failed: %s", job.kind, key[:12], exc)
                return False
        return self.jobs.mark_notified(key)

    # ------------------------------------------------------------------ reconciling

    def reconcile(self, notify_after_s: float = 60.0) -> dict[str, int]:
        """Send again what a lost message, a killed worker or a Redis restart left behind."""
        counts = {"resent": 0, "released": 0, "ended": 0, "renotified": 0}
        for job in self.jobs.stuck(self.workers.queued_timeout):
            task = TASK_BENCHMARK if job.kind == "benchmark" else TASK_VERDICT
            log.warning("%s job %s %s too long: sending it again", job.kind, job.key[:12],
                        job.state)  # fmt: skip
            self.jobs.touch(job.key)
            self.send(task, job.key, job.queue)
            counts["resent"] += 1
        for parent in self.jobs.waiting_parents():
            if parent.state == "done":
                for child in self.jobs.release_waiting(parent.key):
                    if child.state == "queued":
                        self.send(TASK_VERDICT, child.key, DEFAULT_QUEUE)
                        counts["released"] += 1
            elif parent.state in ("failed", "skipped"):
                reason = parent.reason or parent.state
                state: Literal["skipped", "failed"] = (
                    "skipped" if parent.state == "skipped" else "failed"
                )
                self._end(parent.key, state, reason, already=True)
                counts["ended"] += 1
        for job in self.jobs.unnotified(notify_after_s):
            self.send(TASK_NOTIFY, job.key, DEFAULT_QUEUE)
            counts["renotified"] += 1
        return counts
