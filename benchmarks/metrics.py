"""Per-example metrics, registered by name.

Every metric scores one example (so paired statistics can compare two models example by example);
a task's score is the mean over examples, and its standard error is the sample standard deviation
over sqrt(n), as lm-eval reports it.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from core.suggest import did_you_mean

#: ``fn(prediction, references, options) -> score in [0, 1]`` for generated text.
TextMetric = Callable[[str, Sequence[str], Mapping[str, Any]], float]

_TEXT_METRICS: dict[str, TextMetric] = {}


def register(name: str) -> Callable[[TextMetric], TextMetric]:
    """Register a generated-text metric under ``name``."""

    def decorate(fn: TextMetric) -> TextMetric:
        _TEXT_METRICS[name] = fn
        return fn

    return decorate


def text_metric(name: str) -> TextMetric:
    """The registered metric called ``name``; a clear error names the known ones."""
    try:
        return _TEXT_METRICS[name]
    except KeyError:
        hint = did_you_mean(name, _TEXT_METRICS)
        raise KeyError(
            f"unknown metric {name!r}{hint}; known: {', '.join(sorted(_TEXT_METRICS))}"
        ) from None


def _exact_match_normalise(text: str, options: Mapping[str, Any]) -> str:
    # Same order as lm-eval's exact_match: regexes, then case, punctuation, digits. No stripping.
    for pattern in options.get("regexes_to_ignore") or ():
        text = re.sub(pattern, "", text)
    if options.get("ignore_case"):
        text = text.lower()
    if options.get("ignore_punctuation"):
        text = text.translate(str.maketrans("", "", string.punctuation))
    if options.get("ignore_numbers"):
        text = text.translate(str.maketrans("", "", string.digits))
    return text


@register("exact_match")
def exact_match(prediction: str, references: Sequence[str], options: Mapping[str, Any]) -> float:
    """1.0 when the normalised prediction equals a normalised reference."""
    pred = _exact_match_normalise(prediction, options)
    return float(any(pred == _exact_match_normalise(ref, options) for ref in references))


def _f1_tokens(text: str) -> list[str]:
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return [t for t in text.split() if t not in ("a", "an", "the")]


@register("f1")
def token_f1(prediction: str, references: Sequence[str], options: Mapping[str, Any]) -> float:
    """SQuAD-style token F1 (lower-cased, punctuation and articles removed), best reference."""
    pred = _f1_tokens(prediction)
    best = 0.0
    for reference in references:
        ref = _f1_tokens(reference)
        if not pred or not ref:
            best = max(best, float(pred == ref))
            continue
        common = sum((Counter(pred) & Counter(ref)).values())
        if common:
            precision, recall = common / len(pred), common / len(ref)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


_ROUGE: Any = None


@register("rouge_l")
def rouge_l(prediction: str, references: Sequence[str], options: Mapping[str, Any]) -> float:
    """ROUGE-L F-measure (rouge-score, with stemming), best reference."""
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return max(float(_ROUGE.score(ref, prediction)["rougeL"].fmeasure) for ref in references)


@register("chrf")
def chrf(prediction: str, references: Sequence[str], options: Mapping[str, Any]) -> float:
    """chrF (sacrebleu) over all references, scaled to [0, 1]."""
    from sacrebleu.metrics.chrf import CHRF

    return float(CHRF().sentence_score(prediction, list(references)).score) / 100.0


@register("judge")
def judge_pending(prediction: str, references: Sequence[str], options: Mapping[str, Any]) -> float:
    """0 for every answer: a judged task's value needs both sides of a comparison, so the judge
    scores the pair afterwards (:mod:`benchmarks.judge`); one side alone records its answers."""
    return 0.0


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample std / sqrt(n); 0 for n < 2)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mu = sum(values) / n
    if n < 2:
        return mu, 0.0
    variance = sum((v - mu) ** 2 for v in values) / (n - 1)
    return mu, math.sqrt(variance / n)
