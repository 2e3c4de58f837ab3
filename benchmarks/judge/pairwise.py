"""Pairwise judging: for each example, which of the candidate's and the fine-tune's answers the
judge prefers, asked in both orders."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePath

from benchmarks.judge.asking import Asker, check_lengths
from benchmarks.judge.cache import JudgeCache
from benchmarks.judge.judges import Judge
from benchmarks.judge.prompts import pairwise_messages, parse_winner
from benchmarks.judge.records import PairwiseJudgement
from benchmarks.judge.spec import JudgeSpec

#: Above this share of order-dependent verdicts the judgement carries a warning.
POSITION_BIAS_WARNING = 0.3

_VENDOR_RE = re.compile(r"[a-z]{2,}")


def judge_pairwise(
    prompts: Sequence[str],
    finetune_answers: Sequence[str],
    candidate_answers: Sequence[str],
    spec: JudgeSpec,
    judge: Judge,
    cache: JudgeCache | None,
    *,
    max_workers: int = 4,
    candidate_model: str | None = None,
    finetune_model: str | None = None,
) -> PairwiseJudgement:
    """Judge each example's two answers in both orders (A=candidate first, then swapped).

    Per example: both orders agree → their verdict; they disagree → tie (a disagreement);
    an unreadable answer is asked once more with a stricter reminder, and an example whose
    answer stays unreadable, or whose call failed, is a tie counted in ``unparsed``. Identical
    answers are a tie without a call. A judge that fails too often, or cannot be reached, is
    reported in ``failed``, never raised. ``candidate_model`` / ``finetune_model`` name the
    answering models, for the self-preference warning."""
    if spec.mode != "pairwise":
        raise ValueError(f"judge_pairwise needs a pairwise judge spec, not mode {spec.mode!r}")
    n = check_lengths(
        prompts=prompts, finetune_answers=finetune_answers, candidate_answers=candidate_answers
    )
    asker = Asker(spec, judge, cache)

    def one(i: int) -> tuple[int, str]:
        candidate, finetune = candidate_answers[i], finetune_answers[i]
        if candidate.strip() == finetune.strip():
            return 0, "identical"
        first = asker.verdict(
            pairwise_messages(prompts[i], candidate, finetune, spec.rubric), parse_winner
        )
        second = asker.verdict(
            pairwise_messages(prompts[i], finetune, candidate, spec.rubric), parse_winner
        )
        if first is None or second is None:
            return 0, "unparsed"
        a, b = _points(first, candidate_first=True), _points(second, candidate_first=False)
        return (a, "agreed") if a == b else (0, "disagreed")

    results = asker.map(one, n, max_workers)
    outcomes = tuple(outcome for outcome, _ in results)
    kinds = [kind for _, kind in results]
    identical, unparsed = kinds.count("identical"), kinds.count("unparsed")
    disagreements = kinds.count("disagreed")
    judged = disagreements + kinds.count("agreed")
    position_bias = disagreements / judged if judged else 0.0
    judging = asker.judging(n, unparsed, n - identical)
    warnings = _warnings(judge.name, spec.model, candidate_model, finetune_model)
    if judging.failed is None and unparsed:
        warnings.append(f"{unparsed} of {n} examples got no readable verdict and count as ties")
    if judging.failed is None and position_bias > POSITION_BIAS_WARNING:
        warnings.append(
            f"the judge changed its verdict with the answers' order on {position_bias:.0%} of "
            "examples: its preferences are weak or position-biased (those count as ties)"
        )
    return PairwiseJudgement(
        **judging.model_dump(),
        outcomes=outcomes,
        wins=outcomes.count(1),
        ties=outcomes.count(0),
        losses=outcomes.count(-1),
        identical=identical,
        disagreements=disagreements,
        position_bias=position_bias,
        warnings=tuple(warnings),
    )


def _points(winner: str, *, candidate_first: bool) -> int:
    if winner == "tie":
        return 0
    return 1 if (winner == "A") == candidate_first else -1


def _warnings(
    judge_name: str, judge_model: str, candidate: str | None, finetune: str | None
) -> list[str]:
    warnings = []
    for side, model in (("candidate", candidate), ("fine-tune", finetune)):
        if model and same_family(judge_model, model):
            warnings.append(
                f"the judge '{judge_name}' and the {side} '{model}' look like the same family: "
                f"a judge tends to prefer its own family's answers, so the verdict may favour "
                f"the {side}"
            )
    return warnings


def same_family(judge_model: str, candidate_model: str) -> bool:
    """Whether two model names look like one family: the same Hub organisation (``org/...``)
    or the same vendor prefix (the leading letters of the name: ``gpt-4o`` and ``gpt-4o-mini``,
    ``Qwen/Qwen2.5-7B`` and ``qwen-max``). A heuristic for a warning, not a proof."""
    return bool(_family(judge_model) & _family(candidate_model))


def _family(model: str) -> set[str]:
    """The model's Hub organisation (if any) and the leading letters of its own name."""
    text = model.strip().partition("@")[0].rstrip("/")
    marks: set[str] = set()
    if text.startswith(("/", ".", "~")) or "\\" in text:
        name = PurePath(text).name
    elif "/" in text:
        org, _, name = text.partition("/")
        marks.add(org.lower())
        name = name.rpartition("/")[2]
    else:
        name = text
    vendor = _VENDOR_RE.match(name.lower())
    if vendor:
        marks.add(vendor.group(0))
    return marks
