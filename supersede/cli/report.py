"""``supersede report``: a static HTML report of the verdicts and jobs in the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from core.errors import SupersedeError
from supersede.cli import console
from supersede.cli.console import ConfigOption, fail


def report(
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Folder the report is written to (index.html and figures/)."
        ),
    ] = Path(".supersede/report"),
    config: ConfigOption = None,
) -> None:
    """Write an HTML report: verdicts per fine-tune with figures, every verdict and every job."""
    from config.settings import load_settings
    from supersede.report.build import build_report

    try:
        index = build_report(load_settings(config), out)
    except SupersedeError as exc:
        raise fail(exc) from None
    page = index.resolve()
    console.out.print(str(page), highlight=False, soft_wrap=True)
    console.out.print(page.as_uri(), highlight=False, soft_wrap=True)
