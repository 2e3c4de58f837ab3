"""The ROI verdict: every rule of benchmarks.verdict and its boundaries, on constructed inputs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from benchmarks.cost import ServingCost
from benchmarks.deploy import Check, Deployability
from benchmarks.stats import MIN_EXAMPLES, PairedComparison, compare_paired
from benchmarks.verdict import REPORT_ADAPTER, Verdict, VerdictReport, decide
from config.settings import Economics, VerdictSettings

MARGIN = 0.02
RULES = VerdictSettings(margin=MARGIN, confidence=0.95, cost_tolerance=0.05)
# $5,000 sunk, $500/month upkeep, one million requests a month
ECONOMICS = Economics(tuning_cost_usd=5_000, monthly_upkeep_usd=500, monthly_requests=1_000_000)
# the fine-tune costs $2 per 1k requests: $2,000 serving + $500 upkeep = $2,500 a month
FT_PER_1K = 2.0


def _comparison(
    ci_low: float,
    ci_high: float,
    *,
    n: int = 1_000,
    needed: int = 100,
    delta: float | None = None,
    warnings: tuple[str, ...] = (),
) -> PairedComparison:
    if delta is None:
        delta = (ci_low + ci_high) / 2
    return PairedComparison(
        n=n,
        score_finetune=0.80,
        score_candidate=0.80 + delta,
        delta=delta,
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=0.95,
        p_value=0.5,
        test="mcnemar-exact",
        finetune_only=10,
        candidate_only=12,
        needed_for_margin=needed,
        warnings=warnings,
    )


def _decide(
    comparison: PairedComparison | None,
    *,
    cand_per_1k: float | None = 1.0,
    ft_per_1k: float | None = FT_PER_1K,
    open_weights: bool = False,
    failure: str | None = None,
    economics: Economics = ECONOMICS,
    rules: VerdictSettings = RULES,
) -> VerdictReport:
    return decide(
        finetune="support-ft",
        candidate="newmodel-8b",
        task="review_sentiment",
        metric="acc",
        economics=economics,
        rules=rules,
        comparison=comparison,
        cost_finetune=None if ft_per_1k is None else ServingCost(ft_per_1k, "ft basis"),
        cost_candidate=None if cand_per_1k is None else ServingCost(cand_per_1k, "cand basis"),
        open_weights=open_weights,
        failure=failure,
    )


# --------------------------------------------------------------------------- rule 1: failures


def test_failure_is_inconclusive_with_the_failure_text() -> None:
    report = _decide(
        _comparison(0.05, 0.10, n=400), failure="candidate ran out of memory", open_weights=True
    )
    assert report.verdict is Verdict.INCONCLUSIVE
    assert "candidate ran out of memory" in report.reason
    assert report.reason.startswith("a side failed")
    assert "candidate ran out of memory" in report.summary
    assert "newmodel-8b" in report.summary
    assert report.n == 400
    assert report.delta is None and report.ci_low is None and report.ci_high is None
    assert report.p_value is None and report.test is None
    assert report.monthly_savings_usd is None
    assert report.cost_per_1k_finetune is None and report.cost_per_1k_candidate is None
    assert report.hint is None


@pytest.mark.parametrize(
    ("comparison", "ft_cost", "cand_cost"),
    [(None, FT_PER_1K, 1.0), ("comparison", None, 1.0), ("comparison", FT_PER_1K, None)],
)
def test_missing_result_is_inconclusive(
    comparison: str | None, ft_cost: float | None, cand_cost: float | None
) -> None:
    comp = _comparison(0.05, 0.10) if comparison else None
    report = _decide(comp, ft_per_1k=ft_cost, cand_per_1k=cand_cost)
    assert report.verdict is Verdict.INCONCLUSIVE
    assert "a side produced no result" in report.reason
    assert "a side produced no result" in report.summary
    assert report.n == (1_000 if comp else 0)


@pytest.mark.parametrize(("ci_low", "ci_high"), [(-0.5, -0.3), (0.2, 0.5)])
def test_too_few_examples_is_inconclusive_even_when_decisive(ci_low: float, ci_high: float) -> None:
    report = _decide(
        _comparison(ci_low, ci_high, n=MIN_EXAMPLES - 1, needed=1, warnings=("w",)),
        open_weights=True,
    )
    assert report.verdict is Verdict.INCONCLUSIVE
    assert f"only {MIN_EXAMPLES - 1} paired examples" in report.reason
    assert f"{MIN_EXAMPLES - 1} examples are too few" in report.summary
    assert report.hint is None
    assert report.warnings == ("w",)


def test_exactly_min_examples_is_enough_for_a_decisive_interval() -> None:
    report = _decide(_comparison(-0.5, -0.3, n=MIN_EXAMPLES, needed=MIN_EXAMPLES))
    assert report.verdict is Verdict.HOLDS


# --------------------------------------------------------------------------- rule 2: HOLDS


def test_holds_when_interval_high_is_below_minus_margin() -> None:
    report = _decide(_comparison(-0.08, -0.0201, delta=-0.05))
    assert report.verdict is Verdict.HOLDS
    assert "worse by more than the margin" in report.reason
    assert report.summary == (
        "The fine-tune keeps a +5.0 points edge over newmodel-8b for $500/month of upkeep."
    )


def test_not_holds_when_interval_high_equals_minus_margin() -> None:
    report = _decide(_comparison(-0.08, -MARGIN, delta=-0.05))
    assert report.verdict is Verdict.AT_RISK
    assert "straddles" in report.reason


def test_holds_even_when_underpowered() -> None:
    report = _decide(_comparison(-0.3, -0.1, n=100, needed=5_000))
    assert report.verdict is Verdict.HOLDS


# --------------------------------------------------------------------------- rule 3: better


def test_superseded_when_significantly_better_and_cheaper() -> None:
    report = _decide(_comparison(0.01, 0.05, delta=0.03), cand_per_1k=1.0)
    assert report.verdict is Verdict.SUPERSEDED
    assert "significantly better" in report.reason
    # $2,500 (fine-tune incl. upkeep) - $1,000 (candidate) = $1,500
    assert report.summary == (
        "Switch to newmodel-8b: saves $1,500/month; the $5,000 spent on tuning is sunk."
    )


def test_superseded_when_significantly_better_even_if_more_expensive() -> None:
    # candidate at $5 per 1k: $5,000/month against the fine-tune's $2,500
    report = _decide(_comparison(0.01, 0.05, delta=0.03), cand_per_1k=5.0)
    assert report.verdict is Verdict.SUPERSEDED
    assert report.monthly_savings_usd == pytest.approx(-2_500)
    assert report.summary == (
        "Switch to newmodel-8b: it is better by +3.0 points and would cost $2,500/month more "
        "to serve (quality not priced); the $5,000 spent on tuning is sunk."
    )


def test_superseded_when_significantly_better_even_if_underpowered() -> None:
    report = _decide(_comparison(0.001, 0.2, n=60, needed=5_000), cand_per_1k=5.0)
    assert report.verdict is Verdict.SUPERSEDED


def test_interval_low_exactly_zero_is_not_significantly_better() -> None:
    report = _decide(_comparison(0.0, 0.2, n=60, needed=5_000))
    assert report.verdict is Verdict.INCONCLUSIVE


# --------------------------------------------------------------------------- rule 4: power


def test_inconclusive_when_underpowered_and_not_decisive() -> None:
    report = _decide(_comparison(-0.03, 0.01, n=100, needed=500), open_weights=True)
    assert report.verdict is Verdict.INCONCLUSIVE
    assert report.reason.startswith("too few examples for a margin of ")
    assert "2.0 points" in report.reason
    assert report.reason.endswith("(about 500 needed)")
    assert report.summary == (
        "No verdict for newmodel-8b yet: 100 examples cannot resolve a margin of 2.0 points; "
        "about 500 are needed."
    )
    assert report.hint is None


def test_underpowered_boundary_on_needed_examples() -> None:
    just_short = _decide(_comparison(-0.01, 0.01, n=499, needed=500))
    enough = _decide(_comparison(-0.01, 0.01, n=500, needed=500))
    assert just_short.verdict is Verdict.INCONCLUSIVE
    assert enough.verdict is Verdict.SUPERSEDED


# --------------------------------------------------------------------------- rule 5/6


def test_superseded_when_non_inferior_and_cheaper() -> None:
    report = _decide(_comparison(-0.015, 0.01, delta=-0.002), cand_per_1k=1.0)
    assert report.verdict is Verdict.SUPERSEDED
    assert "non-inferior" in report.reason
    assert "switching costs nothing to recover" in report.reason
    assert report.summary == (
        "Switch to newmodel-8b: saves $1,500/month; the $5,000 spent on tuning is sunk."
    )


def test_non_inferiority_boundary_on_interval_low() -> None:
    at_margin = _decide(_comparison(-MARGIN, 0.01), cand_per_1k=1.0)
    inside = _decide(_comparison(-0.0199, 0.01), cand_per_1k=1.0)
    assert at_margin.verdict is Verdict.AT_RISK
    assert "straddles" in at_margin.reason
    assert inside.verdict is Verdict.SUPERSEDED


def test_cost_tolerance_boundary() -> None:
    # No upkeep to save: only the serving cost decides, and differences within the tolerance
    # are timing noise (counted as $0).
    comp = _comparison(-0.01, 0.01)
    plain = Economics(monthly_requests=1_000_000)
    at_tolerance = _decide(
        comp, cand_per_1k=FT_PER_1K * (1 + RULES.cost_tolerance), economics=plain
    )
    above = _decide(
        comp, cand_per_1k=FT_PER_1K * (1 + RULES.cost_tolerance) + 1e-9, economics=plain
    )
    equal = _decide(comp, cand_per_1k=FT_PER_1K, economics=plain)
    assert at_tolerance.verdict is Verdict.SUPERSEDED
    assert at_tolerance.monthly_net_usd == 0
    assert equal.verdict is Verdict.SUPERSEDED
    assert above.verdict is Verdict.AT_RISK
    assert "would cost $100/month more" in above.reason


def test_cost_tolerance_comes_from_the_rules() -> None:
    comp = _comparison(-0.01, 0.01)
    loose = VerdictSettings(margin=MARGIN, cost_tolerance=0.5)
    plain = Economics(monthly_requests=1_000_000)
    assert _decide(comp, cand_per_1k=2.9, rules=loose, economics=plain).verdict is (
        Verdict.SUPERSEDED
    )
    assert _decide(comp, cand_per_1k=2.9, economics=plain).verdict is Verdict.AT_RISK


def test_superseded_more_expensive_per_request_but_upkeep_saves_more() -> None:
    # $2.30 per 1k: $2,300/month, against $2,000 + $500 upkeep = $2,500: switching saves $200
    # a month, all counted (the per-request price alone no longer decides).
    report = _decide(_comparison(-0.01, 0.01), cand_per_1k=2.3)
    assert report.verdict is Verdict.SUPERSEDED
    assert report.monthly_savings_usd == pytest.approx(200)
    assert report.monthly_net_usd == pytest.approx(200)
    assert report.payback_months == 0
    assert report.summary == (
        "Switch to newmodel-8b: saves $200/month; the $5,000 spent on tuning is sunk."
    )


def test_at_risk_more_expensive_per_request_without_monthly_requests() -> None:
    # With no traffic configured, a dearer request cannot be priced: as good, not a switch.
    economics = Economics(tuning_cost_usd=5_000, monthly_upkeep_usd=500)
    report = _decide(_comparison(-0.01, 0.01), cand_per_1k=3.0, economics=economics)
    assert report.verdict is Verdict.AT_RISK
    assert "economics.monthly_requests is not set" in report.reason
    cheaper = _decide(_comparison(-0.01, 0.01), cand_per_1k=1.0, economics=economics)
    assert cheaper.verdict is Verdict.SUPERSEDED


def test_at_risk_more_expensive_and_costs_more() -> None:
    # $3 per 1k: $3,000/month against $2,500
    report = _decide(_comparison(-0.01, 0.01), cand_per_1k=3.0)
    assert report.verdict is Verdict.AT_RISK
    assert report.monthly_savings_usd == pytest.approx(-500)
    assert report.monthly_net_usd == pytest.approx(-500)
    assert report.payback_months is None
    assert report.summary == (
        "newmodel-8b is as good as the fine-tune (+0.0 points acc (95% CI -1.0 points to "
        "+1.0 points)), but switching would cost $500/month more, all counted."
    )


def test_at_risk_when_interval_straddles_minus_margin() -> None:
    report = _decide(_comparison(-0.04, 0.01, delta=-0.015), cand_per_1k=1.0)
    assert report.verdict is Verdict.AT_RISK
    assert report.reason == (
        "not significant either way (95% CI -4.0 points to +1.0 points straddles -2.0 points)"
    )
    assert report.summary == (
        "Too close to call: newmodel-8b is at -1.5 points acc (95% CI -4.0 points to "
        "+1.0 points); the fine-tune costs $2,500/month. Re-check with more examples."
    )


# --------------------------------------------------------------------------- ROI numbers


def test_roi_numbers() -> None:
    report = _decide(_comparison(-0.01, 0.01), cand_per_1k=1.25)
    assert report.cost_per_1k_finetune == FT_PER_1K
    assert report.cost_per_1k_candidate == 1.25
    assert report.monthly_cost_finetune == pytest.approx(2_500)  # includes the upkeep
    assert report.monthly_cost_candidate == pytest.approx(1_250)  # no upkeep
    assert report.monthly_savings_usd == pytest.approx(1_250)
    assert report.tuning_cost_usd == 5_000
    assert report.cost_basis_finetune == "ft basis"
    assert report.cost_basis_candidate == "cand basis"
    assert "$1,250/month" in report.summary


def test_small_dollar_amounts_keep_cents() -> None:
    economics = Economics(tuning_cost_usd=80, monthly_upkeep_usd=10, monthly_requests=10_000)
    # fine-tune: $2 x 10 + $10 = $30; candidate: $1.75 x 10 = $17.50; saves $12.50
    report = _decide(_comparison(-0.01, 0.01), cand_per_1k=1.75, economics=economics)
    assert report.verdict is Verdict.SUPERSEDED
    assert report.monthly_savings_usd == pytest.approx(12.5)
    assert report.summary == (
        "Switch to newmodel-8b: saves $12.50/month; the $80.00 spent on tuning is sunk."
    )


def test_large_dollar_amounts_have_thousands_separators() -> None:
    economics = Economics(
        tuning_cost_usd=1_234_567, monthly_upkeep_usd=0, monthly_requests=100_000_000
    )
    # fine-tune $2 x 100k = $200,000; candidate $0.5 x 100k = $50,000
    report = _decide(_comparison(-0.01, 0.01), cand_per_1k=0.5, economics=economics)
    assert report.summary == (
        "Switch to newmodel-8b: saves $150,000/month; the $1,234,567 spent on tuning is sunk."
    )


# --------------------------------------------------------------------------- hint, warnings


@pytest.mark.parametrize(
    ("ci_low", "ci_high", "cand", "verdict"),
    [
        (-0.3, -0.1, 1.0, Verdict.HOLDS),
        (0.01, 0.05, 1.0, Verdict.SUPERSEDED),
        (-0.01, 0.01, 1.0, Verdict.SUPERSEDED),
        (-0.01, 0.01, 3.0, Verdict.AT_RISK),
        (-0.05, 0.01, 1.0, Verdict.AT_RISK),
    ],
)
def test_open_weights_hint(ci_low: float, ci_high: float, cand: float, verdict: Verdict) -> None:
    with_weights = _decide(_comparison(ci_low, ci_high), cand_per_1k=cand, open_weights=True)
    closed = _decide(_comparison(ci_low, ci_high), cand_per_1k=cand, open_weights=False)
    assert with_weights.verdict is closed.verdict is verdict
    assert with_weights.hint is not None
    assert "newmodel-8b has open weights" in with_weights.hint
    assert closed.hint is None


@pytest.mark.parametrize(
    ("ci_low", "ci_high", "cand"),
    [(-0.3, -0.1, 1.0), (0.01, 0.05, 1.0), (0.01, 0.05, 5.0)],
)
def test_warnings_dropped_for_decisive_verdicts(ci_low: float, ci_high: float, cand: float) -> None:
    report = _decide(
        _comparison(ci_low, ci_high, n=100, needed=5_000, warnings=("n=100 is too small",)),
        cand_per_1k=cand,
    )
    assert report.verdict in (Verdict.HOLDS, Verdict.SUPERSEDED)
    assert report.warnings == ()


@pytest.mark.parametrize(
    ("ci_low", "ci_high", "n", "needed", "cand", "verdict"),
    [
        (-0.03, 0.01, 100, 5_000, 1.0, Verdict.INCONCLUSIVE),  # underpowered
        (-0.5, -0.3, 10, 1, 1.0, Verdict.INCONCLUSIVE),  # too few examples
        (-0.01, 0.01, 1_000, 100, 3.0, Verdict.AT_RISK),  # more expensive
        (-0.05, 0.01, 1_000, 100, 1.0, Verdict.AT_RISK),  # straddles
        (-0.01, 0.01, 1_000, 100, 1.0, Verdict.SUPERSEDED),  # non-inferior, not decisive
    ],
)
def test_warnings_kept_otherwise(
    ci_low: float, ci_high: float, n: int, needed: int, cand: float, verdict: Verdict
) -> None:
    report = _decide(
        _comparison(ci_low, ci_high, n=n, needed=needed, warnings=("a warning",)),
        cand_per_1k=cand,
    )
    assert report.verdict is verdict
    assert report.warnings == ("a warning",)


# --------------------------------------------------------------------------- to_dict

REQUIRED_KEYS = {
    "verdict",
    "finetune",
    "candidate",
    "task",
    "metric",
    "score_finetune",
    "score_candidate",
    "delta",
    "ci_low",
    "ci_high",
    "p_value",
    "n",
    "cost_per_1k_finetune",
    "cost_per_1k_candidate",
    "monthly_savings_usd",
    "summary",
}


@pytest.mark.parametrize("failure", [None, "boom"])
def test_to_dict_is_json_serialisable(failure: str | None) -> None:
    report = _decide(
        _comparison(-0.01, 0.01, warnings=("w",)),
        open_weights=True,
        failure=failure,
    )
    data = report.to_dict()
    assert data.keys() >= REQUIRED_KEYS
    decoded: dict[str, Any] = json.loads(json.dumps(data))
    assert decoded["verdict"] == str(report.verdict)
    assert type(data["verdict"]) is str
    assert decoded["finetune"] == "support-ft"
    assert decoded["candidate"] == "newmodel-8b"
    assert decoded["task"] == "review_sentiment"
    assert decoded["metric"] == "acc"
    assert decoded["n"] == 1_000
    assert decoded["summary"] == report.summary
    if failure is None:
        assert decoded["verdict"] == "SUPERSEDED"
        assert decoded["ci_low"] == -0.01
        assert decoded["ci_high"] == 0.01
        assert decoded["p_value"] == 0.5
        assert decoded["cost_per_1k_candidate"] == 1.0
        assert decoded["monthly_savings_usd"] == pytest.approx(1_500)
        assert decoded["warnings"] == ["w"]
    else:
        assert decoded["verdict"] == "INCONCLUSIVE"
        assert decoded["delta"] is None


# --------------------------------------------------------------------------- end to end


def _outcomes(n: int, right: int) -> list[int]:
    return [1] * right + [0] * (n - right)


def _end_to_end(
    finetune: list[int],
    candidate: list[int],
    *,
    margin: float = MARGIN,
    cand_per_1k: float = 1.0,
) -> tuple[PairedComparison, VerdictReport]:
    rules = VerdictSettings(margin=margin)
    comparison = compare_paired(
        finetune,
        candidate,
        margin=rules.margin,
        confidence=rules.confidence,
        resamples=rules.bootstrap_resamples,
        seed=rules.seed,
    )
    report = _decide(comparison, cand_per_1k=cand_per_1k, rules=rules)
    return comparison, report


def test_end_to_end_candidate_fixes_thirty_of_four_hundred() -> None:
    finetune = _outcomes(400, 300)  # right on the first 300
    candidate = _outcomes(400, 330)  # and on 30 more that the fine-tune got wrong
    comparison, report = _end_to_end(finetune, candidate, cand_per_1k=5.0)
    assert comparison.candidate_only == 30 and comparison.finetune_only == 0
    assert comparison.delta == pytest.approx(0.075)
    assert comparison.p_value == pytest.approx(2 / 2**30)
    assert comparison.ci_low > 0
    assert report.verdict is Verdict.SUPERSEDED
    assert "significantly better" in report.reason


def test_end_to_end_candidate_loses_sixty_of_four_hundred() -> None:
    finetune = _outcomes(400, 300)
    candidate = _outcomes(400, 240)  # wrong on 60 the fine-tune got right
    comparison, report = _end_to_end(finetune, candidate)
    assert comparison.finetune_only == 60 and comparison.candidate_only == 0
    assert comparison.delta == pytest.approx(-0.15)
    assert comparison.ci_high < -MARGIN
    assert report.verdict is Verdict.HOLDS
    assert "+15.0 points edge" in report.summary


def test_end_to_end_identical_small_sample_is_underpowered() -> None:
    same = _outcomes(50, 35)
    comparison, report = _end_to_end(same, list(same), margin=0.02)
    assert comparison.underpowered
    assert report.verdict is Verdict.INCONCLUSIVE


def test_end_to_end_identical_large_sample_cheaper_is_superseded() -> None:
    same = _outcomes(2_000, 1_500)
    comparison, report = _end_to_end(same, list(same), margin=0.05, cand_per_1k=1.0)
    assert comparison.delta == 0.0
    assert comparison.ci_low == comparison.ci_high == 0.0
    assert not comparison.underpowered
    assert report.verdict is Verdict.SUPERSEDED
    assert "non-inferior" in report.reason
    assert report.warnings == ()


# --------------------------------------------------------------------------- money and deploy


def _deployable(*checks: tuple[str, str, str], benchmarked: bool = True) -> Deployability:
    return Deployability(
        checks=tuple(Check(check=c, status=s, detail=d) for c, s, d in checks),  # type: ignore[arg-type]
        benchmarked=benchmarked,
    )


def test_switching_cost_paid_back_within_the_horizon_is_superseded() -> None:
    # $20k migration; the candidate saves $1,200 a month (fine-tune $2,500, candidate $1,300)
    economics = Economics(
        monthly_upkeep_usd=500, monthly_requests=1_000_000, switching_cost_usd=20_000,
        horizon_months=24,
    )  # fmt: skip
    report = _decide(_comparison(-0.01, 0.01), cand_per_1k=1.3, economics=economics)
    assert report.verdict is Verdict.SUPERSEDED
    assert report.monthly_net_usd == pytest.approx(1_200)
    assert report.payback_months == pytest.approx(20_000 / 1_200)
    assert report.horizon_net_usd == pytest.approx(1_200 * 24 - 20_000)
    assert "pays back in 17 months" in report.summary
    assert "+$1,200/month after that" in report.summary


def test_switching_cost_not_paid_back_within_the_horizon_is_at_risk() -> None:
    economics = Economics(
        monthly_upkeep_usd=500, monthly_requests=1_000_000, switching_cost_usd=20_000,
        horizon_months=12,
    )  # fmt: skip
    report = _decide(_comparison(-0.01, 0.01), cand_per_1k=1.3, economics=economics)
    assert report.verdict is Verdict.AT_RISK
    assert report.payback_months == pytest.approx(20_000 / 1_200)
    assert "does not pay back within 12 months" in report.reason
    assert "takes 17 months" in report.summary
    assert report.horizon_net_usd == pytest.approx(1_200 * 12 - 20_000)


def test_a_hair_better_but_much_dearer_is_not_superseded_at_a_low_value_per_point() -> None:
    # Better by half a point (interval +0.1 to +0.9), $10k a month dearer to serve; a point is
    # worth $100 a month: the quality is worth $10, the serving costs $10,000.
    economics = Economics(monthly_requests=1_000_000, value_per_point_usd=100)
    report = _decide(_comparison(0.001, 0.009, delta=0.005), cand_per_1k=12.0, economics=economics)
    assert report.verdict is Verdict.AT_RISK
    assert report.quality_value_usd == pytest.approx(10)
    assert report.monthly_net_usd == pytest.approx(-10_000 + 10)
    assert report.payback_months is None
    # Priced high enough, the same gain pays for the serving cost.
    rich = Economics(monthly_requests=1_000_000, value_per_point_usd=200_000)
    assert (
        _decide(_comparison(0.001, 0.009, delta=0.005), cand_per_1k=12.0, economics=rich).verdict
        is Verdict.SUPERSEDED
    )


def test_quality_is_valued_at_the_low_end_of_the_interval() -> None:
    per_point = Economics(monthly_requests=1_000_000, value_per_point_usd=1_000)
    report = _decide(_comparison(-0.015, 0.01), cand_per_1k=FT_PER_1K, economics=per_point)
    # as good (non-inferior), but possibly 1.5 points worse: -$1,500 a month, conservatively
    assert report.quality_value_usd == pytest.approx(-1_500)
    assert report.verdict is Verdict.AT_RISK
    per_error = Economics(monthly_requests=1_000_000, value_per_error_usd=0.01)
    report = _decide(_comparison(0.01, 0.03), cand_per_1k=FT_PER_1K, economics=per_error)
    # 1% fewer errors on a million requests at a cent each: $100 a month
    assert report.quality_value_usd == pytest.approx(100)
    assert report.verdict is Verdict.SUPERSEDED


def test_value_per_point_and_per_error_are_exclusive() -> None:
    with pytest.raises(ValueError, match="not both"):
        Economics(value_per_point_usd=1, value_per_error_usd=1)


def test_unpriced_gain_cannot_pay_back_a_switching_cost_when_dearer() -> None:
    economics = Economics(monthly_requests=1_000_000, switching_cost_usd=5_000)
    report = _decide(_comparison(0.01, 0.05), cand_per_1k=3.0, economics=economics)
    assert report.verdict is Verdict.AT_RISK
    assert "value_per_point_usd" in report.reason


def test_blocked_candidate_that_is_as_good_is_blocked_with_the_reasons() -> None:
    deploy = _deployable(
        ("licence", "blocked", "licence cc-by-nc-4.0 not allowed"),
        ("memory", "blocked", "needs 41.0 GiB, serving GPUs have 24 GiB"),
    )
    report = decide(
        finetune="support-ft", candidate="newmodel-8b", task="t", metric="acc",
        economics=ECONOMICS, rules=RULES, comparison=_comparison(0.01, 0.05),
        cost_finetune=ServingCost(FT_PER_1K, "ft"), cost_candidate=ServingCost(1.0, "c"),
        open_weights=True, deploy=deploy,
    )  # fmt: skip
    assert report.verdict is Verdict.BLOCKED
    assert report.blockers == (
        "licence cc-by-nc-4.0 not allowed",
        "needs 41.0 GiB, serving GPUs have 24 GiB",
    )
    assert report.summary.startswith("Licence cc-by-nc-4.0 not allowed; needs 41.0 GiB")
    assert "cannot replace the fine-tune as configured" in report.summary


def test_blocked_candidate_that_is_worse_still_holds() -> None:
    deploy = _deployable(("licence", "blocked", "licence cc-by-nc-4.0 not allowed"))
    report = decide(
        finetune="f", candidate="c", task="t", metric="acc", economics=ECONOMICS, rules=RULES,
        comparison=_comparison(-0.09, -0.05), cost_finetune=ServingCost(FT_PER_1K, "ft"),
        cost_candidate=ServingCost(1.0, "c"), open_weights=False, deploy=deploy,
    )  # fmt: skip
    assert report.verdict is Verdict.HOLDS
    assert report.blockers == ("licence cc-by-nc-4.0 not allowed",)


def test_not_benchmarked_blocked_candidate_has_no_scores() -> None:
    deploy = _deployable(
        ("licence", "blocked", "licence cc-by-nc-4.0 not allowed"), benchmarked=False
    )
    report = decide(
        finetune="f", candidate="c", task="t", metric="acc", economics=ECONOMICS, rules=RULES,
        comparison=None, cost_finetune=None, cost_candidate=None, open_weights=True,
        deploy=deploy,
    )  # fmt: skip
    assert report.verdict is Verdict.BLOCKED
    assert report.benchmarked is False
    assert report.score_candidate is None and report.n == 0
    assert "not downloaded or benchmarked" in report.summary
    assert json.loads(json.dumps(report.to_dict()))["verdict"] == "BLOCKED"


def test_custom_licence_needs_review_when_as_good() -> None:
    deploy = _deployable(
        ("licence", "review", "custom licence acme-research needs review"),
        ("memory", "ok", "fits"),
    )
    report = decide(
        finetune="f", candidate="c", task="t", metric="acc", economics=ECONOMICS, rules=RULES,
        comparison=_comparison(-0.01, 0.01), cost_finetune=ServingCost(FT_PER_1K, "ft"),
        cost_candidate=ServingCost(1.0, "c"), open_weights=False, deploy=deploy,
    )  # fmt: skip
    assert report.verdict is Verdict.NEEDS_REVIEW
    assert report.reviews == ("custom licence acme-research needs review",)
    assert "acme-research" in report.summary


def test_reports_stored_before_the_new_fields_still_read() -> None:
    old = _decide(_comparison(-0.01, 0.01)).to_dict()
    for key in ("payback_months", "monthly_net_usd", "blockers", "checks", "license",
                "benchmarked", "horizon_net_usd", "quality_value_usd"):  # fmt: skip
        old.pop(key)
    report = REPORT_ADAPTER.validate_python(old)
    assert report.blockers == () and report.benchmarked is True
