"""Paired statistics: exact McNemar, Wilcoxon, the paired bootstrap interval, sample sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm, wilcoxon

from benchmarks.stats import (
    MIN_EXAMPLES,
    PairedComparison,
    compare_paired,
    mcnemar_exact,
    needed_examples,
    paired_bootstrap_ci,
)


def _hand_mcnemar(b: int, c: int) -> float:
    """Two-sided exact binomial p-value at p=1/2, by the textbook formula."""
    n = b + c
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _reference_bootstrap(
    differences: np.ndarray, *, resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """The plain bootstrap: draw n indices with replacement, take the mean, repeat."""
    rng = np.random.default_rng(seed)
    n = differences.size
    means = np.array([differences[rng.integers(0, n, size=n)].mean() for _ in range(resamples)])
    alpha = 1.0 - confidence
    low, high = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def _binary_pair(n: int, finetune_only: int, candidate_only: int, both: int) -> tuple[list, list]:
    """0/1 outcome lists with the given discordant and concordant-right counts."""
    neither = n - finetune_only - candidate_only - both
    assert neither >= 0
    ft = [1] * finetune_only + [0] * candidate_only + [1] * both + [0] * neither
    cand = [0] * finetune_only + [1] * candidate_only + [1] * both + [0] * neither
    return ft, cand


# --------------------------------------------------------------------------- McNemar


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (1, 9, 0.021484375),  # 2 * (1 + 10) / 1024
        (9, 1, 0.021484375),  # symmetric
        (0, 5, 0.0625),  # 2 / 32
        (2, 8, 0.109375),  # 2 * (1 + 10 + 45) / 1024
        (3, 10, 756 / 8192),  # 2 * (1 + 13 + 78 + 286) / 8192
        (0, 1, 1.0),  # 2 * 1/2, capped at 1
        (5, 5, 1.0),
        (0, 20, 2 / 2**20),
    ],
)
def test_mcnemar_exact_known_values(b: int, c: int, expected: float) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_exact(b, c) == pytest.approx(_hand_mcnemar(b, c), rel=1e-12)


@pytest.mark.parametrize(("b", "c"), [(1, 9), (4, 17), (30, 12), (100, 130), (7, 7), (0, 3)])
def test_mcnemar_exact_equals_scipy_binomtest(b: int, c: int) -> None:
    expected = binomtest(c, b + c, 0.5, alternative="two-sided").pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_exact(b, c) == pytest.approx(_hand_mcnemar(b, c), rel=1e-9)


def test_mcnemar_without_discordant_pairs_is_one() -> None:
    assert mcnemar_exact(0, 0) == 1.0


def test_compare_paired_binary_uses_mcnemar_on_the_discordant_pairs() -> None:
    # 1 example only the fine-tune gets right, 9 only the candidate: the b=1, c=9 case.
    ft, cand = _binary_pair(60, finetune_only=1, candidate_only=9, both=30)
    result = compare_paired(ft, cand, margin=0.05, resamples=2_000)
    assert result.test == "mcnemar-exact"
    assert result.finetune_only == 1
    assert result.candidate_only == 9
    assert result.p_value == pytest.approx(0.021484375, rel=1e-12)
    # concordant pairs do not move the p-value: only the discordant ones count
    ft2, cand2 = _binary_pair(400, finetune_only=1, candidate_only=9, both=10)
    assert compare_paired(ft2, cand2, margin=0.05, resamples=2_000).p_value == result.p_value


def test_compare_paired_identical_binary_outcomes_has_p_one() -> None:
    ft, cand = _binary_pair(50, 0, 0, both=25)
    result = compare_paired(ft, cand, margin=0.05, resamples=2_000)
    assert result.test == "mcnemar-exact"
    assert result.p_value == 1.0
    assert result.delta == 0.0
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)


# --------------------------------------------------------------------------- Wilcoxon


def test_graded_outcomes_use_wilcoxon_equal_to_scipy() -> None:
    rng = np.random.default_rng(3)
    ft = rng.uniform(0, 1, size=80).round(3)
    cand = np.clip(ft + rng.normal(0.05, 0.2, size=80), 0, 1).round(3)
    cand[:5] = ft[:5]  # a few zero differences, dropped by zero_method="wilcox"
    result = compare_paired(ft.tolist(), cand.tolist(), margin=0.05, resamples=2_000)
    assert result.test == "wilcoxon"
    assert result.finetune_only == 0
    assert result.candidate_only == 0
    assert result.p_value == pytest.approx(wilcoxon(cand - ft).pvalue, rel=1e-12)
    # not the McNemar value on anything, and not the 1.0 of the no-difference case
    assert 0 < result.p_value < 1


def test_wilcoxon_exact_hand_value() -> None:
    # Five positive, distinct differences: the exact two-sided p is 2 * (1/2)^5 = 0.0625.
    ft = [0.1, 0.2, 0.3, 0.4, 0.5]
    cand = [0.15, 0.3, 0.45, 0.6, 0.75]  # +0.05, +0.1, +0.15, +0.2, +0.25
    result = compare_paired(ft, cand, margin=0.05, resamples=1_000)
    assert result.test == "wilcoxon"
    assert result.p_value == pytest.approx(0.0625, rel=1e-9)


def test_wilcoxon_when_only_one_side_is_graded() -> None:
    ft = [0, 1, 1, 0, 1, 0, 1, 1, 0, 1] * 3
    cand = [0.5, 1, 0.75, 0.25, 1, 0, 0.9, 1, 0.1, 0.6] * 3
    result = compare_paired(ft, cand, margin=0.05, resamples=1_000)
    d = np.asarray(cand) - np.asarray(ft)
    assert result.test == "wilcoxon"
    assert result.p_value == pytest.approx(wilcoxon(d).pvalue, rel=1e-12)


def test_wilcoxon_with_no_difference_is_one() -> None:
    same = [0.2, 0.4, 0.6, 0.8] * 10
    result = compare_paired(same, list(same), margin=0.05, resamples=1_000)
    assert result.test == "wilcoxon"
    assert result.p_value == 1.0


# --------------------------------------------------------------------------- bootstrap


def _binary_differences(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice([-1.0, 0.0, 1.0], size=n, p=[0.15, 0.6, 0.25])


def test_bootstrap_is_deterministic_for_a_seed_and_changes_with_it() -> None:
    d = _binary_differences(300, seed=1)
    first = paired_bootstrap_ci(d, resamples=5_000, confidence=0.95, seed=7)
    again = paired_bootstrap_ci(d, resamples=5_000, confidence=0.95, seed=7)
    other = paired_bootstrap_ci(d, resamples=5_000, confidence=0.95, seed=8)
    assert first == again
    assert first != other
    # graded (chunked) path too
    g = np.random.default_rng(2).normal(0.0, 1.0, size=200)
    assert paired_bootstrap_ci(g, resamples=2_500, confidence=0.95, seed=7) == (
        paired_bootstrap_ci(g, resamples=2_500, confidence=0.95, seed=7)
    )
    assert paired_bootstrap_ci(g, resamples=2_500, confidence=0.95, seed=7) != (
        paired_bootstrap_ci(g, resamples=2_500, confidence=0.95, seed=8)
    )


def test_compare_paired_seed_is_passed_to_the_bootstrap() -> None:
    ft, cand = _binary_pair(300, finetune_only=40, candidate_only=55, both=100)
    a = compare_paired(ft, cand, margin=0.05, resamples=3_000, seed=1)
    b = compare_paired(ft, cand, margin=0.05, resamples=3_000, seed=1)
    c = compare_paired(ft, cand, margin=0.05, resamples=3_000, seed=2)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)


@pytest.mark.parametrize("seed", range(5))
def test_bootstrap_interval_contains_the_observed_mean(seed: int) -> None:
    binary = _binary_differences(150, seed)
    low, high = paired_bootstrap_ci(binary, resamples=4_000, confidence=0.95, seed=seed)
    assert low < binary.mean() < high
    graded = np.random.default_rng(seed).normal(0.1, 0.5, size=120)
    low, high = paired_bootstrap_ci(graded, resamples=2_000, confidence=0.95, seed=seed)
    assert low < graded.mean() < high


def test_bootstrap_width_shrinks_like_one_over_sqrt_n() -> None:
    base = _binary_differences(200, seed=11)
    widths = {}
    for repeat in (1, 4, 16):  # same empirical distribution, n = 200, 800, 3200
        low, high = paired_bootstrap_ci(
            np.tile(base, repeat), resamples=20_000, confidence=0.95, seed=0
        )
        widths[repeat] = high - low
    assert widths[1] / widths[4] == pytest.approx(2.0, rel=0.1)
    assert widths[4] / widths[16] == pytest.approx(2.0, rel=0.1)
    # and the width itself is the normal one: 2 * 1.96 * sd / sqrt(n)
    expected = 2 * norm.ppf(0.975) * base.std() / math.sqrt(base.size)
    assert widths[1] == pytest.approx(expected, rel=0.1)


def test_lower_confidence_gives_a_narrower_interval() -> None:
    d = _binary_differences(400, seed=5)
    low90, high90 = paired_bootstrap_ci(d, resamples=10_000, confidence=0.90, seed=0)
    low99, high99 = paired_bootstrap_ci(d, resamples=10_000, confidence=0.99, seed=0)
    assert low99 < low90 < high90 < high99
    assert (high99 - low99) > 1.3 * (high90 - low90)  # z ratio 2.576 / 1.645 = 1.57


@pytest.mark.parametrize("confidence", [0.5, 0.8, 0.95])
def test_multinomial_path_matches_plain_index_bootstrap(confidence: float) -> None:
    d = _binary_differences(250, seed=21)  # three distinct values: the multinomial path
    assert np.unique(d).size <= 64
    got = paired_bootstrap_ci(d, resamples=20_000, confidence=confidence, seed=1)
    ref = _reference_bootstrap(d, resamples=20_000, confidence=confidence, seed=99)
    assert got[0] == pytest.approx(ref[0], abs=0.01)
    assert got[1] == pytest.approx(ref[1], abs=0.01)


def test_multinomial_path_with_uneven_counts_matches_plain_bootstrap() -> None:
    # a skewed graded-but-few-valued difference: values drawn with very unequal frequencies
    rng = np.random.default_rng(4)
    d = rng.choice([-0.9, -0.2, 0.0, 0.3, 1.0], size=300, p=[0.15, 0.1, 0.6, 0.1, 0.05])
    got = paired_bootstrap_ci(d, resamples=20_000, confidence=0.95, seed=1)
    ref = _reference_bootstrap(d, resamples=20_000, confidence=0.95, seed=5)
    assert got[0] == pytest.approx(ref[0], abs=0.01)
    assert got[1] == pytest.approx(ref[1], abs=0.01)
    assert got[0] < d.mean() < got[1]


@pytest.mark.parametrize("confidence", [0.5, 0.95])
def test_chunked_path_matches_plain_index_bootstrap(confidence: float) -> None:
    d = np.random.default_rng(8).gamma(2.0, 0.1, size=150) - 0.15  # skewed, all distinct
    assert np.unique(d).size > 64
    # 20_500 is not a multiple of the chunk size: the last, partial chunk must be filled too
    got = paired_bootstrap_ci(d, resamples=20_500, confidence=confidence, seed=1)
    ref = _reference_bootstrap(d, resamples=20_000, confidence=confidence, seed=77)
    assert got[0] == pytest.approx(ref[0], abs=0.01)
    assert got[1] == pytest.approx(ref[1], abs=0.01)


@pytest.mark.parametrize("position", [0, -1])
def test_chunked_path_can_draw_every_example(position: int) -> None:
    # one outlier among 99 small distinct values: a resample that could never draw it (the
    # first or the last index) would put the whole upper tail near 0
    d = np.linspace(-0.05, 0.05, 100)
    d[position] = 100.0
    got = paired_bootstrap_ci(d, resamples=5_000, confidence=0.95, seed=1)
    ref = _reference_bootstrap(d, resamples=5_000, confidence=0.95, seed=2)
    assert got[1] > 2.0
    assert got[1] == pytest.approx(ref[1], abs=0.2)


def test_bootstrap_coverage_of_the_true_difference() -> None:
    # Paired 0/1 outcomes: P(only candidate right) = 0.2, P(only fine-tune right) = 0.1,
    # so the true mean difference is +0.1.
    rng = np.random.default_rng(2024)
    true_diff = 0.1
    covered = 0
    trials = 200
    for trial in range(trials):
        d = rng.choice([-1.0, 0.0, 1.0], size=120, p=[0.1, 0.7, 0.2])
        low, high = paired_bootstrap_ci(d, resamples=2_000, confidence=0.95, seed=trial)
        covered += low <= true_diff <= high
    assert 0.88 * trials <= covered <= 0.99 * trials


def test_bootstrap_on_five_thousand_binary_outcomes_completes() -> None:
    ft, cand = _binary_pair(5_000, finetune_only=400, candidate_only=450, both=3_000)
    result = compare_paired(ft, cand, margin=0.02, resamples=10_000)
    assert result.n == 5_000
    assert result.ci_low < result.delta < result.ci_high


# --------------------------------------------------------------------------- needed_examples


def test_needed_examples_matches_the_formula_by_hand() -> None:
    d = np.array([1.0, -1.0, 0.0, 0.0] * 5)  # sample variance (ddof=1) = 10/19
    # z = 1.959964, (z / 0.1)^2 = 384.1459, x 10/19 = 202.18 -> 203
    assert needed_examples(d, margin=0.1, confidence=0.95) == 203


def test_needed_examples_floors_the_variance_by_the_rule_of_three() -> None:
    # n = 4: sample variance 2/3 is below 3/n = 0.75, so 0.75 x 384.1459 = 288.1 -> 289
    assert needed_examples(np.array([1.0, -1.0, 0.0, 0.0]), margin=0.1, confidence=0.95) == 289
    # identical outcomes: variance 0 is floored to 3/50 -> 0.06 x 9603.6 = 576.2 -> 577
    assert needed_examples(np.zeros(50), margin=0.02, confidence=0.95) == 577


@pytest.mark.parametrize(("margin", "confidence"), [(0.02, 0.95), (0.05, 0.9), (0.01, 0.99)])
def test_needed_examples_matches_the_formula(margin: float, confidence: float) -> None:
    d = _binary_differences(500, seed=3)
    z = norm.ppf(1 - (1 - confidence) / 2)
    expected = math.ceil(np.var(d, ddof=1) * (z / margin) ** 2)
    assert needed_examples(d, margin=margin, confidence=confidence) == expected


def test_needed_examples_edge_cases() -> None:
    assert needed_examples(np.array([0.5]), margin=0.02, confidence=0.95) == MIN_EXAMPLES
    assert needed_examples(np.array([1.0, 0.0, -1.0]), margin=0.0, confidence=0.95) == 10**9


# --------------------------------------------------------------------------- compare_paired


def test_compare_paired_fields() -> None:
    ft, cand = _binary_pair(200, finetune_only=10, candidate_only=30, both=100)
    result = compare_paired(ft, cand, margin=0.05, confidence=0.9, resamples=4_000, seed=3)
    assert isinstance(result, PairedComparison)
    assert result.n == 200
    assert result.score_finetune == pytest.approx(110 / 200)
    assert result.score_candidate == pytest.approx(130 / 200)
    assert result.delta == pytest.approx(20 / 200)  # candidate minus fine-tune
    assert result.confidence == 0.9
    assert result.finetune_only == 10
    assert result.candidate_only == 30
    assert result.test == "mcnemar-exact"
    assert result.p_value == pytest.approx(_hand_mcnemar(10, 30), rel=1e-9)
    d = np.asarray(cand, float) - np.asarray(ft, float)
    assert result.needed_for_margin == needed_examples(d, 0.05, 0.9)
    assert (result.ci_low, result.ci_high) == paired_bootstrap_ci(
        d, resamples=4_000, confidence=0.9, seed=3
    )


def test_compare_paired_direction_is_candidate_minus_finetune() -> None:
    ft, cand = _binary_pair(100, finetune_only=25, candidate_only=0, both=50)
    result = compare_paired(ft, cand, margin=0.05, resamples=2_000)
    assert result.delta == pytest.approx(-0.25)
    assert result.ci_high < 0
    assert result.finetune_only == 25 and result.candidate_only == 0


def test_compare_paired_warns_when_n_is_too_small() -> None:
    ft, cand = _binary_pair(100, finetune_only=10, candidate_only=12, both=40)
    result = compare_paired(ft, cand, margin=0.02, resamples=2_000)
    assert result.needed_for_margin > 100
    assert result.underpowered
    assert len(result.warnings) == 1
    assert "n=100" in result.warnings[0]
    assert "margin of 0.02" in result.warnings[0]
    assert str(result.needed_for_margin) in result.warnings[0]


def test_compare_paired_warns_below_min_examples_even_without_variance() -> None:
    same = [1, 0] * 5
    result = compare_paired(same, list(same), margin=0.05, resamples=1_000)
    assert result.n == 10 < MIN_EXAMPLES
    assert result.underpowered
    assert len(result.warnings) == 1
    assert "n=10 is too small" in result.warnings[0]


def test_compare_paired_warns_below_min_examples_when_the_margin_needs_fewer() -> None:
    # a wide margin needs only a handful of examples, but MIN_EXAMPLES still applies
    ft, cand = _binary_pair(10, finetune_only=1, candidate_only=2, both=4)
    result = compare_paired(ft, cand, margin=0.5, resamples=1_000)
    assert result.needed_for_margin < MIN_EXAMPLES
    assert result.underpowered
    assert len(result.warnings) == 1
    assert f"about {MIN_EXAMPLES} paired examples are needed" in result.warnings[0]


def test_compare_paired_no_warning_when_powered() -> None:
    ft, cand = _binary_pair(2_000, finetune_only=20, candidate_only=25, both=1_500)
    result = compare_paired(ft, cand, margin=0.05, resamples=2_000)
    assert result.needed_for_margin <= 2_000
    assert not result.underpowered
    assert result.warnings == ()


def test_underpowered_boundary() -> None:
    def comparison(n: int, needed: int) -> PairedComparison:
        return PairedComparison(
            n=n,
            score_finetune=0.5,
            score_candidate=0.5,
            delta=0.0,
            ci_low=-0.01,
            ci_high=0.01,
            confidence=0.95,
            p_value=1.0,
            test="mcnemar-exact",
            finetune_only=0,
            candidate_only=0,
            needed_for_margin=needed,
        )

    assert comparison(MIN_EXAMPLES - 1, 1).underpowered
    assert not comparison(MIN_EXAMPLES, 1).underpowered
    assert comparison(99, 100).underpowered
    assert not comparison(100, 100).underpowered


def test_compare_paired_rejects_length_mismatch() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        compare_paired([1, 0, 1], [1, 0], margin=0.02)


def test_compare_paired_rejects_empty_input() -> None:
    with pytest.raises(ValueError, match="no paired examples"):
        compare_paired([], [], margin=0.02)
