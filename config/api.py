"""Hosted models: an OpenAI-compatible endpoint, the model it serves and what its tokens cost.

One shape, three uses: a feed rule (``watch.feeds[].api_models``) names an endpoint and finds the
model in a post; a release (:class:`watcher.events.ModelReleased`) carries the model it found; an
API candidate (``api_candidates``) adds how the engine talks to it. Each use extends the one
before, so a value is converted by copying the shared fields, never listed field by field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ApiEndpoint(BaseModel):
    """Where hosted models are served, and the price of their tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(
        pattern=r"^https?://",
        description="OpenAI-compatible base URL, e.g. https://api.vendor.com/v1",
    )
    api_key_env: str | None = Field(
        None, pattern=r"^[A-Z_][A-Z0-9_]*$", description="Environment variable holding the key."
    )
    input_usd_per_1m: float = Field(0.0, ge=0, description="Price per 1M input tokens.")
    output_usd_per_1m: float = Field(0.0, ge=0, description="Price per 1M output tokens.")

    def _shared(self, shape: type[ApiEndpoint]) -> dict[str, Any]:
        """This value's fields that ``shape`` has too."""
        return self.model_dump(include=set(shape.model_fields))

    def serving(self, model: str) -> ApiModel:
        """The model called ``model`` on this endpoint, at these prices."""
        return ApiModel(model=model, **self._shared(ApiEndpoint))


class ApiModel(ApiEndpoint):
    """A model served through an OpenAI-compatible endpoint, as a release names it."""

    model: str = Field(min_length=1, description="The endpoint's model name.")

    def as_candidate(self) -> ApiCandidate:
        """The API candidate it is benchmarked as: named by its model, default run settings."""
        return ApiCandidate(name=self.model, **self._shared(ApiModel))


class ApiCandidate(ApiModel):
    """A model reachable only through an OpenAI-compatible chat-completions endpoint."""

    name: str = Field(min_length=1, max_length=128, description="How verdicts name it.")
    timeout_s: float = Field(60.0, gt=0)
    max_concurrency: int = Field(4, ge=1, le=256)
    max_retries: int = Field(5, ge=0, le=20)
    multiple_choice: Literal["auto", "logprobs", "choice"] = Field(
        "auto", description="auto = logprobs when the endpoint returns them, else ask for a choice."
    )
    open_weights: bool = Field(False, description="True when its weights are published too.")

    def released(self) -> ApiModel:
        """The model as a release names it (what ``supersede rerun <name>`` benchmarks)."""
        return self.serving(self.model)
