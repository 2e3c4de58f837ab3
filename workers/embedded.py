"""The embedded default's worker: a Celery worker in a thread of the daemon's own process.

Used when no broker is configured: the queue is the local SQLite file, the pool is ``solo`` (one
job at a time, in this thread), so ``supersede run`` alone runs the whole product. The solo
pool ignores Celery's time limits: each model a benchmark runs is bounded instead by its own
child process's wall-clock and memory limits (:mod:`benchmarks.limits`). Production
uses separate ``celery -A workers worker`` processes on Redis instead.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedWorker:
    """``start()``, then ``stop()``: consumes ``queues`` until stopped."""

    def __init__(self, app: Any, queues: list[str]) -> None:
        from celery.worker import WorkController

        app.loader.import_default_modules()
        self._worker = WorkController(
            app=app,
            concurrency=1,
            pool="solo",
            queues=queues,
            hostname=f"embedded@{socket.gethostname()}",
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
        )
        self.queues = queues
        self._thread = threading.Thread(target=self._worker.start, name="worker", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("embedded worker consuming %s", ", ".join(self.queues))

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Finish the job in hand (if any) and stop; False if it did not stop in time."""
        from celery.worker import state

        state.should_terminate = 0
        self._thread.join(timeout_s)
        stopped = not self._thread.is_alive()
        state.should_terminate = None
        return stopped
