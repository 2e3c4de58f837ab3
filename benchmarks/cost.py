"""The serving-cost model: cost per 1,000 requests for each side, and per month.

* Self-hosted models: GPU-seconds per request, measured by the benchmark run (scoring wall time
  over examples, so batching counts as it would in serving), times ``serving.gpu_hour_usd``.
  Both sides of a comparison are measured on the same machine, so their ratio is meaningful
  even where the absolute figure is only a proxy (a CPU run, say).
* API models: the token counts the endpoint reported, times its prices per 1M tokens.

Monthly cost = cost per 1k x ``monthly_requests`` / 1000, plus the fine-tune's upkeep.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.scoring import RunResult
from config.api import ApiCandidate


@dataclass(frozen=True)
class ServingCost:
    """What serving 1,000 requests costs, and how that figure was obtained."""

    per_1k_usd: float
    basis: str


def self_hosted(result: RunResult, gpu_hour_usd: float, device: str) -> ServingCost:
    """Cost per 1k requests from the run's measured throughput."""
    seconds_per_request = result.stats.scoring_s / max(result.n, 1)
    per_1k = seconds_per_request * gpu_hour_usd / 3600 * 1000
    return ServingCost(
        per_1k_usd=per_1k,
        basis=(
            f"self-hosted: {seconds_per_request * 1000:.2f} ms of {device} per request "
            f"at ${gpu_hour_usd:g}/hour"
        ),
    )


def api(result: RunResult, candidate: ApiCandidate) -> ServingCost:
    """Cost per 1k requests from the endpoint's token counts and prices."""
    n = max(result.n, 1)
    tokens_in = float(result.extra.get("input_tokens", 0)) / n
    tokens_out = float(result.extra.get("output_tokens", 0)) / n
    per_request = (
        tokens_in * candidate.input_usd_per_1m + tokens_out * candidate.output_usd_per_1m
    ) / 1e6
    estimated = " (token counts estimated)" if result.extra.get("tokens_estimated") else ""
    return ServingCost(
        per_1k_usd=per_request * 1000,
        basis=(
            f"API: {tokens_in:.0f} input + {tokens_out:.0f} output tokens per request at "
            f"${candidate.input_usd_per_1m:g} / ${candidate.output_usd_per_1m:g} per 1M{estimated}"
        ),
    )


def monthly(per_1k_usd: float, monthly_requests: int, upkeep_usd: float = 0.0) -> float:
    """Monthly cost: serving at ``monthly_requests`` plus ``upkeep_usd``."""
    return per_1k_usd * monthly_requests / 1000 + upkeep_usd
