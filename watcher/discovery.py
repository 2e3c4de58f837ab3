"""One discovery pass per channel: read it, filter, dedupe against the store, publish what is new.

The sources (:mod:`watcher.sources`) say what there is to poll; :class:`Discovery` runs their
passes and gives them what they share: the Hub client, the filters with the lookback baseline,
the dedupe, the per-channel back-off and the outbox. A channel that fails records its error and
a back-off deadline and never stops the others.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from config.settings import Settings
from core.clock import now
from core.errors import ConfigError, SupersedeError
from core.suggest import did_you_mean
from watcher import sources
from watcher.events import ModelReleased
from watcher.filters import RepoFacts, decide
from watcher.publish import Publisher
from watcher.sources.base import Channel, Listener, SourceReport
from watcher.sources.hub import HubClient
from watcher.state import BASELINE, RELEASED, WatchState

log = logging.getLogger(__name__)

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


class Discovery:
    """The watcher's core; thread-safe (each channel runs in its own scheduler thread)."""

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
        """The Hub client every source shares (listings, feed links, webhooks)."""
        if self._hub is None:
            self._hub = HubClient(self.settings)
        return self._hub

    # ------------------------------------------------------------------ channels

    def channels(self) -> list[Channel]:
        """What every registered source has to poll under these settings."""
        return [c for source in sources.registered() for c in source.channels(self.settings)]

    def listeners(self) -> dict[str, Listener]:
        """The endpoints the enabled sources serve, by source name, not started yet.

        Raises :class:`ConfigError` when an enabled one is misconfigured.
        """
        found = ((source.name, source.listener(self)) for source in sources.registered())
        return {name: listener for name, listener in found if listener is not None}

    def poll_all(self) -> list[SourceReport]:
        """One pass over every channel, concurrently; then publish."""
        channels = self.channels()
        if not channels:
            return []
        with ThreadPoolExecutor(max_workers=min(8, len(channels))) as pool:
            return list(pool.map(self.run, channels))

    def poll(self, name: str) -> SourceReport:
        """One pass over the channel called ``name`` (``hub``, ``feed:<feed name>``)."""
        channels = {channel.name: channel for channel in self.channels()}
        if name not in channels:
            hint = did_you_mean(name, channels, listing="configured")
            raise ConfigError(f"no channel {name!r} is configured{hint}")
        return self.run(channels[name])

    def run(self, channel: Channel) -> SourceReport:
        """One pass over ``channel``."""
        return channel.poll(self)

    # ------------------------------------------------------------------ shared by the sources

    def consider(self, facts: RepoFacts, report: SourceReport, source: str) -> None:
        """A repo a polling channel listed: filter it, baseline it when old, record it."""
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
        event = None if old else self.release(facts, source)
        kind = self.state.record_repo(source, facts.repo_id, facts.sha, event)
        if kind == BASELINE:
            report.baseline += 1
        if kind == RELEASED and event is not None:
            report.events.append(event)

    def release(
        self, facts: RepoFacts, source: str, *, title: str | None = None, link: str | None = None
    ) -> ModelReleased:
        """The release event of ``facts``, linking the repo's Hub page unless ``link`` is given."""
        hub_page = f"{self.settings.hub.endpoint.rstrip('/')}/{facts.repo_id}"
        return release_of(facts, source, title=title, link=link or hub_page)

    def backing_off(self, report: SourceReport) -> bool:
        """True (and the report says so) while the channel's back-off deadline is ahead."""
        until = self.state.source(report.source).not_before
        if until is not None and until > now():
            report.status = "backing_off"
            report.error = f"backing off until {until.isoformat(timespec='seconds')}"
            return True
        return False

    def finish(
        self,
        report: SourceReport,
        failure: SupersedeError | None,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> None:
        """Record how the pass went (a failure sets the back-off), then publish the outbox."""
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
