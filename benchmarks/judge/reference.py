"""Reference judging: a 1-5 score for each answer of one model, given a reference answer."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from benchmarks.judge.asking import Asker, check_lengths
from benchmarks.judge.cache import JudgeCache
from benchmarks.judge.judges import Judge
from benchmarks.judge.prompts import parse_score, reference_messages
from benchmarks.judge.spec import JudgeSpec


class ReferenceJudgement(BaseModel):
    """The judge's 1-5 scores of one model's answers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    judge: str = Field(description="The judge's name.")
    fingerprint: str = Field(description="JudgeSpec.fingerprint() of the judge.")
    n: int = Field(description="Examples.")
    scores: tuple[float | None, ...] = Field(
        description="Per example: the score 1-5, None when no readable score was had."
    )
    mean: float | None = Field(description="Mean of the readable scores (None: none).")
    unparsed: int = Field(description="Examples without a readable score.")
    calls: int = Field(description="Questions the judge answered in this run (not cached).")
    cached_calls: int = Field(description="Answers taken from the cache.")
    reasks: int = Field(description="Questions asked again after an unreadable answer.")
    input_tokens: int = Field(description="Judge tokens of this run's calls.")
    output_tokens: int
    cost_usd: float = Field(description="This run's judge calls at the spec's prices.")
    failed: str | None = Field(None, description="Why the judgement cannot be used (None: it can).")


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
        judge=judge.name,
        fingerprint=asker.fingerprint,
        n=n,
        scores=scores,
        mean=sum(readable) / len(readable) if readable else None,
        unparsed=unparsed,
        calls=asker.calls,
        cached_calls=asker.cached_calls,
        reasks=asker.reasks,
        input_tokens=asker.input_tokens,
        output_tokens=asker.output_tokens,
        cost_usd=asker.cost_usd,
        failed=asker.failure(unparsed, n),
    )
