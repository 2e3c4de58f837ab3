"""The local Hub for tests: the demo's Hub (``supersede.demo.localhub``) plus what tests need,
every request recorded and failures injected on demand.

Test controls, consumed in the order they were added and matched on a substring of the path
(query string included): :meth:`HubServer.fail_next` (an error status with headers, e.g. 429 with
``Retry-After``) and :meth:`HubServer.hang_next` (hold the request, then drop the connection).
Observations: ``requests`` (``(method, path_with_query)`` in arrival order) and ``errors``.
"""

from __future__ import annotations

from dataclasses import dataclass

from supersede.demo.localhub import hub
from supersede.demo.localhub.hub import LFS_SIZE_THRESHOLD, LFS_SUFFIXES
from supersede.demo.localhub.hub_repos import Reply

__all__ = ["LFS_SIZE_THRESHOLD", "LFS_SUFFIXES", "HubServer"]


@dataclass
class _Fault:
    path_substring: str
    status: int
    headers: dict[str, str]
    remaining: int
    hang_s: float = 0.0


class _Handler(hub.HubHandler):
    def answer(self) -> None:
        owner = self.hub
        assert isinstance(owner, HubServer)
        fault = owner._record(self.command, self.path)
        if fault is not None and fault.hang_s:
            owner.closing.wait(fault.hang_s)
            self.close_connection = True
            return
        if fault is not None:
            raise Reply(fault.status, f"Injected failure {fault.status}", headers=fault.headers)
        super().answer()


class HubServer(hub.HubServer):
    """The local Hub, recording each request and failing those it was told to.

    Attributes:
        requests: ``(method, path_with_query)`` of every request received, in arrival order.
    """

    handler_class = _Handler

    def __init__(self, *, lfs_redirect: bool = True) -> None:
        self.requests: list[tuple[str, str]] = []
        self._faults: list[_Fault] = []
        super().__init__(lfs_redirect=lfs_redirect)

    def fail_next(
        self,
        path_substring: str,
        status: int,
        headers: dict[str, str] | None = None,
        count: int = 1,
    ) -> None:
        """Answer the next ``count`` requests whose path (with query) contains ``path_substring``
        with ``status`` and ``headers`` (e.g. ``{"Retry-After": "0"}``) instead of serving them.
        Faults are consumed in the order they were added."""
        with self._lock:
            self._faults.append(_Fault(path_substring, status, dict(headers or {}), count))

    def hang_next(self, path_substring: str, seconds: float, count: int = 1) -> None:
        """Hold the next ``count`` matching requests for ``seconds`` without answering, then
        drop the connection (a hung Hub). ``close()`` cuts the wait short."""
        with self._lock:
            self._faults.append(_Fault(path_substring, 0, {}, count, hang_s=seconds))

    def _record(self, method: str, path: str) -> _Fault | None:
        """Record the request; the fault that takes it, if any."""
        with self._lock:
            self.requests.append((method, path))
            for fault in self._faults:
                if fault.remaining > 0 and fault.path_substring in path:
                    fault.remaining -= 1
                    return fault
            return None
