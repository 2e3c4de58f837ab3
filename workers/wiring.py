"""A process's pipeline, built one way: the job store, the notifier, and sends through its app.

Every process that plans or runs jobs holds one: each Celery worker pool process
(:func:`workers.tasks.pipeline_for`), and the daemon, ``supersede rerun`` and the demo (through
:mod:`supersede.wiring`). The result store is opened by the pipeline itself, on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workers.jobs import JobStore
from workers.notify import make_notifier
from workers.pipeline import Pipeline

if TYPE_CHECKING:
    from celery import Celery

    from config.settings import Settings


def build_pipeline(app: Celery) -> Pipeline:
    """A pipeline over the store of the settings ``app`` was made from, sending through ``app``
    and notifying as the settings say."""
    settings: Settings = app.conf.supersede_settings

    def send(name: str, key: str, queue: str) -> None:
        app.send_task(name, args=[key], queue=queue)

    return Pipeline(settings, JobStore(settings.store.url), send, make_notifier(settings))
