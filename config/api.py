"""Hosted models: an OpenAI-compatible endpoint, the model it serves and what its tokens cost.

Two shapes: a feed rule (``watch.feeds[].api_models``, :class:`config.watch.ApiModelRule`) is an
endpoint that finds its model in a post; an API candidate (``api_candidates``) is an endpoint, a
model, and how the engine talks to them. Both have a name. A release never carries an endpoint:
it names the model and the rule (:class:`watcher.events.ApiRelease`), and the worker that runs it
reads the endpoint, the key variable and the prices from its own configuration. So whoever can
write to the broker or the store can pick among configured endpoints, never add one (nor name
the environment variable whose value is sent as the key).
"""

from __future__ import annotations

from typing import Literal

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
    license: str | None = Field(
        None,
        max_length=128,
        description="The terms its models are used under, as an id checked against "
        "deploy.licenses (e.g. 'vendor-terms'); None = not checked.",
    )

    def serving(self, model: str) -> ApiCandidate:
        """The API candidate ``model`` on this endpoint, at these prices: named by its model,
        default run settings."""
        shared = self.model_dump(include=set(ApiEndpoint.model_fields))
        return ApiCandidate(name=model, model=model, **shared)


class ApiCandidate(ApiEndpoint):
    """A model reachable only through an OpenAI-compatible chat-completions endpoint."""

    model: str = Field(min_length=1, description="The endpoint's model name.")
    name: str = Field(min_length=1, max_length=128, description="How verdicts name it.")
    timeout_s: float = Field(60.0, gt=0)
    max_concurrency: int = Field(4, ge=1, le=256)
    max_retries: int = Field(5, ge=0, le=20)
    multiple_choice: Literal["auto", "logprobs", "choice"] = Field(
        "auto", description="auto = logprobs when the endpoint returns them, else ask for a choice."
    )
    open_weights: bool = Field(False, description="True when its weights are published too.")
