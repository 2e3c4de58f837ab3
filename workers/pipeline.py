"""The job graph, without Celery: plan a release's jobs, run one, reconcile the stuck ones.

A ``ModelReleased`` event becomes one **benchmark** job (on the GPU queue that fits the model; an
API model on the default queue) and one **verdict** job per fine-tune that waits for it. For an
adapter fine-tune of an open-weights release (``retune.when`` not ``never``), a **retune** job
on the benchmark's queue stands between the two (:mod:`workers.retune`): it trains the adapter's
recipe on the release when the plain verdict calls for it, scores it, and records the pair with
the re-tuned contender for the verdict job.

* The benchmark job scores, where it runs, the candidate and every fine-tune on the fine-tune's
  task (a fine-tune's result is reused from the result store when it was scored before on the
  same queue, dtype and device type, so both costs were measured on the same hardware). It
  writes the results to the result store and records on the job, per fine-tune, the two result
  keys and how each side was scored (:class:`benchmarks.sides.BenchmarkScores`).
* When it is done the store releases the verdict jobs (no chord: the store knows what is done).
  A verdict job reads the two results back by key and judges them
  (:func:`benchmarks.compare.judge_stored`): no Hub request, no download, no model, no torch.
  If a result is gone (store wiped), the verdict waits again and the benchmark job is sent back
  to its queue; the verdict is never computed on the default queue.
* Each verdict, failure or skip is then notified once; a failed notification is recorded on the
  job and tried again by the reconciler with back-off.

Celery tasks (``workers/tasks.py``) only call these functions; ``send(task_name, key, queue)`` is
how they enqueue. A send the broker refuses marks the job, and the reconciler's next pass sends it
again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from benchmarks.cache import ResultStore

# Imported here, not in the verdict job: a worker's parent process loads it once before it forks
# its pool (it pulls in numpy, never torch), so a verdict job spends no time importing.
from benchmarks.compare import (
    MissingResult,
    check_deployable,
    judge_stored,
    judged,
    score_candidate,
    score_finetune,
)
from benchmarks.limits import Limits, confined, describe_duration
from benchmarks.sides import BenchmarkScores, PairScores
from benchmarks.tasks.task import Task, load_task
from config.api import ApiCandidate
from config.settings import FineTune, Settings, finetune, retune_for, task_path
from core.clock import now
from core.constants import (
    DEFAULT_QUEUE,
    TASK_BENCHMARK,
    TASK_NOTIFY,
    TASK_RETUNE_JOB,
    TASK_VERDICT,
    JobState,
)
from core.errors import FatalError, ModelRefused, RetryableError, SupersedeError
from watcher.events import Announcement, ModelReleased
from workers.jobs import FINISHED, Job, JobStore, job_key
from workers.notify import Notifier
from workers.notify.mutes import Mute, MuteStore
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


def api_candidate(settings: Settings, event: ModelReleased) -> ApiCandidate | None:
    """The API candidate a release names, built from this configuration: the rule the release
    names gives the endpoint, the key variable and the prices (the release carries none of
    them). None for a Hub release. :class:`~core.errors.ModelRefused` (the job is skipped with
    the reason) when the release names a rule not configured here, or carries an endpoint."""
    api = event.api
    if api is None:
        return None
    what = f"API release of {api.model!r} refused"
    if not api.model.strip():
        raise ModelRefused(f"{what}: it names no model")
    if api.endpoint_fields or api.rule is None:
        fields = ", ".join(api.endpoint_fields) or "no rule"
        raise ModelRefused(
            f"{what}: it names its own endpoint ({fields}) instead of a configured rule (an event "
            "from an earlier version, or a forged one). Releases name an api_candidates entry or "
            "a feed's api_models rule; benchmark it with `supersede rerun <api_candidates name>`"
        )
    if api.feed is None:
        names = [candidate.name for candidate in settings.api_candidates]
        for candidate in settings.api_candidates:
            if candidate.name == api.rule:
                if candidate.model != api.model:
                    raise ModelRefused(
                        f"{what}: the api_candidates entry {api.rule!r} serves the model "
                        f"{candidate.model!r}, not {api.model!r}"
                    )
                return candidate
        raise ModelRefused(
            f"{what}: it names the api_candidates entry {api.rule!r}, which is not configured "
            f"here (configured: {', '.join(names) or 'none'})"
        )
    feed = next((f for f in settings.watch.feeds if f.name == api.feed), None)
    rules = feed.api_models if feed is not None else ()
    for rule in rules:
        if rule.name == api.rule:
            try:
                return rule.serving(api.model)
            except ValueError as exc:  # a model name no candidate can have
                raise ModelRefused(f"{what}: {exc}") from None
    known = f"its rules: {', '.join(r.name for r in rules) or 'none'}" if feed else "no such feed"
    raise ModelRefused(
        f"{what}: it names the api_models rule {api.rule!r} of the feed {api.feed!r}, which is "
        f"not configured here ({known})"
    )


def _api_identity(event: ModelReleased) -> tuple[str, ...]:
    """What tells API releases of one model name apart in a job key: the rule serving it (a
    refused one never shares a key with a release that runs)."""
    api = event.api
    if api is None:
        return ()
    if api.endpoint_fields or api.rule is None:
        return ("refused", *api.endpoint_fields)
    return ("rule", api.feed or "", api.rule)


def _unreadable(exc: ValueError) -> str:
    """Why a job's event cannot be read, naming fields only (never the values it holds)."""
    from pydantic import ValidationError

    from watcher.events import plain_text

    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        parts = [
            f"{'.'.join(str(part)[:40] for part in error['loc'])}: {error['msg']}"
            for error in errors[:3]
        ]
        detail = "; ".join(parts) + (f"; {len(errors) - 3} more" if len(errors) > 3 else "")
    else:
        detail = str(exc)
    return plain_text(f"refused: its event cannot be read ({detail[:500]})")


def task_of(job: Job) -> str:
    """The Celery task that runs ``job``."""
    return {"benchmark": TASK_BENCHMARK, "retune": TASK_RETUNE_JOB}.get(job.kind, TASK_VERDICT)


def retune_planned(settings: Settings, ft: FineTune, task: Task) -> bool:
    """Whether a release gets a re-tune job for ``ft`` (it may still decide not to train): an
    adapter fine-tune with training data (``retune.training_split``, ``retune.data_file`` or
    the task file's ``training_split``) and ``retune.when`` not ``never``."""
    wanted = retune_for(settings, ft)
    if ft.adapter is None or wanted.when == "never" or task.metric.name == "judge":
        return False  # a judged task's re-tune would need a third judged side: not built
    return bool(wanted.training_split or wanted.data_file or task.config.get("training_split"))


def recorded_pair(benchmark: Job | None, name: str) -> PairScores:
    """The pair a finished benchmark job recorded for fine-tune ``name``; :class:`MissingResult`
    when there is none (not finished, not scored, or recorded by an earlier version)."""
    if benchmark is None or benchmark.state not in ("done", "notified") or not benchmark.result:
        raise MissingResult("its benchmark job has no recorded results")
    try:
        scores = benchmark.scores()
    except ValueError:  # recorded by an earlier version: score again
        raise MissingResult("its benchmark job's results are in an older format") from None
    if scores is None or name not in scores.pairs:
        raise MissingResult(f"its benchmark job did not score the fine-tune {name}")
    return scores.pairs[name]


class Pipeline:
    """Plans and runs jobs against one store; thread-safe."""

    def __init__(
        self, settings: Settings, jobs: JobStore, send: Send, notifier: Notifier | None = None
    ) -> None:
        self.settings = settings
        self.workers = settings.workers
        self.jobs = jobs
        self._send = send
        self.notifier = notifier
        self._results: ResultStore | None = None
        self._results_lock = threading.Lock()
        self.mutes = MuteStore(jobs.url)

    @property
    def results(self) -> ResultStore:
        """The result store, opened once per pipeline (not once per job)."""
        with self._results_lock:
            if self._results is None:
                self._results = ResultStore(self.settings.store.url)
            return self._results

    def send(self, task: str, key: str, queue: str) -> bool:
        """Enqueue ``task`` for job ``key``; False when the broker refused it, in which case the
        job is marked and the reconciler sends it again at its next pass (not after
        ``queued_timeout``)."""
        try:
            self._send(task, key, queue)
            return True
        except Exception as exc:  # the broker is down or refused it: the store remembers
            log.warning("could not send %s for job %s (%s: %s); the reconciler sends it again",
                        task, key[:12], type(exc).__name__, exc)  # fmt: skip
            if task == TASK_NOTIFY:
                self.jobs.notify_later(key, 0)
            else:
                self.jobs.mark_unsent(key)
            return False

    # ------------------------------------------------------------------ planning

    def plan(
        self,
        event: ModelReleased | Announcement,
        *,
        finetunes: tuple[str, ...] | None = None,
        queue: str | None = None,
        rerun: bool = False,
        retune: bool = False,
        requested_by: str | None = None,
        unless_busy: bool = False,
    ) -> list[str]:
        """Create (or, with ``rerun``, reset) the jobs of ``event``; send what can start now.
        ``retune``: train the re-tune contender of every adapter fine-tune whatever the plain
        verdict (``retune.when: always`` for these jobs; not for ``never``). ``requested_by``:
        who asked, recorded on the jobs. ``unless_busy`` (with ``rerun``): a benchmark that is
        still queued or running, or whose later jobs are, is left as it is and no key is
        returned (a second click on Re-run makes no second run)."""
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
        # Each task file is read once per release: for its hash and for re-tune planning.
        tasks = {ft.name: load_task(task_path(self.settings, ft.task)) for ft in chosen}
        task_hashes = sorted({f"{t.content_hash}:{t.data_hash}" for t in tasks.values()})
        names = sorted(ft.name for ft in chosen)
        bench_key = job_key("benchmark", ref, *task_hashes, *names, *_api_identity(event))
        target = self._route(event, queue)
        payload = {"event": event.model_dump(mode="json"), "finetunes": [f.name for f in chosen]}
        created = self.jobs.add(
            key=bench_key, kind="benchmark", candidate=ref, queue=target.queue or DEFAULT_QUEUE,
            state="queued", payload=payload, requested_by=requested_by,
        )  # fmt: skip
        guarded = rerun and unless_busy and not created
        if guarded and self._busy(bench_key):
            return []
        for ft in chosen:
            parent = bench_key
            if event.api is None and retune_planned(self.settings, ft, tasks[ft.name]):
                # Between the benchmark and the verdict, on the benchmark's GPU queue.
                parent = job_key("retune", bench_key, ft.name)
                self.jobs.add(
                    key=parent, kind="retune", candidate=ref, finetune=ft.name, parent=bench_key,
                    queue=target.queue or DEFAULT_QUEUE, state="waiting",
                    payload={"event": payload["event"], "always": retune},
                    requested_by=requested_by,
                )  # fmt: skip
                if rerun:  # this run's wish, not an earlier one's
                    self.jobs.set_payload(parent, {"event": payload["event"], "always": retune})
            self.jobs.add(
                key=job_key("verdict", bench_key, ft.name), kind="verdict", candidate=ref,
                finetune=ft.name, parent=parent, queue=DEFAULT_QUEUE, state="waiting",
                payload={"event": payload["event"]}, requested_by=requested_by,
            )  # fmt: skip
        if rerun:
            requeued = self.jobs.requeue(
                bench_key,
                reset_attempts=True,
                queue=target.queue,
                requested_by=requested_by,
                only_finished=guarded,
            )
            if guarded and not requeued:
                return []  # another click's run took it between the check and here
            for child in self.jobs.descendants(bench_key):
                self.jobs.requeue(child.key, reset_attempts=True, state=JobState.WAITING,
                                  requested_by=requested_by)  # fmt: skip
        job = self.jobs.get(bench_key)
        if target.queue is None:
            self._end(bench_key, JobState.SKIPPED, target.reason)
        elif (created or rerun) and job is not None and job.state == "queued":
            # Only a new (or reset) job is sent: planning the same release again sends nothing.
            # A send that failed (broker down) is repaired by the reconciler.
            self.send(TASK_BENCHMARK, bench_key, target.queue)
        return [bench_key]

    def _busy(self, bench_key: str) -> bool:
        """Whether the benchmark ``bench_key``, or a job after it, is not finished."""
        job = self.jobs.get(bench_key)
        jobs = [job, *self.jobs.descendants(bench_key)] if job is not None else []
        return any(j.state not in FINISHED for j in jobs)

    def _route(self, event: ModelReleased, queue: str | None) -> Any:
        from workers.routing import Route

        if event.api is not None:
            try:
                api_candidate(self.settings, event)
            except ModelRefused as exc:  # recorded on the job as the reason it was skipped
                return Route(None, None, str(exc))
        if queue is not None:
            return Route(queue, None, "chosen by hand")
        if event.api is not None:
            return Route(DEFAULT_QUEUE, None, "API model")
        weights = None
        if event.params is None and event.repo_id:  # estimated from the listed weight sizes
            from benchmarks.models import ModelResolver

            token = self.settings.secrets.hf_token
            secret = token.get_secret_value() if token else None
            try:
                resolver = ModelResolver(self.settings.hub, secret)
                weights = resolver.weight_bytes(event.repo_id, event.revision)
            except SupersedeError as exc:
                log.info("%s: no weight sizes for routing (%s)", event.repo_id, exc)
        return route(event.params, self.settings.runtime.dtype, self.workers, weight_bytes=weights)

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
            if claim.job.kind in ("benchmark", "retune"):
                self._end(key, JobState.FAILED, claim.job.reason or "gave up")
            else:
                self.send(TASK_NOTIFY, key, DEFAULT_QUEUE)
        return None, Step(claim.outcome)

    def crashed(self, key: str, owner: str, exc: Exception, what: str) -> Step:
        """A time limit or a bug in a try of ``what``: recorded, then retried up to the cap."""
        from celery.exceptions import SoftTimeLimitExceeded

        if isinstance(exc, SoftTimeLimitExceeded):
            limit = describe_duration(self.workers.soft_time_limit)
            return self._failed_try(key, owner, FatalError(f"exceeded the {limit} limit"))
        log.exception("%s: %s crashed", key[:12], what)
        return self._failed_try(key, owner, RetryableError(f"{type(exc).__name__}: {exc}"))

    def _failed_try(self, key: str, owner: str, exc: BaseException) -> Step:
        retry = isinstance(exc, RetryableError)
        reason = str(exc) or type(exc).__name__
        final = JobState.SKIPPED if isinstance(exc, ModelRefused) else JobState.FAILED
        state = self.jobs.fail(
            key, owner, reason, retry=retry, max_attempts=self.workers.max_attempts, final=final
        )
        if state == "queued":
            wait = getattr(exc, "retry_after_s", None) or self.workers.retry_backoff
            return Step("retry", retry_in=wait, reason=reason)
        job = self.jobs.get(key)
        if job is not None and job.kind in ("benchmark", "retune"):
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
        try:
            event = job.release()
        except ValueError as exc:  # a forged job, or one this version cannot read
            return self._failed_try(key, owner, ModelRefused(_unreadable(exc)))
        try:
            # Each model runs in a child process, killed at the wall-clock or memory limit in
            # every pool (Celery's solo pool, the embedded default, has no limits of its own).
            limits = Limits(self.workers.soft_time_limit, self.workers.benchmark_memory)
            with self._leased(key, owner), confined(limits):
                summary = self._score(event, job.payload["finetunes"], job.queue)
        except (FatalError, RetryableError) as exc:
            return self._failed_try(key, owner, exc)
        except Exception as exc:
            return self.crashed(key, owner, exc, "benchmark")
        if not self.jobs.finish(key, owner, summary):
            return Step("finished", reason="lease lost: another worker recorded it")
        self.release_children(key)
        return Step("done")

    def release_children(self, key: str) -> int:
        """Queue and send the jobs that waited for ``key`` (finished): a re-tune job to its GPU
        queue, a verdict to the default queue. Returns how many were sent."""
        sent = 0
        for child in self.jobs.release_waiting(key):
            if child.state == "queued":
                sent += self.send(task_of(child), child.key, child.queue)
        return sent

    def run_retune(self, key: str, owner: str) -> Step:
        """Train and score the re-tune contender of one fine-tune (:mod:`workers.retune`)."""
        from workers.retune import run_retune

        return run_retune(self, key, owner)

    def _score(self, event: ModelReleased, names: list[str], queue: str) -> BenchmarkScores:
        """Score both sides of every fine-tune here, on ``queue``'s hardware; the job's result
        is their keys (:class:`BenchmarkScores`)."""
        api = api_candidate(self.settings, event)
        ref = candidate_ref(event)
        pairs: dict[str, PairScores] = {}
        known = None  # the candidate's facts, read from the Hub once per release
        for ft in [f for f in self.settings.finetunes if f.name in names]:
            # Licence and size first, from the Hub's metadata: a candidate they block is not
            # downloaded (unless deploy.benchmark_blocked asks for it).
            deploy = check_deployable(self.settings, ft, ref, api=api, known=known)
            known = deploy.facts
            if not deploy.benchmarked:
                log.info("%s blocked for %s, not benchmarked: %s", ref, ft.name,
                         "; ".join(deploy.blockers))  # fmt: skip
                task = load_task(task_path(self.settings, ft.task)).name
                pairs[ft.name] = PairScores(
                    task=task, metric="", n=0, finetune=None, candidate=None,
                    candidate_name=event.name, deploy=deploy,
                )  # fmt: skip
                continue
            try:
                baseline = score_finetune(self.settings, ft, hardware=queue, store=self.results)
            except FatalError as exc:
                raise FatalError(f"the fine-tune {ft.name} could not be scored: {exc}") from None
            scored = score_candidate(
                self.settings, ft, ref, api=api, hardware=queue, store=self.results
            )
            pairs[ft.name] = PairScores(
                task=scored.result.task, metric=scored.result.metric, n=scored.result.n,
                finetune=baseline.side, candidate=scored.side, candidate_name=event.name,
                deploy=deploy, judge=judged(self.settings, ft, baseline, scored),
            )  # fmt: skip
        return BenchmarkScores(pairs=pairs)

    def run_verdict(self, key: str, owner: str) -> Step:
        """Judge one fine-tune against the candidate from the results its benchmark job stored;
        then notify. Reads the store only."""
        job, step = self._claim(key, owner)
        if step is not None:
            return step
        assert job is not None and job.finetune is not None and job.parent is not None
        try:
            event = job.release()
        except ValueError as exc:  # a forged job, or one this version cannot read
            return self._failed_try(key, owner, ModelRefused(_unreadable(exc)))
        parent = self.jobs.get(job.parent)
        try:
            api = api_candidate(self.settings, event)  # refused before anything else is asked
            pair = recorded_pair(parent, job.finetune)
            ft = finetune(self.settings, job.finetune)
            report = judge_stored(self.settings, ft, pair, self.results, api=api)
        except MissingResult as exc:
            return self._benchmark_again(job, owner, str(exc))
        except (FatalError, RetryableError) as exc:
            return self._failed_try(key, owner, exc)
        if self.jobs.finish(key, owner, report):
            self.send(TASK_NOTIFY, key, DEFAULT_QUEUE)
        return Step("done")

    def _benchmark_again(self, job: Job, owner: str, reason: str) -> Step:
        """A result the verdict needs is gone: the verdict waits again, and its benchmark job
        goes back to its own queue (never run here, on the default queue)."""
        assert job.parent is not None
        if job.attempts >= self.workers.max_attempts:
            return self._failed_try(job.key, owner, FatalError(f"{reason}, again"))
        if not self.jobs.wait_again(job.key, owner, f"waiting for the benchmark again: {reason}"):
            return Step("finished", reason="lease lost: another worker recorded it")
        parent = self.jobs.get(job.parent)
        log.warning("verdict job %s: %s; sending benchmark job %s back to %s", job.key[:12],
                    reason, job.parent[:12], parent.queue if parent else "?")  # fmt: skip
        # A parent already queued was sent by whoever queued it (a lost message is the
        # reconciler's); a running one will release this verdict when it is done.
        # A re-tune parent records the pair again from its benchmark's results; when those are
        # gone too, it waits in turn and sends its benchmark back.
        # Only a finished parent is requeued and sent, by one compare-and-set: of two verdicts
        # finding their results gone at once, the second finds it queued already.
        if parent is not None and self.jobs.requeue(parent.key, only_finished=True):
            self.send(task_of(parent), parent.key, parent.queue)
        return Step("done", reason=reason)

    def _end(self, key: str, state: JobState, reason: str, *,
             already: bool = False) -> None:  # fmt: skip
        """A benchmark that will not run: its verdict jobs end with it and are notified."""
        if not already:
            self.jobs.finish_as(key, state, reason)
        for child in self.jobs.end_waiting(key, state, f"benchmark {state}: {reason}"):
            if child.state != state:
                continue
            if child.kind == "retune":  # silent: its verdict job ends with it and is notified
                self._end(child.key, state, reason, already=True)
            else:
                self.send(TASK_NOTIFY, child.key, DEFAULT_QUEUE)

    # ------------------------------------------------------------------ notifying

    def notify(self, key: str) -> bool:
        """Tell the humans about a finished verdict, failure, skip or announcement, once.

        A failed notification (Slack down, a channel archived since start-up) is recorded on the
        job with its reason (``supersede status`` shows it), logged once with the message it
        carried, and tried again by the reconciler after a wait that doubles each time.
        """
        job = self.jobs.get(key)
        if job is None or job.state not in ("done", "failed", "skipped"):
            return False
        if job.kind == "benchmark":
            return False  # told through its verdict jobs
        mute = self._muted(job)
        if mute is not None:
            log.info("not posting %s job %s: %s", job.kind, key[:12], mute.describe())
            return self.jobs.mark_notified(key, muted=f"not posted: {mute.describe()}")
        if self.notifier is not None:
            try:
                self.notifier.send(job)
            except (FatalError, RetryableError) as exc:
                self._notify_failed(job, exc)
                return False
            except ValueError as exc:  # a record this version cannot read (another version's)
                self._notify_failed(job, FatalError(f"its stored record cannot be read: {exc}"))
                return False
        return self.jobs.mark_notified(key)

    def _muted(self, job: Job) -> Mute | None:
        """The mute in force over the owner of ``job``'s release or post, if any."""
        try:
            event = job.event()
        except ValueError:
            return None  # told as a failure to read it, below
        return self.mutes.of(event)

    def _notify_failed(self, job: Job, exc: FatalError | RetryableError) -> None:
        reason = str(exc) or type(exc).__name__
        backoff = self.workers.notify_retry * 2 ** min(job.notify_tries, 16)
        wait = min(max(backoff, getattr(exc, "retry_after_s", None) or 0.0),
                   self.workers.notify_retry_max)  # fmt: skip
        tries = self.jobs.notify_failed(job.key, reason, wait)
        at = (now() + timedelta(seconds=wait)).strftime("%H:%M:%S UTC")
        # One line per try. The first (or a new reason) is an error carrying the verdict's
        # headline, so the log alone tells what waits; the message itself is kept with the job
        # (`supersede status`, `supersede report`) and sent once the destination takes it.
        line = f"could not notify {job.kind} job {job.key[:12]} (try {tries}): {reason}; " \
               f"next try at {at} (in {wait:.0f} s)"  # fmt: skip
        if tries == 1 or reason != job.notify_error:
            try:
                verdict = job.verdict()
            except ValueError:
                verdict = None
            headline = f"{verdict.verdict}: {verdict.summary}" if verdict else job.reason
            log.error("%s; it says: %s", line, headline or "(no verdict)")
        else:
            log.warning("%s", line)

    # ------------------------------------------------------------------ reconciling

    def reconcile(self) -> dict[str, int]:
        """Send again what a lost message, a refused send, a killed worker or a Redis restart
        left behind; notify again what is due."""
        counts = {"resent": 0, "released": 0, "ended": 0, "renotified": 0}
        for job in self.jobs.stuck(self.workers.queued_timeout):
            task = task_of(job)
            log.warning("%s job %s %s too long: sending it again", job.kind, job.key[:12],
                        job.state)  # fmt: skip
            self.jobs.touch(job.key)
            counts["resent"] += self.send(task, job.key, job.queue)
        for parent in self.jobs.waiting_parents():
            if parent.state == "done":
                counts["released"] += self.release_children(parent.key)
            elif parent.state in ("failed", "skipped"):
                reason = parent.reason or parent.state
                state = JobState.SKIPPED if parent.state == "skipped" else JobState.FAILED
                self._end(parent.key, state, reason, already=True)
                counts["ended"] += 1
        for job in self.jobs.unnotified(self.workers.notify_retry):
            # Not due again before the message sent now has had time to be handled.
            self.jobs.notify_later(job.key, self.workers.notify_retry)
            counts["renotified"] += self.send(TASK_NOTIFY, job.key, DEFAULT_QUEUE)
        return counts
