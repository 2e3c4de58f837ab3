"""``supersede poll``: one discovery pass (``--once``), or the watcher daemon."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from rich.table import Table

from core.errors import SupersedeError
from supersede.cli.console import (
    EXIT_RETRYABLE,
    ConfigOption,
    JsonOption,
    configure_logging,
    err,
    fail,
    out,
    quiet_libraries,
    setup_logging,
)

log = logging.getLogger("supersede.poll")


def _event_line(event: Any) -> str:
    if event.kind == "announcement":
        return f"announcement  {event.title}  {event.link or ''}"
    if event.repo_id:
        params = f"{event.params / 1e9:.2f}B params" if event.params else "params unknown"
        return f"release       {event.repo_id}@{(event.revision or '')[:12]}  ({params})"
    api = event.api
    rule = f"feed {api.feed} rule {api.rule}" if api.feed else f"api_candidates {api.rule}"
    return f"release       API model {api.model} ({rule})"


def poll(
    once: Annotated[
        bool, typer.Option("--once", help="One discovery pass over every source, then exit.")
    ] = False,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="If another scheduler holds the store, wait to take over."),
    ] = False,
    as_json: JsonOption = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    config: ConfigOption = None,
) -> None:
    """Discover new foundation models on the Hub, Hub webhooks and vendor feeds.

    With --once: one pass, then exit (with --json: one JSON object per new event per line).
    Without: the watcher daemon (scheduled polls and the webhook endpoint) until SIGTERM/SIGINT.
    """
    from config.settings import load_settings
    from supersede.wiring import System, build_watcher, run_until_signal
    from watcher.discovery import Discovery
    from watcher.publish import Collect, JsonLines, Publisher
    from watcher.state import WatchState
    from workers.preflight import preflight

    quiet_libraries()
    setup_logging(verbose)
    try:
        settings = load_settings(config)
        configure_logging(settings, verbose)
        # Discovery only: poll plans, benchmarks and notifies nothing, so it needs no Slack
        # channel or task file; the daemon serves the webhook, so it needs its secret.
        preflight(settings, "poll-once" if once else "poll")
        if once:
            if not verbose:  # each failed source is one line below, not a log line as well
                logging.getLogger("watcher").setLevel(logging.ERROR)
            collected = Collect()
            publisher = JsonLines() if as_json else collected
            state = WatchState(settings.store.url)
            reports = Discovery(settings, state, publisher).poll_all()
            failed = [r for r in reports if r.status == "failed"]
            if not as_json:
                _print_pass(reports, collected.events)
            for report in failed:
                err.print(f"[yellow]{report.source}[/]: {report.error}", highlight=False,
                          soft_wrap=True)  # fmt: skip
            if failed:
                raise typer.Exit(EXIT_RETRYABLE)
            return
        daemon_publisher: Publisher = JsonLines() if as_json else _LogPublisher()
        run_until_signal(System(settings, build_watcher(settings, daemon_publisher)), wait=wait)
    except SupersedeError as exc:
        raise fail(exc) from None


class _LogPublisher:
    def publish(self, event: Any) -> None:
        log.info("new: %s", _event_line(event))


def _print_pass(reports: list[Any], events: list[Any]) -> None:
    table = Table(title="supersede poll --once", title_justify="left")
    for column in ("source", "status", "seen", "dropped", "baseline", "new"):
        table.add_column(column, no_wrap=True)
    table.add_column("note", overflow="fold", ratio=1)
    for r in reports:
        counts = (r.seen, r.dropped, r.baseline, len(r.events))
        table.add_row(r.source, r.status, *map(str, counts), r.error or "")
    out.print(table)
    for event in events:
        out.print(_event_line(event), highlight=False)
    failed = sum(r.status == "failed" for r in reports)
    if not events:
        out.print("nothing new" + (f" ({failed} of {len(reports)} sources failed: asked again "
                                   "at the next pass)" if failed else ""))  # fmt: skip
