"""One discovery pass per source: read it, filter, dedupe against the store, publish what is new.

Every source goes through :class:`Discovery`, so polling, feeds and webhooks share the filters, the
lookback baseline and the dedupe. A source that fails records its error and a back-off deadline
and never stops the others.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import urlsplit

from config.settings import Settings
from config.watch import FeedWatch
from core.clock import now
from core.errors import FatalError, ModelNotFound, RetryableError, SupersedeError
from watcher.events import Announcement, ModelReleased
from watcher.filters import RepoFacts, decide
from watcher.publish import Publisher
from watcher.sources import feeds
from watcher.sources.hub import HubClient
from watcher.state import ANNOUNCED, BASELINE, RELEASED, NewRow, WatchState

log = logging.getLogger(__name__)

HUB = "hub"
WEBHOOK = "webhook"
#: Back-off after a failure that named no wait: doubles per consecutive failure, capped.
BACKOFF_BASE_S = 60.0
BACKOFF_CAP_S = 3600.0


def release_of(
    facts: RepoFacts, source: str, *, title: str | None = None, link: str | None = None
) -> ModelReleased:
    """The release event of a Hub repo at the commit ``facts`` describe."""
    return ModelReleased(
        source=source,
        detected_at=now(),
        repo_id=facts.repo_id,
        revision=facts.sha,
        params=facts.params,
        created_at=facts.created_at,
        pipeline_tag=facts.pipeline_tag,
        library_name=facts.library_name,
        gated=facts.gated,
        title=title,
        link=link,
    )


def feed_source(feed: FeedWatch) -> str:
    return f"feed:{feed.name}"


@dataclass
class SourceReport:
    """What one pass over one source found."""

    source: str
    status: Literal["ok", "not_modified", "failed", "backing_off"] = "ok"
    events: list[ModelReleased | Announcement] = field(default_factory=list)
    seen: int = 0
    dropped: int = 0
    baseline: int = 0
    #: Entries left for the next pass (a linked Hub repo not public yet).
    waiting: int = 0
    error: str | None = None


class Discovery:
    """The watcher's core; thread-safe (each source runs in its own scheduler thread)."""

    def __init__(
        self,
        settings: Settings,
        state: WatchState,
        publisher: Publisher,
        hub: HubClient | None = None,
    ) -> None:
        self.settings = settings
        self.watch = settings.watch
        self.state = state
        self.publisher = publisher
        self._hub = hub
        self._flush_lock = threading.Lock()

    @property
    def hub(self) -> HubClient:
        if self._hub is None:
            self._hub = HubClient(self.settings)
        return self._hub

    # ------------------------------------------------------------------ sources

    def poll_all(self) -> list[SourceReport]:
        """One pass over every configured source, concurrently; then publish."""
        jobs: list[Callable[[], SourceReport]] = [self.poll_hub] if self.watch.hub.authors else []
        jobs += [functools.partial(self.poll_feed, feed) for feed in self.watch.feeds]
        if not jobs:
            return []
        with ThreadPoolExecutor(max_workers=min(8, len(jobs))) as pool:
            return list(pool.map(lambda job: job(), jobs))

    def poll_hub(self) -> SourceReport:
        """List each watched author's newest models; record and publish the new releases."""
        report = SourceReport(HUB)
        if self._backing_off(report):
            return report
        rules = self.watch.hub
        failure: RetryableError | FatalError | None = None
        for author in rules.authors:
            try:
                listing = self.hub.newest(author, rules.limit)
            except RetryableError as exc:
                failure = exc
                log.warning("hub: %s", exc)
                if exc.retry_after_s is not None:
                    break  # rate-limited: the other authors would be refused too
                continue
            except FatalError as exc:
                failure = exc
                log.warning("hub: %s", exc)
                continue
            for facts in listing:
                self._consider(facts, report, HUB)
        self._finish(report, failure)
        return report

    def _consider(self, facts: RepoFacts, report: SourceReport, source: str) -> None:
        report.seen += 1
        decision = decide(facts, self.watch.hub)
        if decision.action != "accept":
            report.dropped += decision.action == "drop"
            log.debug("%s: %s skipped: %s", source, facts.repo_id, decision.reason)
            return
        if facts.sha is None:
            return
        # Age from the last change, so a repo made public after a long private life is new.
        latest = _latest(facts.created_at, facts.last_modified)
        old = latest is not None and now() - latest > timedelta(seconds=self.watch.lookback)
        event = None if old else self._release(facts, source)
        kind = self.state.record_repo(source, facts.repo_id, facts.sha, event)
        if kind == BASELINE:
            report.baseline += 1
        if kind == RELEASED and event is not None:
            report.events.append(event)

    def _release(
        self, facts: RepoFacts, source: str, *, title: str | None = None, link: str | None = None
    ) -> ModelReleased:
        hub_page = f"{self.settings.hub.endpoint.rstrip('/')}/{facts.repo_id}"
        return release_of(facts, source, title=title, link=link or hub_page)

    def poll_feed(self, feed: FeedWatch) -> SourceReport:
        """Fetch one feed (conditionally); record and publish its new entries."""
        report = SourceReport(feed_source(feed))
        if self._backing_off(report):
            return report
        known = self.state.source(report.source)
        endpoint = urlsplit(self.settings.hub.endpoint).netloc
        try:
            fetched = feeds.fetch(
                feed,
                self.watch,
                etag=known.etag,
                last_modified=known.last_modified,
                hub_hosts=(endpoint,),
            )
            if fetched.items is None:
                report.status = "not_modified"
            else:
                for item in fetched.items:
                    self._feed_item(item, report, first_poll=known.first_poll)
        except SupersedeError as exc:
            log.warning("%s: %s", report.source, exc)
            self._finish(report, exc)
            return report
        if report.waiting:
            # Keep no validators: a 304 next time would hide the entries that are waiting.
            self._finish(report, None, etag="", last_modified="")
        else:
            self._finish(report, None, etag=fetched.etag, last_modified=fetched.last_modified)
        return report

    def _feed_item(self, item: feeds.FeedItem, report: SourceReport, *, first_poll: bool) -> None:
        report.seen += 1
        key = f"feed:{report.source.removeprefix('feed:')}:{item.entry_id}"
        if self.state.is_seen(key):
            return
        lookback = timedelta(seconds=self.watch.lookback)
        old = now() - item.published_at > lookback if item.published_at else first_poll
        if old:
            self.state.record([NewRow(key, BASELINE, report.source)])
            report.baseline += 1
            return
        if item.hub_repo:
            try:
                release = self._linked_release(item, report.source)
            except SupersedeError as exc:  # not public yet, Hub busy: this entry waits a pass
                log.info("%s: %s: %s", report.source, item.entry_id, exc)
                report.waiting += 1
                return
            if release is not None:
                kind = self.state.record_repo(
                    report.source, item.hub_repo, str(release.revision), release, also=[key]
                )
                if kind == RELEASED:
                    report.events.append(release)
                return
        if item.api is not None:
            event: ModelReleased | Announcement = ModelReleased(
                source=report.source,
                detected_at=now(),
                api=item.api,
                created_at=item.published_at,
                title=item.title,
                link=item.link,
            )
            kind = RELEASED
        else:
            event = Announcement(
                source=report.source,
                detected_at=now(),
                title=item.title,
                link=item.link,
                entry_id=item.entry_id,
                published_at=item.published_at,
                summary=item.summary or None,
            )
            kind = ANNOUNCED
        if self.state.record([NewRow(key, kind, report.source, event=event)])[0]:
            report.events.append(event)

    def _linked_release(self, item: feeds.FeedItem, source: str) -> ModelReleased | None:
        """The release a post links to, or None when it is not one (then it is announced)."""
        assert item.hub_repo is not None
        facts = self.hub.facts(item.hub_repo)  # not found yet: raised, retried next pass
        decision = decide(facts, self.watch.hub)
        if decision.action == "drop" or facts.sha is None:
            log.info("%s: %s linked but %s", source, item.hub_repo, decision.reason)
            return None
        if decision.action == "wait":
            raise ModelNotFound(f"{item.hub_repo}: {decision.reason}; looking again next pass")
        return self._release(facts, source, title=item.title, link=item.link)

    def on_webhook_repo(self, repo_id: str, sha: str | None) -> SourceReport:
        """A Hub webhook said ``repo_id`` changed (created, pushed to main, made public)."""
        report = SourceReport(WEBHOOK)
        facts = self.hub.facts(repo_id, revision=sha)
        report.seen = 1
        decision = decide(facts, self.watch.hub)
        if decision.action != "accept" or facts.sha is None:
            report.dropped = decision.action == "drop"
            report.error = decision.reason or "no commit"
            return report
        event = self._release(facts, WEBHOOK)
        # The webhook is the news: no lookback baseline (a private repo made public is new).
        if self.state.record_repo(WEBHOOK, repo_id, facts.sha, event) == RELEASED:
            report.events.append(event)
        self.flush()
        return report

    # ------------------------------------------------------------------ bookkeeping

    def _backing_off(self, report: SourceReport) -> bool:
        until = self.state.source(report.source).not_before
        if until is not None and until > now():
            report.status = "backing_off"
            report.error = f"backing off until {until.isoformat(timespec='seconds')}"
            return True
        return False

    def _finish(
        self,
        report: SourceReport,
        failure: SupersedeError | None,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> None:
        if failure is None:
            self.state.source_ok(report.source, etag=etag, last_modified=last_modified)
        else:
            failures = self.state.source(report.source).failures
            wait = getattr(failure, "retry_after_s", None)
            if wait is None:
                wait = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**failures)
            self.state.source_failed(report.source, str(failure), wait)
            report.status = "failed"
            report.error = str(failure)
        self.flush()

    def flush(self) -> int:
        """Publish what the outbox holds, oldest first; a publisher error keeps the rest."""
        published = 0
        with self._flush_lock:
            for row_id, event in self.state.unpublished():
                try:
                    self.publisher.publish(event)
                except Exception as exc:
                    log.error("publishing %s failed, kept for the next pass: %s", event.kind, exc)
                    break
                self.state.mark_published([row_id])
                published += 1
        return published


def _latest(*moments: datetime | None) -> datetime | None:
    present = [m for m in moments if m is not None]
    return max(present) if present else None
