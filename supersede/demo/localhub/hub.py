"""A local Hugging Face Hub: the Hub's HTTP API for model repos, in process, on loopback.

The real ``huggingface_hub`` client (``HfApi``, ``hf_hub_download``, ``snapshot_download``)
works against it when given ``endpoint=hub.url`` (or with ``HF_ENDPOINT=hub.url`` set before
``huggingface_hub`` is first imported)::

    with HubServer() as hub:
        sha = hub.add_repo("org/model", folder)
        HfApi(endpoint=hub.url).model_info("org/model").sha == sha

Routes (model repos only)::

    GET       /api/models                                    list_models (JSON list, one page)
    GET       /api/models/{repo_id}[/revision/{rev}]         model_info / repo_info
    GET       /api/models/{repo_id}/tree/{rev}[/{path}]      list_repo_tree / list_repo_files
    POST      /api/models/{repo_id}/paths-info/{rev}         get_paths_info
    GET       /api/models/{repo_id}/refs                     list_repo_refs
    GET       /api/agent-harnesses                           user-agent agent detection (empty)
    HEAD/GET  /{repo_id}/resolve/{rev}/{filename}            hf_hub_download / get_hf_file_metadata
    HEAD/GET  /cdn-lfs/{repo_id}/{sha256}/{filename}         "CDN" for LFS files (see below)

Behaviour mirrors the real Hub where the client depends on it:

* ``/resolve`` answers carry ``X-Repo-Commit`` and ``ETag`` (git blob sha1 of regular files)
  and never any ``X-Xet-*`` header or ``Link: <...>; rel="xet-auth"``, and tree entries never
  carry ``xetHash``: the client therefore never takes the Xet path (even with ``hf_xet``
  installed) and downloads over plain HTTP.
* LFS files (weights by suffix, or anything >= 10 MiB) answer ``/resolve`` with a 302 whose
  ``Location`` is on ``http://localhost:PORT`` (a different origin than ``http://127.0.0.1:PORT``),
  together with ``X-Linked-Etag`` (sha256) and ``X-Linked-Size``. The client treats that origin
  as a CDN: it stops following redirects, takes the metadata from the 302, drops the
  ``Authorization`` header and downloads from the CDN URL, exactly as with the real Hub.
  ``HubServer(lfs_redirect=False)`` serves LFS files directly instead.
* Errors use the ``X-Error-Code`` header the client maps to exceptions: ``RepoNotFound``
  (404, or 401 for a private repo without a granted token), ``RevisionNotFound`` (404),
  ``EntryNotFound`` (404, with ``X-Repo-Commit``) and ``GatedRepo`` (401 without a token,
  403 with a token that was not granted) on ``/resolve`` of gated repos. Metadata routes
  (model info, tree, paths-info, refs) stay open on gated repos, as on the real Hub.

The repos and the JSON shown of them are in :mod:`.hub_repos`, the routes in :mod:`.hub_routes`.
"""

from __future__ import annotations

import hashlib
import pathlib
import re
import threading
from collections.abc import Callable
from typing import Any

from supersede.demo.localhub.hub_repos import (
    LFS_SIZE_THRESHOLD,
    LFS_SUFFIXES,
    Commit,
    File,
    Reply,
    Repo,
    now_iso,
    safetensors_info,
)
from supersede.demo.localhub.hub_routes import HubHandler
from supersede.demo.localhub.server import LocalServer

__all__ = ["LFS_SIZE_THRESHOLD", "LFS_SUFFIXES", "HubHandler", "HubServer"]

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_API_SUBPATHS = frozenset({"revision", "tree", "paths-info", "refs"})
_SORT_DEFAULTS: dict[str, Any] = {
    "downloads": 0, "likes": 0, "trendingScore": 0, "createdAt": "", "lastModified": "", "id": "",
}  # fmt: skip
_LIST_DEFAULT_KEYS = (
    "_id", "id", "likes", "trendingScore", "private", "downloads", "tags",
    "pipeline_tag", "library_name", "createdAt", "modelId",
)  # fmt: skip


def card_info(readme: bytes | None) -> dict[str, Any]:
    """What the Hub derives from a model card's YAML metadata: ``cardData``, and a
    ``license:<id>`` tag."""
    if not readme or not readme.startswith(b"---"):
        return {}
    import yaml

    head, marker, _ = readme[3:].partition(b"\n---")
    try:
        data = yaml.safe_load(head.decode("utf-8")) if marker else None
    except (yaml.YAMLError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    info: dict[str, Any] = {"cardData": data}
    if isinstance(data.get("license"), str):
        info["tags"] = [f"license:{data['license']}"]
    return info


class HubServer(LocalServer):
    """A local Hugging Face Hub on ``http://127.0.0.1:<free port>``, served from a daemon thread.

    Use it as a context manager (or call :meth:`start` / :meth:`close`). All methods are
    thread-safe.

    Attributes:
        url: Base URL to pass as ``endpoint=`` / ``HF_ENDPOINT`` (no trailing slash).
        errors: Tracebacks of unexpected exceptions raised while handling requests (answered 500).
    """

    def __init__(self, *, lfs_redirect: bool = True) -> None:
        """Create the server (not yet listening).

        Args:
            lfs_redirect: Serve LFS files through a 302 to a ``localhost`` "CDN" origin, like the
                real Hub. If ``False``, LFS files are served directly by ``/resolve``.
        """
        self.url = ""
        self._lfs_redirect = lfs_redirect
        self._cdn_url = ""
        self._lock = threading.RLock()
        self._repos: dict[str, Repo] = {}
        self._grants: dict[str, set[str]] = {}
        self._blobs: dict[str, bytes] = {}
        #: When set, ``POST /api/demo/publish`` (a JSON object) is answered with its result.
        self.publisher: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        super().__init__()

    handler_class = HubHandler

    def _bound(self, port: int) -> None:
        super()._bound(port)
        self._cdn_url = f"http://localhost:{port}"

    # ------------------------------------------------------------------ publishing

    def add_repo(
        self,
        repo_id: str,
        folder: pathlib.Path,
        *,
        revision: str = "main",
        sha: str | None = None,
        gated: bool = False,
        private: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """Publish all files under ``folder`` as a new commit of ``repo_id`` on branch ``revision``.

        File contents are read now (later changes to ``folder`` are not seen). Earlier commits stay
        downloadable by their sha, so callers can pin them after the branch moved.

        Args:
            repo_id: ``"namespace/name"`` (or a legacy ``"name"``).
            folder: Directory whose files (recursively) become the repo files.
            revision: Branch to create or move to the new commit.
            sha: Commit sha (40 lowercase hex chars). Defaults to a digest of the file contents.
            gated: Whether downloads need a token granted with :meth:`grant` (repo-level, last
                call wins).
            private: Whether the repo is invisible without a granted token (repo-level).
            extra: Merged (repo-level, accumulating over calls) into the model info JSON, e.g.
                ``tags``, ``cardData``, ``safetensors``, ``pipeline_tag``, ``createdAt``,
                ``downloads``, ``likes``, ``library_name``.

        Returns:
            The commit sha.
        """
        root = pathlib.Path(folder)
        if not root.is_dir():
            raise ValueError(f"Not a directory: {root}")
        files = {
            path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }
        built = {name: File.build(name, data) for name, data in files.items()}
        if sha is None:
            digest = hashlib.sha1()
            for name in sorted(built):
                digest.update(f"{name}\0{built[name].oid}\n".encode())
            sha = digest.hexdigest()
        elif not _COMMIT_RE.fullmatch(sha):
            raise ValueError(f"sha must be 40 lowercase hex characters, got {sha!r}")
        with self._lock:
            repo = self._repos.get(repo_id)
            if repo is None:
                repo = self._repos[repo_id] = Repo(repo_id=repo_id, created_at=now_iso())
            repo.commits[sha] = Commit(sha=sha, files=built, created=now_iso())
            repo.branches[revision] = sha
            repo.gated = gated
            repo.private = private
            counted = safetensors_info(files)
            if counted and "safetensors" not in (extra or {}):
                repo.extra["safetensors"] = counted
            repo.extra.update(extra or {})
            # What the Hub derives from the model card: its metadata (unless given in
            # ``extra``) and a licence tag added to the repo's tags.
            card = card_info(files.get("README.md"))
            if "cardData" in card:
                repo.extra.setdefault("cardData", card["cardData"])
            known = list(repo.extra.get("tags", []))
            repo.extra["tags"] = known + [t for t in card.get("tags", []) if t not in known]
            for entry in built.values():
                if entry.lfs:
                    self._blobs[entry.sha256] = entry.data
        return sha

    def grant(self, repo_id: str, token: str) -> None:
        """Let requests with ``Authorization: Bearer <token>`` access a gated or private repo."""
        with self._lock:
            self._grants.setdefault(repo_id, set()).add(token)

    # ------------------------------------------------------------------ used by the handler

    def _token_granted(self, repo_id: str, authorization: str | None) -> bool:
        if not authorization or not authorization.lower().startswith("bearer "):
            return False
        with self._lock:
            return authorization[7:].strip() in self._grants.get(repo_id, set())

    def _find_repo(self, segments: list[str]) -> tuple[Repo | None, str, list[str]]:
        """Split ``segments`` into a repo id (1 or 2 segments) and the rest."""
        with self._lock:
            if len(segments) >= 2 and "/".join(segments[:2]) in self._repos:
                repo_id = "/".join(segments[:2])
                return self._repos[repo_id], repo_id, segments[2:]
            if segments and segments[0] in self._repos:
                return self._repos[segments[0]], segments[0], segments[1:]
        if len(segments) >= 2 and segments[1] not in _API_SUBPATHS | {"resolve"}:
            return None, "/".join(segments[:2]), segments[2:]
        return None, segments[0] if segments else "", segments[1:]

    def _check_visible(self, repo: Repo | None, repo_id: str, auth: str | None) -> Repo:
        if repo is None:
            raise Reply(404, "Repository not found", error_code="RepoNotFound")
        if repo.private and not self._token_granted(repo_id, auth):
            raise Reply(401, "Repository not found", error_code="RepoNotFound")
        return repo

    def _resolve(self, repo: Repo, revision: str) -> Commit:
        with self._lock:
            commit = repo.resolve(revision)
        if commit is None:
            raise Reply(404, f"Invalid rev id: {revision}", error_code="RevisionNotFound")
        return commit

    def _list_models(self, query: dict[str, list[str]], auth: str | None) -> list[dict[str, Any]]:
        with self._lock:
            repos = list(self._repos.values())
        one = {key: values[-1] for key, values in query.items()}
        items: list[dict[str, Any]] = []
        for repo in repos:
            if repo.private and not self._token_granted(repo.repo_id, auth):
                continue
            with self._lock:
                commit = repo.commits[repo.branches[repo.default_branch()]]
            info = repo.info(commit, blobs=False)
            if "author" in one and info["author"] != one["author"]:
                continue
            if "search" in one and one["search"].lower() not in repo.repo_id.lower():
                continue
            if "pipeline_tag" in one and info.get("pipeline_tag") != one["pipeline_tag"]:
                continue
            if "gated" in one and bool(info["gated"]) != (one["gated"].lower() == "true"):
                continue
            labels = {*(info.get("tags") or []), info.get("library_name"), info.get("pipeline_tag")}
            if not all(tag in labels for tag in query.get("filter", [])):
                continue
            items.append(info)
        sort = one.get("sort")
        if sort in _SORT_DEFAULTS:
            default = _SORT_DEFAULTS[sort]
            reverse = one.get("direction", "-1") != "1" and sort != "id"
            items.sort(key=lambda item: (item.get(sort) or default, item["id"]), reverse=reverse)
        if "limit" in one:
            items = items[: int(one["limit"])]
        expand = query.get("expand")
        full = one.get("full", "").lower() == "true"
        out: list[dict[str, Any]] = []
        for info in items:
            if expand:
                keys = {"_id", "id", *expand}
            elif full:
                keys = set(info)
            else:
                keys = set(_LIST_DEFAULT_KEYS)
                keys |= {"cardData"} if one.get("cardData", "").lower() == "true" else set()
                keys |= {"config"} if one.get("config", "").lower() == "true" else set()
            out.append({key: value for key, value in info.items() if key in keys})
        return out
