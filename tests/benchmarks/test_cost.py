"""The serving-cost model: self-hosted GPU time, API tokens, monthly totals (hand-computed)."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.cost import ServingCost, api, monthly, self_hosted
from benchmarks.scoring import RunResult, RunStats
from config.api import ApiCandidate


def _result(n: int, scoring_s: float = 1.0, extra: dict[str, Any] | None = None) -> RunResult:
    return RunResult(
        task="review_sentiment",
        metric="acc",
        score=0.5,
        stderr=0.01,
        n=n,
        outcomes=tuple(float(i % 2) for i in range(n)),
        predictions=tuple(i % 2 for i in range(n)),
        metrics={"acc": (0.5, 0.01)},
        stats=RunStats(
            scoring_s=scoring_s,
            examples_per_s=n / scoring_s if scoring_s else 0.0,
            tokens_per_s=0.0,
            p50_batch_s=0.0,
            p95_batch_s=0.0,
            peak_memory_mb=0.0,
            batches=1,
            tokens=0,
        ),
        extra=dict(extra or {}),
    )


def _candidate(input_price: float, output_price: float) -> ApiCandidate:
    return ApiCandidate(
        name="vendor-large",
        base_url="https://api.vendor.test/v1",
        model="large-2",
        input_usd_per_1m=input_price,
        output_usd_per_1m=output_price,
    )


# --------------------------------------------------------------------------- self-hosted


def test_self_hosted_cost_per_1k_by_hand() -> None:
    # 12 s for 400 requests = 0.03 s each; $2/hour -> 0.03 * 2 / 3600 = $1.6667e-5 per request
    cost = self_hosted(_result(400, scoring_s=12.0), gpu_hour_usd=2.0, device="cuda")
    assert isinstance(cost, ServingCost)
    assert cost.per_1k_usd == pytest.approx(0.016666666666666666, rel=1e-12)
    assert cost.basis == "self-hosted: 30.00 ms of cuda per request at $2/hour"


@pytest.mark.parametrize(
    ("n", "scoring_s", "gpu_hour", "expected"),
    [
        (1_000, 36.0, 1.0, 0.01),  # 36 ms each at $1/h: 36/3600 * 1 = $0.01 per 1k
        (100, 360.0, 4.5, 4.5),  # 3.6 s each: one GPU-hour per 1k requests
        (50, 0.0, 2.0, 0.0),  # no measured time: free
        (250, 10.0, 0.0, 0.0),  # free GPU
    ],
)
def test_self_hosted_cost_per_1k_formula(
    n: int, scoring_s: float, gpu_hour: float, expected: float
) -> None:
    cost = self_hosted(_result(n, scoring_s=scoring_s), gpu_hour_usd=gpu_hour, device="cpu")
    assert cost.per_1k_usd == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_self_hosted_cost_scales_with_time_and_price() -> None:
    base = self_hosted(_result(200, scoring_s=10.0), gpu_hour_usd=2.0, device="cuda").per_1k_usd
    twice_slower = self_hosted(_result(200, scoring_s=20.0), gpu_hour_usd=2.0, device="cuda")
    twice_dearer = self_hosted(_result(200, scoring_s=10.0), gpu_hour_usd=4.0, device="cuda")
    twice_more = self_hosted(_result(400, scoring_s=10.0), gpu_hour_usd=2.0, device="cuda")
    assert twice_slower.per_1k_usd == pytest.approx(2 * base)
    assert twice_dearer.per_1k_usd == pytest.approx(2 * base)
    assert twice_more.per_1k_usd == pytest.approx(base / 2)


def test_self_hosted_with_no_examples_does_not_divide_by_zero() -> None:
    cost = self_hosted(_result(0, scoring_s=3.6), gpu_hour_usd=1.0, device="cpu")
    # n is treated as 1: 3.6 s at $1/h = $0.001 per request, $1 per 1k
    assert cost.per_1k_usd == pytest.approx(1.0)
    assert "3600.00 ms of cpu" in cost.basis


# --------------------------------------------------------------------------- API


def test_api_cost_per_1k_by_hand() -> None:
    # 400 requests, 400k input tokens (1000 each), 20k output tokens (50 each);
    # $3 / $15 per 1M: (1000 * 3 + 50 * 15) / 1e6 = $0.00375 per request = $3.75 per 1k
    result = _result(400, extra={"input_tokens": 400_000, "output_tokens": 20_000})
    cost = api(result, _candidate(3.0, 15.0))
    assert cost.per_1k_usd == pytest.approx(3.75, rel=1e-12)
    assert cost.basis == ("API: 1000 input + 50 output tokens per request at $3 / $15 per 1M")
    assert "estimated" not in cost.basis


def test_api_input_and_output_prices_apply_to_their_own_tokens() -> None:
    result = _result(10, extra={"input_tokens": 10_000, "output_tokens": 2_000})
    only_input = api(result, _candidate(2.0, 0.0)).per_1k_usd
    only_output = api(result, _candidate(0.0, 10.0)).per_1k_usd
    # 1000 input tokens at $2/1M = $0.002 a request; 200 output at $10/1M = $0.002 a request
    assert only_input == pytest.approx(2.0)
    assert only_output == pytest.approx(2.0)
    assert api(result, _candidate(2.0, 10.0)).per_1k_usd == pytest.approx(4.0)
    # swap the prices: 1000 * 10 + 200 * 2 = 10_400 / 1e6 per request
    assert api(result, _candidate(10.0, 2.0)).per_1k_usd == pytest.approx(10.4)


def test_api_cost_notes_estimated_token_counts() -> None:
    result = _result(
        400,
        extra={"input_tokens": 400_000, "output_tokens": 20_000, "tokens_estimated": True},
    )
    cost = api(result, _candidate(3.0, 15.0))
    assert cost.per_1k_usd == pytest.approx(3.75, rel=1e-12)
    assert cost.basis.endswith("per 1M (token counts estimated)")
    not_estimated = _result(
        400,
        extra={"input_tokens": 400_000, "output_tokens": 20_000, "tokens_estimated": False},
    )
    assert "estimated" not in api(not_estimated, _candidate(3.0, 15.0)).basis


def test_api_cost_without_token_counts_is_zero() -> None:
    cost = api(_result(20), _candidate(3.0, 15.0))
    assert cost.per_1k_usd == 0.0
    assert cost.basis.startswith("API: 0 input + 0 output tokens per request")


def test_api_cost_with_no_examples_does_not_divide_by_zero() -> None:
    cost = api(_result(0, extra={"input_tokens": 1_000, "output_tokens": 0}), _candidate(1.0, 1.0))
    assert cost.per_1k_usd == pytest.approx(1.0)  # 1000 tokens at $1/1M, per 1k requests


# --------------------------------------------------------------------------- monthly


@pytest.mark.parametrize(
    ("per_1k", "requests", "upkeep", "expected"),
    [
        (2.0, 1_000_000, 0.0, 2_000.0),
        (2.0, 1_000_000, 500.0, 2_500.0),
        (0.0166, 3_000_000, 120.0, 0.0166 * 3_000 + 120.0),
        (3.75, 0, 250.0, 250.0),
        (0.0, 10_000, 0.0, 0.0),
    ],
)
def test_monthly_cost(per_1k: float, requests: int, upkeep: float, expected: float) -> None:
    assert monthly(per_1k, requests, upkeep) == pytest.approx(expected, rel=1e-12)


def test_monthly_upkeep_defaults_to_zero() -> None:
    assert monthly(1.5, 200_000) == pytest.approx(300.0)
