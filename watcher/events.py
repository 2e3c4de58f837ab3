"""The watcher's output: immutable events that cross into the store and the queue as JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from config.api import ApiModel


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(description="Where it was found: 'hub', 'webhook' or 'feed:<name>'.")
    detected_at: datetime = Field(description="When the watcher saw it (UTC).")


class ModelReleased(_Event):
    """A new foundation model worth benchmarking: a Hub repo pinned to a commit, or an API model."""

    kind: Literal["model_released"] = "model_released"
    repo_id: str | None = Field(None, description="Hub repo id (None for an API model).")
    revision: str | None = Field(None, description="The pinned commit sha of the Hub repo.")
    params: int | None = Field(None, description="Parameter count, when the Hub knows it.")
    api: ApiModel | None = Field(None, description="The API model (None for a Hub repo).")
    created_at: datetime | None = Field(None, description="When the repo or post was created.")
    pipeline_tag: str | None = None
    library_name: str | None = None
    gated: bool = False
    title: str | None = Field(None, description="The feed entry's title, when found in a feed.")
    link: str | None = Field(None, description="The Hub page or the vendor post.")

    @property
    def name(self) -> str:
        """How notifications name the candidate."""
        if self.repo_id:
            return self.repo_id
        return self.api.model if self.api else "?"


class Announcement(_Event):
    """A vendor post that names no benchmarkable model: notified, not benchmarked."""

    kind: Literal["announcement"] = "announcement"
    title: str
    link: str | None = None
    entry_id: str
    published_at: datetime | None = None
    summary: str | None = Field(None, description="Plain text, at most 500 characters.")


Event = Annotated[ModelReleased | Announcement, Field(discriminator="kind")]
