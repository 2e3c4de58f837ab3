"""A static HTML report of the store's jobs: verdicts per fine-tune, with figures, and every job.

``build_report(settings, out_dir)`` writes ``out_dir/index.html`` and ``out_dir/figures/*.png``.
The page is self-contained (inline style, no external CSS, scripts or fonts), so the folder can
be copied anywhere or served as is. Everything read from the store is treated as untrusted: the
template escapes every value, links are kept only when they are plain ``http(s)`` URLs, and text
drawn into the figures is never parsed as math.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined

from config.settings import Settings
from core.clock import now
from core.errors import FatalError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure

    from workers.jobs import Job

#: Verdict kinds in the order the summary lists them.
VERDICTS = ("SUPERSEDED", "AT_RISK", "HOLDS", "INCONCLUSIVE")
#: Job states in the order of their life cycle.
STATES = ("waiting", "queued", "running", "done", "failed", "skipped", "notified")
#: One colour per verdict, shared by the page and the figures.
VERDICT_COLOURS = {
    "SUPERSEDED": "#c0392b",
    "AT_RISK": "#d68910",
    "HOLDS": "#1e8449",
    "INCONCLUSIVE": "#7f8c8d",
}
OTHER_COLOUR = "#5d6d7e"
FINETUNE_COLOUR = "#1f3a93"
#: How many of the newest jobs the report reads by default.
DEFAULT_MAX_JOBS = 10_000
#: Above this ratio of the largest to the smallest cost, the cost axis is logarithmic.
LOG_COST_RATIO = 20.0
#: z for a two-sided 95% interval.
Z95 = 1.96
_LABEL_CHARS = 40
_LABEL_BOX = {
    "boxstyle": "round,pad=0.15",
    "facecolor": "white",
    "edgecolor": "none",
    "alpha": 0.75,
}


@dataclass(frozen=True)
class VerdictEntry:
    """One verdict job's result, read defensively (any field may be missing or malformed)."""

    key: str
    finetune: str
    candidate: str
    link: str | None
    task: str
    metric: str
    verdict: str
    when: datetime
    n: int | None
    score_finetune: float | None
    score_candidate: float | None
    stderr_finetune: float | None
    stderr_candidate: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    confidence: float | None
    margin: float | None
    cost_finetune: float | None
    cost_candidate: float | None
    monthly_savings: float | None
    summary: str

    @property
    def verdict_class(self) -> str:
        """CSS class suffix: the verdict in lower case, ``other`` for an unknown one."""
        return self.verdict.lower() if self.verdict in VERDICTS else "other"

    @property
    def scored(self) -> bool:
        """Both sides have a score (a failed side leaves them empty)."""
        return self.score_finetune is not None and self.score_candidate is not None


@dataclass(frozen=True)
class ReportFigure:
    """A written figure: its path relative to the page, and what it shows, in words."""

    src: str
    alt: str
    caption: str


@dataclass
class FinetuneSection:
    """What the page shows of one fine-tune."""

    name: str
    anchor: str
    verdicts: list[VerdictEntry] = field(default_factory=list)
    figures: list[ReportFigure] = field(default_factory=list)
    note: str | None = None

    @property
    def latest(self) -> VerdictEntry | None:
        """The most recent verdict, if any."""
        return self.verdicts[-1] if self.verdicts else None

    @property
    def counts(self) -> dict[str, int]:
        """Verdicts of this fine-tune by kind."""
        return dict(Counter(v.verdict for v in self.verdicts))


def build_report(settings: Settings, out_dir: Path, *, max_jobs: int = DEFAULT_MAX_JOBS) -> Path:
    """Write the report of ``settings.store`` into ``out_dir``; return the path of its page.

    Reads the newest ``max_jobs`` jobs. Writes ``out_dir/index.html`` and one history figure and
    one quality-versus-cost figure per fine-tune with scored verdicts under ``out_dir/figures``.
    Raises :class:`core.errors.ConfigError` when the store cannot be opened and
    :class:`core.errors.FatalError` when ``out_dir`` cannot be written.
    """
    from workers.jobs import JobStore

    jobs = JobStore(settings.store.url).list(limit=max_jobs)
    out_dir = Path(out_dir)
    try:
        return _write(settings, jobs, out_dir, max_jobs)
    except OSError as exc:
        raise FatalError(f"cannot write the report in {out_dir}: {exc.strerror or exc}") from None


def _write(settings: Settings, jobs: Sequence[Job], out_dir: Path, max_jobs: int) -> Path:
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)

    verdicts = sorted(
        (entry for entry in map(_verdict_entry, jobs) if entry is not None),
        key=lambda v: (v.when, v.key),
    )
    sections = _sections(verdicts, [ft.name for ft in settings.finetunes])
    for section in sections:
        _draw_section(section, figures_dir)

    verdict_counts = Counter(v.verdict for v in verdicts)
    state_counts = Counter(job.state for job in jobs)
    context = {
        "generated_at": _when(now()),
        "verdict_counts": [(kind, kind.lower(), verdict_counts.get(kind, 0)) for kind in VERDICTS]
        + [
            (kind, "other", n) for kind, n in sorted(verdict_counts.items()) if kind not in VERDICTS
        ],
        "state_counts": [(state, state_counts.get(state, 0)) for state in STATES]
        + [(state, n) for state, n in sorted(state_counts.items()) if state not in STATES],
        "total_jobs": len(jobs),
        "truncated": len(jobs) >= max_jobs,
        "max_jobs": max_jobs,
        "sections": sections,
        "verdicts": list(reversed(verdicts)),
        "jobs": [_job_row(job) for job in jobs],
        "figure_count": sum(len(s.figures) for s in sections),
        "colours": VERDICT_COLOURS,
        "fmt": {
            "score": _score,
            "delta": _delta,
            "p": _p_value,
            "usd": _usd,
            "when": _when,
            "pct": _percent,
        },
    }
    page = _environment().get_template("report.html.j2").render(context)
    index = out_dir / "index.html"
    partial = out_dir / ".index.html.tmp"
    partial.write_text(page, encoding="utf-8")
    partial.replace(index)
    return index


# ---------------------------------------------------------------------------- reading the store


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("supersede.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _number(value: Any) -> float | None:
    """A finite float, or None (booleans, strings, NaN and infinities are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _text(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _safe_link(value: Any) -> str | None:
    """``value`` when it is an absolute http(s) URL; anything else (``javascript:``...) is None."""
    if not isinstance(value, str) or any(ch in value for ch in "\r\n\t\x00"):
        return None
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return None
    return value.strip() if parts.scheme in ("http", "https") and parts.netloc else None


def _side(details: Any, side: str, key: str) -> float | None:
    if not isinstance(details, dict):
        return None
    part = details.get(side)
    return _number(part.get(key)) if isinstance(part, dict) else None


def _verdict_entry(job: Job) -> VerdictEntry | None:
    """The verdict of a finished verdict job; None for other jobs and verdicts not yet made."""
    result = job.result
    if job.kind != "verdict" or not isinstance(result, dict) or "verdict" not in result:
        return None
    event = job.payload.get("event") if isinstance(job.payload, dict) else None
    details = result.get("details")
    n = result.get("n")
    return VerdictEntry(
        key=job.key,
        finetune=job.finetune or _text(result.get("finetune"), "?"),
        candidate=_text(result.get("candidate")) or job.candidate,
        link=_safe_link(event.get("link")) if isinstance(event, dict) else None,
        task=_text(result.get("task")),
        metric=_text(result.get("metric"), "score") or "score",
        verdict=str(result.get("verdict")),
        when=job.finished_at or job.created_at,
        n=n if isinstance(n, int) and not isinstance(n, bool) else None,
        score_finetune=_number(result.get("score_finetune")),
        score_candidate=_number(result.get("score_candidate")),
        stderr_finetune=_side(details, "finetune", "stderr"),
        stderr_candidate=_side(details, "candidate", "stderr"),
        delta=_number(result.get("delta")),
        ci_low=_number(result.get("ci_low")),
        ci_high=_number(result.get("ci_high")),
        p_value=_number(result.get("p_value")),
        confidence=_number(result.get("confidence")),
        margin=_number(result.get("margin")),
        cost_finetune=_number(result.get("cost_per_1k_finetune")),
        cost_candidate=_number(result.get("cost_per_1k_candidate")),
        monthly_savings=_number(result.get("monthly_savings_usd")),
        summary=_text(result.get("summary")),
    )


def _anchor(name: str, taken: set[str]) -> str:
    """A unique, id-safe slug of ``name`` (also used to name its figures)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "finetune"
    anchor, n = slug[:64], 2
    while anchor in taken:
        anchor, n = f"{slug[:60]}-{n}", n + 1
    taken.add(anchor)
    return anchor


def _sections(verdicts: Sequence[VerdictEntry], configured: Iterable[str]) -> list[FinetuneSection]:
    """One section per fine-tune that has verdicts or is configured, by name."""
    names = sorted({v.finetune for v in verdicts} | set(configured))
    taken: set[str] = set()
    sections = {name: FinetuneSection(name=name, anchor=_anchor(name, taken)) for name in names}
    for verdict in verdicts:
        sections[verdict.finetune].verdicts.append(verdict)
    return [sections[name] for name in names]


def _job_row(job: Job) -> dict[str, Any]:
    took = None
    if job.started_at and job.finished_at:
        took = max((job.finished_at - job.started_at).total_seconds(), 0.0)
    verdict = job.result.get("verdict") if job.kind == "verdict" and job.result else None
    return {
        "key": job.key[:12],
        "kind": job.kind,
        "candidate": job.candidate,
        "finetune": job.finetune or "",
        "queue": job.queue,
        "state": job.state,
        "state_class": job.state if job.state in STATES else "other",
        "attempts": job.attempts,
        "reason": job.reason or "",
        "verdict": str(verdict) if verdict is not None else "",
        "queued": _moment(job.queued_at),
        "started": _moment(job.started_at),
        "finished": _moment(job.finished_at),
        "took": _duration(took),
    }


# ---------------------------------------------------------------------------- formatting


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _moment(value: datetime | None) -> str:
    """A table cell's time (the column says UTC)."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _delta(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def _p_value(value: float | None) -> str:
    if value is None:
        return "-"
    return "< 0.001" if value < 0.001 else f"{value:.3g}"


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    sign = "-" if value < 0 else ""
    size = abs(value)
    return f"{sign}${size:,.4f}" if size < 1 else f"{sign}${size:,.2f}"


def _percent(value: float | None) -> str:
    return "95%" if value is None else f"{value:.0%}"


def _label(name: str) -> str:
    return name if len(name) <= _LABEL_CHARS else name[: _LABEL_CHARS - 1] + "…"


def _colour(verdict: str) -> str:
    return VERDICT_COLOURS.get(verdict, OTHER_COLOUR)


# ---------------------------------------------------------------------------- figures


def _draw_section(section: FinetuneSection, figures_dir: Path) -> None:
    """Draw the fine-tune's figures (when it has scored verdicts) and note what is missing."""
    scored = [v for v in section.verdicts if v.scored]
    if not section.verdicts:
        section.note = "No verdicts for this fine-tune yet."
        return
    if not scored:
        section.note = "No scored verdicts yet: every comparison so far had a side fail."
        return
    with warnings.catch_warnings():
        # A candidate name in a script the bundled font lacks draws as boxes; not worth a warning.
        warnings.filterwarnings("ignore", message=r".*[Gg]lyph.*missing.*")
        section.figures.append(_history_figure(section, scored, figures_dir))
        priced = [v for v in scored if v.cost_candidate is not None]
        if priced:
            section.figures.append(_cost_figure(section, priced, figures_dir))
        else:
            section.note = "No serving costs recorded yet: no quality-versus-cost figure."


def _new_figure() -> MplFigure:
    """A figure on its own Agg canvas: no pyplot, no global backend state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    figure = MplFigure(figsize=(9.0, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _finish(figure: MplFigure, ax: Axes, title: str, ylabel: str, path: Path) -> None:
    """Title, labels and legend, then write the figure as PNG."""
    ax.set_title(title, fontsize=11, parse_math=False)
    ax.set_ylabel(ylabel, parse_math=False)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=8, loc="best", framealpha=0.85)
    figure.savefig(path, format="png", dpi=100)


def _name_point(ax: Axes, text: str, x: float, y: float, **style: Any) -> None:
    """Label a point with a name read from the store: drawn as is, never parsed as math."""
    style = {"xytext": (6, 6), "fontsize": 8, "color": "#222222", "bbox": _LABEL_BOX, **style}
    ax.annotate(_label(text), (x, y), textcoords="offset points", parse_math=False, **style)


def _level(
    ax: Axes, values: Sequence[float], positions: Sequence[int], label: str, **style: Any
) -> None:
    """A horizontal line at a value that holds across the history, else a step per verdict."""
    if max(values) - min(values) < 1e-12:
        ax.axhline(values[-1], label=label, **style)
    else:
        edges = [p - 0.5 for p in positions] + [positions[-1] + 0.5]
        ax.stairs(values, edges, baseline=None, label=label, **style)


def _band(
    ax: Axes, lows: Sequence[float], highs: Sequence[float], positions: Sequence[int], label: str
) -> None:
    """The shaded interval around the fine-tune's score (flat or stepped, like its line)."""
    style: dict[str, Any] = {"color": FINETUNE_COLOUR, "alpha": 0.12, "label": label}
    if max(lows) - min(lows) < 1e-12 and max(highs) - min(highs) < 1e-12:
        ax.axhspan(lows[-1], highs[-1], **style)
    else:
        edges = [p - 0.5 for p in positions] + [positions[-1] + 0.5]
        ax.stairs(highs, edges, baseline=lows, fill=True, **style)


def _history_figure(
    section: FinetuneSection, scored: Sequence[VerdictEntry], figures_dir: Path
) -> ReportFigure:
    """Candidates' scores over time against the fine-tune's score, interval and margin."""
    figure = _new_figure()
    ax = figure.add_subplot()
    positions = list(range(len(scored)))
    ft_scores = [v.score_finetune or 0.0 for v in scored]
    ft_errors = [Z95 * (v.stderr_finetune or 0.0) for v in scored]
    _level(ax, ft_scores, positions, "fine-tune score", color=FINETUNE_COLOUR, linewidth=2)
    if any(ft_errors):
        lows = [score - error for score, error in zip(ft_scores, ft_errors, strict=True)]
        highs = [score + error for score, error in zip(ft_scores, ft_errors, strict=True)]
        _band(ax, lows, highs, positions, "fine-tune 95% interval")
    floor: list[float] = []
    if all(v.margin is not None for v in scored):
        floor = [score - (v.margin or 0.0) for score, v in zip(ft_scores, scored, strict=True)]
        _level(ax, floor, positions, "non-inferiority margin", color=FINETUNE_COLOUR,
               linestyle="--", linewidth=1.2)  # fmt: skip

    for kind in sorted({v.verdict for v in scored}, key=_verdict_order):
        group = [(p, v) for p, v in zip(positions, scored, strict=True) if v.verdict == kind]
        ax.errorbar(
            [p for p, _ in group],
            [v.score_candidate or 0.0 for _, v in group],
            yerr=[Z95 * (v.stderr_candidate or 0.0) for _, v in group],
            fmt="o",
            color=_colour(kind),
            elinewidth=1.2,
            capsize=3,
            markersize=7,
            label=kind,
        )
    for position, verdict in zip(positions, scored, strict=True):
        _name_point(ax, verdict.candidate, position, verdict.score_candidate or 0.0)

    step = max(1, math.ceil(len(scored) / 8))
    ticks = positions[::step]
    ax.set_xticks(ticks, [scored[p].when.strftime("%Y-%m-%d\n%H:%M") for p in ticks], fontsize=8)
    ax.set_xlim(-0.6, max(len(scored) - 0.4, 1.0))
    ax.set_xlabel("verdict made (UTC), oldest first")
    ax.grid(axis="y", alpha=0.3)
    latest = scored[-1]
    name = f"{section.anchor}-history.png"
    title = f"{_label(section.name)}: candidates against the fine-tune"
    _finish(figure, ax, title, latest.metric, figures_dir / name)

    best = max(scored, key=lambda v: v.score_candidate or 0.0)
    alt = (
        f"History of {len(scored)} candidate score(s) against the fine-tune {section.name} "
        f"on {latest.task or 'its task'}, from {_when(scored[0].when)} to {_when(latest.when)}. "
        f"Fine-tune {latest.metric} {_score(latest.score_finetune)}"
        + (f", non-inferiority floor {_score(floor[-1])}" if floor else "")
        + f". Best candidate: {best.candidate} at {_score(best.score_candidate)} ({best.verdict})."
    )
    caption = (
        "Candidate scores with 95% error bars, coloured by verdict; the solid line is the "
        "fine-tune's score with its 95% interval shaded; the dashed line is the "
        "non-inferiority margin below it."
    )
    return ReportFigure(src=f"figures/{name}", alt=alt, caption=caption)


def _cost_figure(
    section: FinetuneSection, priced: Sequence[VerdictEntry], figures_dir: Path
) -> ReportFigure:
    """Quality against serving cost per 1,000 requests: the fine-tune and each candidate."""
    figure = _new_figure()
    ax = figure.add_subplot()
    latest = priced[-1]
    ft_cost, ft_score = latest.cost_finetune, latest.score_finetune
    costs = [v.cost_candidate or 0.0 for v in priced]
    if ft_cost is not None:
        costs.append(ft_cost)
    logarithmic = min(costs) > 0 and max(costs) / min(costs) > LOG_COST_RATIO
    for kind in sorted({v.verdict for v in priced}, key=_verdict_order):
        group = [v for v in priced if v.verdict == kind]
        ax.scatter(
            [v.cost_candidate or 0.0 for v in group],
            [v.score_candidate or 0.0 for v in group],
            color=_colour(kind),
            s=50,
            label=kind,
            zorder=3,
        )
    for verdict in priced:
        _name_point(ax, verdict.candidate, verdict.cost_candidate or 0.0,
                    verdict.score_candidate or 0.0)  # fmt: skip
    if ft_cost is not None and ft_score is not None:
        ax.scatter([ft_cost], [ft_score], marker="*", s=260, color=FINETUNE_COLOUR,
                   edgecolors="white", linewidths=0.8, label="fine-tune", zorder=4)  # fmt: skip
        _name_point(ax, section.name, ft_cost, ft_score, xytext=(8, -14),
                    color=FINETUNE_COLOUR, fontweight="bold")  # fmt: skip
    if logarithmic:
        ax.set_xscale("log")
    ax.set_xlabel("serving cost per 1,000 requests (USD" + (", log scale)" if logarithmic else ")"))
    ax.grid(alpha=0.3)
    ax.margins(x=0.15, y=0.15)
    name = f"{section.anchor}-cost.png"
    title = f"{_label(section.name)}: quality against serving cost"
    _finish(figure, ax, title, latest.metric, figures_dir / name)

    cheapest = min(priced, key=lambda v: v.cost_candidate or 0.0)
    where = (
        f"; the fine-tune scores {_score(ft_score)} at {_usd(ft_cost)} per 1,000 requests"
        if ft_cost is not None
        else ""
    )
    alt = (
        f"Quality against serving cost for the fine-tune {section.name}: "
        f"{len(priced)} candidate(s){where}; the cheapest candidate, {cheapest.candidate}, "
        f"scores {_score(cheapest.score_candidate)} at {_usd(cheapest.cost_candidate)} per "
        f"1,000 requests ({cheapest.verdict})."
    )
    caption = (
        "Each candidate's score against its serving cost per 1,000 requests, coloured by "
        "verdict; the star is the fine-tune"
        + (" (cost axis on a log scale)." if logarithmic else ".")
    )
    return ReportFigure(src=f"figures/{name}", alt=alt, caption=caption)


def _verdict_order(kind: str) -> tuple[int, str]:
    return (VERDICTS.index(kind) if kind in VERDICTS else len(VERDICTS), kind)
