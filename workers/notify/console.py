"""The embedded default without a Slack token: the same message on the terminal, and its Block
Kit JSON on disk, so a first run shows exactly what Slack would get."""

from __future__ import annotations

import html
import json
import logging
import re
from pathlib import Path
from typing import Any

from config.settings import Settings
from workers.jobs import Job
from workers.notify import blocks

log = logging.getLogger(__name__)
_LINK = re.compile(r"<([^|>]+)\|([^>]+)>")


def plain(mrkdwn: str) -> str:
    """Slack mrkdwn as terminal text: ``<url|label>`` -> ``label (url)``, escapes undone."""
    return html.unescape(_LINK.sub(lambda m: f"{m.group(2)} ({m.group(1)})", mrkdwn))


def render(message: blocks.Message) -> str:
    """The blocks as lines of text, in order."""
    lines: list[str] = []
    for block in message.blocks:
        kind = block.get("type")
        if kind == "header":
            lines += [block["text"]["text"], "=" * min(72, len(block["text"]["text"]))]
        elif kind == "section":
            if "text" in block:
                lines.append(plain(block["text"]["text"]))
            for item in block.get("fields", []):
                label, _, value = item["text"].partition("\n")
                lines.append(f"  {plain(label).strip('*')}: {plain(value)}")
        elif kind == "context":
            lines.append("  " + " · ".join(plain(e.get("text", "")) for e in block["elements"]))
    return "\n".join(lines)


class ConsoleNotifier:
    """Prints each message and writes ``<console_dir>/<job>.json`` (what would be posted)."""

    def __init__(self, settings: Settings, stream: Any = None) -> None:
        self.hub_url = settings.hub.endpoint
        self.folder = Path(settings.notify.console_dir)
        self.stream = stream

    def send(self, job: Job) -> None:
        message = blocks.for_job(job, self.hub_url)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{job.key[:16]}.json"
        payload = {"text": message.text, "blocks": message.blocks}
        path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
        text = f"{render(message)}\n  (Block Kit JSON: {path})\n"
        if self.stream is not None:
            self.stream.write(text + "\n")
            self.stream.flush()
        else:
            log.info("notification\n%s", text)
