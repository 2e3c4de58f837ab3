"""Settings of the watcher: which sources to poll, how often, and what counts as a release."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from config.api import ApiEndpoint

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(value: Any) -> Any:
    """``90``, ``"90s"``, ``"5m"``, ``"2h"``, ``"3d"``, ``"1w"`` -> seconds (float)."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"expected a duration such as 90s, 5m, 2h, 3d or 1w, got {value!r}")
        return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    return value


#: Seconds, written in YAML as a number or with a unit (s, m, h, d, w).
Duration = Annotated[float, BeforeValidator(parse_duration)]


def _check_patterns(patterns: tuple[str, ...]) -> tuple[str, ...]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from None
    return patterns


#: A Hub user or organisation name (the part of a repo id before the slash).
HubOwner = Annotated[str, Field(pattern=r"^[A-Za-z0-9][\w.\-]{0,95}$")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HubWatch(_Section):
    """Polling of the Hugging Face Hub, and what counts as a foundation-model release."""

    authors: tuple[str, ...] = Field(
        (
            "meta-llama",
            "Qwen",
            "mistralai",
            "google",
            "microsoft",
            "deepseek-ai",
            "allenai",
            "HuggingFaceTB",
            "ibm-granite",
            "nvidia",
        ),
        description="Users or organisations whose new models are watched (one request each per "
        "poll); a repo from a webhook, or linked by a feed without accept_from, is accepted only "
        "from them. Empty: no Hub polling and no webhook repo accepted.",
    )
    interval: Duration = Field(600.0, ge=10, description="Seconds between two polls.")
    limit: int = Field(30, ge=1, le=1000, description="Newest models listed per author per poll.")
    pipeline_tags: tuple[str, ...] = Field(
        ("text-generation", "image-text-to-text"),
        description="Accepted pipeline tags; empty = any.",
    )
    min_params: int | None = Field(None, ge=0, description="Smallest parameter count accepted.")
    max_params: int | None = Field(None, ge=0, description="Largest parameter count accepted.")
    include: tuple[str, ...] = Field((), description="Regexes; when set, a repo id must match one.")
    exclude: tuple[str, ...] = Field((), description="Regexes; a repo id matching one is dropped.")

    @field_validator("include", "exclude")
    @classmethod
    def _valid_patterns(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        return _check_patterns(patterns)


class ApiModelRule(ApiEndpoint):
    """A feed entry naming a model matched by ``pattern`` becomes an API candidate release, served
    by this endpoint at these prices. The release names only the model and this rule (its feed
    and ``name``); the worker reads the endpoint, the key variable and the prices from its own
    configuration, so a release naming a rule the worker does not know is refused."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][\w.\-]{0,63}$",
        description="Names the rule in the releases it makes; unique within its feed. Default: "
        "the host of base_url (e.g. api.acme.example).",
    )
    pattern: str = Field(
        description="Regex searched in the entry's title, summary and link; group 1 (or the whole "
        "match) is the endpoint's model name."
    )

    @model_validator(mode="before")
    @classmethod
    def _name_from_host(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("name"):
            base_url = data.get("base_url")
            host = urlsplit(base_url).hostname if isinstance(base_url, str) else None
            if host:
                data = {**data, "name": host}
        return data

    @field_validator("pattern")
    @classmethod
    def _valid_pattern(cls, pattern: str) -> str:
        return _check_patterns((pattern,))[0]

    @staticmethod
    def unique(rules: tuple[ApiModelRule, ...]) -> tuple[ApiModelRule, ...]:
        """``rules`` when their names are unique (a release names its rule by name)."""
        names = [rule.name for rule in rules]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(
                f"api_models rule names must be unique within a feed; repeated: "
                f"{', '.join(repeated)} (rules on one host need a name each)"
            )
        return rules


class FeedWatch(_Section):
    """A vendor's RSS or Atom feed."""

    name: str = Field(pattern=r"^[A-Za-z0-9][\w.\-]{0,63}$", description="Short, unique name.")
    url: str = Field(pattern=r"^https?://")
    interval: Duration = Field(900.0, ge=10, description="Seconds between two fetches.")
    accept_from: tuple[HubOwner, ...] | None = Field(
        None,
        description="Hub users or organisations whose repos a post may link to be benchmarked "
        "(a post linking another's repo is only announced); null = watch.hub.authors.",
    )
    api_models: tuple[ApiModelRule, ...] = ()

    @field_validator("api_models")
    @classmethod
    def _unique_rules(cls, rules: tuple[ApiModelRule, ...]) -> tuple[ApiModelRule, ...]:
        return ApiModelRule.unique(rules)


class WebhookWatch(_Section):
    """The Hub webhook endpoint (event-driven discovery, no polling delay)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    path: str = Field("/webhooks/hub", pattern=r"^/")
    secret_env: str = Field(
        "SUPERSEDE_WEBHOOK_SECRET",
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Environment variable holding the secret set in the Hub's webhook settings.",
    )
    max_body_bytes: int = Field(1_048_576, ge=1024)
    request_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Seconds a delivery may take to arrive whole (headers and body); a slower "
        "connection is closed.",
    )
    max_connections: int = Field(
        256, ge=1, description="Connections open at once; more are closed as they arrive."
    )


class WatchSettings(_Section):
    """The watcher: sources, schedule, and the first-run baseline."""

    lookback: Duration = Field(
        259_200.0,
        ge=0,
        description="Releases older than this are recorded as baseline, never benchmarked.",
    )
    hub: HubWatch = HubWatch()
    feeds: tuple[FeedWatch, ...] = ()
    webhook: WebhookWatch = WebhookWatch()
    connect_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(30.0, gt=0)
    feed_deadline_s: float = Field(60.0, gt=0, description="Longest whole feed download.")
    feed_max_bytes: int = Field(10_485_760, ge=1024, description="Largest feed body accepted.")
    max_inline_wait_s: float = Field(
        10.0,
        ge=0,
        description="A Retry-After up to this long is waited out in the poll; a longer one makes "
        "the source back off until then.",
    )
    jitter_s: float = Field(15.0, ge=0, description="Random delay added to each scheduled poll.")
    misfire_grace_s: float = Field(
        300.0, gt=0, description="A poll late by more than this (e.g. after a pause) is skipped."
    )
    lock_ttl_s: float = Field(
        60.0, ge=5, description="A scheduler lock not renewed for this long is taken over."
    )

    @field_validator("feeds")
    @classmethod
    def _unique_names(cls, feeds: tuple[FeedWatch, ...]) -> tuple[FeedWatch, ...]:
        names = [feed.name for feed in feeds]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"feed names must be unique; repeated: {', '.join(duplicated)}")
        return feeds
