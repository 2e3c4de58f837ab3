"""The Celery tasks: thin adapters that load the job, call the pipeline and report.

Task names are stable, documented API (``celery -A workers call supersede.rebenchmark ...``).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import Task, shared_task
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    celeryd_init,
    worker_process_init,
)

from config.settings import Settings
from core.constants import (
    DEFAULT_QUEUE,
    TASK_BENCHMARK,
    TASK_NOTIFY,
    TASK_REBENCHMARK,
    TASK_RECONCILE,
    TASK_RELEASE,
    TASK_RETUNE,
    TASK_RETUNE_JOB,
    TASK_VERDICT,
)
from workers.pipeline import Pipeline, Step
from workers.wiring import build_pipeline

log = logging.getLogger(__name__)

_pipelines: dict[tuple[int, int], Pipeline] = {}


def pipeline_for(app: Any) -> Pipeline:
    """This process's pipeline (built after a fork, never shared across one)."""
    key = (os.getpid(), id(app))
    if key not in _pipelines:
        _pipelines[key] = build_pipeline(app)
    return _pipelines[key]


def _owner(task: Task) -> str:
    return f"{socket.gethostname()} pid {os.getpid()} task {task.request.id}"


def _follow(task: Task, step: Step) -> str:
    # Retries are unbounded here (the tasks say max_retries=None; passing None to retry() would
    # mean Celery's default of 3): the job store's attempt cap decides when to give up.
    if step.retry_in is not None:
        raise task.retry(countdown=step.retry_in)
    return step.outcome


@shared_task(name=TASK_BENCHMARK, bind=True, max_retries=None)
def benchmark(self: Task, key: str) -> str:
    """Score a candidate against every fine-tune's task (GPU queue)."""
    return _follow(self, pipeline_for(self.app).run_benchmark(key, _owner(self)))


@shared_task(name=TASK_RETUNE_JOB, bind=True, max_retries=None)
def retune_job(self: Task, key: str) -> str:
    """Train and score one fine-tune's re-tune contender on a release (GPU queue)."""
    return _follow(self, pipeline_for(self.app).run_retune(key, _owner(self)))


@shared_task(name=TASK_VERDICT, bind=True, max_retries=None)
def verdict(self: Task, key: str) -> str:
    """Decide one fine-tune against the candidate, from the stored scores."""
    return _follow(self, pipeline_for(self.app).run_verdict(key, _owner(self)))


@shared_task(name=TASK_NOTIFY, bind=True)
def notify(self: Task, key: str) -> bool:
    """Deliver a finished job's message once."""
    return pipeline_for(self.app).notify(key)


@shared_task(name=TASK_RELEASE, bind=True)
def release(self: Task, event: dict[str, Any]) -> list[str]:
    """Plan the jobs of a ``ModelReleased`` or ``Announcement`` event (JSON)."""
    from pydantic import TypeAdapter

    from watcher.events import Announcement, Event, ModelReleased

    parsed = TypeAdapter[ModelReleased | Announcement](Event).validate_python(event)
    return pipeline_for(self.app).plan(parsed)


@shared_task(name=TASK_REBENCHMARK, bind=True)
def rebenchmark(
    self: Task, candidate: str, finetune: str | None = None, queue: str | None = None
) -> list[str]:
    """Benchmark ``candidate`` again (a Hub id[@revision] or an ``api_candidates`` name) against
    ``finetune`` (default: every fine-tune). ``queue`` picks the GPU queue; sent with
    ``--queue gpu-80g``, the benchmark goes to that queue."""
    from workers.manual import rerun

    delivered = (self.request.delivery_info or {}).get("routing_key")
    settings: Settings = self.app.conf.supersede_settings
    if queue is None and delivered in settings.workers.gpu_queues:
        queue = delivered
    return rerun(pipeline_for(self.app), candidate, finetune=finetune, queue=queue)


@shared_task(name=TASK_RETUNE, bind=True)
def retune(self: Task, candidate: str, finetune: str, queue: str | None = None) -> list[str]:
    """Benchmark ``candidate`` against ``finetune`` again and train the fine-tune's adapter
    recipe on it whatever the plain verdict (``retune.when: always`` for this run): the
    three-way verdict is posted as usual."""
    from workers.manual import rerun

    return rerun(pipeline_for(self.app), candidate, finetune=finetune, queue=queue, retune=True)


@shared_task(name=TASK_RECONCILE, bind=True)
def reconcile(self: Task) -> dict[str, int]:
    """Send again what lost messages or dead workers left behind."""
    return pipeline_for(self.app).reconcile()


@celeryd_init.connect
def _gpu_workers_recycle_children(sender: Any = None, conf: Any = None, **kwargs: Any) -> None:
    for noisy in ("httpx", "httpx2", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # A fresh pool process (and CUDA context) per benchmark on GPU queues: memory fragmentation
    # and leaked allocations never carry over to the next model.
    queues = _consumed_queues(kwargs)
    settings = getattr(conf, "supersede_settings", None)
    if settings is not None and any(q in settings.workers.gpu_queues for q in queues):
        conf.worker_max_tasks_per_child = 1


def _consumed_queues(signal_kwargs: dict[str, Any]) -> list[str]:
    """The queues a starting worker consumes (``-Q``); without it, the default queue only."""
    options = signal_kwargs.get("options") or {}
    queues = options.get("queues") or []
    if isinstance(queues, str):
        queues = queues.split(",")
    return [str(q).strip() for q in queues if str(q).strip()] or [DEFAULT_QUEUE]


@celeryd_init.connect
def _preflight(sender: Any = None, conf: Any = None, **kwargs: Any) -> None:
    """``celery -A workers worker`` checks every setting it will need before it consumes
    anything: a bad one ends it with exit code 2 and one line naming the key."""
    from workers.preflight import preflight_or_exit

    settings = getattr(conf, "supersede_settings", None)
    if settings is not None:
        preflight_or_exit(settings, "worker", _consumed_queues(kwargs))


@worker_process_init.connect
def _fresh_connections(**kwargs: Any) -> None:
    # Database connections must not cross a fork.
    _pipelines.clear()


@after_setup_logger.connect
@after_setup_task_logger.connect
def redact_worker_logs(logger: logging.Logger | None = None, **kwargs: Any) -> None:
    """Celery sets up the worker's own log handlers: every configured secret (tokens, API keys,
    the webhook secret) is replaced by ``***`` in them too, tracebacks included."""
    from config.settings import load_settings, secret_values
    from core.logs import Redact

    try:
        secrets = secret_values(load_settings())
    except Exception:  # a bad config is reported by the worker itself; redact what we can
        secrets = []
    targets = [logger] if logger is not None else []
    targets.append(logging.getLogger())
    for target in targets:
        for handler in target.handlers:
            if not any(isinstance(f, Redact) for f in handler.filters):
                handler.addFilter(Redact(secrets))
