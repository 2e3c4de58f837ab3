"""``supersede run`` (the daemon), ``supersede rerun`` and ``supersede status``."""

from __future__ import annotations

import json
import shlex
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from core.errors import SupersedeError
from supersede.cli.console import (
    WIDE_COLUMNS,
    ConfigOption,
    JsonOption,
    configure_logging,
    err,
    fail,
    out,
    quiet_libraries,
    setup_logging,
    typeable,
)
from supersede.report.formatting import short_shas

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
    follow = typeable(f"status -c {shlex.quote(str(config))}" if config else "status")
    out.print(f"Follow it with: {follow}", highlight=False, soft_wrap=True)


def _when(value: datetime | None) -> str:
    return value.strftime("%m-%d %H:%M:%S") if value else "-"


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


def _verdict_note(verdict: VerdictReport) -> str:
    """The verdict and its summary; for one that is blocked or needs a review (whose summary
    names what stops the switch, not its money), what switching would be worth as well."""
    from workers.notify import words

    note = f"{verdict.verdict}: {verdict.summary}"
    money = words.switching(verdict)
    if money and str(verdict.verdict) in words.MONEY_NOT_IN_SUMMARY:
        note += f" Switching: {money}."
    return note


def _status_row(job: Job) -> tuple[str, ...]:
    """One job as ``supersede status`` shows it: short ids and shas, the verdict or the reason."""
    note = job.reason or ""
    verdict = _verdict(job)
    if verdict is not None:
        note = _verdict_note(verdict)
    if job.notify_error:
        note += f" [not yet notified, {job.notify_tries} tries: {job.notify_error}]"
    if job.muted:
        note += f" [{job.muted}]"
    if job.requested_by:
        note += f" [requested by {job.requested_by}]"
    return (
        job.key[:12], job.kind, short_shas(job.candidate), job.finetune or "-", job.queue,
        job.state, str(job.attempts), _when(job.queued_at), _took(job), short_shas(note),
    )  # fmt: skip


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
    rows = [_status_row(job) for job in jobs]
    if out.width >= WIDE_COLUMNS:
        table = Table(title="supersede status", title_justify="left")
        for column in ("job", "kind", "candidate", "fine-tune", "queue", "state", "tries",
                       "queued", "took"):  # fmt: skip
            table.add_column(column, no_wrap=True)
        table.add_column("reason / verdict", ratio=1)
        for cells in rows:  # names and reasons from the store are shown as written, not markup
            table.add_row(*(Text(cell) for cell in cells))
        out.print(table)
    else:  # one block per job: nothing folds mid-word at 80 columns
        for key, kind, candidate, finetune, queue, state, tries, queued, took, note in rows:
            out.print(
                f"[bold]{key}[/]  {kind}  {state}  tries {tries}  queued {queued}  took {took}"
                f"\n  {candidate} / {finetune} on {queue}",
                highlight=False,
            )
            if note:
                out.print(Padding(Text(note), (0, 0, 0, 2), expand=False), highlight=False)
    if not jobs:
        out.print("no jobs yet")
