"""The three-way verdict: keep the fine-tune, switch to the candidate, or re-tune on it.

The plain verdict (:func:`benchmarks.verdict.decide`) is made first. Then, when the re-tune
contender was scored, it becomes ``RETUNE`` when all of these hold:

* the re-tuned model is significantly better than the fine-tune (paired interval of re-tuned
  minus fine-tune above 0) and than the plain candidate (re-tuned minus candidate above 0);
* the candidate passed its deploy checks (no blocker, nothing for a person to review: the
  re-tuned model has the candidate's licence, size and speed);
* switching to it pays back within ``economics.horizon_months``: :func:`~benchmarks.verdict.
  payoff` with the training cost (the run's wall time x the hourly price of the hardware it
  trained on) added to ``retune_switching_cost_usd`` (default: ``switching_cost_usd``), and
  the fine-tune's own upkeep (``monthly_upkeep_usd``: it is still a tuned model to keep) in
  place of ``candidate_monthly_upkeep_usd``.

Otherwise the plain verdict stands and the re-tune's figures are shown beside it, with why it
did not win. Pure: the same inputs, the same report.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from benchmarks.verdict import (
    RetuneFigures,
    Verdict,
    VerdictReport,
    months,
    payoff,
    points,
    usd,
)

if TYPE_CHECKING:
    from benchmarks.cost import ServingCost
    from benchmarks.sides import RetuneRecord
    from benchmarks.stats import PairedComparison
    from config.settings import Economics, VerdictSettings


def _interval(low: float, high: float, confidence: float) -> str:
    return f"{confidence:.0%} CI {points(low)} to {points(high)}"


def with_retune(
    report: VerdictReport,
    record: RetuneRecord,
    *,
    economics: Economics,
    rules: VerdictSettings,
    vs_finetune: PairedComparison | None = None,
    vs_candidate: PairedComparison | None = None,
    cost_finetune: ServingCost | None = None,
    cost_retuned: ServingCost | None = None,
) -> VerdictReport:
    """``report`` with the re-tune contender judged in (module docstring)."""
    from benchmarks.cost import monthly
    from benchmarks.stats import MIN_EXAMPLES

    figures = RetuneFigures(
        status=record.status, reason=record.reason, training_cost_usd=record.training_cost_usd,
        training_wall_s=record.wall_s, steps=record.steps,
        estimate_gpu_hours=record.estimate_gpu_hours, losses=record.losses,
        adapter_dir=record.adapter_dir,
    )  # fmt: skip
    scored = None not in (vs_finetune, vs_candidate, cost_finetune, cost_retuned)
    if not scored:
        why = record.reason or "it was not scored"
        line = f"Re-tune on {report.candidate}: {record.status.replace('_', ' ')}: {why}"
        line += "" if line.endswith(".") else "."
        return replace(report, retune=figures, hint=line)
    assert vs_finetune is not None and vs_candidate is not None
    assert cost_finetune is not None and cost_retuned is not None
    moving = economics.retune_switching_cost_usd
    moving = economics.switching_cost_usd if moving is None else moving
    switching = moving + record.training_cost_usd
    retuned_economics = economics.model_copy(
        update={
            "switching_cost_usd": switching,
            "candidate_monthly_upkeep_usd": economics.monthly_upkeep_usd,
        }
    )
    pay = payoff(retuned_economics, rules, vs_finetune, cost_finetune, cost_retuned)
    figures = replace(
        figures,
        score=vs_finetune.score_candidate,
        delta_vs_finetune=vs_finetune.delta,
        ci_low_vs_finetune=vs_finetune.ci_low,
        ci_high_vs_finetune=vs_finetune.ci_high,
        p_value_vs_finetune=vs_finetune.p_value,
        delta_vs_candidate=vs_candidate.delta,
        ci_low_vs_candidate=vs_candidate.ci_low,
        ci_high_vs_candidate=vs_candidate.ci_high,
        cost_per_1k=cost_retuned.per_1k_usd,
        monthly_cost=monthly(
            cost_retuned.per_1k_usd, economics.monthly_requests, economics.monthly_upkeep_usd
        ),
        monthly_net_usd=pay.net_usd,
        payback_months=pay.payback_months,
        horizon_net_usd=pay.horizon_net_usd,
    )
    confidence = vs_finetune.confidence
    versus = (
        f"{points(vs_finetune.delta)} over the fine-tune "
        f"({_interval(vs_finetune.ci_low, vs_finetune.ci_high, confidence)}) and "
        f"{points(vs_candidate.delta)} over {report.candidate} as is "
        f"({_interval(vs_candidate.ci_low, vs_candidate.ci_high, confidence)})"
    )
    training = f"training {usd(record.training_cost_usd)} ({record.wall_s:,.0f} s)"
    pays = pay.payback_months is not None and pay.payback_months <= economics.horizon_months
    why_not = None
    if vs_finetune.n < MIN_EXAMPLES:
        why_not = f"only {vs_finetune.n} paired examples"
    elif vs_finetune.ci_low <= 0:
        why_not = "it is not significantly better than the fine-tune"
    elif vs_candidate.ci_low <= 0:
        why_not = f"it is not significantly better than {report.candidate} as is"
    elif report.verdict in (Verdict.BLOCKED, Verdict.NEEDS_REVIEW, Verdict.INCONCLUSIVE):
        why_not = "the candidate itself is not cleared to deploy"
    elif not pays:
        why_not = pay.unpriced or (
            f"switching ({usd(moving)}) and {training} do not pay back within "
            f"{economics.horizon_months:g} months at {usd(pay.net_usd)}/month"
        )
    if why_not is not None:
        line = f"Re-tuned on {report.candidate}: {versus}; not recommended: {why_not}."
        return replace(report, retune=figures, hint=line)
    assert pay.payback_months is not None
    back = (
        "pays back at once"
        if pay.payback_months == 0
        else f"pays back in {months(pay.payback_months)}"
    )
    summary = (
        f"Re-tune the adapter on {report.candidate}: {points(vs_finetune.delta)} over the "
        f"fine-tune and {points(vs_candidate.delta)} over {report.candidate} as is; "
        f"{training} plus switching {back}, +{usd(pay.net_usd)}/month after that."
    )
    return replace(
        report,
        verdict=Verdict.RETUNE,
        reason=f"re-tuned is {versus}; switching and {training} {back}",
        summary=summary,
        hint=f"Plain {report.candidate}: {report.verdict}: {report.summary}",
        retune=figures,
    )
