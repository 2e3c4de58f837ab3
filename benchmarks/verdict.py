"""The ROI-impact verdict: has the candidate caught up with the fine-tune, at what serving cost,
and so what is the fine-tune still worth?

The rules, in order (``margin`` and ``confidence`` come from the ``verdict`` settings; "the
interval" is the paired bootstrap confidence interval of candidate minus fine-tune):

1. ``INCONCLUSIVE`` when a side failed, or there are fewer than 20 paired examples.
2. ``HOLDS`` when the candidate is worse by more than the margin: interval high < -margin.
3. ``SUPERSEDED`` when the candidate is significantly better: interval low > 0.
4. ``INCONCLUSIVE`` when, short of those clear outcomes, there are too few examples for the
   margin (the interval cannot become narrower than the margin at this n).
5. ``SUPERSEDED`` when the candidate is non-inferior (interval low > -margin) and no more
   expensive to serve (within ``cost_tolerance``).
6. ``AT_RISK`` when it is non-inferior but more expensive, or the difference is not significant
   either way (the interval straddles -margin).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

if TYPE_CHECKING:
    # Only decide() needs these; a reader of a stored VerdictReport (the notifier, the report,
    # ``supersede status``) should not pay for importing scipy.
    from benchmarks.cost import ServingCost
    from benchmarks.stats import PairedComparison
    from config.settings import Economics, VerdictSettings


class Verdict(StrEnum):
    SUPERSEDED = "SUPERSEDED"
    AT_RISK = "AT_RISK"
    HOLDS = "HOLDS"
    INCONCLUSIVE = "INCONCLUSIVE"


@dataclass(frozen=True)
class VerdictReport:
    """A verdict with every number behind it and a line a lead can act on."""

    verdict: Verdict
    finetune: str
    candidate: str
    task: str
    metric: str
    n: int
    score_finetune: float | None
    score_candidate: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    test: str | None
    confidence: float
    margin: float
    cost_per_1k_finetune: float | None
    cost_per_1k_candidate: float | None
    monthly_cost_finetune: float | None
    monthly_cost_candidate: float | None
    monthly_savings_usd: float | None
    tuning_cost_usd: float
    #: Which rule decided, in words.
    reason: str
    #: The one-line ROI impact.
    summary: str
    hint: str | None = None
    warnings: tuple[str, ...] = ()
    cost_basis_finetune: str | None = None
    cost_basis_candidate: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: what a verdict job stores and ``compare --json`` prints."""
        return dict(REPORT_ADAPTER.dump_python(self, mode="json"))


#: Validates and dumps a :class:`VerdictReport` (the store keeps it as :meth:`to_dict` writes it).
REPORT_ADAPTER: TypeAdapter[VerdictReport] = TypeAdapter(VerdictReport)


def _usd(value: float) -> str:
    return f"${value:,.0f}" if abs(value) >= 100 else f"${value:,.2f}"


def _points(value: float) -> str:
    return f"{value * 100:+.1f} points"


def _margin_points(margin: float) -> str:
    return f"{margin * 100:.1f} points"


def decide(
    *,
    finetune: str,
    candidate: str,
    task: str,
    metric: str,
    economics: Economics,
    rules: VerdictSettings,
    comparison: PairedComparison | None,
    cost_finetune: ServingCost | None,
    cost_candidate: ServingCost | None,
    open_weights: bool,
    failure: str | None = None,
) -> VerdictReport:
    """Apply the verdict rules (module docstring) to a paired comparison and two costs."""
    from benchmarks.cost import monthly
    from benchmarks.stats import MIN_EXAMPLES

    margin = rules.margin
    base: dict[str, Any] = {
        "finetune": finetune,
        "candidate": candidate,
        "task": task,
        "metric": metric,
        "confidence": rules.confidence,
        "margin": margin,
        "tuning_cost_usd": economics.tuning_cost_usd,
    }
    if comparison is None or cost_finetune is None or cost_candidate is None or failure:
        why = failure or "a side produced no result"
        return VerdictReport(
            verdict=Verdict.INCONCLUSIVE,
            n=comparison.n if comparison else 0,
            score_finetune=None,
            score_candidate=None,
            delta=None,
            ci_low=None,
            ci_high=None,
            p_value=None,
            test=None,
            cost_per_1k_finetune=None,
            cost_per_1k_candidate=None,
            monthly_cost_finetune=None,
            monthly_cost_candidate=None,
            monthly_savings_usd=None,
            reason=f"a side failed: {why}",
            summary=f"No verdict for {candidate}: {why}. The fine-tune stays as it is.",
            **base,
        )
    c = comparison
    requests = economics.monthly_requests
    monthly_ft = monthly(cost_finetune.per_1k_usd, requests, economics.monthly_upkeep_usd)
    monthly_cand = monthly(cost_candidate.per_1k_usd, requests)
    savings = monthly_ft - monthly_cand
    cheaper = cost_candidate.per_1k_usd <= cost_finetune.per_1k_usd * (1 + rules.cost_tolerance)
    interval = f"{c.confidence:.0%} CI {_points(c.ci_low)} to {_points(c.ci_high)}"
    edge = f"{_points(c.delta)} {metric} ({interval})"
    tuning = _usd(economics.tuning_cost_usd)

    if c.n < MIN_EXAMPLES:
        verdict, reason = (
            Verdict.INCONCLUSIVE,
            f"only {c.n} paired examples (at least {MIN_EXAMPLES})",
        )
        summary = f"No verdict for {candidate} yet: {c.n} examples are too few to judge."
    elif c.ci_high < -margin:
        verdict, reason = (
            Verdict.HOLDS,
            f"worse by more than the margin ({interval}, below {_points(-margin)})",
        )
        summary = (
            f"The fine-tune keeps a {_points(-c.delta)} edge over {candidate} for "
            f"{_usd(economics.monthly_upkeep_usd)}/month of upkeep."
        )
    elif c.ci_low > 0:
        verdict, reason = Verdict.SUPERSEDED, f"significantly better ({interval} > 0)"
        summary = _switch_line(candidate, savings, tuning, c.delta)
    elif c.underpowered:
        verdict = Verdict.INCONCLUSIVE
        reason = (
            f"too few examples for a margin of {_margin_points(margin)} "
            f"(about {c.needed_for_margin} needed)"
        )
        summary = (
            f"No verdict for {candidate} yet: {c.n} examples cannot resolve a margin of "
            f"{_margin_points(margin)}; "
            f"about {c.needed_for_margin} are needed."
        )
    elif c.ci_low > -margin and cheaper:
        verdict = Verdict.SUPERSEDED
        reason = (
            f"non-inferior ({interval}, above {_points(-margin)}) and no more expensive to serve"
        )
        summary = _switch_line(candidate, savings, tuning, c.delta)
    elif c.ci_low > -margin:
        verdict = Verdict.AT_RISK
        reason = f"non-inferior ({interval}, above {_points(-margin)}) but more expensive to serve"
        if savings > 0:
            summary = (
                f"{candidate} matches the fine-tune; it costs more per request, but dropping the "
                f"fine-tune's upkeep still saves {_usd(savings)}/month."
            )
        else:
            summary = (
                f"{candidate} matches the fine-tune but would cost {_usd(-savings)}/month more: "
                "the fine-tune is worth keeping while that holds."
            )
    else:
        verdict = Verdict.AT_RISK
        reason = f"not significant either way ({interval} straddles {_points(-margin)})"
        summary = (
            f"Too close to call: {candidate} is at {edge}; the fine-tune costs "
            f"{_usd(monthly_ft)}/month. Re-check with more examples."
        )
    decisive = verdict is Verdict.HOLDS or (verdict is Verdict.SUPERSEDED and c.ci_low > 0)
    hint = None
    if open_weights and verdict is not Verdict.INCONCLUSIVE:
        hint = (
            f"{candidate} has open weights: re-tuning the adapter on it as the new base may "
            "recover (or extend) the fine-tune's edge."
        )
    return VerdictReport(
        verdict=verdict,
        n=c.n,
        score_finetune=c.score_finetune,
        score_candidate=c.score_candidate,
        delta=c.delta,
        ci_low=c.ci_low,
        ci_high=c.ci_high,
        p_value=c.p_value,
        test=c.test,
        cost_per_1k_finetune=cost_finetune.per_1k_usd,
        cost_per_1k_candidate=cost_candidate.per_1k_usd,
        monthly_cost_finetune=monthly_ft,
        monthly_cost_candidate=monthly_cand,
        monthly_savings_usd=savings,
        reason=reason,
        summary=summary,
        hint=hint,
        # "Too few examples for the margin" only matters when the interval did not decide.
        warnings=() if decisive else c.warnings,
        cost_basis_finetune=cost_finetune.basis,
        cost_basis_candidate=cost_candidate.basis,
        **base,
    )


def _switch_line(candidate: str, savings: float, tuning: str, delta: float) -> str:
    if savings >= 0:
        return (
            f"Switching to {candidate} saves {_usd(savings)}/month; the {tuning} spent on "
            "tuning is sunk."
        )
    return (
        f"{candidate} is better by {_points(delta)} and would cost {_usd(-savings)}/month more "
        f"to serve; the {tuning} spent on tuning is sunk."
    )
