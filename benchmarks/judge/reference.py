"""Reference judging: a 1-5 score for each answer of one model, given a reference answer."""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.judge.asking import Asker, check_lengths
from benchmarks.judge.cache import JudgeCache
from benchmarks.judge.judges import Judge
from benchmarks.judge.prompts import parse_score, reference_messages
from benchmarks.judge.records import ReferenceJudgement
from benchmarks.judge.spec import JudgeSpec


def judge_reference(
    prompts: Sequence[str],
    answers: Sequence[str],
    references: Sequence[str],
    spec: JudgeSpec,
    judge: Judge,
    cache: JudgeCache | None,
    *,
    max_workers: int = 4,
) -> ReferenceJudgement:
    """Score each answer 1-5 against its reference. An unreadable answer is asked once more with
    a stricter reminder; a judge that fails too often, or cannot be reached, is reported in
    ``failed``, never raised."""
    if spec.mode != "reference":
        raise ValueError(f"judge_reference needs a reference judge spec, not mode {spec.mode!r}")
    n = check_lengths(prompts=prompts, answers=answers, references=references)
    asker = Asker(spec, judge, cache)

    def one(i: int) -> float | None:
        messages = reference_messages(prompts[i], references[i], answers[i], spec.rubric)
        score = asker.verdict(messages, parse_score)
        return None if score is None else float(score)

    scores = tuple(asker.map(one, n, max_workers))
    readable = [s for s in scores if s is not None]
    unparsed = n - len(readable)
    return ReferenceJudgement(
        scores=scores,
        mean=sum(readable) / len(readable) if readable else None,
        **asker.judging(n, unparsed, n).model_dump(),
    )
