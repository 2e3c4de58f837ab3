"""The report's figures: per fine-tune, candidates' scores over time and quality against cost.

Each figure is drawn on its own Agg canvas (no pyplot, no global backend state) and written as
PNG. Names read from the store are drawn as text, never parsed as math.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supersede.report import formatting as fmt
from supersede.report.data import VERDICTS, FinetuneSection, ReportedVerdict, ReportFigure, finite

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure

#: One colour per verdict, shared by the page and the figures.
VERDICT_COLOURS = {
    "RETUNE": "#2471a3",
    "SUPERSEDED": "#c0392b",
    "BLOCKED": "#6c3483",
    "NEEDS_REVIEW": "#9a7d0a",
    "AT_RISK": "#d68910",
    "HOLDS": "#1e8449",
    "INCONCLUSIVE": "#7f8c8d",
}
OTHER_COLOUR = "#5d6d7e"
FINETUNE_COLOUR = "#1f3a93"
RETUNED_COLOUR = "#2471a3"
#: Above this ratio of the largest to the smallest cost, the cost axis is logarithmic.
LOG_COST_RATIO = 20.0
#: z for a two-sided 95% interval.
Z95 = 1.96
#: Figure size (inches) and the resolution written: the page shows two figures a row, each
#: about 560 px wide at a 1,400 px window, so a point of text here is about 1.2 px there.
FIGSIZE = (6.4, 4.4)
DPI = 150
#: Text sizes (points): at the width the page shows them, no smaller than the tables' text.
TITLE_PT, LABEL_PT, TICK_PT, NAME_PT, LEGEND_PT = 13.0, 12.0, 11.0, 11.0, 10.5
LABEL_BOX = {
    "boxstyle": "round,pad=0.15",
    "facecolor": "white",
    "edgecolor": "none",
    "alpha": 0.75,
}


def _colour(verdict: str) -> str:
    return VERDICT_COLOURS.get(verdict, OTHER_COLOUR)


def draw_section(section: FinetuneSection, figures_dir: Path) -> None:
    """Draw the fine-tune's figures (when it has scored verdicts) and note what is missing.

    A candidate blocked before its benchmark has no score: it is in the tables, not the figures.
    """
    scored = [v for v in section.verdicts if v.scored]
    unrun = sum(not v.report.benchmarked for v in section.verdicts)
    if not section.verdicts:
        section.note = "No verdicts for this fine-tune yet."
        return
    if not scored:
        why = "had a side fail"
        if unrun == len(section.verdicts):
            why = "was blocked before its benchmark"
        elif unrun:
            why = "had a side fail or was blocked before its benchmark"
        section.note = f"No scored verdicts yet: every comparison so far {why}."
        return
    with warnings.catch_warnings():
        # A candidate name in a script the bundled font lacks draws as boxes; not worth a warning.
        warnings.filterwarnings("ignore", message=r".*[Gg]lyph.*missing.*")
        section.figures.append(_history_figure(section, scored, figures_dir))
        priced = [v for v in scored if v.report.cost_per_1k_candidate is not None]
        notes = []
        if priced:
            section.figures.append(_cost_figure(section, priced, figures_dir))
        else:
            notes.append("No serving costs recorded yet: no quality-versus-cost figure.")
        if unrun:
            notes.append(
                f"{unrun} candidate{' was' if unrun == 1 else 's were'} blocked before the "
                "benchmark: not drawn (no score), listed in the verdicts table."
            )
        section.note = " ".join(notes) or None


def _new_figure() -> MplFigure:
    """A figure on its own Agg canvas: no pyplot, no global backend state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    figure = MplFigure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _finish(figure: MplFigure, ax: Axes, title: str, ylabel: str, path: Path) -> None:
    """Title, labels and legend, then write the figure as PNG."""
    ax.set_title(title, fontsize=TITLE_PT, parse_math=False, wrap=True)
    ax.set_ylabel(ylabel, fontsize=LABEL_PT, parse_math=False)
    ax.xaxis.label.set_fontsize(LABEL_PT)
    ax.tick_params(labelsize=TICK_PT)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=LEGEND_PT, loc="best", framealpha=0.85)
    figure.savefig(path, format="png", dpi=DPI)


def _name_point(ax: Axes, text: str, x: float, y: float, *, left: bool = False,
                **style: Any) -> None:  # fmt: skip
    """Label a point with a name read from the store: drawn as is, never parsed as math; on the
    point's ``left`` when it lies in the right half, so the label stays inside the frame."""
    dx, dy = style.pop("xytext", (7, 7))
    style = {"fontsize": NAME_PT, "color": "#222222", "bbox": LABEL_BOX, **style}
    ax.annotate(fmt.label(text), (x, y), xytext=(-dx if left else dx, dy),
                textcoords="offset points", ha="right" if left else "left",
                parse_math=False, **style)  # fmt: skip


def _in_right_half(value: float, values: Sequence[float], logarithmic: bool = False) -> bool:
    """Whether ``value`` lies in the right half of the span of ``values``."""
    if logarithmic:
        value, values = math.log(value), [math.log(v) for v in values]
    low, high = min(values), max(values)
    return high > low and value > (low + high) / 2


def _price(value: float) -> str:
    """A tick's price in plain decimals (``0.00009``, never ``9e-05``), two significant digits."""
    import numpy

    return str(numpy.format_float_positional(value, precision=2, unique=True, fractional=False,
                                             trim="-"))  # fmt: skip


def _tick_labels(moments: Sequence[Any]) -> list[str]:
    """Distinct labels for the verdicts' times: minutes, seconds where minutes repeat, then a
    count where even seconds do."""
    for pattern in ("%m-%d\n%H:%M", "%m-%d\n%H:%M:%S"):
        labels = [m.strftime(pattern) for m in moments]
        if len(set(labels)) == len(labels):
            return labels
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return unique


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
    section: FinetuneSection, scored: Sequence[ReportedVerdict], figures_dir: Path
) -> ReportFigure:
    """Candidates' scores over time against the fine-tune's score, interval and margin."""
    figure = _new_figure()
    ax = figure.add_subplot()
    positions = list(range(len(scored)))
    ft_scores = [v.report.score_finetune or 0.0 for v in scored]
    ft_errors = [Z95 * (v.stderr_finetune or 0.0) for v in scored]
    _level(ax, ft_scores, positions, "fine-tune score", color=FINETUNE_COLOUR, linewidth=2)
    if any(ft_errors):
        lows = [s - error for s, error in zip(ft_scores, ft_errors, strict=True)]
        highs = [s + error for s, error in zip(ft_scores, ft_errors, strict=True)]
        _band(ax, lows, highs, positions, "fine-tune 95% interval")
    floor: list[float] = []
    margins = [finite(v.report.margin) for v in scored]
    if all(m is not None for m in margins):
        floor = [s - (m or 0.0) for s, m in zip(ft_scores, margins, strict=True)]
        _level(ax, floor, positions, "non-inferiority margin", color=FINETUNE_COLOUR,
               linestyle="--", linewidth=1.2)  # fmt: skip

    for kind in sorted({v.label for v in scored}, key=_verdict_order):
        group = [(p, v) for p, v in zip(positions, scored, strict=True) if v.label == kind]
        ax.errorbar(
            [p for p, _ in group],
            [v.report.score_candidate or 0.0 for _, v in group],
            yerr=[Z95 * (v.stderr_candidate or 0.0) for _, v in group],
            fmt="o",
            color=_colour(kind),
            elinewidth=1.2,
            capsize=3,
            markersize=7,
            label=kind,
        )
    for position, verdict in zip(positions, scored, strict=True):
        _name_point(ax, verdict.report.candidate, position, verdict.report.score_candidate or 0.0,
                    left=_in_right_half(position, [*positions, 1]))  # fmt: skip

    step = max(1, math.ceil(len(scored) / 6))
    ticks = positions[::step]
    ax.set_xticks(ticks, _tick_labels([scored[p].when for p in ticks]))
    ax.set_xlim(-0.6, max(len(scored) - 0.4, 1.0))
    ax.margins(y=0.14)  # room for the names of the highest and lowest points
    ax.set_xlabel("verdict made (UTC), oldest first")
    ax.grid(axis="y", alpha=0.3)
    latest = scored[-1]
    name = f"{section.anchor}-history.png"
    title = f"{fmt.label(section.name)}: candidates against the fine-tune"
    _finish(figure, ax, title, latest.report.metric, figures_dir / name)

    best = max(scored, key=lambda v: v.report.score_candidate or 0.0)
    first, last = fmt.when(scored[0].when), fmt.when(latest.when)
    alt = (
        f"History of {len(scored)} candidate score(s) against the fine-tune {section.name} "
        f"on {latest.report.task or 'its task'}, from {first} to {last}. "
        f"Fine-tune {latest.report.metric} {fmt.score(latest.report.score_finetune)}"
        + (f", non-inferiority floor {fmt.score(floor[-1])}" if floor else "")
        + f". Best candidate: {best.report.candidate} at "
        f"{fmt.score(best.report.score_candidate)} ({best.label})."
    )
    caption = (
        "Candidate scores with 95% error bars, coloured by verdict; the solid line is the "
        "fine-tune's score with its 95% interval shaded; the dashed line is the "
        "non-inferiority margin below it."
    )
    return ReportFigure(src=f"figures/{name}", alt=alt, caption=caption)


def _cost_figure(
    section: FinetuneSection, priced: Sequence[ReportedVerdict], figures_dir: Path
) -> ReportFigure:
    """Quality against serving cost per 1,000 requests: the fine-tune and each candidate."""
    figure = _new_figure()
    ax = figure.add_subplot()
    latest = priced[-1]
    ft_cost, ft_score = latest.report.cost_per_1k_finetune, latest.report.score_finetune
    costs = [v.report.cost_per_1k_candidate or 0.0 for v in priced]
    if ft_cost is not None:
        costs.append(ft_cost)
    logarithmic = min(costs) > 0 and max(costs) / min(costs) > LOG_COST_RATIO
    for kind in sorted({v.label for v in priced}, key=_verdict_order):
        group = [v for v in priced if v.label == kind]
        ax.scatter(
            [v.report.cost_per_1k_candidate or 0.0 for v in group],
            [v.report.score_candidate or 0.0 for v in group],
            color=_colour(kind),
            s=50,
            label=kind,
            zorder=3,
        )
    for verdict in priced:
        cost = verdict.report.cost_per_1k_candidate or 0.0
        _name_point(ax, verdict.report.candidate, cost, verdict.report.score_candidate or 0.0,
                    left=_in_right_half(cost, costs, logarithmic))  # fmt: skip
    retuned = [v for v in priced if _retuned_point(v) is not None]
    if retuned:  # the third contender: the fine-tune's recipe re-tuned on the candidate
        points = [_retuned_point(v) for v in retuned]
        ax.scatter([c for c, _ in points], [q for _, q in points], marker="D", s=60,  # type: ignore[misc]
                   facecolors="none", edgecolors=RETUNED_COLOUR, linewidths=1.6,
                   label="re-tuned on the candidate", zorder=4)  # fmt: skip
    if ft_cost is not None and ft_score is not None:
        ax.scatter([ft_cost], [ft_score], marker="*", s=260, color=FINETUNE_COLOUR,
                   edgecolors="white", linewidths=0.8, label="fine-tune", zorder=4)  # fmt: skip
        _name_point(ax, section.name, ft_cost, ft_score, xytext=(9, -16),
                    left=_in_right_half(ft_cost, costs, logarithmic),
                    color=FINETUNE_COLOUR, fontweight="bold")  # fmt: skip
    if logarithmic:
        ax.set_xscale("log")
    else:  # a few round prices, not a ruler of eight-digit decimals
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, min_n_ticks=3))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: "$" + _price(value)))
    ax.set_xlabel("serving cost per 1,000 requests (USD" + (", log scale)" if logarithmic else ")"))
    ax.grid(alpha=0.3)
    ax.margins(x=0.15, y=0.15)
    name = f"{section.anchor}-cost.png"
    title = f"{fmt.label(section.name)}: quality against serving cost"
    _finish(figure, ax, title, latest.report.metric, figures_dir / name)

    cheapest = min(priced, key=lambda v: v.report.cost_per_1k_candidate or 0.0)
    where = (
        f"; the fine-tune scores {fmt.score(ft_score)} at {fmt.usd(ft_cost)} per 1,000 requests"
        if ft_cost is not None
        else ""
    )
    alt = (
        f"Quality against serving cost for the fine-tune {section.name}: "
        f"{len(priced)} candidate(s){where}; the cheapest candidate, {cheapest.report.candidate}, "
        f"scores {fmt.score(cheapest.report.score_candidate)} at "
        f"{fmt.usd(cheapest.report.cost_per_1k_candidate)} per 1,000 requests ({cheapest.label})."
    )
    caption = (
        "Each candidate's score against its serving cost per 1,000 requests, coloured by "
        "verdict; the star is the fine-tune"
        + ("; an open diamond, the fine-tune's recipe re-tuned on a candidate" if retuned else "")
        + (" (cost axis on a log scale)." if logarithmic else ".")
    )
    return ReportFigure(src=f"figures/{name}", alt=alt, caption=caption)


def _retuned_point(verdict: ReportedVerdict) -> tuple[float, float] | None:
    """(cost per 1,000, score) of the re-tuned contender, when it was scored."""
    figures = verdict.report.retune
    if figures is None or figures.score is None or figures.cost_per_1k is None:
        return None
    return figures.cost_per_1k, figures.score


def _verdict_order(kind: str) -> tuple[int, str]:
    return (VERDICTS.index(kind) if kind in VERDICTS else len(VERDICTS), kind)
