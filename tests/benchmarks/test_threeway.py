"""The three-way verdict on constructed inputs: when RETUNE wins, and what is said when it does
not; how Slack, the command line and compare --json show the re-tune."""

from __future__ import annotations

import json
from typing import Any

import pytest

from benchmarks.cost import ServingCost
from benchmarks.sides import RetuneRecord
from benchmarks.threeway import with_retune
from benchmarks.verdict import REPORT_ADAPTER, Verdict, VerdictReport
from config.settings import Economics
from tests.benchmarks.test_verdict import RULES, _comparison, _decide
from tests.workers.test_slack import job, texts, valid
from workers.notify import words
from workers.notify.blocks import for_job

ECONOMICS = Economics(monthly_upkeep_usd=500, monthly_requests=1_000_000,
                      switching_cost_usd=20_000, value_per_point_usd=1_000)  # fmt: skip
#: 200 training steps in 360 s on a $4/hour GPU: $0.40.
TRAINED = RetuneRecord(status="trained", steps=200, wall_s=360.0, usd_per_hour=4.0,
                       losses=(0.9, 0.5, 0.2), key="k" * 64)  # fmt: skip


def three_way(
    plain_ci: tuple[float, float],
    vs_finetune: tuple[float, float],
    vs_candidate: tuple[float, float],
    *,
    economics: Economics = ECONOMICS,
    record: RetuneRecord = TRAINED,
) -> VerdictReport:
    plain = _decide(_comparison(*plain_ci), cand_per_1k=2.0, economics=economics)
    return with_retune(
        plain, record, economics=economics, rules=RULES,
        vs_finetune=_comparison(*vs_finetune), vs_candidate=_comparison(*vs_candidate),
        cost_finetune=ServingCost(2.0, "ft"), cost_retuned=ServingCost(2.0, "re-tuned"),
    )  # fmt: skip


def test_retune_when_better_than_both_and_training_plus_switching_pays_back() -> None:
    # Plain: 10 points behind (HOLDS). Re-tuned: +4 points (low end +2) over the fine-tune,
    # worth $2,000/month at $1,000 a point: $20,000.40 pays back in 11 months.
    report = three_way((-0.14, -0.06), (0.02, 0.06), (0.10, 0.18))
    assert report.verdict is Verdict.RETUNE
    assert report.retune is not None and report.retune.payback_months == pytest.approx(
        20_000.40 / 2_000
    )
    assert report.retune.training_cost_usd == pytest.approx(0.40)
    assert "pays back in 11 months" in report.summary and "HOLDS" in (report.hint or "")


def test_a_cheaper_move_to_the_re_tuned_adapter_is_its_own_switching_cost() -> None:
    slow = ECONOMICS.model_copy(update={"horizon_months": 6})
    assert three_way((-0.14, -0.06), (0.02, 0.06), (0.1, 0.2), economics=slow).verdict == "HOLDS"
    cheap = slow.model_copy(update={"retune_switching_cost_usd": 5_000})
    report = three_way((-0.14, -0.06), (0.02, 0.06), (0.1, 0.2), economics=cheap)
    assert report.verdict is Verdict.RETUNE
    assert report.retune is not None and report.retune.payback_months == pytest.approx(2.5002)


@pytest.mark.parametrize(
    ("vs_finetune", "vs_candidate", "why"),
    [
        ((-0.01, 0.05), (0.1, 0.2), "it is not significantly better than the fine-tune"),
        ((0.02, 0.06), (0.0, 0.04), "it is not significantly better than newmodel-8b as is"),
    ],
)
def test_not_better_than_both_keeps_the_two_way_verdict(
    vs_finetune: tuple[float, float], vs_candidate: tuple[float, float], why: str
) -> None:
    report = three_way((-0.14, -0.06), vs_finetune, vs_candidate)
    assert report.verdict is Verdict.HOLDS
    assert f"not recommended: {why}" in (report.hint or "")
    assert report.retune is not None and report.retune.ci_low_vs_finetune == vs_finetune[0]


def test_quality_not_priced_cannot_pay_back_the_training() -> None:
    unpriced = ECONOMICS.model_copy(update={"value_per_point_usd": None, "switching_cost_usd": 0})
    report = three_way((-0.14, -0.06), (0.02, 0.06), (0.1, 0.2), economics=unpriced)
    assert report.verdict is Verdict.HOLDS
    assert "do not pay back" in (report.hint or "")


def test_a_re_tune_not_trained_is_said_with_its_reason() -> None:
    refused = RetuneRecord(status="refused", reason="15 training rows (of 400) are evaluated")
    plain = _decide(_comparison(-0.14, -0.06), economics=ECONOMICS)
    report = with_retune(plain, refused, economics=ECONOMICS, rules=RULES)
    assert report.verdict is Verdict.HOLDS
    expected = "Re-tune on newmodel-8b: refused: 15 training rows (of 400) are evaluated."
    assert report.hint == expected
    assert words.retune(report) == "refused: 15 training rows (of 400) are evaluated"


def test_the_re_tune_in_json_slack_and_words() -> None:
    report = three_way((-0.14, -0.06), (0.02, 0.06), (0.10, 0.18))
    data: dict[str, Any] = json.loads(json.dumps(report.to_dict()))
    assert data["verdict"] == "RETUNE" and data["retune"]["ci_low_vs_candidate"] == 0.10
    assert REPORT_ADAPTER.validate_python(data) == report  # stored and read back
    line = words.retune(report)
    assert line is not None
    assert "+4.0 points vs the fine-tune (95% CI +2.0 to +6.0)" in line
    assert "200 steps in 360 s, $0.40" in line and "pays back in 11 months" in line
    message = for_job(job(result=data), "https://hub.example")
    valid(message.blocks)
    shown = "\n".join(texts(message.blocks))
    assert "🔁 RETUNE" in shown and "*Re-tuned:*" in shown
    # A report stored before the re-tune existed still reads and shows no re-tune line.
    old = {k: v for k, v in data.items() if k != "retune"}
    assert words.retune(REPORT_ADAPTER.validate_python(old)) is None
