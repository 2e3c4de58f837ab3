"""Paired statistics on the same examples: candidate minus fine-tune.

Assumptions, stated once:

* both sides scored the same documents in the same order, so example i of one side pairs with
  example i of the other (the differences d_i are what is resampled, never the two sides apart);
* examples are independent draws from the task's distribution, so a percentile bootstrap of the
  mean difference gives a confidence interval for the true difference;
* for 0/1 metrics (acc, exact_match) the exact McNemar test uses only the discordant pairs and
  needs no normal approximation; for graded metrics (f1, rouge_l, chrf) the p-value is the
  Wilcoxon signed-rank test's, which does not assume normal differences either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# At module level on purpose: scipy.stats takes about a second to import. A worker's parent
# process pays it once before forking its pool, so a verdict job (which judges in milliseconds)
# never does.
from scipy.stats import binomtest, norm, wilcoxon

#: Below this many paired examples no verdict claims non-inferiority or superiority.
MIN_EXAMPLES = 20
#: Resamples drawn per chunk when each example's difference is resampled directly.
_CHUNK = 1000


@dataclass(frozen=True)
class PairedComparison:
    """The paired comparison of two per-example outcome lists."""

    n: int
    score_finetune: float
    score_candidate: float
    #: Candidate minus fine-tune, in the metric's units.
    delta: float
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float
    #: "mcnemar-exact" for 0/1 outcomes, "wilcoxon" otherwise.
    test: str
    #: Examples only the fine-tune got right, and only the candidate (0/1 metrics).
    finetune_only: int
    candidate_only: int
    #: Paired examples needed for the interval's half-width to fit within the margin.
    needed_for_margin: int
    warnings: tuple[str, ...] = ()

    @property
    def underpowered(self) -> bool:
        return self.n < max(MIN_EXAMPLES, self.needed_for_margin)


def paired_bootstrap_ci(
    differences: np.ndarray, *, resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile interval of the mean of ``differences`` under resampling with replacement.

    Vectorised. When the differences take few distinct values (always the case for 0/1 metrics:
    -1, 0, 1), a resample is fully described by how often each value is drawn, so one
    multinomial draw per resample replaces n index draws; this is the same distribution, exactly.
    """
    n = differences.size
    rng = np.random.default_rng(seed)
    values, counts = np.unique(differences, return_counts=True)
    if values.size <= 64:
        draws = rng.multinomial(n, counts / n, size=resamples)
        means = draws @ values / n
    else:
        means = np.empty(resamples)
        for start in range(0, resamples, _CHUNK):
            stop = min(start + _CHUNK, resamples)
            idx = rng.integers(0, n, size=(stop - start, n))
            means[start:stop] = differences[idx].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def mcnemar_exact(finetune_only: int, candidate_only: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test on the discordant pairs."""
    discordant = finetune_only + candidate_only
    if discordant == 0:
        return 1.0
    return float(binomtest(candidate_only, discordant, 0.5).pvalue)


def _wilcoxon(differences: np.ndarray) -> float:
    if not np.any(differences != 0):
        return 1.0
    return float(wilcoxon(differences, zero_method="wilcox").pvalue)


def needed_examples(differences: np.ndarray, margin: float, confidence: float) -> int:
    """Paired examples for a normal-approximation interval half-width of at most ``margin``."""
    n = differences.size
    if n < 2:
        return MIN_EXAMPLES
    # Identical outcomes on n examples do not prove a zero difference: by the rule of three a
    # disagreement rate up to about 3/n is still plausible, so the variance is floored there.
    variance = max(float(np.var(differences, ddof=1)), 3.0 / n)
    if margin <= 0:
        return 10**9
    z = float(norm.ppf(1 - (1 - confidence) / 2))
    return math.ceil(variance * (z / margin) ** 2)


def too_few(n: int, needed: int, margin: float, what: str) -> list[str]:
    """The warning for ``n`` examples where ``needed`` (at least :data:`MIN_EXAMPLES`) are."""
    wanted = max(MIN_EXAMPLES, needed)
    if n >= wanted:
        return []
    return [f"n={n} is too small for a margin of {margin:g}: about {wanted} {what} are needed"]


def compare_paired(
    finetune: Sequence[float],
    candidate: Sequence[float],
    *,
    margin: float,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> PairedComparison:
    """Compare per-example outcomes of the same documents (candidate minus fine-tune)."""
    a = np.asarray(finetune, dtype=float)
    b = np.asarray(candidate, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes differ in length: {a.size} vs {b.size}")
    if a.size == 0:
        raise ValueError("no paired examples")
    d = b - a
    ci_low, ci_high = paired_bootstrap_ci(d, resamples=resamples, confidence=confidence, seed=seed)
    binary = bool(np.all(np.isin(a, (0.0, 1.0))) and np.all(np.isin(b, (0.0, 1.0))))
    finetune_only = int(np.sum((a == 1) & (b == 0))) if binary else 0
    candidate_only = int(np.sum((a == 0) & (b == 1))) if binary else 0
    p_value = mcnemar_exact(finetune_only, candidate_only) if binary else _wilcoxon(d)
    needed = needed_examples(d, margin, confidence)
    warnings = too_few(int(a.size), needed, margin, "paired examples")
    return PairedComparison(
        n=int(a.size),
        score_finetune=float(a.mean()),
        score_candidate=float(b.mean()),
        delta=float(d.mean()),
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=confidence,
        p_value=p_value,
        test="mcnemar-exact" if binary else "wilcoxon",
        finetune_only=finetune_only,
        candidate_only=candidate_only,
        needed_for_margin=needed,
        warnings=tuple(warnings),
    )
