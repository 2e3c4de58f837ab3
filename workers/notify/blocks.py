"""Slack messages (Block Kit plus a plain-text fallback) for verdicts, failures, skips and posts.

Every piece of text that came from outside (model names, feed titles, card text, error messages)
goes through :func:`escape`, so ``<!channel>`` in a repo name pings nobody and ``<url|label>``
cannot be injected. Messages are clamped to Slack's limits (50 blocks, 3,000 characters per
section, 150 per header, 10 fields of 2,000, 10 context elements) instead of being refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from watcher.events import Announcement, ModelReleased
from workers.jobs import Job
from workers.notify import words

MAX_BLOCKS = 50
SECTION_CHARS = 3000
HEADER_CHARS = 150
FIELD_CHARS = 2000
MAX_FIELDS = 10
MAX_CONTEXT = 10
TEXT_CHARS = 3000  # the fallback notification text (Slack truncates at 40,000; phones much sooner)
EMOJI = {
    "RETUNE": "🔁",
    "SUPERSEDED": "🔴",
    "BLOCKED": "⛔",
    "NEEDS_REVIEW": "🟡",
    "AT_RISK": "🟠",
    "HOLDS": "🟢",
    "INCONCLUSIVE": "⚪",
}


@dataclass(frozen=True)
class Message:
    """What is posted: ``text`` is the fallback shown in notifications."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


def escape(text: object) -> str:
    """Slack's three control characters, escaped: the text shows as written and commands nothing."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def link(url: str | None, label: str) -> str:
    """``<url|label>`` for an http(s) URL, else the escaped label alone."""
    if not url or urlsplit(url).scheme not in ("http", "https"):
        return escape(label)
    safe_url = url.replace("<", "%3C").replace(">", "%3E").replace("|", "%7C").replace(" ", "%20")
    return f"<{safe_url}|{escape(label).replace('|', '¦')}>"


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, SECTION_CHARS)}}


def _fields(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    fields = [
        {"type": "mrkdwn", "text": clip(f"*{label}*\n{value}", FIELD_CHARS)}
        for label, value in pairs[:MAX_FIELDS]
    ]
    return {"type": "section", "fields": fields}


def _header(text: str) -> dict[str, Any]:
    # plain_text is not parsed for mentions, but a header is also what people copy: angle
    # brackets from untrusted names become look-alikes rather than control sequences.
    shown = text.replace("<", "‹").replace(">", "›")
    return {"type": "header", "text": {"type": "plain_text", "text": clip(shown, HEADER_CHARS)}}


def _context(parts: list[str]) -> dict[str, Any]:
    elements = [{"type": "mrkdwn", "text": clip(p, FIELD_CHARS)} for p in parts[:MAX_CONTEXT]]
    return {"type": "context", "elements": elements}


def _message(text: str, blocks: list[dict[str, Any]]) -> Message:
    if len(blocks) > MAX_BLOCKS:
        blocks = [*blocks[: MAX_BLOCKS - 1], _context(["(shortened to fit Slack)"])]
    # The fallback text is parsed like mrkdwn (and is what notifications show): escaped whole.
    return Message(clip(escape(text), TEXT_CHARS), blocks)


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:,.0f}" if abs(value) >= 100 else f"${value:,.4f}".rstrip("0").rstrip(".")


def _saved(value: float | None) -> str:
    """``$1,200 saved per month``, or ``$300 more per month`` when switching costs more."""
    if value is None:
        return "-"
    return f"{_usd(value)} saved per month" if value >= 0 else f"{_usd(-value)} more per month"


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def candidate_link(event: ModelReleased | None, hub_url: str) -> str:
    """The candidate, linked to its Hub page or vendor post."""
    if event is not None and event.repo_id:
        url = event.link or f"{hub_url.rstrip('/')}/{event.repo_id}"
        return link(url, event.repo_id)
    return link(event.link if event else None, f"{_plain(event)} (API)")


def _revision(event: ModelReleased | None) -> str:
    if event is not None and event.repo_id:
        return f"{escape(event.repo_id)}@{(event.revision or '')[:12]}"
    return escape(_plain(event))


def _plain(event: ModelReleased | None) -> str:
    return event.name if event is not None else "?"


def release_of(job: Job) -> ModelReleased | None:
    """The release a verdict, failure or skip is about (None when its payload names none)."""
    event = job.event()
    return event if isinstance(event, ModelReleased) else None


def _bullets(title: str, items: tuple[str, ...]) -> dict[str, Any]:
    return _section(f"*{title}*\n" + "\n".join(f"• {escape(item)}" for item in items))


def verdict(job: Job, hub_url: str) -> Message:
    """A decided verdict: scores with the interval, cost on each side, the ROI line, what
    switching is worth, the deploy checks' figures, and what blocks it or needs a person."""
    r = job.verdict()
    if r is None:
        raise ValueError(f"{job.kind} job {job.key[:12]} has no verdict to tell")
    event = release_of(job)
    name = str(r.verdict)
    ft, cand, task = escape(r.finetune), candidate_link(event, hub_url), escape(r.task)
    metric = escape(r.metric or "score")
    pairs = [
        ("Fine-tune", ft),
        ("Candidate", cand),
        ("Task", f"{task} ({metric}, n = {r.n})" if r.benchmarked else f"{task} ({metric})"),
        ("Verdict", f"{EMOJI.get(name, '')} {name}"),
    ]
    if r.judged is not None:
        n = r.judged.wins + r.judged.ties + r.judged.losses
        pairs.append(("Judge", f"{escape(r.judged.judge)}: candidate wins {r.judged.wins} of "
                               f"{n}, loses {r.judged.losses}"))  # fmt: skip
    elif r.benchmarked:
        pairs += [
            ("Fine-tune score", _score(r.score_finetune)),
            ("Candidate score", _score(r.score_candidate)),
        ]
    else:
        pairs.append(("Benchmark", "not run: blocked before the download"))
    if r.delta is not None:
        confidence = r.confidence or 0.95
        p_value = "-" if r.p_value is None else f"{r.p_value:.3g}"
        pairs += [
            ("Difference", f"{r.delta:+.4f} ({confidence:.0%} CI {_signed(r.ci_low)} to "
                           f"{_signed(r.ci_high)})"),
            ("p-value", f"{p_value} ({escape(r.test or '')})"),
            ("Cost per 1,000 requests", f"fine-tune {_usd(r.cost_per_1k_finetune)}, "
                                        f"candidate {_usd(r.cost_per_1k_candidate)}"),
            ("Monthly impact", f"{_saved(r.monthly_savings_usd)} "
                               f"(fine-tune {_usd(r.monthly_cost_finetune)} with upkeep)"),
        ]  # fmt: skip
    blocks = [
        _header(f"{EMOJI.get(name, '')} {name}: {r.finetune} vs {_plain(event)}"),
        _fields(pairs),
        _section(f"*ROI:* {escape(r.summary)}"),
    ]
    figures = [
        f"*{label}:* {escape(line)}"
        for label, line in (
            ("Switching", words.switching(r)),
            ("Deploy", words.deployment(r)),
            ("Re-tuned", words.retune(r)),
            ("Judged", words.judged(r)),
        )
        if line
    ]
    if figures:
        blocks.append(_section("\n".join(figures)))
    if r.blockers:
        blocks.append(_bullets("Blocked by", r.blockers))
    if r.reviews:
        blocks.append(_bullets("Needs a person's review", r.reviews))
    if r.hint:
        blocks.append(_section(f"*Hint:* {escape(r.hint)}"))
    for warning in r.warnings:
        blocks.append(_section(f":warning: {escape(warning)}"))
    blocks.append(_context([f"revision {_revision(event)}", f"job {job.key[:12]}",
                            f"parent {str(job.parent or '')[:12]}"]))  # fmt: skip
    text = f"{name}: {_plain(event)} vs fine-tune {r.finetune}. {r.summary}"
    return _message(text, blocks)


def problem(job: Job, hub_url: str) -> Message:
    """A failure (after the attempt cap, with the re-run command) or a skip (with the reason)."""
    event = release_of(job)
    skipped = job.state == "skipped" or (job.state == "notified" and "skipped" in str(job.reason))
    title = "Skipped" if skipped else "Benchmark failed"
    who = escape(job.finetune or "every fine-tune")
    rerun = f"supersede rerun {_plain(event)}" + (
        f" --finetune {job.finetune}" if job.finetune else ""
    )
    blocks = [
        _header(f"{title}: {_plain(event)}"),
        _fields(
            [
                ("Candidate", candidate_link(event, hub_url)),
                ("Fine-tune", who),
                ("Attempts", str(job.attempts)),
                ("State", job.state),
            ]
        ),
        _section(f"*Reason:* {escape(job.reason or 'unknown')}"),
    ]
    if not skipped:
        blocks.append(_section(f"*Re-run:* `{escape(rerun)}`"))
    blocks.append(_context([f"revision {_revision(event)}", f"job {job.key[:12]}"]))
    text = f"{title}: {_plain(event)} for fine-tune {job.finetune or '-'}: {job.reason}"
    return _message(text, blocks)


def announcement(job: Job) -> Message:
    """A vendor post that names no benchmarkable model."""
    event = job.event()
    post = event if isinstance(event, Announcement) else None
    title = post.title if post is not None and post.title else "(untitled)"
    source = escape(post.source.removeprefix("feed:") if post is not None else "")
    blocks = [
        _section(f":newspaper: *{link(post.link if post else None, title)}*"),
    ]
    if post is not None and post.summary:
        blocks.append(_section(escape(post.summary)))
    blocks.append(_context([f"from {source}", "announcement: nothing to benchmark"]))
    return _message(f"Announcement from {source or 'a feed'}: {title}", blocks)


def release(event: ModelReleased | None, finetunes: list[str], hub_url: str) -> Message:
    """The parent message of a release; each fine-tune's verdict is a reply in its thread."""
    params = event.params if event is not None else None
    size = f"{params / 1e9:.1f}B parameters" if params else "size unknown"
    names = ", ".join(escape(n) for n in finetunes) or "-"
    found_via = escape(event.source if event is not None else "")
    blocks = [
        _header(f"New release: {_plain(event)}"),
        _section(
            f"{candidate_link(event, hub_url)} ({size}) benchmarked against: {names}. "
            "Verdicts follow in this thread."
        ),
        _context([f"revision {_revision(event)}", f"found via {found_via}"]),
    ]
    return _message(f"New release {_plain(event)}: verdicts in thread", blocks)


@dataclass(frozen=True)
class Controls:
    """The buttons a message carries when the Slack app answers them
    (:mod:`workers.notify.interact`)."""

    #: Offer Re-tune (an open-weights release against an adapter fine-tune).
    retune: bool = False
    #: Whom the Mute menu mutes (the release's organisation or vendor); None: no menu.
    owner: str | None = None
    mute_days: tuple[int, ...] = (7, 30)


def _button(label: str, action: str, value: str, **extra: Any) -> dict[str, Any]:
    text = {"type": "plain_text", "text": label}
    return {"type": "button", "text": text, "action_id": action, "value": value, **extra}


def _confirm(title: str, text: str) -> dict[str, Any]:
    return {
        "title": {"type": "plain_text", "text": clip(title, 100)},
        "text": {"type": "plain_text", "text": clip(text, 300)},
        "confirm": {"type": "plain_text", "text": "Queue it"},
        "deny": {"type": "plain_text", "text": "Cancel"},
    }


def actions(job: Job, controls: Controls) -> dict[str, Any]:
    """Re-run, Re-tune, Acknowledge and the Mute menu for ``job``'s message (the job's key in
    the block id and the buttons' values)."""
    elements: list[dict[str, Any]] = []
    if job.kind != "announcement" and not (job.kind == "verdict" and job.state == "skipped"):
        gpu = _confirm("Re-run the benchmark?", "A new benchmark job of this release against "
                       "this fine-tune, on its GPU queue.")  # fmt: skip
        elements.append(_button("Re-run", "supersede_rerun", job.key, confirm=gpu))
        if controls.retune:
            train = _confirm("Re-tune on this release?", "Trains the fine-tune's adapter recipe "
                             "on this release, then benchmarks all three.")  # fmt: skip
            elements.append(_button("Re-tune", "supersede_retune", job.key, confirm=train))
    elements.append(_button("Acknowledge", "supersede_ack", job.key, style="primary"))
    if controls.owner:
        owner = controls.owner.replace("<", "‹").replace(">", "›")
        options = [
            {"text": {"type": "plain_text", "text": clip(f"{owner}: {days} days", 75)},
             "value": str(days)}
            for days in controls.mute_days[:100]
        ]  # fmt: skip
        placeholder = {"type": "plain_text", "text": clip(f"Mute {owner}…", 150)}
        elements.append({"type": "static_select", "action_id": "supersede_mute",
                         "placeholder": placeholder, "options": options})  # fmt: skip
    return {"type": "actions", "block_id": f"supersede:{job.key}", "elements": elements}


def for_job(job: Job, hub_url: str, controls: Controls | None = None) -> Message:
    """The message a finished job is told with (with ``controls``: its buttons last)."""
    if job.kind == "announcement":
        message = announcement(job)
    elif job.kind == "verdict" and job.result and job.reason is None:
        message = verdict(job, hub_url)
    else:
        message = problem(job, hub_url)
    if controls is None:
        return message
    return Message(message.text, [*message.blocks[: MAX_BLOCKS - 1], actions(job, controls)])
