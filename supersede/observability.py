"""The daemon's Prometheus endpoint. Every figure is read from the store when scraped, so the
numbers of separate worker processes (benchmarks, Slack deliveries) are included."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.asgi import Server

#: Upper bounds (seconds) of the benchmark-duration histogram.
DURATION_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)


class StoreCollector:
    """A ``prometheus_client`` collector over the store's watcher, job and delivery tables."""

    def __init__(self, url: str) -> None:
        from watcher.state import WatchState
        from workers.jobs import JobStore
        from workers.notify.outbox import Outbox

        self.state = WatchState(url)
        self.jobs = JobStore(url)
        self.outbox = Outbox(url)

    def describe(self) -> list[Any]:
        return []  # collected lazily: no store access when registered

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        polls = CounterMetricFamily(
            "supersede_source_polls", "Reads of each source.", labels=["source"]
        )
        errors = CounterMetricFamily(
            "supersede_source_errors", "Failed reads of each source.", labels=["source"]
        )
        backing_off = GaugeMetricFamily(
            "supersede_source_backing_off",
            "1 while a source waits out a back-off.",
            labels=["source"],
        )
        from core.clock import now

        for source in self.state.sources_with_counts():
            polls.add_metric([source["name"]], source["polls"])
            errors.add_metric([source["name"]], source["errors"])
            waiting = source["not_before"] is not None and source["not_before"] > now()
            backing_off.add_metric([source["name"]], 1.0 if waiting else 0.0)
        yield from (polls, errors, backing_off)

        events = CounterMetricFamily("supersede_events", "Seen releases and posts by kind.",
                                     labels=["kind"])  # fmt: skip
        for kind, count in self.state.counts().items():
            events.add_metric([kind], count)
        yield events

        jobs = self.jobs.list(limit=100_000)
        by_state = GaugeMetricFamily(
            "supersede_jobs", "Jobs by kind and state.", labels=["kind", "state"]
        )
        for (kind, state), count in sorted(Counter((j.kind, j.state) for j in jobs).items()):
            by_state.add_metric([kind, state], count)
        yield by_state
        attempts = CounterMetricFamily("supersede_job_attempts", "Tries of jobs.", labels=["kind"])
        for kind, count in sorted(Counter(j.kind for j in jobs for _ in range(j.attempts)).items()):
            attempts.add_metric([kind], count)
        yield attempts

        durations = [
            (j.finished_at - j.started_at).total_seconds()
            for j in jobs
            if j.kind == "benchmark" and j.started_at and j.finished_at and j.state != "failed"
        ]
        buckets = [(str(b), float(sum(d <= b for d in durations))) for b in DURATION_BUCKETS]
        buckets.append(("+Inf", float(len(durations))))
        histogram = HistogramMetricFamily(
            "supersede_benchmark_duration_seconds", "Benchmark jobs, start to finish."
        )
        histogram.add_metric([], buckets, sum_value=sum(durations))
        yield histogram

        deliveries = self.outbox.summary()
        sent = GaugeMetricFamily("supersede_slack_deliveries", "Slack messages by state.",
                                 labels=["state"])  # fmt: skip
        for state, count in sorted(deliveries["states"].items()):
            sent.add_metric([state], count)
        yield sent
        retries = CounterMetricFamily(
            "supersede_slack_retries", "Slack posts tried again (5xx, lost connections)."
        )
        retries.add_metric([], deliveries["retries"])
        yield retries


def serve(url: str, host: str, port: int) -> Server:
    """Serve ``GET /metrics`` on ``host:port`` (a thread of its own, see :mod:`core.asgi`);
    returns the started server (``stop()`` it). Raises ``OSError`` when the port is taken."""
    from prometheus_client import CollectorRegistry, make_asgi_app

    from core.asgi import Limits, Router, Server

    registry = CollectorRegistry()
    registry.register(StoreCollector(url))
    router = Router("metrics")
    router.add("GET", "/metrics", make_asgi_app(registry))
    server = Server(router, host, port, name="metrics", limits=Limits())
    server.start()
    return server
