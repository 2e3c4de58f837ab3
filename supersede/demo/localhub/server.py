"""The lifecycle every local protocol server in the tests shares: bind a free loopback port,
serve from a daemon thread, shut down cleanly; usable as a context manager."""

from __future__ import annotations

import threading
from socketserver import BaseServer
from types import TracebackType
from typing import Self


class LocalServer:
    """Subclasses implement :meth:`_bind` (create the server, set ``url``)."""

    url: str = ""

    def __init__(self) -> None:
        self._server: BaseServer | None = None
        self._thread: threading.Thread | None = None

    def _bind(self) -> BaseServer:
        raise NotImplementedError

    def start(self) -> Self:
        """Bind a free port on 127.0.0.1 and serve from a daemon thread."""
        if self._server is None:
            self._server = self._bind()
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=type(self).__name__,
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
