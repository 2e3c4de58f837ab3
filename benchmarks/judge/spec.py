"""What judges open-ended answers: the rubric, the mode, the judge model and its endpoint."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from benchmarks.judge.prompts import PROMPT_VERSION
from config.api import ApiCandidate

Mode = Literal["pairwise", "reference"]


class JudgeSpec(BaseModel):
    """A judge: the criteria it applies, how it compares, and the model that answers.

    ``kind="api"`` needs ``api`` (endpoint, key variable, prices, timeout, retries, concurrency)
    serving ``model``; ``kind="local"`` loads ``model`` (a Hub id or a folder) and takes no
    ``api``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rubric: str = Field(
        min_length=1,
        max_length=20_000,
        description="The brand guideline or criteria the judge applies.",
    )
    mode: Mode = Field(
        "pairwise",
        description="pairwise: which of two answers is better; reference: a 1-5 score of one "
        "answer against a reference answer.",
    )
    model: str = Field(
        min_length=1,
        max_length=512,
        description="The judge model: the endpoint's model name, or a Hub id / local folder.",
    )
    kind: Literal["api", "local"] = Field(description="Hosted endpoint or local model.")
    api: ApiCandidate | None = Field(
        None, description="The endpoint serving ``model`` (kind=api only)."
    )
    max_new_tokens: int = Field(64, ge=1, le=4096, description="Budget of the judge's answer.")
    max_failures: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Above this share of examples with a failed or unreadable judge call, the "
        "judgement is reported as failed.",
    )

    @model_validator(mode="after")
    def _endpoint_matches_kind(self) -> JudgeSpec:
        if not self.rubric.strip():
            raise ValueError("rubric is empty: give the criteria the judge applies")
        if self.kind == "api":
            if self.api is None:
                raise ValueError("a judge of kind 'api' needs 'api' (base_url, prices, ...)")
            if self.api.model != self.model:
                raise ValueError(
                    f"api.model {self.api.model!r} differs from the judge model {self.model!r}"
                )
        elif self.api is not None:
            raise ValueError("a judge of kind 'local' takes no 'api' section")
        return self

    def fingerprint(self) -> str:
        """A stable sha256 of what changes the judge's answers: model, rubric, mode, the answer's
        token budget and the prompt template version. A local judge is named as written: pin
        it (``org/name@sha``) so that new weights are asked afresh."""
        payload = json.dumps(
            {
                "model": self.model,
                "rubric": self.rubric,
                "mode": self.mode,
                "max_new_tokens": self.max_new_tokens,
                "prompt_version": PROMPT_VERSION,
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        """What these judge tokens cost at the endpoint's prices (0 for a local judge)."""
        if self.api is None:
            return 0.0
        return (
            input_tokens * self.api.input_usd_per_1m + output_tokens * self.api.output_usd_per_1m
        ) / 1e6
