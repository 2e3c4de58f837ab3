"""``supersede demo``: the whole product, offline, in a few minutes."""

from __future__ import annotations

import logging
import shlex
import time
from pathlib import Path
from typing import Annotated

import typer

from core.errors import SupersedeError
from supersede.cli.console import (
    err,
    fail,
    out,
    quiet_libraries,
    setup_logging,
    typeable,
    usable_workdir,
)

WORKDIR_VARIABLE = "SUPERSEDE_DEMO_WORKDIR"


def demo(
    workdir: Annotated[
        Path,
        typer.Option(
            envvar=WORKDIR_VARIABLE, help="Where the tiny models, the store and the report go."
        ),
    ] = Path(".supersede/demo"),
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            envvar="SUPERSEDE_WORKERS__BROKER_URL",
            help="redis://... to run on Redis with a worker subprocess (default: embedded).",
        ),
    ] = None,
) -> None:
    """Offline demo: a tiny fine-tune, two new releases (one better, one not), the real daemon
    path from discovery to verdict, and the HTML report."""
    from supersede.demo.run import run_demo

    quiet_libraries()
    setup_logging(log_format="text")
    logging.getLogger().setLevel(logging.WARNING)
    started = time.monotonic()
    try:
        workdir = usable_workdir(workdir, WORKDIR_VARIABLE)
        outcomes, config = run_demo(
            workdir, broker=broker, say=lambda s: out.print(s, highlight=False)
        )
        report = _report(config, workdir)
    except SupersedeError as exc:
        raise fail(exc) from None
    except TimeoutError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    out.rule("Verdicts")
    for o in outcomes:
        out.print(
            f"[bold]{o.verdict}[/]  {o.release}  (found via {o.found_via}; "
            f"{o.seconds_to_verdict:.0f} s from release to verdict)\n    {o.summary}",
            highlight=False,
            soft_wrap=True,
        )
    out.print(f"Report: {report}", highlight=False, soft_wrap=True)
    out.print(f"Config: {config}", highlight=False, soft_wrap=True)
    out.print(f"Try: {typeable(f'status -c {shlex.quote(str(config))}')}", highlight=False,
              soft_wrap=True)  # fmt: skip
    out.print(f"Done in {time.monotonic() - started:.0f} s.")


def _report(config: Path, workdir: Path) -> Path | None:
    try:
        from supersede.report.build import build_report
    except ImportError:
        return None
    from config.settings import load_settings

    return build_report(load_settings(config), workdir.resolve() / "report")
