"""The Hugging Face Hub, read through ``huggingface_hub.HfApi``.

One ``list_models`` request per watched author per poll, newest first, with ``expand`` asking for
everything the filters need (tags, card data, safetensors parameter counts, files, sha, dates), so
the common case makes no per-model request. Webhooks and feed links use ``model_info`` pinned to a
commit instead.

Timeouts and rate limits: huggingface_hub passes no timeout on listings, so a request hook fills in
the configured connect/read timeouts; its own back-off retries 429/5xx honouring ``Retry-After`` and
the ``RateLimit`` reset. A wait longer than ``watch.max_inline_wait_s`` is not slept through in the
poll: a response hook raises :class:`HubUnavailable` with the wait, and the source backs off.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from benchmarks.models import hub_errors
from config.settings import Settings
from config.watch import WatchSettings
from core.errors import HubUnavailable
from core.http import retry_after
from watcher.filters import RepoFacts

log = logging.getLogger(__name__)

#: Listing fields the filters read (``expand`` replaces the default field set).
EXPAND = (
    "author",
    "sha",
    "createdAt",
    "lastModified",
    "tags",
    "cardData",
    "safetensors",
    "gated",
    "private",
    "pipeline_tag",
    "library_name",
    "siblings",
)

_configured: tuple[float, float, float] | None = None
_configure_lock = threading.Lock()


def configure_client(watch: WatchSettings) -> None:
    """Give huggingface_hub's shared HTTP client our timeouts and the long-wait guard."""
    global _configured
    wanted = (watch.connect_timeout_s, watch.read_timeout_s, watch.max_inline_wait_s)
    with _configure_lock:
        if _configured == wanted:
            return
        import httpx2
        from huggingface_hub import set_client_factory
        from huggingface_hub.utils._http import hf_request_event_hook

        timeout = httpx2.Timeout(watch.read_timeout_s, connect=watch.connect_timeout_s)

        def fill_timeouts(request: httpx2.Request) -> None:
            hf_request_event_hook(request)
            given = request.extensions.get("timeout") or {}
            if all(value is None for value in given.values()):
                request.extensions = {**request.extensions, "timeout": timeout.as_dict()}

        def refuse_long_waits(response: httpx2.Response) -> None:
            if response.status_code in (429, 503):
                wait = retry_after(response.headers)
                if wait is not None and wait > watch.max_inline_wait_s:
                    raise HubUnavailable(
                        f"the Hub answered {response.status_code} and asks to wait {wait:.0f} s",
                        retry_after_s=wait,
                    )

        def factory() -> httpx2.Client:
            return httpx2.Client(
                event_hooks={"request": [fill_timeouts], "response": [refuse_long_waits]},
                follow_redirects=True,
                timeout=timeout,
            )

        set_client_factory(factory)
        _configured = wanted


class HubClient:
    """The few Hub calls the watcher makes."""

    def __init__(self, settings: Settings) -> None:
        from huggingface_hub import HfApi

        configure_client(settings.watch)
        token = settings.secrets.hf_token
        self.api = HfApi(
            endpoint=settings.hub.endpoint,
            token=token.get_secret_value() if token else False,
        )

    def newest(self, author: str, limit: int) -> list[RepoFacts]:
        """The author's ``limit`` newest models, newest first."""
        with hub_errors(f"models of {author}"):
            listing = self.api.list_models(
                author=author,
                sort="created_at",
                limit=limit,
                expand=list(EXPAND),  # type: ignore[arg-type]
            )
            return [RepoFacts.from_model_info(info) for info in listing]

    def facts(self, repo_id: str, revision: str | None = None) -> RepoFacts:
        """One repo at ``revision`` (default branch when None), with the listing's fields."""
        with hub_errors(repo_id):
            info: Any = self.api.model_info(
                repo_id,
                revision=revision,
                expand=list(EXPAND),  # type: ignore[arg-type]
            )
            return RepoFacts.from_model_info(info)
