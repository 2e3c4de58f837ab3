"""``supersede run`` (the daemon), ``supersede rerun`` and ``supersede status``."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from core.errors import BrokerUnavailable, SupersedeError
from supersede.cli.console import (
    ConfigOption,
    JsonOption,
    configure_logging,
    err,
    fail,
    out,
    quiet_libraries,
    setup_logging,
)


def build_pipeline(settings: Any) -> tuple[Any, Any]:
    """The Celery app and a pipeline that sends through it."""
    from workers.app import make_app
    from workers.jobs import JobStore
    from workers.notify import make_notifier
    from workers.pipeline import Pipeline

    app = make_app(settings)
    app.set_default()

    def send(name: str, key: str, queue: str) -> None:
        app.send_task(name, args=[key], queue=queue)

    return app, Pipeline(settings, JobStore(settings.store.url), send, make_notifier(settings))


def check_broker(app: Any, url: str) -> None:
    """Fail fast, with a message, when the broker cannot be reached (a few quick retries)."""
    from workers.app import safe_broker

    try:
        with app.connection() as connection:
            connection.ensure_connection(max_retries=3, interval_start=0.5, interval_step=0.5)
    except Exception as exc:
        raise BrokerUnavailable(
            f"cannot reach the broker at {safe_broker(url)} ({type(exc).__name__}: {exc}); "
            "start it, or fix workers.broker_url"
        ) from None


def run(
    wait: Annotated[
        bool,
        typer.Option("--wait", help="If another scheduler holds the store, wait to take over."),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    config: ConfigOption = None,
) -> None:
    """The daemon: the watcher's scheduler and webhook endpoint, the job reconciler and, on the
    embedded default (no broker_url), the worker itself. Stops cleanly on SIGTERM/SIGINT."""
    from config.settings import load_settings
    from core.constants import DEFAULT_QUEUE
    from supersede.cli.watch import run_daemon
    from watcher.discovery import Discovery
    from watcher.state import WatchState
    from workers.app import broker_url
    from workers.preflight import preflight
    from workers.publish import QueuePublisher

    quiet_libraries()
    setup_logging(verbose)
    try:
        settings = load_settings(config)
        configure_logging(settings, verbose)
        preflight(settings, "run")  # every setting it will need, before any work
        app, pipeline = build_pipeline(settings)
        check_broker(app, broker_url(settings))
        state = WatchState(settings.store.url)
        discovery = Discovery(settings, state, QueuePublisher(pipeline))
        worker = None
        if settings.workers.broker_url is None:
            from workers.embedded import EmbeddedWorker

            worker = EmbeddedWorker(app, [DEFAULT_QUEUE, *sorted(settings.workers.gpu_queues)])
        metrics = settings.observability
        if metrics.metrics_port:
            from supersede.observability import serve

            try:
                serve(settings.store.url, metrics.metrics_host, metrics.metrics_port)
            except OSError as exc:  # the port is taken: run without metrics, say so
                err.print(f"[yellow]metrics endpoint not started:[/] {exc}", highlight=False)
        reconcile = ("jobs:reconcile", pipeline.reconcile, settings.workers.reconcile_every)
        run_daemon(settings, state, discovery, wait=wait, extra_jobs=(reconcile,), worker=worker)
    except SupersedeError as exc:
        raise fail(exc) from None


def rerun(
    candidate: Annotated[
        str, typer.Argument(help="Hub id[@revision], local folder, or an api_candidates name.")
    ],
    finetune: Annotated[
        str | None, typer.Option("--finetune", "-f", help="Only this fine-tune (default: all).")
    ] = None,
    queue: Annotated[str | None, typer.Option(help="The GPU queue to run it on.")] = None,
    config: ConfigOption = None,
) -> None:
    """Benchmark a candidate again against the fine-tunes (the jobs are reset and sent)."""
    from config.settings import load_settings
    from workers.app import broker_url
    from workers.manual import rerun as plan_rerun
    from workers.preflight import preflight

    try:
        settings = load_settings(config)
        preflight(settings, "rerun")
        app, pipeline = build_pipeline(settings)
        check_broker(app, broker_url(settings))
        keys = plan_rerun(pipeline, candidate, finetune=finetune, queue=queue)
    except SupersedeError as exc:
        raise fail(exc) from None
    for key in keys:
        job = pipeline.jobs.get(key)
        where = f"{job.state} on {job.queue}" if job else "?"
        out.print(f"benchmark job {key[:12]}: {where}", highlight=False)
    if not keys:
        err.print("nothing to run: no fine-tune is configured")
    out.print("Follow it with: supersede status", highlight=False)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _took(job: Any) -> str:
    if job.started_at and job.finished_at:
        return f"{(job.finished_at - job.started_at).total_seconds():.1f} s"
    return "-"


def status(
    limit: Annotated[int, typer.Option(min=1, help="Newest jobs shown.")] = 50,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """List jobs: state, attempts, failure reason, queue and timings."""
    from config.settings import load_settings
    from workers.jobs import JobStore

    try:
        jobs = JobStore(load_settings(config).store.url).list(limit=limit)
    except SupersedeError as exc:
        raise fail(exc) from None
    if as_json:
        for job in jobs:
            row = job.to_dict()
            if job.result and job.kind == "verdict":
                row["verdict"] = job.result.get("verdict")
            sys.stdout.write(json.dumps(row) + "\n")
        return
    table = Table(title="supersede status", title_justify="left")
    for column in ("job", "kind", "candidate", "fine-tune", "queue", "state", "tries", "queued",
                   "took", "reason / verdict"):  # fmt: skip
        table.add_column(column, overflow="fold")
    for job in jobs:
        note = job.reason or ""
        if job.result and job.kind == "verdict":
            note = f"{job.result.get('verdict')}: {job.result.get('summary')}"
        if job.notify_error:
            note += f" [not yet notified, {job.notify_tries} tries: {job.notify_error}]"
        table.add_row(
            job.key[:12], job.kind, job.candidate, job.finetune or "-", job.queue, job.state,
            str(job.attempts), _when(job.queued_at), _took(job), note,
        )  # fmt: skip
    out.print(table)
    if not jobs:
        out.print("no jobs yet")
