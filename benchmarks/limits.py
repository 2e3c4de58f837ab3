"""A model's run in a child process, under a wall-clock limit and a memory limit.

A release's files decide what loading and scoring it does: a chat template can loop forever
(three nested ``range(100000)`` loops pass transformers' sandbox) or render gigabytes. So a
worker runs each model in a child process it can stop:

* **wall clock**: the parent kills the child's whole process group at the limit, in every worker
  pool (Celery's solo pool, the embedded default, has no time limits of its own);
* **memory**: on CPU the child's address space is capped (``RLIMIT_AS``), so an allocation past
  it fails inside the child; on CUDA, whose runtime reserves far more address space than it
  uses, the parent instead checks the child's anonymous resident memory every half second.

How the child starts: ``fork`` where it is safe and cheap, i.e. in a process that had not
imported torch before its first run here (a Celery pool process, ``supersede run``): torch,
transformers and peft are imported once in the parent, which then never runs a model itself.
Elsewhere (torch already used in this process: forking after an OpenMP region hangs the child;
or a CUDA device: never fork after CUDA is initialised) a ``forkserver`` with those libraries
preloaded starts each child. Job and result cross as JSON on a pipe.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import logging
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any

from core import errors
from core.errors import FatalError, RetryableError, SupersedeError

log = logging.getLogger(__name__)

#: Imported once before the first child starts, so no child pays for them.
PRELOAD = ("torch", "transformers", "peft")
#: How often the parent looks at the child (its memory on CUDA, whether it is still alive).
TICK_S = 0.5
GIB = 2**30
#: Words of an allocation failure in a library's own message (torch, safetensors, libc).
_MEMORY_WORDS = ("can't allocate memory", "cannot allocate memory", "std::bad_alloc")


@dataclass(frozen=True)
class Limits:
    """What one model's run may take: ``wall_s`` seconds and ``memory_gib`` GiB.

    ``cuda``: the run uses a CUDA device (resident memory is watched, the child never forked
    from a process where CUDA may be initialised).
    """

    wall_s: float
    memory_gib: float
    cuda: bool = False


_active: ContextVar[Limits | None] = ContextVar("benchmark_limits", default=None)


@contextlib.contextmanager
def confined(limits: Limits) -> Iterator[None]:
    """Within this block, :func:`benchmarks.bench.bench` runs each model in a child process
    under ``limits`` (the workers do; the CLI runs models in its own process)."""
    token = _active.set(limits)
    try:
        yield
    finally:
        _active.reset(token)


def active_limits() -> Limits | None:
    """The limits of the enclosing :func:`confined` block, if any."""
    return _active.get()


def describe_duration(seconds: float) -> str:
    """``3600`` -> ``60-minute``, ``2.5`` -> ``2.5-second``: how a limit is named to people."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}-minute"
    return f"{seconds:g}-second"


def run_limited(target: str, payload: dict[str, Any], limits: Limits, *, what: str) -> Any:
    """Call ``target`` (``"module:function"``, taking and returning JSON data) with ``payload``
    in a child process under ``limits``; return what it returned.

    A run past its limits raises :class:`FatalError` saying which limit (``what`` names the model
    in the message). An error the child raised is raised here again: a
    :class:`core.errors.SupersedeError` as its own class, anything else as a
    :class:`RetryableError` (and logged with the child's traceback), as if it ran here.
    """
    method = _start_method(limits)
    child = _Child.start(method, target, payload, limits)
    started = time.monotonic()
    try:
        reply, stopped = _wait(child, limits, started)
    finally:
        child.kill()
    if stopped == "time":
        raise FatalError(
            f"{what}: exceeded the {describe_duration(limits.wall_s)} limit "
            "(workers.soft_time_limit)"
        )
    if stopped == "memory" or (reply is not None and "memory" in reply):
        raise FatalError(
            f"{what}: ran out of its {limits.memory_gib:g} GiB memory limit "
            "(workers.benchmark_memory)"
        )
    if reply is None:
        code = child.exitcode
        died = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else code
        raise RetryableError(f"{what}: the benchmark's process died ({died}) without a result")
    if "ok" in reply:
        return reply["ok"]
    if "error" in reply:
        raise _rebuilt(reply["error"], reply.get("message", ""), reply.get("retry_after_s"))
    log.error("%s: benchmark crashed in its process:\n%s", what, reply.get("traceback", ""))
    raise RetryableError(reply.get("crash", "the benchmark crashed"))


# ---------------------------------------------------------------------------------- parent


_fork_safe: bool | None = None


def _start_method(limits: Limits) -> str:
    global _fork_safe
    if _fork_safe is None:
        # Decided once, before this module imports torch itself: a process that imported torch
        # earlier may have run it (OpenMP threads then hang a forked child).
        _fork_safe = "torch" not in sys.modules
        if _fork_safe:
            for name in PRELOAD:
                with contextlib.suppress(ImportError):
                    importlib.import_module(name)
    if limits.cuda or not _fork_safe or _cuda_initialised():
        return "forkserver"
    return "fork"


def _cuda_initialised() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def _wait(child: _Child, limits: Limits, started: float) -> tuple[dict[str, Any] | None, str]:
    """The child's reply (None when it died without one), and why it was stopped, if it was."""
    deadline = started + limits.wall_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None, "time"
        if child.reader.poll(min(remaining, TICK_S)):
            try:
                return json.loads(child.reader.recv_bytes()), ""
            except (EOFError, OSError, ValueError):
                return None, ""
        if child.exitcode is not None and not child.reader.poll(0):
            return None, ""
        if limits.cuda and _anonymous_resident(child.pid) > limits.memory_gib * GIB:
            return None, "memory"


def _anonymous_resident(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants, less file-backed pages (weights mapped
    from the download cache are page cache, not the run's own memory)."""
    import psutil

    total = 0
    try:
        root = psutil.Process(pid)
        for process in (root, *root.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                info = process.memory_info()
                total += info.rss - getattr(info, "shared", 0)
    except psutil.Error:
        pass
    return total


class _Child:
    """A started child: its pid, the end of the pipe its reply comes on, how to stop it."""

    def __init__(self, pid: int, reader: Connection, process: Any = None) -> None:
        self.pid = pid
        self.reader = reader
        self._process = process
        self._status: int | None = None

    @classmethod
    def start(cls, method: str, target: str, payload: dict[str, Any], limits: Limits) -> _Child:
        import multiprocessing
        import multiprocessing.forkserver

        if method == "fork":
            reader, writer = multiprocessing.Pipe(duplex=False)
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            pid = os.fork()
            if pid == 0:  # the child: never returns
                code = 0
                try:
                    reader.close()
                    _serve(target, payload, limits, writer)
                except BaseException:
                    code = 70
                finally:
                    os._exit(code)
            writer.close()
            with contextlib.suppress(OSError):
                os.setpgid(pid, pid)  # as the child does: whichever runs first
            return cls(pid, reader)
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__, *PRELOAD])
        # Started (once per process, importing the preloaded libraries) before the clock runs.
        multiprocessing.forkserver.ensure_running()
        reader, writer = context.Pipe(duplex=False)
        # In a Celery prefork pool process (billiard's), multiprocessing would refuse: that
        # process is "daemonic" (no children: they could outlive it; this one cannot, it dies
        # with the fork server and is killed with its group at the limit), and its key is
        # billiard's type, which multiprocessing will not send to the fork server (the same key
        # is given as multiprocessing's own type).
        from multiprocessing.process import AuthenticationString  # type: ignore[attr-defined]

        config = multiprocessing.current_process()._config  # type: ignore[attr-defined]
        key = config.get("authkey")
        if key is not None and type(key) is not AuthenticationString:
            config["authkey"] = AuthenticationString(bytes(key))
        daemonic = config.pop("daemon", None)
        try:
            process = context.Process(
                target=_serve, args=(target, payload, limits, writer), name="benchmark",
                daemon=False,
            )  # fmt: skip
            process.start()
        finally:
            if daemonic is not None:
                config["daemon"] = daemonic
        writer.close()
        assert process.pid is not None
        return cls(process.pid, reader, process)

    @property
    def exitcode(self) -> int | None:
        """The child's exit code (negative: the signal that ended it); None while it runs."""
        if self._process is not None:
            code: int | None = self._process.exitcode
            return code
        if self._status is None:
            with contextlib.suppress(ChildProcessError):
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self._status = status
        return None if self._status is None else os.waitstatus_to_exitcode(self._status)

    def kill(self) -> None:
        """Kill the child's process group (whatever it started too), then reap it."""
        with contextlib.suppress(OSError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.exitcode is None:  # not reaped yet, so the pid is still the child's
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)  # before it had its own group
        if self._process is not None:
            self._process.join(10)
        elif self._status is None:
            with contextlib.suppress(ChildProcessError):
                _, self._status = os.waitpid(self.pid, 0)
        self.reader.close()


# ---------------------------------------------------------------------------------- child


def _serve(target: str, payload: dict[str, Any], limits: Limits, writer: Connection) -> None:
    """The child: its own process group, its limits, the call, one JSON reply."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signum, signal.SIG_DFL)
    _die_with_parent()
    if not limits.cuda:
        cap = int(limits.memory_gib * GIB)
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or cap < hard:
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    reply: dict[str, Any]
    try:
        module, _, name = target.partition(":")
        reply = {"ok": getattr(importlib.import_module(module), name)(payload)}
    except BaseException as exc:  # everything is reported to the parent
        reply = _reply_for(exc)
    try:
        data = json.dumps(reply).encode()
    except MemoryError:
        data = b'{"memory": "MemoryError"}'
    writer.send_bytes(data)
    writer.close()


def _die_with_parent() -> None:
    """A worker killed with -9 takes its benchmark with it (Linux: ``PR_SET_PDEATHSIG``)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _reply_for(exc: BaseException) -> dict[str, Any]:
    if _out_of_memory(exc):
        return {"memory": type(exc).__name__}
    if isinstance(exc, SupersedeError):
        return {
            "error": type(exc).__name__,
            "message": str(exc),
            "retry_after_s": getattr(exc, "retry_after_s", None),
        }
    return {
        "crash": f"{type(exc).__name__}: {exc}"[:2000],
        "traceback": traceback.format_exc()[-8000:],
    }


def _out_of_memory(exc: BaseException) -> bool:
    """An allocation refused under the address-space cap, however the library reports it (a
    ``MemoryError``, ``ENOMEM``, torch's allocator, a corrupt-file error wrapping it). GPU
    memory (CUDA's own out-of-memory) is not this limit."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        text = str(seen).lower()
        if "cuda" in text or type(seen).__name__ == "OutOfMemoryError":
            return False
        if isinstance(seen, MemoryError):
            return True
        if isinstance(seen, OSError) and seen.errno == errno.ENOMEM:
            return True
        if any(word in text for word in _MEMORY_WORDS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _rebuilt(name: str, message: str, retry_after_s: float | None) -> SupersedeError:
    """The child's error as its own class from :mod:`core.errors` (a fatal one if unknown)."""
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SupersedeError)):
        return FatalError(message)
    with contextlib.suppress(Exception):
        if issubclass(cls, RetryableError):
            return cls(message, retry_after_s=retry_after_s)
        built: SupersedeError = cls(message)
        return built
    return FatalError(message)


def cuda_limits(limits: Limits, device: str) -> Limits:
    """``limits`` for a run on ``device`` (``cuda...`` switches the memory check)."""
    return replace(limits, cuda=device.startswith("cuda"))
