"""Verdicts made by :func:`benchmarks.verdict.decide` on constructed inputs, for the tests of what
shows them (Slack, the report, the command line)."""

from __future__ import annotations

from typing import Any

from benchmarks.cost import ServingCost
from benchmarks.deploy import Check, Deployability, License, ModelFacts
from benchmarks.stats import PairedComparison
from benchmarks.verdict import VerdictReport, decide
from config.settings import Economics, VerdictSettings

RULES = VerdictSettings(margin=0.02, confidence=0.95, cost_tolerance=0.05)
#: $8,000 to switch, paid back within 24 months; one million requests a month.
ECONOMICS = Economics(
    tuning_cost_usd=18_000,
    monthly_upkeep_usd=500,
    monthly_requests=1_000_000,
    switching_cost_usd=8_000,
    horizon_months=24,
)
FINETUNE = "support-triage"
CANDIDATE = "acme/Acme-7B"


def comparison(ci_low: float = 0.02, ci_high: float = 0.08) -> PairedComparison:
    delta = (ci_low + ci_high) / 2
    return PairedComparison(
        n=300, score_finetune=0.81, score_candidate=0.81 + delta, delta=delta, ci_low=ci_low,
        ci_high=ci_high, confidence=0.95, p_value=0.0012, test="mcnemar-exact", finetune_only=9,
        candidate_only=24, needed_for_margin=100,
    )  # fmt: skip


def deployable(*checks: tuple[str, str, str], benchmarked: bool = True, **figures: Any) -> Any:
    return Deployability(
        checks=tuple(Check(check=c, status=s, detail=d) for c, s, d in checks),
        benchmarked=benchmarked,
        **figures,
    )


def made(deploy: Deployability | None, *, benchmarked: bool = True) -> VerdictReport:
    return decide(
        finetune=FINETUNE,
        candidate=CANDIDATE,
        task="review_sentiment",
        metric="acc",
        economics=ECONOMICS,
        rules=RULES,
        comparison=comparison() if benchmarked else None,
        cost_finetune=ServingCost(2.0, "ft basis") if benchmarked else None,
        cost_candidate=ServingCost(1.5, "cand basis") if benchmarked else None,
        open_weights=False,
        deploy=deploy,
    )


def blocked_unbenchmarked() -> VerdictReport:
    """Blocked by its licence before the download: no scores, no costs."""
    return made(
        deployable(
            ("licence", "blocked", "licence cc-by-nc-4.0 not allowed"),
            ("memory", "ok", "fits: needs 15.2 GiB of 72.0 usable"),
            benchmarked=False,
            facts=ModelFacts(license=License(id="cc-by-nc-4.0", source="card data")),
            serving_memory_gb=15.2,
        ),
        benchmarked=False,
    )


def needs_review() -> VerdictReport:
    """As good and cheaper, but its licence is the vendor's own."""
    return made(
        deployable(
            ("licence", "review", "licence llama3.1 (the vendor's own) needs review"),
            ("memory", "ok", "fits: needs 15.2 GiB of 72.0 usable"),
            ("latency", "ok", "p95 latency 12 ms meets the 500 ms target"),
            facts=ModelFacts(license=License(id="llama3.1", source="card data")),
            serving_memory_gb=15.2,
            latency_p50_ms=9.0,
            latency_p95_ms=12.0,
            latency_target_ms=500.0,
        )
    )


def superseded() -> VerdictReport:
    """Better, cheaper, deployable: the $8,000 switch pays back in 8 months."""
    return made(
        deployable(
            ("licence", "ok", "licence apache-2.0 allowed"),
            ("memory", "ok", "fits: needs 0.1 GiB of 72.0 usable"),
            ("latency", "ok", "p95 latency 12 ms meets the 500 ms target"),
            facts=ModelFacts(license=License(id="apache-2.0", source="card data")),
            serving_memory_gb=0.1,
            latency_p50_ms=9.0,
            latency_p95_ms=12.0,
            latency_target_ms=500.0,
        )
    )
