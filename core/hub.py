"""The one Hugging Face Hub adapter: endpoint, token, timeouts, and errors in Supersede's terms.

Every Hub call Supersede makes (the watcher's listings, the resolver's ``model_info`` and
downloads, manual re-runs) goes through :class:`HubAdapter`, so they agree on how a token is
passed, where the Hub is, and which :mod:`core.errors` a failure becomes (:class:`hub_errors`).

Request policy. huggingface_hub sends every request through one process-wide ``httpx2.Client``
(``get_session()``): ``HfApi`` takes no client of its own, and ``list_models`` takes no timeout
at all, so there is no public way to give one adapter its own timeouts or rate-limit handling.
The least global way left: huggingface_hub's own default client, built by its own factory, gets
two hooks that read a context variable, and an adapter with a :class:`RequestPolicy` sets that
variable around its own calls only. Outside such a call (another thread, a model download of the
embedded worker, a resolver's call) the hooks do nothing, so the watcher's timeouts and
long-wait guard never reach a download in the same process.
"""

from __future__ import annotations

import errno
import importlib
import os
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import DiskFull, GatedModelError, HubUnavailable, HubUnreachable, ModelNotFound
from core.http import connect_probe, retry_after

if TYPE_CHECKING:
    import httpx2
    from huggingface_hub import HfApi


@dataclass(frozen=True)
class RequestPolicy:
    """What the requests made inside one adapter's calls get, beyond huggingface_hub's own."""

    #: Timeouts given to a request that carries none (``list_models`` passes none).
    connect_timeout_s: float
    read_timeout_s: float
    #: A 429/503 asking to wait longer than this raises :class:`HubUnavailable` with the wait,
    #: instead of huggingface_hub's back-off sleeping through it; None: sleep whatever it asks.
    max_inline_wait_s: float | None = None


#: The policy of the adapter call running in this thread (None: huggingface_hub's defaults).
_active: ContextVar[RequestPolicy | None] = ContextVar("hub_request_policy", default=None)
_hooked = False
_hook_lock = threading.Lock()


def _fill_timeouts(request: httpx2.Request) -> None:
    policy = _active.get()
    if policy is None:
        return
    given = request.extensions.get("timeout") or {}
    if all(value is None for value in given.values()):
        import httpx2

        timeout = httpx2.Timeout(policy.read_timeout_s, connect=policy.connect_timeout_s)
        request.extensions = {**request.extensions, "timeout": timeout.as_dict()}


def _refuse_long_waits(response: httpx2.Response) -> None:
    policy = _active.get()
    if policy is None or policy.max_inline_wait_s is None:
        return
    if response.status_code in (429, 503):
        wait = retry_after(response.headers)
        if wait is not None and wait > policy.max_inline_wait_s:
            raise HubUnavailable(
                f"the Hub answered {response.status_code} and asks to wait {wait:.0f} s",
                retry_after_s=wait,
            )


def _hook_shared_client() -> None:
    """Once per process: huggingface_hub's default client, plus the two context-scoped hooks.

    Replacing the factory closes the shared client once; after that the factory never changes,
    whatever adapters come and go.
    """
    global _hooked
    with _hook_lock:
        if _hooked:
            return
        from huggingface_hub import set_client_factory

        # Not exported: the library's default factory, so its own hooks (offline mode, request
        # ids, download counter) and settings stay exactly as they are.
        from huggingface_hub.utils._http import default_client_factory

        def factory() -> httpx2.Client:
            client = default_client_factory()
            hooks = client.event_hooks
            client.event_hooks = {
                "request": [*hooks.get("request", []), _fill_timeouts],
                "response": [*hooks.get("response", []), _refuse_long_waits],
            }
            return client

        set_client_factory(factory)
        _hooked = True


class HubAdapter:
    """huggingface_hub calls with one endpoint, token, timeouts and error mapping.

    ``token``: None sends no token at all (neither ``HF_TOKEN`` nor a saved login is read behind
    the settings' back). ``timeout_s``: given to the calls that accept a timeout (``model_info``,
    the downloads' metadata requests). ``policy``: see :class:`RequestPolicy`; it applies to
    this adapter's calls only.
    """

    def __init__(
        self,
        endpoint: str,
        token: str | None = None,
        *,
        timeout_s: float | None = None,
        policy: RequestPolicy | None = None,
        cache_dir: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.policy = policy
        self.cache_dir = cache_dir
        self._token: str | bool = token or False
        self._api: HfApi | None = None
        if policy is not None:
            _hook_shared_client()

    @property
    def api(self) -> HfApi:
        """The ``HfApi`` of this endpoint and token (call it inside :meth:`call`)."""
        if self._api is None:
            from huggingface_hub import HfApi

            self._api = HfApi(endpoint=self.endpoint, token=self._token)
        return self._api

    @property
    def cache_folder(self) -> Path:
        """The download cache: ``cache_dir``, else huggingface_hub's default."""
        if self.cache_dir:
            return Path(self.cache_dir)
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)

    @contextmanager
    def call(self, name: str) -> Iterator[None]:
        """Run Hub requests under this adapter's policy; failures name ``name``."""
        with hub_errors(name, self.cache_folder, self.endpoint):
            scope = _active.set(self.policy)
            try:
                yield
            finally:
                _active.reset(scope)

    def check_reachable(self, timeout_s: float) -> None:
        """:class:`HubUnreachable`, naming the address and why, when no connection to the Hub
        can be opened within ``timeout_s`` (one try, no back-off)."""
        try:
            connect_probe(self.endpoint, timeout_s)
        except OSError as exc:
            why = exc.strerror or str(exc) or type(exc).__name__
            raise HubUnreachable(f"the Hub at {self.endpoint} is unreachable ({why})") from None

    def list_models(self, name: str, **query: Any) -> list[Any]:
        """``HfApi.list_models(**query)``, read to the end inside the call (it is lazy)."""
        with self.call(name):
            return list(self.api.list_models(**query))

    def model_info(
        self,
        repo_id: str,
        *,
        revision: str | None = None,
        expand: list[str] | None = None,
        name: str | None = None,
        files_metadata: bool = False,
    ) -> Any:
        """``HfApi.model_info`` at ``revision`` (default branch when None); with
        ``files_metadata`` each sibling carries its size."""
        with self.call(name or repo_id):
            return self.api.model_info(
                repo_id,
                revision=revision,
                expand=expand,  # type: ignore[arg-type]
                files_metadata=files_metadata,
                timeout=self.timeout_s,
            )

    def download(self, repo_id: str, filename: str, *, revision: str, name: str) -> Path:
        """One file of ``repo_id`` at ``revision``, into the cache."""
        from huggingface_hub import hf_hub_download

        with self.call(name):
            return Path(
                hf_hub_download(repo_id, filename, revision=revision, **self._download_options())
            )

    def snapshot(
        self,
        repo_id: str,
        *,
        revision: str,
        name: str,
        allow_patterns: list[str],
        ignore_patterns: list[str],
    ) -> Path:
        """The files of ``repo_id`` at ``revision`` that match the patterns, into the cache."""
        from huggingface_hub import snapshot_download

        with self.call(name):
            return Path(
                snapshot_download(
                    repo_id,
                    revision=revision,
                    allow_patterns=allow_patterns,
                    ignore_patterns=ignore_patterns,
                    **self._download_options(),
                )
            )

    def prune_cache(self, max_bytes: int, keep: Collection[str]) -> list[str]:
        """Delete the least recently used snapshots until the cache holds at most ``max_bytes``.

        ``keep``: ``repo_id`` (every revision of it) or ``repo_id@sha`` entries never deleted.
        A snapshot's last use is its folder's modification time, which :meth:`touch` sets on each
        use (file access times are unreliable: ``noatime`` and ``relatime`` mounts). Scanning and
        deleting go through huggingface_hub's own cache API, so its blobs and refs stay
        consistent. Returns the ``repo_id@sha`` deleted.
        """
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.errors import CacheNotFound

        try:
            cache = scan_cache_dir(self.cache_folder)
        except CacheNotFound:
            return []
        total = cache.size_on_disk
        if total <= max_bytes:
            return []
        candidates = []
        for repo in cache.repos:
            if repo.repo_type != "model" or repo.repo_id in keep:
                continue
            for revision in repo.revisions:
                if f"{repo.repo_id}@{revision.commit_hash}" not in keep:
                    candidates.append((_mtime(revision.snapshot_path), repo, revision))
        chosen: list[str] = []
        by_repo: dict[Any, list[str]] = {}
        for _, repo, revision in sorted(candidates, key=lambda item: item[0]):
            if total <= max_bytes:
                break
            # Blobs shared with a kept revision are not freed: the cache may stay a little over
            # the cap until the next prune.
            total -= revision.size_on_disk
            by_repo.setdefault(repo, []).append(revision.commit_hash)
            chosen.append(f"{repo.repo_id}@{revision.commit_hash}")
        for repo, hashes in by_repo.items():
            # One repo per strategy: mirrored repos share commit hashes, and delete_revisions
            # would take the first repo holding a hash.
            replace(cache, repos=frozenset({repo})).delete_revisions(*hashes).execute()
        return chosen

    @staticmethod
    def touch(snapshot: Path) -> None:
        """Mark ``snapshot`` (a folder of the cache) used now, for :meth:`prune_cache`."""
        with suppress(OSError):  # a read-only cache is never pruned by us either
            os.utime(snapshot)

    def _download_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "cache_dir": self.cache_dir,
            "token": self._token,
            "endpoint": self.endpoint,
        }
        if self.timeout_s is not None:
            options["etag_timeout"] = self.timeout_s
        return options


class hub_errors:
    """Context manager mapping huggingface_hub / network errors onto the Supersede tree.

    ``folder``: where downloads are written, named when the disk fills up; ``endpoint``: the
    Hub's address, named when it cannot be reached.
    """

    def __init__(self, name: str, folder: Path | None = None, endpoint: str | None = None) -> None:
        self.name = name
        self.folder = folder
        self.endpoint = endpoint

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            return None
        from huggingface_hub import errors

        name = self.name
        full = _disk_full(exc)
        if full is not None:
            where = self.folder or full.filename or "the download cache"
            raise DiskFull(
                f"{name}: the disk is full (ENOSPC) while downloading into {where}: free space "
                "there, or lower hub.cache_max_gib so older snapshots are deleted"
            ) from None
        if type(exc).__name__ == "HFValidationError":
            raise ModelNotFound(f"{name}: not a valid Hub repo id or revision") from None
        if isinstance(exc, errors.GatedRepoError):
            raise GatedModelError(
                f"{name}: gated repo and the token has no access: accept its terms on the Hub "
                "with the account whose token is in HF_TOKEN"
            ) from None
        if isinstance(exc, errors.RevisionNotFoundError):
            raise ModelNotFound(f"{name}: no such revision") from None
        if isinstance(exc, errors.RepositoryNotFoundError):
            raise ModelNotFound(
                f"{name}: repo not found (or private and HF_TOKEN has no access)"
            ) from None
        if isinstance(exc, errors.EntryNotFoundError):
            raise ModelNotFound(f"{name}: a listed file is missing on the Hub: {exc}") from None
        if isinstance(exc, errors.HfHubHTTPError):
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status in (401, 403):
                raise GatedModelError(f"{name}: access denied ({status}); check HF_TOKEN") from None
            raise HubUnavailable(
                f"{name}: the Hub answered {status}; will retry later",
                retry_after_s=_response_retry_after(exc),
            ) from None
        if isinstance(exc, _network_errors()):
            at = f" at {self.endpoint}" if self.endpoint else ""
            raise HubUnreachable(
                f"{name}: the Hub{at} is unreachable ({type(exc).__name__})"
            ) from None
        return None


def _disk_full(exc: BaseException) -> OSError | None:
    """The ``ENOSPC`` error in ``exc`` or its causes (a library may wrap the OS error)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return current
        current = current.__cause__ or current.__context__
    return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _response_retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    return retry_after(response.headers) if response is not None else None


def _network_errors() -> tuple[type[BaseException], ...]:
    # huggingface_hub has moved between HTTP clients (requests, httpx, httpx2): catch each one
    # that is installed, so a refused connection is "retry later", not a crash.
    kinds: list[type[BaseException]] = [OSError, TimeoutError]
    for module, attr in (
        ("httpx", "HTTPError"),
        ("httpx2", "HTTPError"),
        ("requests", "RequestException"),
    ):
        try:
            kinds.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):
            continue
    return tuple(kinds)
