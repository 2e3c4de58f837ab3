"""``supersede run`` (the daemon), ``supersede rerun`` and ``supersede status``."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from core.errors import SupersedeError
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

if TYPE_CHECKING:
    from benchmarks.verdict import VerdictReport
    from workers.jobs import Job


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
    from supersede.wiring import build_system, run_until_signal
    from workers.preflight import preflight

    quiet_libraries()
    setup_logging(verbose)
    try:
        settings = load_settings(config)
        configure_logging(settings, verbose)
        preflight(settings, "run")  # every setting it will need, before any work
        system = build_system(settings)
        run_until_signal(system, wait=wait, warn=_warn)
    except SupersedeError as exc:
        raise fail(exc) from None


def _warn(message: str) -> None:
    err.print(f"[yellow]{message}[/]", highlight=False)


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
    from supersede.wiring import connect
    from workers.manual import rerun as plan_rerun
    from workers.preflight import preflight

    try:
        settings = load_settings(config)
        preflight(settings, "rerun")
        _app, pipeline = connect(settings)
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


def _verdict(job: Job) -> VerdictReport | None:
    """The job's verdict; None when it has none, or one this version cannot read (the listing
    goes on: ``supersede report`` shows what can be read of it)."""
    try:
        return job.verdict()
    except ValueError:
        return None


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
            verdict = _verdict(job)
            if verdict is not None:
                row["verdict"] = str(verdict.verdict)
            sys.stdout.write(json.dumps(row) + "\n")
        return
    table = Table(title="supersede status", title_justify="left")
    for column in ("job", "kind", "candidate", "fine-tune", "queue", "state", "tries", "queued",
                   "took", "reason / verdict"):  # fmt: skip
        table.add_column(column, overflow="fold")
    for job in jobs:
        note = job.reason or ""
        verdict = _verdict(job)
        if verdict is not None:
            note = f"{verdict.verdict}: {verdict.summary}"
        if job.notify_error:
            note += f" [not yet notified, {job.notify_tries} tries: {job.notify_error}]"
        table.add_row(
            job.key[:12], job.kind, job.candidate, job.finetune or "-", job.queue, job.state,
            str(job.attempts), _when(job.queued_at), _took(job), note,
        )  # fmt: skip
    out.print(table)
    if not jobs:
        out.print("no jobs yet")
