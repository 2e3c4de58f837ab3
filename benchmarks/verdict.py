"""The ROI-impact verdict: has the candidate caught up with the fine-tune, can it be deployed in
its place, and does switching pay?

The rules, in order (``margin`` and ``confidence`` come from the ``verdict`` settings; "the
interval" is the paired bootstrap confidence interval of candidate minus fine-tune; the deploy
checks are :mod:`benchmarks.deploy`'s):

1. ``BLOCKED`` when the licence or the serving memory blocked the candidate before the benchmark
   and it was not run (``deploy.benchmark_blocked`` is false).
2. ``INCONCLUSIVE`` when a side failed, or there are fewer than 20 paired examples.
3. ``HOLDS`` when the candidate is worse by more than the margin: interval high < -margin.
4. ``INCONCLUSIVE`` when, short of a significant gain (interval low > 0), there are too few
   examples for the margin (the interval cannot become narrower than the margin at this n).
5. ``AT_RISK`` when the difference is not significant either way (the interval straddles
   -margin): too close to call.
6. The candidate is now as good (interval low > -margin) or better (interval low > 0).
   ``BLOCKED`` when a deploy check blocks it (a licence not allowed, more memory than the
   serving GPUs have, a p95 latency over the target); ``NEEDS_REVIEW`` when one needs a person
   (a vendor's own or missing licence, an unknown size, an unmeasured latency).
7. ``SUPERSEDED`` when switching pays back within ``economics.horizon_months``
   (:func:`payoff`); else ``AT_RISK``: as good, but switching does not pay back.

Money, per month (:func:`payoff`): net = (fine-tune serving + its upkeep) - (candidate serving +
``candidate_monthly_upkeep_usd``) + the value of the quality difference, taken at the
conservative end of the interval (its low end): ``value_per_point_usd`` x interval low in points,
or ``value_per_error_usd`` x ``monthly_requests`` x interval low. Serving costs within
``cost_tolerance`` of each other count as equal (timing noise). Payback = ``switching_cost_usd``
/ net (0 when there is nothing to pay back and net >= 0; never when net <= 0 and there is).
Over the horizon: net x ``horizon_months`` - ``switching_cost_usd``.

Where quality is not priced (neither value set), a significantly better candidate is judged as
before money entered the verdict: it pays back when there is no switching cost, whatever it
costs to serve; and a dearer one cannot be shown to pay back a switching cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

if TYPE_CHECKING:
    # Only decide() needs these; a reader of a stored VerdictReport (the notifier, the report,
    # ``supersede status``) should not pay for importing scipy.
    from benchmarks.cost import ServingCost
    from benchmarks.deploy import Deployability
    from benchmarks.stats import PairedComparison
    from config.settings import Economics, VerdictSettings


class Verdict(StrEnum):
    RETUNE = "RETUNE"
    SUPERSEDED = "SUPERSEDED"
    BLOCKED = "BLOCKED"
    NEEDS_REVIEW = "NEEDS_REVIEW"
    AT_RISK = "AT_RISK"
    HOLDS = "HOLDS"
    INCONCLUSIVE = "INCONCLUSIVE"


@dataclass(frozen=True)
class RetuneFigures:
    """The re-tune contender beside a verdict (:mod:`benchmarks.threeway`): how it was trained
    and, when it was scored, its paired intervals against the fine-tune and the plain
    candidate and what switching to it is worth."""

    #: trained, cached, not_run, skipped, refused or failed (see benchmarks.sides.RetuneRecord).
    status: str
    reason: str | None = None
    score: float | None = None
    delta_vs_finetune: float | None = None
    ci_low_vs_finetune: float | None = None
    ci_high_vs_finetune: float | None = None
    p_value_vs_finetune: float | None = None
    delta_vs_candidate: float | None = None
    ci_low_vs_candidate: float | None = None
    ci_high_vs_candidate: float | None = None
    cost_per_1k: float | None = None
    monthly_cost: float | None = None
    training_cost_usd: float = 0.0
    training_wall_s: float = 0.0
    steps: int = 0
    estimate_gpu_hours: float | None = None
    losses: tuple[float, ...] = ()
    monthly_net_usd: float | None = None
    payback_months: float | None = None
    horizon_net_usd: float | None = None
    adapter_dir: str | None = None


@dataclass(frozen=True)
class JudgedFigures:
    """How a judged task's pair was judged (:mod:`benchmarks.judge`): the judge's verdicts from
    the candidate's side, how often the two orders disagreed, and what the judging cost."""

    judge: str
    wins: int
    ties: int
    losses: int
    #: Examples the two models answered identically (ties, never asked).
    identical: int = 0
    disagreements: int = 0
    #: Share of examples whose verdict flipped with the order of the answers (ties).
    position_bias: float = 0.0
    #: Examples left without a readable verdict (ties).
    unparsed: int = 0
    calls: int = 0
    cached_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    failed: str | None = None


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
    #: The monthly value of the quality difference at the interval's low end (None: not priced).
    quality_value_usd: float | None = None
    #: Monthly net value of switching: serving + upkeep + quality value.
    monthly_net_usd: float | None = None
    switching_cost_usd: float = 0.0
    horizon_months: float | None = None
    #: Months until switching has paid for itself (0: at once); None: never, or not judged.
    payback_months: float | None = None
    #: Net value of switching over the horizon (switching cost deducted).
    horizon_net_usd: float | None = None
    #: What keeps the candidate out of production, and what needs a person, in words.
    blockers: tuple[str, ...] = ()
    reviews: tuple[str, ...] = ()
    #: Every deploy check: ``{"check", "status", "detail"}``.
    checks: tuple[dict[str, str], ...] = ()
    license: str | None = None
    serving_memory_gb: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_target_ms: float | None = None
    #: False when the candidate was blocked before its benchmark and not run.
    benchmarked: bool = True
    #: The re-tune contender (None: no re-tune was considered for this comparison).
    retune: RetuneFigures | None = None
    #: A judged task's judging (None: the task's metric needs no judge).
    judged: JudgedFigures | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: what a verdict job stores and ``compare --json`` prints."""
        return dict(REPORT_ADAPTER.dump_python(self, mode="json"))


#: Validates and dumps a :class:`VerdictReport` (the store keeps it as :meth:`to_dict` writes it).
REPORT_ADAPTER: TypeAdapter[VerdictReport] = TypeAdapter(VerdictReport)


@dataclass(frozen=True)
class Payoff:
    """What switching is worth, per month and over the horizon."""

    #: Serving and upkeep saved per month (negative: switching costs more).
    running_usd: float
    #: The quality difference's monthly value at the interval's low end; None: not priced.
    quality_usd: float | None
    net_usd: float
    #: Months to pay back the switching cost (0: at once); None: never.
    payback_months: float | None
    horizon_net_usd: float
    #: Why switching cannot be shown to pay (serving not priced), or None.
    unpriced: str | None = None


def usd(value: float) -> str:
    return f"${value:,.0f}" if abs(value) >= 100 else f"${value:,.2f}"


def points(value: float) -> str:
    """``+1.5 points`` for 0.015 in the metric's units."""
    return f"{value * 100:+.1f} points"


def _margin_points(margin: float) -> str:
    return f"{margin * 100:.1f} points"


def months(value: float) -> str:
    months = max(1, math.ceil(value - 1e-9))
    return f"{months} month" + ("s" if months != 1 else "")


def payoff(
    economics: Economics,
    rules: VerdictSettings,
    comparison: PairedComparison,
    cost_finetune: ServingCost,
    cost_candidate: ServingCost,
) -> Payoff:
    """The money of switching (module docstring): monthly net, payback and horizon net."""
    requests = economics.monthly_requests
    ft, cand = cost_finetune.per_1k_usd, cost_candidate.per_1k_usd
    noise = ft * (1 - rules.cost_tolerance) <= cand <= ft * (1 + rules.cost_tolerance)
    serving = 0.0 if noise else (ft - cand) * requests / 1000
    running = serving + economics.monthly_upkeep_usd - economics.candidate_monthly_upkeep_usd
    quality: float | None = None
    if economics.value_per_point_usd is not None:
        quality = economics.value_per_point_usd * comparison.ci_low * 100
    elif economics.value_per_error_usd is not None:
        quality = economics.value_per_error_usd * requests * comparison.ci_low
    net = running + (quality or 0.0)
    switching = economics.switching_cost_usd
    unpriced = None
    if requests == 0 and not noise and cand > ft:
        unpriced = (
            f"it costs more per request ({usd(cand)} vs {usd(ft)} per 1,000) and "
            "economics.monthly_requests is not set, so the difference cannot be priced"
        )
    if unpriced is not None:
        payback = None
    elif net > 0:
        payback = switching / net
    else:
        payback = 0.0 if switching == 0 and net >= 0 else None
    return Payoff(
        running_usd=running, quality_usd=quality, net_usd=net, payback_months=payback,
        horizon_net_usd=net * economics.horizon_months - switching, unpriced=unpriced,
    )  # fmt: skip


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
    deploy: Deployability | None = None,
) -> VerdictReport:
    """Apply the verdict rules (module docstring) to a paired comparison, two costs and the
    candidate's deploy checks (None: none were made)."""
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
        "switching_cost_usd": economics.switching_cost_usd,
        "horizon_months": economics.horizon_months,
        **_deploy_fields(deploy),
    }
    empty: dict[str, Any] = {
        "score_finetune": None, "score_candidate": None, "delta": None, "ci_low": None,
        "ci_high": None, "p_value": None, "test": None, "cost_per_1k_finetune": None,
        "cost_per_1k_candidate": None, "monthly_cost_finetune": None,
        "monthly_cost_candidate": None, "monthly_savings_usd": None,
    }  # fmt: skip
    if deploy is not None and not deploy.benchmarked and deploy.blockers:
        blocking = "; ".join(deploy.blockers)
        return VerdictReport(
            verdict=Verdict.BLOCKED,
            n=0,
            reason=f"not deployable, so not benchmarked: {blocking}",
            summary=(
                f"{_sentence(blocking)}: {candidate} was not downloaded or benchmarked "
                "(deploy.benchmark_blocked: true scores it anyway)."
            ),
            **empty,
            **base,
        )
    if comparison is None or cost_finetune is None or cost_candidate is None or failure:
        why = failure or "a side produced no result"
        return VerdictReport(
            verdict=Verdict.INCONCLUSIVE,
            n=comparison.n if comparison else 0,
            reason=f"a side failed: {why}",
            summary=f"No verdict for {candidate}: {why}. The fine-tune stays as it is.",
            **empty,
            **base,
        )
    c = comparison
    requests = economics.monthly_requests
    monthly_ft = monthly(cost_finetune.per_1k_usd, requests, economics.monthly_upkeep_usd)
    monthly_cand = monthly(
        cost_candidate.per_1k_usd, requests, economics.candidate_monthly_upkeep_usd
    )
    pay = payoff(economics, rules, c, cost_finetune, cost_candidate)
    interval = f"{c.confidence:.0%} CI {points(c.ci_low)} to {points(c.ci_high)}"
    edge = f"{points(c.delta)} {metric} ({interval})"
    better = c.ci_low > 0
    as_good = "significantly better" if better else "non-inferior"
    quality_unpriced = pay.quality_usd is None
    blockers = deploy.blockers if deploy is not None else ()
    reviews = deploy.reviews if deploy is not None else ()

    if c.n < MIN_EXAMPLES:
        verdict, reason = (
            Verdict.INCONCLUSIVE,
            f"only {c.n} paired examples (at least {MIN_EXAMPLES})",
        )
        summary = f"No verdict for {candidate} yet: {c.n} examples are too few to judge."
    elif c.ci_high < -margin:
        verdict, reason = (
            Verdict.HOLDS,
            f"worse by more than the margin ({interval}, below {points(-margin)})",
        )
        summary = (
            f"The fine-tune keeps a {points(-c.delta)} edge over {candidate} for "
            f"{usd(economics.monthly_upkeep_usd)}/month of upkeep."
        )
    elif c.underpowered and not better:
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
    elif c.ci_low <= -margin:
        verdict = Verdict.AT_RISK
        reason = f"not significant either way ({interval} straddles {points(-margin)})"
        summary = (
            f"Too close to call: {candidate} is at {edge}; the fine-tune costs "
            f"{usd(monthly_ft)}/month. Re-check with more examples."
        )
    elif blockers:
        verdict = Verdict.BLOCKED
        reason = f"{as_good} ({interval}) but not deployable: {'; '.join(blockers)}"
        summary = (
            f"{_sentence('; '.join(blockers))}: {candidate} cannot replace the fine-tune as "
            f"configured, though it is at {edge}."
        )
    elif reviews:
        verdict = Verdict.NEEDS_REVIEW
        reason = f"{as_good} ({interval}); a person must decide: {'; '.join(reviews)}"
        summary = f"Review before switching: {'; '.join(reviews)}. {candidate} is at {edge}."
    elif better and quality_unpriced and economics.switching_cost_usd == 0:
        verdict = Verdict.SUPERSEDED
        reason = f"significantly better ({interval} > 0)"
        summary = _switch_line(candidate, pay, c.delta, economics)
        pay = replace(pay, payback_months=0.0)  # nothing to pay back
    elif pay.payback_months is not None and pay.payback_months <= economics.horizon_months:
        verdict = Verdict.SUPERSEDED
        reason = f"{as_good} ({interval}) and {_pays_back(pay, economics)}"
        summary = _switch_line(candidate, pay, c.delta, economics)
    else:
        verdict = Verdict.AT_RISK
        why = _no_payback(pay, economics, better and quality_unpriced)
        reason = f"{as_good} ({interval}), but {why}"
        summary = f"{candidate} is as good as the fine-tune ({edge}), but {why}."
    decisive = verdict is Verdict.HOLDS or (verdict is not Verdict.INCONCLUSIVE and better)
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
        monthly_savings_usd=monthly_ft - monthly_cand,
        reason=reason,
        summary=summary,
        hint=hint,
        # "Too few examples for the margin" only matters when the interval did not decide.
        warnings=() if decisive else c.warnings,
        cost_basis_finetune=cost_finetune.basis,
        cost_basis_candidate=cost_candidate.basis,
        quality_value_usd=pay.quality_usd,
        monthly_net_usd=pay.net_usd,
        payback_months=pay.payback_months,
        horizon_net_usd=pay.horizon_net_usd,
        **base,
    )


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _deploy_fields(deploy: Deployability | None) -> dict[str, Any]:
    if deploy is None:
        return {}
    return {
        "blockers": deploy.blockers,
        "reviews": deploy.reviews,
        "checks": tuple(check.model_dump() for check in deploy.checks),
        "license": deploy.license,
        "serving_memory_gb": deploy.serving_memory_gb,
        "latency_p50_ms": deploy.latency_p50_ms,
        "latency_p95_ms": deploy.latency_p95_ms,
        "latency_target_ms": deploy.latency_target_ms,
        "benchmarked": deploy.benchmarked,
    }


def _pays_back(pay: Payoff, economics: Economics) -> str:
    if economics.switching_cost_usd == 0 or not pay.payback_months:
        return "switching costs nothing to recover"
    return (
        f"switching ({usd(economics.switching_cost_usd)}) pays back in "
        f"{months(pay.payback_months)}, within {economics.horizon_months:g} months"
    )


def _no_payback(pay: Payoff, economics: Economics, unpriced_gain: bool) -> str:
    switching = economics.switching_cost_usd
    horizon = f"{economics.horizon_months:g} months"
    if pay.unpriced is not None:
        return pay.unpriced
    if unpriced_gain and pay.net_usd <= 0:
        return (
            f"switching costs {usd(switching)} and saves nothing a month, and its quality gain "
            "is not priced (set economics.value_per_point_usd or value_per_error_usd)"
        )
    if pay.net_usd < 0:
        return f"switching would cost {usd(-pay.net_usd)}/month more, all counted"
    if pay.payback_months is None or pay.net_usd == 0:
        return f"switching ({usd(switching)}) saves nothing a month to pay it back"
    return (
        f"switching does not pay back within {horizon}: {usd(switching)} at "
        f"{usd(pay.net_usd)}/month takes {months(pay.payback_months)}"
    )


def _switch_line(candidate: str, pay: Payoff, delta: float, economics: Economics) -> str:
    net = pay.net_usd
    priced = "" if pay.quality_usd is None else ", quality counted"
    if economics.switching_cost_usd > 0 and pay.payback_months:
        return (
            f"Switch to {candidate}: pays back in {months(pay.payback_months)}, "
            f"+{usd(net)}/month after that{priced}; {usd(pay.horizon_net_usd)} over "
            f"{economics.horizon_months:g} months."
        )
    if net >= 0:
        return (
            f"Switch to {candidate}: saves {usd(net)}/month{priced}; the "
            f"{usd(economics.tuning_cost_usd)} spent on tuning is sunk."
        )
    return (
        f"Switch to {candidate}: it is better by {points(delta)} and would cost "
        f"{usd(-net)}/month more to serve (quality not priced); the "
        f"{usd(economics.tuning_cost_usd)} spent on tuning is sunk."
    )
