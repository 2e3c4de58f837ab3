"""A verdict's money, deploy checks and concerns in a lead's words, as plain text.

Slack, the HTML report and the command line show the same lines. Each returns None where the
verdict holds nothing to say (a report stored before these figures existed, a candidate never
benchmarked), so no reader prints ``None`` or ``nan``. The text is plain: a caller that writes
markup escapes it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from benchmarks.deploy import gib, ms
from benchmarks.verdict import months
from benchmarks.verdict import usd as verdict_usd

if TYPE_CHECKING:
    from benchmarks.verdict import VerdictReport

#: Verdicts where the candidate is at least about as good, so what switching is worth matters.
#: (For HOLDS the candidate is worse, and INCONCLUSIVE judged nothing.)
MONEY_VERDICTS = frozenset({"SUPERSEDED", "AT_RISK", "BLOCKED", "NEEDS_REVIEW"})
#: Verdicts whose summary leaves the money out (it names what stops the switch).
MONEY_NOT_IN_SUMMARY = frozenset({"BLOCKED", "NEEDS_REVIEW"})


def _number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def usd(value: float) -> str:
    """Whole dollars from $100, cents below, without the sign: ``$1,200``, ``$12.50``."""
    return verdict_usd(abs(value))


def per_month(net: float) -> str:
    """``+$1,200/month``, or ``costs $300/month more``."""
    return f"+{usd(net)}/month" if net >= 0 else f"costs {usd(net)}/month more"


def switching(report: VerdictReport) -> str | None:
    """``pays back in 17 months · +$1,200/month after · $8,400 over 24 months``; ``no switching
    cost · +$1,640/month``; ``does not pay back within 12 months · costs $300/month more``.

    None for a verdict where money was not what decided (HOLDS, INCONCLUSIVE) or that holds no
    monthly net (not benchmarked, or stored before the figure existed)."""
    net = _number(report.monthly_net_usd)
    if str(report.verdict) not in MONEY_VERDICTS or net is None or not report.benchmarked:
        return None
    cost = _number(report.switching_cost_usd) or 0.0
    horizon = _number(report.horizon_months)
    payback = _number(report.payback_months)
    within = f" within {horizon:g} months" if horizon is not None else ""
    quality = " (quality counted)" if _number(report.quality_value_usd) is not None else ""
    if cost <= 0:
        return f"no switching cost · {per_month(net)}{quality}"
    if payback is not None and (horizon is None or payback <= horizon):
        parts = [f"pays back in {months(payback)}", f"{per_month(net)} after{quality}"]
        over = _number(report.horizon_net_usd)
        if over is not None and horizon is not None:
            sign = "-" if over < 0 else ""
            parts.append(f"{sign}{usd(over)} over {horizon:g} months")
        return " · ".join(parts)
    if payback is not None:
        return f"does not pay back{within} (takes {months(payback)}) · {per_month(net)}{quality}"
    saves = "saves nothing a month" if net == 0 else per_month(net)
    return f"does not pay back{within} ({usd(cost)} to switch) · {saves}{quality}"


def deployment(report: VerdictReport) -> str | None:
    """``Licence apache-2.0 · needs 0.1 GiB · p95 12 ms per request (target 500 ms)``; None when
    no deploy check left a figure."""
    parts: list[str] = []
    if report.license:
        parts.append(f"Licence {report.license}")
    memory = _number(report.serving_memory_gb)
    if memory is not None:
        parts.append(f"needs {gib(memory)}")
    p95, target = _number(report.latency_p95_ms), _number(report.latency_target_ms)
    goal = f" (target {ms(target)})" if target is not None else ""
    if p95 is not None:
        parts.append(f"p95 {ms(p95)} per request{goal}")
    elif target is not None and report.benchmarked:
        parts.append(f"latency not measured{goal}")
    if not parts:
        return None
    return " · ".join(parts)


def _pts(value: float) -> str:
    return f"{value * 100:+.1f}"


def retune(report: VerdictReport) -> str | None:
    """``0.9933 · +7.0 points vs the fine-tune (95% CI +4.0 to +10.3) · +25.3 vs the candidate
    as is (CI +20.3 to +30.7) · 200 steps in 9 s, $0.01``; ``not run: <why>``; None when no
    re-tune was considered (or the report predates it)."""
    figures = report.retune
    if figures is None:
        return None
    status = figures.status.replace("_", " ")
    if figures.score is None or figures.delta_vs_finetune is None:
        return f"{status}: {figures.reason}" if figures.reason else status
    confidence = f"{report.confidence:.0%} CI" if report.confidence else "CI"
    parts = [f"{figures.score:.4f}"]
    if figures.ci_low_vs_finetune is not None and figures.ci_high_vs_finetune is not None:
        parts.append(
            f"{_pts(figures.delta_vs_finetune)} points vs the fine-tune ({confidence} "
            f"{_pts(figures.ci_low_vs_finetune)} to {_pts(figures.ci_high_vs_finetune)})"
        )
    lows = (figures.delta_vs_candidate, figures.ci_low_vs_candidate, figures.ci_high_vs_candidate)
    if None not in lows:
        delta, low, high = (float(x) for x in lows)  # type: ignore[arg-type]
        parts.append(f"{_pts(delta)} vs the candidate as is (CI {_pts(low)} to {_pts(high)})")
    trained = "cached adapter, " if figures.status == "cached" else ""
    parts.append(
        f"{trained}{figures.steps} steps in {figures.training_wall_s:,.0f} s, "
        f"{usd(figures.training_cost_usd)}"
    )
    payback = _number(figures.payback_months)
    if payback is not None and str(report.verdict) == "RETUNE":
        parts.append(f"pays back in {months(payback)}" if payback > 0 else "pays back at once")
    return " · ".join(parts)


def judged(report: VerdictReport) -> str | None:
    """``judge-1: the candidate wins 14 of 24, ties 3, loses 7 · orders disagreed on 12% ·
    48 calls (0 cached), $0.0123``; None when the task needed no judge."""
    figures = report.judged
    if figures is None:
        return None
    n = figures.wins + figures.ties + figures.losses
    parts = [f"{figures.judge}: the candidate wins {figures.wins} of {n}, ties {figures.ties}, "
             f"loses {figures.losses}"]  # fmt: skip
    if figures.identical:
        parts.append(f"{figures.identical} identical answers")
    parts.append(f"orders disagreed on {figures.position_bias:.0%}")
    if figures.unparsed:
        parts.append(f"{figures.unparsed} unreadable")
    parts.append(
        f"{figures.calls} calls ({figures.cached_calls} cached), {usd(figures.cost_usd)} judging"
    )
    if figures.failed:
        parts.append(f"failed: {figures.failed}")
    return " · ".join(parts)
