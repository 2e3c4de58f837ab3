"""What a judgement records: typed and light (pydantic only), so that the records of a pair
(:class:`benchmarks.sides.PairScores`) can be read without importing the judges, their HTTP
client or the statistics."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Judging(BaseModel):
    """What every judgement records: who judged, how many examples went unread, what the
    judging asked and cost, and whether it can be used."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    judge: str = Field(description="The judge's name.")
    fingerprint: str = Field(description="JudgeSpec.fingerprint() of the judge.")
    n: int = Field(description="Examples.")
    unparsed: int = Field(description="Examples left without a readable answer.")
    calls: int = Field(description="Questions the judge answered in this run (not cached).")
    cached_calls: int = Field(description="Answers taken from the cache.")
    reasks: int = Field(description="Questions asked again after an unreadable answer.")
    input_tokens: int = Field(description="Judge tokens of this run's calls.")
    output_tokens: int
    cost_usd: float = Field(description="This run's judge calls at the spec's prices.")
    failed: str | None = Field(None, description="Why the judgement cannot be used (None: it can).")


class PairwiseJudgement(Judging):
    """The judge's verdicts on paired answers, from the candidate's point of view (``unparsed``:
    examples with an unreadable or failed call, counted as ties)."""

    outcomes: tuple[int, ...] = Field(
        description="Per example: +1 candidate better, 0 tie, -1 fine-tune better."
    )
    wins: int
    ties: int
    losses: int
    identical: int = Field(description="Examples with identical answers: ties, never asked.")
    disagreements: int = Field(description="Examples whose two orders gave different verdicts.")
    position_bias: float = Field(
        description="disagreements / examples with a readable verdict in both orders."
    )
    warnings: tuple[str, ...] = ()


class ReferenceJudgement(Judging):
    """The judge's 1-5 scores of one model's answers."""

    scores: tuple[float | None, ...] = Field(
        description="Per example: the score 1-5, None when no readable score was had."
    )
    mean: float | None = Field(description="Mean of the readable scores (None: none).")
