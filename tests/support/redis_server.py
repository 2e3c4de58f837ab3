"""A private ``redis-server`` on a free loopback port: started, stopped, killed and restarted
(with its data lost) by the tests that need a broker to fail under them.

It keeps nothing on disk (``--save "" --appendonly no``), so a restart is a Redis that lost
everything it held::

    with RedisServer(tmp_path) as redis:
        redis.url          # redis://127.0.0.1:PORT/0
        redis.restart()    # same port, empty
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

__all__ = ["RedisServer", "free_port", "shared_database"]


def shared_database(db: int) -> str:
    """The URL of database ``db`` of the shared Redis (``SUPERSEDE_TEST_REDIS``, default
    ``redis://127.0.0.1:6379``) for this test process. Tests flush the databases they use, so
    each pytest-xdist worker gets a pair of its own: ``gw0`` uses 14 and 13, ``gw1`` 12 and 11,
    and so on."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    number = db - 2 * index
    if number < 0:
        raise RuntimeError(f"too many test workers for the shared Redis's databases ({worker})")
    server = os.environ.get("SUPERSEDE_TEST_REDIS", "redis://127.0.0.1:6379").rstrip("/")
    return f"{server}/{number}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (at the time of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ping(port: int, timeout_s: float = 0.5) -> bool:
    """True when a Redis on ``port`` answers ``PING`` with ``+PONG``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``redis-server`` bound to 127.0.0.1 on a free port, its files and log under ``folder``."""

    def __init__(self, folder: Path, *, port: int | None = None, binary: str = "redis-server"):
        found = shutil.which(binary)
        if found is None:
            raise FileNotFoundError(f"{binary} is not on PATH")
        self.binary = found
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log_path = self.folder / f"redis-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_for(0)

    def url_for(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 10.0) -> Self:
        """Start the server and wait until it answers ``PING``."""
        if self.running:
            return self
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
                "--protected-mode",
                "yes",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._close_log()
                raise RuntimeError(
                    f"redis-server exited with {self._process.returncode}: "
                    f"{self.log_path.read_text(errors='replace')[-2000:]}"
                )
            if ping(self.port):
                return self
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"redis-server on port {self.port} did not answer in {timeout_s} s")

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited in time. Nothing is saved."""
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout_s)
        self._process = None
        self._close_log()
        self._wait_port_free(timeout_s)

    def kill(self) -> None:
        """SIGKILL: the server dies at once, as in a crash."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(5)
        self._process = None
        self._close_log()
        self._wait_port_free(5.0)

    def restart(self, timeout_s: float = 10.0) -> Self:
        """Stop, then start on the same port: a Redis that lost all its data."""
        self.stop()
        return self.start(timeout_s)

    def _wait_port_free(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and ping(self.port, timeout_s=0.2):
            time.sleep(0.05)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
