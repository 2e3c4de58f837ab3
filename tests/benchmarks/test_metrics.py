"""Per-example text metrics and the mean / standard error, checked against their references."""

from __future__ import annotations

import itertools
import math
import os
import statistics
from typing import Any

import pytest
from lm_eval.api.metrics import exact_match_hf_evaluate, mean, mean_stderr
from rouge_score import rouge_scorer
from sacrebleu.metrics import CHRF

from benchmarks.metrics import (
    chrf,
    exact_match,
    mean_and_stderr,
    rouge_l,
    text_metric,
    token_f1,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(("SUPERSEDE_", "HF_")):
            monkeypatch.delenv(name)


# --- exact_match ----------------------------------------------------------------------------


def test_exact_match_plain_is_exact_without_stripping() -> None:
    assert exact_match("a", ["a"], {}) == 1.0
    assert exact_match(" a", ["a"], {}) == 0.0
    assert exact_match("a\n", ["a"], {}) == 0.0
    assert exact_match("A", ["a"], {}) == 0.0
    assert exact_match("a.", ["a"], {}) == 0.0


def test_exact_match_any_reference_counts() -> None:
    assert exact_match("b", ["a", "b"], {}) == 1.0
    assert exact_match("c", ["a", "b"], {}) == 0.0
    assert exact_match("c", [], {}) == 0.0


def test_exact_match_ignore_case() -> None:
    assert exact_match("Paris", ["PARIS"], {"ignore_case": True}) == 1.0
    assert exact_match("Paris", ["PARIS"], {"ignore_case": False}) == 0.0


def test_exact_match_ignore_punctuation() -> None:
    assert exact_match("yes!", ["yes"], {"ignore_punctuation": True}) == 1.0
    assert exact_match("yes!", ["yes"], {}) == 0.0
    # punctuation only: whitespace is kept
    assert exact_match("yes !", ["yes"], {"ignore_punctuation": True}) == 0.0


def test_exact_match_ignore_numbers() -> None:
    assert exact_match("abc123", ["abc"], {"ignore_numbers": True}) == 1.0
    assert exact_match("abc123", ["abc"], {}) == 0.0


def test_exact_match_regexes_to_ignore() -> None:
    options = {"regexes_to_ignore": [r"^The answer is ", r"\.$"]}
    assert exact_match("The answer is 42.", ["42"], options) == 1.0
    assert exact_match("The answer is 42.", ["42"], {}) == 0.0
    # applied in order: the second pattern sees the output of the first
    chained = {"regexes_to_ignore": ["b", "ac"]}
    assert exact_match("abc", [""], chained) == 1.0
    assert exact_match("abc", [""], {"regexes_to_ignore": ["ac", "b"]}) == 0.0


def test_exact_match_regexes_run_before_case_folding() -> None:
    # A case-sensitive regex sees the original text: "ANSWER:" is not removed by "answer:".
    options = {"regexes_to_ignore": ["answer: "], "ignore_case": True}
    assert exact_match("ANSWER: b", ["b"], options) == 0.0
    assert exact_match("answer: B", ["b"], options) == 1.0


def test_exact_match_regexes_run_before_punctuation_removal() -> None:
    # If punctuation went first, "a.b" would become "ab" and the regex "a\.b" would miss.
    options = {"regexes_to_ignore": [r"a\.b"], "ignore_punctuation": True}
    assert exact_match("a.b!", [""], options) == 1.0


def test_exact_match_regexes_run_before_number_removal() -> None:
    options = {"regexes_to_ignore": [r"x1y"], "ignore_numbers": True}
    assert exact_match("x1yz", ["z"], options) == 1.0


def test_exact_match_applies_options_to_references_too() -> None:
    options = {"ignore_case": True, "ignore_punctuation": True, "regexes_to_ignore": ["^A: "]}
    assert exact_match("paris", ["A: PARIS."], options) == 1.0


# Tricky pairs where lm-eval's numpy-based implementation and plain str semantics agree.
# Two known divergences are left out on purpose: a trailing NUL ("a\x00" vs "a": numpy's
# fixed-width strings drop trailing NULs, so lm-eval says equal) and "İ" with ignore_case
# (numpy truncates the 2-character lower case to the array's width).
TRICKY_PAIRS = [
    ("a", "a"),
    (" a", "a"),
    ("a ", "a"),
    ("A", "a"),
    ("a.", "a"),
    ("a1", "a"),
    ("The answer is 42.", "the answer is"),
    ("Answer: B", "b"),
    ("ÄB", "äb"),
    ("ß", "ss"),
    ("ΟΔΟΣ", "οδος"),
    ("a\tb", "a b"),
    ("1,000", "1000"),
    ("3.14", "314"),
    ("x\n", "x"),
    ("", ""),
    ("", " "),
    ("café!", "CAFE"),
    ("café!", "CAFÉ"),
    ("a-b", "ab"),
    ("“quote”", "quote"),
    ("x²", "x"),
    ("٣", ""),
    ("(42)", "42"),
    ("the the", "the"),
]
REGEX_OPTIONS: list[list[str] | None] = [
    None,
    [r"^\s+|\s+$"],
    ["Answer: ", r"\d"],
    [r"(?i)the "],
    [r"[aeiou]", r"\."],
]


@pytest.mark.lmeval
@pytest.mark.parametrize(
    ("ignore_case", "ignore_punctuation", "ignore_numbers"),
    list(itertools.product([False, True], repeat=3)),
)
@pytest.mark.parametrize("regexes", REGEX_OPTIONS)
def test_exact_match_agrees_with_lm_eval(
    ignore_case: bool, ignore_punctuation: bool, ignore_numbers: bool, regexes: list[str] | None
) -> None:
    options: dict[str, Any] = {
        "ignore_case": ignore_case,
        "ignore_punctuation": ignore_punctuation,
        "ignore_numbers": ignore_numbers,
        "regexes_to_ignore": regexes,
    }
    for prediction, reference in TRICKY_PAIRS:
        for pred, ref in ((prediction, reference), (reference, prediction)):
            expected = float(exact_match_hf_evaluate([pred], [ref], **options)["exact_match"])
            assert exact_match(pred, [ref], options) == expected, (pred, ref, options)


def test_exact_match_options_change_the_result_somewhere() -> None:
    # Guards the lm-eval comparison against a vacuous pass: every option matters for some pair.
    for option in ("ignore_case", "ignore_punctuation", "ignore_numbers"):
        assert any(
            exact_match(p, [r], {option: True}) != exact_match(p, [r], {}) for p, r in TRICKY_PAIRS
        ), option


# --- token F1 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "references", "expected"),
    [
        ("the cat sat", ["the cat sat"], 1.0),
        # articles and punctuation dropped, case folded: [cat, sat, on, mat] vs [cat, sat]
        ("The cat sat on the mat.", ["a cat sat"], 2 * 0.5 * 1.0 / 1.5),
        # multiplicity: [cat, cat] vs [cat] -> common 1, P 1/2, R 1
        ("cat cat", ["cat"], 2 / 3),
        # [x, y, z] vs [y, z, w] -> common 2, P = R = 2/3
        ("x y z", ["y z w"], 2 / 3),
        ("dog", ["cat"], 0.0),
        ("", [""], 1.0),
        ("the", ["an"], 1.0),  # both empty after article removal
        ("", ["cat"], 0.0),
        ("cat", [""], 0.0),
        # best reference wins
        ("red car", ["blue bus", "red bus", "red car!"], 1.0),
        ("red car", ["blue bus", "red bus"], 0.5),
    ],
)
def test_token_f1_hand_computed(prediction: str, references: list[str], expected: float) -> None:
    assert token_f1(prediction, references, {}) == pytest.approx(expected)


# --- ROUGE-L and chrF against their libraries -----------------------------------------------

TEXT_PAIRS = [
    ("the cat sat on the mat", ["the cat is on the mat"]),
    ("running dogs were barking", ["the dog runs and barks"]),
    ("completely unrelated words", ["nothing in common here"]),
    ("", ["something"]),
    ("identical sentence here", ["identical sentence here"]),
    ("a b c d", ["d c b a", "a b x d"]),
]


@pytest.mark.parametrize(("prediction", "references"), TEXT_PAIRS)
def test_rouge_l_matches_rouge_score(prediction: str, references: list[str]) -> None:
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = max(scorer.score(ref, prediction)["rougeL"].fmeasure for ref in references)
    assert rouge_l(prediction, references, {}) == pytest.approx(expected, abs=1e-12)


def test_rouge_l_uses_stemming() -> None:
    # With the Porter stemmer "running cats" and "run cat" are the same tokens.
    assert rouge_l("running cats", ["run cat"], {}) == pytest.approx(1.0)
    plain = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    assert plain.score("run cat", "running cats")["rougeL"].fmeasure == 0.0


@pytest.mark.parametrize(("prediction", "references"), TEXT_PAIRS)
def test_chrf_matches_sacrebleu(prediction: str, references: list[str]) -> None:
    expected = CHRF().sentence_score(prediction, references).score / 100.0
    assert chrf(prediction, references, {}) == pytest.approx(expected, abs=1e-12)
    assert 0.0 <= chrf(prediction, references, {}) <= 1.0


def test_chrf_scale() -> None:
    assert chrf("identical sentence", ["identical sentence"], {}) == pytest.approx(1.0)
    assert chrf("abc", ["xyz"], {}) == pytest.approx(0.0)


# --- mean and standard error ----------------------------------------------------------------


@pytest.mark.lmeval
@pytest.mark.parametrize(
    "values",
    [
        [0.0, 1.0],
        [1.0, 1.0, 0.0, 1.0],
        [0.25, 0.5, 0.75, 1.0, 0.0],
        [3.0, 3.0, 3.0],
        [0.1 * i for i in range(100)],
        [1.0] * 7 + [0.0] * 3,
    ],
)
def test_mean_and_stderr_match_lm_eval_and_statistics(values: list[float]) -> None:
    mu, se = mean_and_stderr(values)
    assert mu == pytest.approx(mean(values))
    assert se == pytest.approx(mean_stderr(values))
    assert mu == pytest.approx(statistics.fmean(values))
    assert se == pytest.approx(statistics.stdev(values) / math.sqrt(len(values)))


def test_mean_and_stderr_hand_computed() -> None:
    # [0, 1]: mean 0.5, sample std sqrt(0.5), stderr sqrt(0.5)/sqrt(2) = 0.5
    assert mean_and_stderr([0.0, 1.0]) == pytest.approx((0.5, 0.5))
    assert mean_and_stderr([2.0, 2.0]) == (2.0, 0.0)


def test_mean_and_stderr_single_value() -> None:
    # lm-eval's mean_stderr divides by zero here; Supersede reports a zero standard error.
    assert mean_and_stderr([0.7]) == (0.7, 0.0)
    with pytest.raises(ZeroDivisionError):
        mean_stderr([0.7])


def test_mean_and_stderr_empty() -> None:
    mu, se = mean_and_stderr([])
    assert math.isnan(mu) and math.isnan(se)


# --- registry -------------------------------------------------------------------------------


def test_text_metric_returns_the_registered_functions() -> None:
    assert text_metric("exact_match") is exact_match
    assert text_metric("f1") is token_f1
    assert text_metric("rouge_l") is rouge_l
    assert text_metric("chrf") is chrf


def test_text_metric_unknown_name_suggests_the_close_name() -> None:
    with pytest.raises(KeyError) as info:
        text_metric("exact_mach")
    message = str(info.value)
    assert "'exact_mach'" in message
    assert "did you mean 'exact_match'?" in message
    for known in ("chrf", "exact_match", "f1", "rouge_l"):
        assert known in message


def test_text_metric_unknown_name_without_close_match_lists_known() -> None:
    with pytest.raises(KeyError) as info:
        text_metric("zzzzzzzz")
    assert "did you mean" not in str(info.value)
    assert "rouge_l" in str(info.value)
