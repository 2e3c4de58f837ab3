"""Paired statistics on judged outcomes (+1 candidate better, 0 tie, -1 fine-tune better).

The outcome of example i already compares the two sides on that example, so it plays the part
of the paired difference d_i in :mod:`benchmarks.stats`: the interval is the same percentile
bootstrap of its mean (win rate minus loss rate), and the p-value is the exact two-sided sign
test, a binomial test of the wins among the examples that were not ties (ties carry no
information about which side is better, as discordant pairs alone do in McNemar's test).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from benchmarks.stats import (
    PairedComparison,
    mcnemar_exact,
    needed_examples,
    paired_bootstrap_ci,
    too_few,
)


def compare_judged(
    outcomes: Sequence[int],
    *,
    margin: float,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> PairedComparison:
    """The comparison of judged outcomes: ``score_finetune`` is the loss rate,
    ``score_candidate`` the win rate, ``delta`` their difference with its bootstrap interval,
    ``p_value`` the sign test's (``test="sign"``); ``finetune_only`` / ``candidate_only`` count
    losses and wins."""
    d = np.asarray(outcomes, dtype=float)
    if d.size == 0:
        raise ValueError("no judged examples")
    if not np.all(np.isin(d, (-1.0, 0.0, 1.0))):
        raise ValueError("judged outcomes must be -1, 0 or +1")
    wins, losses = int(np.sum(d == 1)), int(np.sum(d == -1))
    ci_low, ci_high = paired_bootstrap_ci(d, resamples=resamples, confidence=confidence, seed=seed)
    # The exact McNemar test is the binomial test of one side's count among the discordant
    # pairs: here that is the sign test of wins among non-ties.
    p_value = mcnemar_exact(losses, wins)
    needed = needed_examples(d, margin, confidence)
    warnings = too_few(int(d.size), needed, margin, "judged examples")
    return PairedComparison(
        n=int(d.size),
        score_finetune=losses / d.size,
        score_candidate=wins / d.size,
        delta=float(d.mean()),
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=confidence,
        p_value=p_value,
        test="sign",
        finetune_only=losses,
        candidate_only=wins,
        needed_for_margin=needed,
        warnings=tuple(warnings),
    )
