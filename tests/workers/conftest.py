"""Fixtures of the worker tests: a dedicated Redis database, worker configs, Celery worker
subprocesses (always stopped), a pipeline that sends through a real Celery app, and polling."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Self, TypeVar

import psutil
import pytest

from config.settings import Settings, load_settings
from supersede.demo.zoo import Zoo
from tests.support.cli import cli_env
from tests.support.hub_server import HubServer
from tests.support.redis_server import RedisServer, shared_database
from tests.support.settings import write_settings
from workers.jobs import Job, JobStore
from workers.pipeline import Pipeline

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
SHIPPED_TASK = REPO / "config" / "tasks" / "review_sentiment" / "review_sentiment.yaml"

#: The shared Redis, on a database number of its own: only that database is ever flushed.
SHARED_REDIS = shared_database(14)

#: Published as the Hub's parameter count of every test repo: small, so routing picks gpu-24g.
SMALL = {"safetensors": {"parameters": {"F32": 1000}, "total": 1000}}
#: Hub metadata of repos that existed long before: the watcher's first poll records them as
#: baseline, never as releases.
OLD = {"createdAt": "2025-01-01T00:00:00.000Z", "lastModified": "2025-01-01T00:00:00.000Z"}

#: Celery's log line of a finished task: name, id and the return value's repr.
SUCCEEDED = re.compile(r"Task (supersede\.\w+)\[([0-9a-f-]+)\] succeeded in [\d.]+s: (.+)$", re.M)


def process_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a subprocess run in a test's folder: the CLI's clean environment, with
    the repository importable from anywhere (relative paths, such as the console notifier's
    folder, then land in the test's folder, never in the repository)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return cli_env({"PYTHONPATH": path, **(extra or {})})


# ---------------------------------------------------------------------------------- polling


def wait_for(
    check: Callable[[], T | None], timeout_s: float, what: str, *, every_s: float = 0.2
) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after
    ``timeout_s`` (a generous upper bound, never a measurement)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


# ---------------------------------------------------------------------------------- Redis


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The dedicated database of the shared Redis, flushed before and after the test.

    Skips when no Redis answers, except under CI, where Redis is part of the contract.
    """
    import redis

    client = redis.Redis.from_url(SHARED_REDIS, socket_timeout=5, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no Redis at {SHARED_REDIS}: {exc}")
    client.flushdb()
    try:
        yield SHARED_REDIS
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private ``redis-server`` (nothing saved: a restart loses everything). Ask for it
    before ``start_worker``: the workers are then stopped before it is."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


def queue_length(url: str, queue: str) -> int:
    """Messages waiting in a Celery queue on the Redis at ``url`` (a Redis list per queue)."""
    import redis

    with redis.Redis.from_url(url, socket_timeout=5) as client:
        return int(client.llen(queue))


# ---------------------------------------------------------------------------------- the Hub


def publish(hub: HubServer, zoo: Zoo, **releases: Path) -> dict[str, str]:
    """The fine-tune (``acme/base`` + ``acme/lora``, both old) and ``releases`` (repo id ->
    folder, new, small, text-generation) on ``hub``; returns each repo's commit sha."""
    shas = {
        "acme/base": hub.add_repo("acme/base", zoo.base, extra={**SMALL, **OLD}),
        "acme/lora": hub.add_repo("acme/lora", zoo.adapter, extra={**SMALL, **OLD}),
    }
    for repo_id, folder in releases.items():
        shas[repo_id] = hub.add_repo(
            repo_id, folder, extra={**SMALL, "pipeline_tag": "text-generation"}
        )
    return shas


@pytest.fixture
def no_torch(tmp_path: Path) -> dict[str, str]:
    """The environment of a default worker built without torch: ``import torch`` fails."""
    shim = tmp_path / "no-torch"
    (shim / "torch").mkdir(parents=True)
    (shim / "torch" / "__init__.py").write_text(
        'raise ImportError("torch is not installed on the default worker")\n'
    )
    return {"PYTHONPATH": f"{shim}:{REPO}"}


# ---------------------------------------------------------------------------------- config


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Writes a Supersede config for worker processes under ``tmp_path``; returns its path.

    One fine-tune (``reviews``: ``acme/base`` + ``acme/lora`` on the shipped task), CPU, a
    private SQLite store and Hub cache, no watched authors. ``workers``, ``runtime`` and
    ``watch`` entries are merged over those defaults; other ``sections`` are added as given.
    """
    counter = iter(range(1000))

    def write(
        hub: HubServer,
        *,
        broker_url: str | None,
        workers: dict[str, Any] | None = None,
        runtime: dict[str, Any] | None = None,
        watch: dict[str, Any] | None = None,
        **sections: Any,
    ) -> Path:
        sections = {
            "hub": {"timeout_s": 30},
            "runtime": runtime or {},
            "finetunes": [
                {
                    "name": "reviews",
                    "task": str(SHIPPED_TASK),
                    "base": "acme/base",
                    "adapter": "acme/lora",
                },
            ],
            "watch": {"hub": {"authors": []}, **(watch or {})},
            "workers": {**({"broker_url": broker_url} if broker_url else {}), **(workers or {})},
            **sections,
        }
        name = f"supersede-{next(counter)}.yaml"
        return write_settings(tmp_path, name=name, endpoint=hub, **sections)

    return write


# ---------------------------------------------------------------------------------- workers


class CeleryWorker:
    """``celery -A workers worker`` in a subprocess of its own session, reading ``config``;
    its output goes to ``log`` (read it with :meth:`output`)."""

    def __init__(
        self,
        config: Path,
        queues: str,
        log: Path,
        *,
        concurrency: int = 1,
        name: str = "w",
        env: dict[str, str] | None = None,
    ) -> None:
        self.env = env or {}
        self.config = config
        self.queues = queues
        self.log = log
        self.concurrency = concurrency
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._family: list[psutil.Process] = []
        self._asked = False

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def start(self, timeout_s: float = 90.0) -> Self:
        """Start the worker; return once it logs that it is ready."""
        self._log_file = self.log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers",
                "worker",
                "-Q",
                self.queues,
                "-c",
                str(self.concurrency),
                "-n",
                f"{self.name}@%h",
                "--loglevel",
                "INFO",
                "--without-mingle",
                "--without-gossip",
            ],
            cwd=self.log.parent,
            env=process_env(
                {"SUPERSEDE_CONFIG": str(self.config), "PYTHONUNBUFFERED": "1", **self.env}
            ),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                pytest.fail(
                    f"worker {self.name} exited with {self.process.returncode}:\n{self.tail()}"
                )
            return re.search(r"\bready\.", self.output()) is not None

        wait_for(ready, timeout_s, f"worker {self.name} to be ready")
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, chars: int = 6000) -> str:
        return self.output()[-chars:]

    def succeeded(self, task: str) -> list[str]:
        """The return values (reprs) Celery logged for ``task``, in order."""
        return [m.group(3) for m in SUCCEEDED.finditer(self.output()) if m.group(1) == task]

    def pool_children(self) -> list[psutil.Process]:
        """The pool processes (the worker process's children)."""
        return list(psutil.Process(self.pid).children())

    def family(self) -> list[psutil.Process]:
        """The worker process and every process under it (those still running)."""
        try:
            main = psutil.Process(self.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """SIGKILL the worker process and every process under it, at once."""
        if self.process is None or self.process.poll() is not None:
            return
        for process in self.family():
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()  # psutil checks it is still the same process
        self.process.wait(10)

    def ask_to_stop(self, *, warm: bool = True) -> None:
        """SIGTERM (warm shutdown) or SIGQUIT (cold), once, without waiting."""
        if self.process is not None and self.process.poll() is None and not self._asked:
            self._family = self.family()
            self._asked = True
            self.process.send_signal(signal.SIGTERM if warm else signal.SIGQUIT)

    def stop(self, *, warm: bool = True, timeout_s: float = 20.0) -> None:
        """SIGTERM (warm shutdown: the tasks in hand finish) or SIGQUIT (cold: they are
        abandoned); SIGKILL to whatever of it is left when it has not exited in time. Safe to
        call twice."""
        self.ask_to_stop(warm=warm)
        process = self.process
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout_s)
            for leftover in self._family:  # the worker, or pool processes it left behind
                with contextlib.suppress(psutil.NoSuchProcess):
                    leftover.kill()
            process.wait(10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., CeleryWorker]]:
    """Starts Celery workers; every one is stopped (killed if need be) after the test, and
    its log printed (pytest shows it when the test failed)."""
    started: list[CeleryWorker] = []

    def start(
        config: Path,
        queues: str = "default,gpu-24g",
        *,
        concurrency: int = 1,
        env: dict[str, str] | None = None,
    ) -> CeleryWorker:
        name = f"w{len(started) + 1}"
        worker = CeleryWorker(
            config, queues, tmp_path / f"worker-{name}.log", concurrency=concurrency, name=name,
            env=env,
        )  # fmt: skip
        started.append(worker)
        return worker.start()

    try:
        yield start
    finally:
        for worker in started:  # all at once, then each waited for
            worker.ask_to_stop(warm=False)
        for worker in started:
            worker.stop(warm=False)
        for worker in started:
            print(f"---- worker {worker.name} ({worker.queues}) log tail ----\n{worker.tail()}")


# ---------------------------------------------------------------------------------- pipeline


class Client:
    """What ``supersede run`` and ``supersede rerun`` hold: a Celery app built from the
    settings and a pipeline that sends through it. ``sent`` records every send."""

    def __init__(self, config: Path) -> None:
        from workers.app import make_app

        self.settings: Settings = load_settings(config)
        self.app = make_app(self.settings)
        self.jobs = JobStore(self.settings.store.url)
        self.sent: list[tuple[str, str, str]] = []

        def send(name: str, key: str, queue: str) -> None:
            self.sent.append((name, key, queue))
            self.app.send_task(name, args=[key], queue=queue)

        # It plans, sends and reconciles; notifying is the workers' part.
        self.pipeline = Pipeline(self.settings, self.jobs, send)

    def job(self, key: str) -> Job:
        job = self.jobs.get(key)
        assert job is not None, f"no job {key[:12]}"
        return job

    def all_jobs(self) -> list[Job]:
        return self.jobs.list(limit=10_000)

    def close(self) -> None:
        self.app.close()
        self.jobs.engine.dispose()


@pytest.fixture
def client() -> Iterator[Callable[[Path], Client]]:
    made: list[Client] = []

    def make(config: Path) -> Client:
        made.append(Client(config))
        return made[-1]

    try:
        yield make
    finally:
        for one in made:
            one.close()
