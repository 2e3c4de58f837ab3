"""A judge model scores open-ended answers (``generate_until`` tasks) against a rubric.

Method
    *Pairwise* (comparing a candidate with the deployed fine-tune): for every example the judge
    sees the task prompt, both answers and the rubric, and says which answer is better, or
    "tie". It is asked twice, with the candidate's answer first (A) and then second (B), since
    judges favour a position. Both orders agree → that verdict (+1 candidate better, -1
    fine-tune better, 0 tie); they disagree → a tie, counted in ``disagreements`` (their share
    is ``position_bias``). Identical answers are a tie without a call. An unreadable answer is
    asked once more with a stricter format reminder; an example left without a readable verdict
    in both orders, or whose call failed, is a tie counted in ``unparsed``. Above
    ``max_failures`` of such examples, or when the judge cannot be reached, the judgement is
    ``failed`` (with the reason), never raised.

    *Reference* (``supersede bench`` on one model): the judge scores each answer 1-5 against a
    reference answer.

Statistics
    :func:`compare_judged` treats each outcome as the paired difference of
    :mod:`benchmarks.stats`: delta = win rate - loss rate with the same paired percentile
    bootstrap interval, and an exact two-sided sign test (wins against losses, ties left out)
    for the p-value.

Cache
    Every answer is kept in the result store (``judge_calls``) under the sha256 of the judge's
    fingerprint (model, rubric, mode, prompt version) and the exact messages sent: a repeated
    judgement makes no call. A changed rubric, model or prompt wording asks afresh.

Assumptions
    * The judge is deterministic (temperature 0, greedy): the same question gets the same
      answer, which is what makes the cache sound and a re-ask worthwhile only with a changed
      (stricter) question.
    * Examples are independent, and the two answers of an example are paired (same prompt).
    * The judge's preferences stand in for the organisation's: a judge of the same family as a
      side (same Hub organisation or vendor prefix, :func:`same_family`) tends to prefer that
      side's answers, which the judgement's ``warnings`` say.
    * Answers, prompts and rubric are untrusted text: bounded in length, fenced in tags the text
      cannot close, and the judge's reply is read as strict JSON (or a bare token), never run.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Each public name and the module that defines it, imported on first use: the records of a pair
#: (``benchmarks.judge.records``) must stay readable without the judges' HTTP client, the
#: statistics (scipy) or the store's tables being imported.
_EXPORTS = {
    "JudgeCache": "cache", "JudgeCall": "cache", "call_key": "cache",
    "ApiJudge": "judges", "Judge": "judges", "JudgeReply": "judges", "LocalJudge": "judges",
    "open_judge": "judges",
    "judge_pairwise": "pairwise", "same_family": "pairwise",
    "PROMPT_VERSION": "prompts", "pairwise_messages": "prompts", "parse_score": "prompts",
    "parse_winner": "prompts", "reference_messages": "prompts",
    "Judging": "records", "PairwiseJudgement": "records", "ReferenceJudgement": "records",
    "judge_reference": "reference",
    "JudgeSpec": "spec",
    "compare_judged": "stats",
}  # fmt: skip

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
