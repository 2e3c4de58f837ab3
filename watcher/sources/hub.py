"""The Hugging Face Hub as a source: each watched author's newest models, polled.

One ``list_models`` request per watched author per poll, newest first, with ``expand`` asking for
everything the filters need (tags, card data, safetensors parameter counts, files, sha, dates), so
the common case makes no per-model request. Webhooks and feed links use ``model_info`` pinned to a
commit instead (:meth:`HubClient.facts`).

Timeouts and rate limits (:class:`core.hub.RequestPolicy`, for the watcher's calls only):
huggingface_hub passes no timeout on listings, so the configured connect/read timeouts fill in;
its own back-off retries 429/5xx honouring ``Retry-After`` and the ``RateLimit`` reset. A wait
longer than ``watch.max_inline_wait_s`` is not slept through in the poll: the call raises
:class:`HubUnavailable` with the wait, and the source backs off.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, ClassVar

from config.settings import Settings
from core.errors import FatalError, HubUnreachable, RetryableError
from core.hub import HubAdapter, RequestPolicy
from watcher.filters import RepoFacts
from watcher.sources.base import Channel, Listener, SourceReport, register

if TYPE_CHECKING:
    from watcher.discovery import Discovery

log = logging.getLogger(__name__)

HUB = "hub"

#: Listing fields the filters read (``expand`` replaces the default field set).
EXPAND = (
    "author",
    "sha",
    "createdAt",
    "lastModified",
    "tags",
    "cardData",
    "safetensors",
    "gated",
    "private",
    "pipeline_tag",
    "library_name",
    "siblings",
)


class HubClient:
    """The few Hub calls the watcher makes, under the watcher's timeouts and long-wait guard."""

    def __init__(self, settings: Settings) -> None:
        watch = settings.watch
        token = settings.secrets.hf_token
        self.adapter = HubAdapter(
            settings.hub.endpoint,
            token.get_secret_value() if token else None,
            policy=RequestPolicy(
                connect_timeout_s=watch.connect_timeout_s,
                read_timeout_s=watch.read_timeout_s,
                max_inline_wait_s=watch.max_inline_wait_s,
            ),
        )

    def newest(self, author: str, limit: int) -> list[RepoFacts]:
        """The author's ``limit`` newest models, newest first."""
        listing = self.adapter.list_models(
            f"models of {author}",
            author=author,
            sort="created_at",
            limit=limit,
            expand=list(EXPAND),
        )
        return [RepoFacts.from_model_info(info) for info in listing]

    def facts(self, repo_id: str, revision: str | None = None) -> RepoFacts:
        """One repo at ``revision`` (default branch when None), with the listing's fields."""
        info = self.adapter.model_info(repo_id, revision=revision, expand=list(EXPAND))
        return RepoFacts.from_model_info(info)


@register
class HubSource:
    """Polls the newest models of ``watch.hub.authors`` every ``watch.hub.interval``."""

    name: ClassVar[str] = HUB

    def channels(self, settings: Settings) -> list[Channel]:
        rules = settings.watch.hub
        if not rules.authors:
            return []
        return [Channel(HUB, "poll the Hub", rules.interval, poll)]

    def listener(self, discovery: Discovery) -> Listener | None:
        return None


def poll(discovery: Discovery) -> SourceReport:
    """List each watched author's newest models; record and publish the new releases."""
    report = SourceReport(HUB)
    if discovery.backing_off(report):
        return report
    rules = discovery.watch.hub
    failure: RetryableError | FatalError | None = None
    try:  # one quick connection first: offline, the pass ends at once, not after every retry
        discovery.hub.adapter.check_reachable(discovery.watch.connect_timeout_s)
    except HubUnreachable as exc:
        log.warning("hub: %s", exc)
        discovery.finish(report, exc)
        return report
    for author in rules.authors:
        try:
            listing = discovery.hub.newest(author, rules.limit)
        except RetryableError as exc:
            failure = exc
            log.warning("hub: %s", exc)
            if exc.retry_after_s is not None or isinstance(exc, HubUnreachable):
                break  # rate-limited or unreachable: the other authors would fail the same way
            continue
        except FatalError as exc:
            failure = exc
            log.warning("hub: %s", exc)
            continue
        for facts in listing:
            discovery.consider(facts, report, HUB)
    discovery.finish(report, failure)
    return report
