"""The watcher's output: immutable events that cross into the store and the queue as JSON.

Events are read back from places others can write to (the broker, the store), so they hold
nothing a worker trusts blindly:

* An API release names the model and the configured rule that serves it
  (:class:`ApiRelease`), never an endpoint, a key variable or prices: the worker reads those from
  its own configuration, and refuses a release whose rule it does not know.
* Every text field is plain one-line text: control characters and terminal escape sequences from
  a feed, the Hub or a webhook are removed when the event is built (and when it is read back), so
  no title can drive the terminal or forge a log line.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Terminal escape sequences: CSI (``ESC [`` or 0x9B ... final byte); OSC, DCS, SOS, PM and APC
#: strings (``ESC ]``, ``ESC P``, ``ESC X``, ``ESC ^``, ``ESC _`` or their C1 forms, up to BEL or
#: the string terminator); any other ``ESC`` + intermediates + final byte.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
#: Characters that end or break a line: they become a space in one-line text.
_BREAKS = frozenset("\t\n\v\f\r\x1c\x1d\x1e\x85\u2028\u2029")


def plain_text(text: str) -> str:
    """``text`` without terminal escape sequences and control characters (C0, DEL, C1); line
    breaks and tabs become spaces. Other Unicode is kept as it is."""
    text = _ESCAPES.sub("", text)
    return "".join(
        " " if char in _BREAKS else char
        for char in text
        if char in _BREAKS or unicodedata.category(char) != "Cc"
    )


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _plain(cls, value: Any) -> Any:
        if isinstance(value, tuple):
            return tuple(plain_text(v) if isinstance(v, str) else v for v in value)
        return plain_text(value) if isinstance(value, str) else value


class _Event(_Record):
    source: str = Field(description="Where it was found: 'hub', 'webhook' or 'feed:<name>'.")
    detected_at: datetime = Field(description="When the watcher saw it (UTC).")


#: The names an API release may hold; anything else names an endpoint of its own (refused).
_API_RELEASE_FIELDS = ("model", "rule", "feed")


class ApiRelease(_Record):
    """An API model a release names: the model and the configured rule serving it, nothing more.

    ``feed`` set: the rule is that feed's ``api_models`` rule called ``rule``, and ``model`` is
    what the post named. ``feed`` unset: ``rule`` is an ``api_candidates`` entry's name and
    ``model`` its model. An event from an earlier version (or a forged one) that carries an
    endpoint (``base_url``, ``api_key_env``, prices, ...) is read without it: the names of those
    fields are kept in ``endpoint_fields`` and the worker refuses the release.
    """

    model: str = Field(min_length=1, max_length=128, description="The endpoint's model name.")
    rule: str | None = Field(None, max_length=128, description="The configured rule's name.")
    feed: str | None = Field(
        None, max_length=128, description="The feed whose api_models rule it is (None: an "
        "api_candidates entry)."
    )  # fmt: skip
    endpoint_fields: tuple[str, ...] = Field(
        (), description="Fields naming an endpoint the event carried; such a release is refused."
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_endpoint(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        extra = [key for key in data if key not in (*_API_RELEASE_FIELDS, "endpoint_fields")]
        if not extra:
            return data
        named = sorted({plain_text(str(key))[:40] for key in extra})
        return {
            **{key: data[key] for key in _API_RELEASE_FIELDS if key in data},
            "endpoint_fields": (*named[:8], *(["..."] if len(named) > 8 else [])),
        }


class ModelReleased(_Event):
    """A new foundation model worth benchmarking: a Hub repo pinned to a commit, or an API model."""

    kind: Literal["model_released"] = "model_released"
    repo_id: str | None = Field(None, description="Hub repo id (None for an API model).")
    revision: str | None = Field(None, description="The pinned commit sha of the Hub repo.")
    params: int | None = Field(None, description="Parameter count, when the Hub knows it.")
    api: ApiRelease | None = Field(None, description="The API model (None for a Hub repo).")
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
