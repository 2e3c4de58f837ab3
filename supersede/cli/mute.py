"""``supersede mute list|add|lift``: organisations and vendors whose releases are not posted."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from core.errors import ConfigError, SupersedeError
from supersede.cli.console import ConfigOption, JsonOption, fail, out

if TYPE_CHECKING:
    from workers.notify.mutes import MuteStore

mute = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Organisations and vendors whose releases are benchmarked but not posted, for a while.",
)


def _store(config: Path | None) -> MuteStore:
    from config.settings import load_settings
    from workers.notify.mutes import MuteStore

    return MuteStore(load_settings(config).store.url)


@mute.command("list")
def list_mutes(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """The mutes in force: who, until when, set by whom."""
    try:
        store = _store(config)
        mutes = store.active()
    except SupersedeError as exc:
        raise fail(exc) from None
    if as_json:
        for m in mutes:
            row = {"owner": m.owner, "until": m.until.isoformat(), "by": m.by,
                   "since": m.created_at.isoformat()}  # fmt: skip
            sys.stdout.write(json.dumps(row) + "\n")
        return
    for m in mutes:
        out.print(m.describe(), highlight=False, soft_wrap=True)
    if not mutes:
        out.print("nothing is muted")


@mute.command("add")
def add(
    owner: Annotated[str, typer.Argument(help="Hub organisation (the part before '/') or feed.")],
    days: Annotated[float, typer.Option("--days", "-d", min=0.01, max=365)] = 7,
    config: ConfigOption = None,
) -> None:
    """Mute an organisation or vendor: its releases are still benchmarked, not posted."""
    try:
        store = _store(config)
        made = store.mute(owner, days, f"cli:{getpass.getuser()}")
    except ValueError as exc:
        raise fail(ConfigError(str(exc))) from None
    except SupersedeError as exc:
        raise fail(exc) from None
    out.print(made.describe(), highlight=False, soft_wrap=True)


@mute.command("lift")
def lift(
    owner: Annotated[str, typer.Argument(help="The muted organisation or feed.")],
    config: ConfigOption = None,
) -> None:
    """Lift a mute: the owner's next release is posted again."""
    try:
        store = _store(config)
        lifted = store.lift(owner)
    except SupersedeError as exc:
        raise fail(exc) from None
    if lifted:
        out.print(f"{owner.lower()} is no longer muted: its next release is posted")
    else:
        out.print(f"{owner.lower()} was not muted")
