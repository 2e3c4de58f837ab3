"""The Celery app: JSON only, reliability settings on, built from Supersede's settings.

With ``workers.broker_url`` unset, the broker is the embedded default: kombu's SQLAlchemy
transport on a SQLite file beside the store (durable, nothing else to install), consumed by the
worker ``supersede run`` starts in-process. With ``redis://...`` it is Redis and separate workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery
from kombu.entity import Queue

from config.settings import Settings
from config.urls import reveal
from core.constants import DEFAULT_QUEUE
from core.errors import BrokerUnavailable


def embedded_broker(store_url: str) -> str:
    """The local queue's URL: ``queue.db`` beside a SQLite store, else the store database."""
    store_url = str(reveal(store_url))
    if store_url.startswith("sqlite:///") and not store_url.startswith("sqlite:///:memory:"):
        folder = Path(store_url.removeprefix("sqlite:///")).expanduser().parent
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqla+sqlite:///{folder / 'queue.db'}"
    return f"sqla+{store_url}"


def broker_url(settings: Settings) -> str:
    """``workers.broker_url``, else the embedded default's local queue (in full, as a plain
    string: Celery and kombu read it; :func:`safe_broker` is what may be shown)."""
    return reveal(settings.workers.broker_url) or embedded_broker(settings.store.url)


def queue_names(settings: Settings) -> list[str]:
    """Every queue: the default one, then the GPU queues by name (what the embedded worker
    consumes; separate workers each take some of them with ``-Q``)."""
    return [DEFAULT_QUEUE, *sorted(settings.workers.gpu_queues)]


def celery_config(settings: Settings) -> dict[str, Any]:
    """Every Celery setting Supersede relies on, each for a reason."""
    workers = settings.workers
    broker = broker_url(settings)
    backend = reveal(workers.result_backend) or (broker if broker.startswith("redis") else None)
    # kombu's SQLAlchemy transport hands its options to create_engine: Redis only.
    redis = broker.startswith(("redis://", "rediss://", "redis+socket://"))
    transport = {"visibility_timeout": workers.visibility_timeout} if redis else {}
    queues = [Queue(name) for name in queue_names(settings)]
    return {
        "broker_url": broker,
        "result_backend": backend,
        # JSON only: a message can never carry code (pickle) into a worker.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Ack after the task ran, and requeue it when the pool process dies under it (kill -9,
        # OOM): a benchmark is never lost with its worker.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One message at a time per process: a long benchmark never holds others hostage.
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": workers.soft_time_limit,
        "task_time_limit": workers.time_limit,
        # Redis redelivers an unacked message after the visibility timeout: above the hard time
        # limit, or every long benchmark would run twice. Set wherever Celery reads it.
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "task_default_queue": DEFAULT_QUEUE,
        "task_queues": queues,
        "task_create_missing_queues": True,
        # Results live in the store; the backend only serves `celery call` users who ask.
        "task_ignore_result": True,
        "task_track_started": True,
        # Events on, so Flower shows the workers and tasks.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "broker_connection_retry_on_startup": True,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_hijack_root_logger": False,
    }


def make_app(settings: Settings) -> Celery:
    """The Celery app for ``settings`` (kept on it as ``conf.supersede_settings``).

    The settings are an attribute of the configuration object, not one of its entries: Celery's
    remote ``conf`` and ``report`` commands (and Flower, which shows them) list the entries, and
    the settings hold the store's and the broker's URLs. Celery masks the passwords of its own
    ``broker_url`` and ``result_backend`` entries; the settings' URLs mask theirs in any repr.
    """
    app = Celery("supersede", include=["workers.tasks"])
    app.conf.update(celery_config(settings))
    # Celery's configuration keeps its own state in the instance dictionary the same way
    # (``ConfigurationView.swap_with``): attribute reads find it, the mapping never lists it.
    app.conf.__dict__["supersede_settings"] = settings
    return app


def safe_broker(url: str) -> str:
    """The broker URL with any password hidden."""
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


def check_broker(app: Celery) -> None:
    """Fail fast, with a message, when the broker cannot be reached (a few quick retries)."""
    url = broker_url(app.conf.supersede_settings)
    try:
        with app.connection() as connection:
            connection.ensure_connection(max_retries=3, interval_start=0.5, interval_step=0.5)
    except Exception as exc:
        raise BrokerUnavailable(
            f"cannot reach the broker at {safe_broker(url)} ({type(exc).__name__}: {exc}); "
            "start it, or fix workers.broker_url"
        ) from None
