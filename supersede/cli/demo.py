"""``supersede demo``: the whole product, offline, in a few minutes."""

from __future__ import annotations

import json
import logging
import shlex
import signal
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.padding import Padding
from rich.text import Text

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
from supersede.demo.run import FINETUNE, FIRST, SECOND, Outcome, Serving, run_demo

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
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Keep the local Hub, the feed and the daemon up after the demo, until Ctrl-C, "
            "to try compare, rerun, status and report against them from another terminal.",
        ),
    ] = False,
) -> None:
    """Offline demo: a tiny fine-tune, two new releases (one better, one not), the real daemon
    path from discovery to verdict, and the HTML report."""
    quiet_libraries()
    setup_logging(log_format="text")
    logging.getLogger().setLevel(logging.WARNING)
    started = time.monotonic()

    def show(outcomes: list[Outcome], config: Path) -> None:
        _show(outcomes, config, _report(config, workdir))

    def hold(outcomes: list[Outcome], serving: Serving) -> None:
        show(outcomes, serving.config)
        _serve(serving)

    try:
        workdir = usable_workdir(workdir, WORKDIR_VARIABLE)
        outcomes, config = run_demo(workdir, broker=broker, then=hold if serve else None,
                                    say=lambda s: out.print(s, highlight=False))  # fmt: skip
        if not serve:
            show(outcomes, config)
    except SupersedeError as exc:
        raise fail(exc) from None
    except TimeoutError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    out.print(f"Done in {time.monotonic() - started:.0f} s.")


def _show(outcomes: list[Outcome], config: Path, report: Path | None) -> None:
    out.rule("Verdicts")
    for o in outcomes:  # wrapped to the terminal, the line under each verdict indented
        headline = Text(o.verdict, style="bold")
        headline.append(f"  {o.release}  (found via {o.found_via}; "
                        f"{o.seconds_to_verdict:.0f} s from release to verdict)")  # fmt: skip
        out.print(headline, highlight=False)
        out.print(Padding(Text(o.summary), (0, 0, 0, 4), expand=False), highlight=False)
    if any(o.delivery_pending for o in outcomes):
        daemon = typeable(f"run -c {shlex.quote(str(config))}")
        out.print(
            "Verdicts ready, Slack delivery pending (retrying): the daemon delivers them once "
            f"Slack answers ({daemon}).",
            highlight=False,
            soft_wrap=True,
        )
    out.print(f"Report: {report}", highlight=False, soft_wrap=True)
    out.print(f"Config: {config}", highlight=False, soft_wrap=True)
    out.print(f"Try: {typeable(f'status -c {shlex.quote(str(config))}')}", highlight=False,
              soft_wrap=True)  # fmt: skip


def _serve(serving: Serving) -> None:
    """Print what to try from another terminal, then wait for Ctrl-C (or SIGTERM)."""
    config = f"-c {shlex.quote(str(serving.config))}"
    body = json.dumps({"like": "stronger"})
    out.rule("Serving")
    out.print(
        f"The local Hub ({serving.hub_url}) and the vendor feed stay up, and the daemon keeps "
        "watching them, until Ctrl-C. From another terminal:\n"
        f"  publish another release:  curl -s -X POST {serving.publish_url} -d '{body}'\n"
        f"  follow it:                {typeable(f'status {config}')}\n"
        f"  compare by hand:          {typeable(f'compare {config} -f {FINETUNE} -C {FIRST}')}\n"
        f"  benchmark again:          {typeable(f'rerun {config} {SECOND}')}\n"
        f"  the HTML report:          {typeable(f'report {config}')}",
        highlight=False,
        soft_wrap=True,
    )
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}  # fmt: skip
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    out.print("Stopping the daemon and the local servers.")


def _report(config: Path, workdir: Path) -> Path | None:
    try:
        from supersede.report.build import build_report
    except ImportError:
        return None
    from config.settings import load_settings

    return build_report(load_settings(config), workdir.resolve() / "report")
