"""A tiny, in-process fake of the Hugging Face Hub HTTP API for tests.

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
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import re
import threading
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from supersede.demo.localhub.server import LocalServer

__all__ = ["LFS_SIZE_THRESHOLD", "LFS_SUFFIXES", "HubServer"]

#: Suffixes stored with Git LFS (as in the Hub's default ``.gitattributes``).
LFS_SUFFIXES: frozenset[str] = frozenset(
    {
        ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".gguf",
        ".npy", ".npz", ".pkl", ".pickle", ".zip", ".gz", ".tar", ".arrow", ".parquet",
        ".model", ".ot", ".tflite", ".joblib",
    }
)  # fmt: skip
#: Files at least this large are stored with Git LFS whatever their suffix.
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_CDN_PREFIX = "cdn-lfs"
_API_SUBPATHS = frozenset({"revision", "tree", "paths-info", "refs"})
_SORT_DEFAULTS: dict[str, Any] = {
    "downloads": 0, "likes": 0, "trendingScore": 0, "createdAt": "", "lastModified": "", "id": "",
}  # fmt: skip
_LIST_DEFAULT_KEYS = (
    "_id", "id", "likes", "trendingScore", "private", "downloads", "tags",
    "pipeline_tag", "library_name", "createdAt", "modelId",
)  # fmt: skip


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + "000Z"


def _safetensors_info(files: dict[str, bytes]) -> dict[str, Any] | None:
    """Parameter counts by dtype from the safetensors headers, as the Hub reports them."""
    by_dtype: dict[str, int] = {}
    for name, data in files.items():
        if not name.endswith(".safetensors") or len(data) < 8:
            continue
        size = int.from_bytes(data[:8], "little")
        try:
            header = json.loads(data[8 : 8 + size])
        except ValueError:
            continue  # a corrupt header: the Hub shows no count either
        for key, tensor in header.items():
            if key == "__metadata__":
                continue
            count = 1
            for dim in tensor.get("shape", []):
                count *= dim
            by_dtype[tensor["dtype"]] = by_dtype.get(tensor["dtype"], 0) + count
    if not by_dtype:
        return None
    return {"parameters": by_dtype, "total": sum(by_dtype.values())}


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class _File:
    path: str
    data: bytes
    oid: str  # git blob sha1 (of the LFS pointer for LFS files)
    sha256: str
    lfs: bool
    pointer_size: int

    @classmethod
    def build(cls, path: str, data: bytes) -> _File:
        sha256 = hashlib.sha256(data).hexdigest()
        suffix = pathlib.PurePosixPath(path).suffix.lower()
        lfs = suffix in LFS_SUFFIXES or len(data) >= LFS_SIZE_THRESHOLD
        if lfs:
            pointer = (
                f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\n"
                f"size {len(data)}\n"
            ).encode()
            return cls(path, data, _git_blob_oid(pointer), sha256, True, len(pointer))
        return cls(path, data, _git_blob_oid(data), sha256, False, 0)

    def tree_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "type": "file",
            "oid": self.oid,
            "size": len(self.data),
            "path": self.path,
        }
        if self.lfs:
            entry["lfs"] = {
                "oid": self.sha256,
                "size": len(self.data),
                "pointerSize": self.pointer_size,
            }
        return entry

    def sibling(self, *, blobs: bool) -> dict[str, Any]:
        sibling: dict[str, Any] = {"rfilename": self.path}
        if blobs:
            sibling["size"] = len(self.data)
            sibling["blobId"] = self.oid
            if self.lfs:
                sibling["lfs"] = {
                    "sha256": self.sha256,
                    "size": len(self.data),
                    "pointerSize": self.pointer_size,
                }
        return sibling


@dataclass
class _Commit:
    sha: str
    files: dict[str, _File]
    created: str


@dataclass
class _Repo:
    repo_id: str
    created_at: str
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    gated: bool = False
    private: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def default_branch(self) -> str:
        return "main" if "main" in self.branches else next(iter(self.branches))

    def resolve(self, revision: str) -> _Commit | None:
        sha = self.branches.get(revision, revision)
        return self.commits.get(sha)


@dataclass
class _Fault:
    path_substring: str
    status: int
    headers: dict[str, str]
    remaining: int
    hang_s: float = 0.0


class _Reply(Exception):
    """Raised inside a route to send a (usually error) response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        if error_code is not None:
            self.headers["X-Error-Code"] = error_code
            self.headers["X-Error-Message"] = message


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: HubServer) -> None:
        self.hub = hub
        super().__init__(("127.0.0.1", 0), _Handler)


class HubServer(LocalServer):
    """Fake Hugging Face Hub on ``http://127.0.0.1:<free port>``, served from a daemon thread.

    Use it as a context manager (or call :meth:`start` / :meth:`close`). All methods are
    thread-safe.

    Attributes:
        url: Base URL to pass as ``endpoint=`` / ``HF_ENDPOINT`` (no trailing slash).
        requests: ``(method, path_with_query)`` of every request received, in arrival order.
        errors: Tracebacks of unexpected exceptions raised while handling requests (answered 500).
    """

    def __init__(self, *, lfs_redirect: bool = True) -> None:
        """Create the server (not yet listening).

        Args:
            lfs_redirect: Serve LFS files through a 302 to a ``localhost`` "CDN" origin, like the
                real Hub. If ``False``, LFS files are served directly by ``/resolve``.
        """
        self.url = ""
        self.requests: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self._lfs_redirect = lfs_redirect
        self._cdn_url = ""
        self._lock = threading.RLock()
        self._repos: dict[str, _Repo] = {}
        self._grants: dict[str, set[str]] = {}
        self._faults: list[_Fault] = []
        self._blobs: dict[str, bytes] = {}
        self._closing = threading.Event()
        super().__init__()

    # ------------------------------------------------------------------ lifecycle

    def _bind(self) -> _Server:
        server = _Server(self)
        port = server.server_address[1]
        self.url = f"http://127.0.0.1:{port}"
        self._cdn_url = f"http://localhost:{port}"
        return server

    # ------------------------------------------------------------------ test controls

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
        built = {name: _File.build(name, data) for name, data in files.items()}
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
                repo = self._repos[repo_id] = _Repo(repo_id=repo_id, created_at=_now_iso())
            repo.commits[sha] = _Commit(sha=sha, files=built, created=_now_iso())
            repo.branches[revision] = sha
            repo.gated = gated
            repo.private = private
            counted = _safetensors_info(files)
            if counted and "safetensors" not in (extra or {}):
                repo.extra["safetensors"] = counted
            repo.extra.update(extra or {})
            for entry in built.values():
                if entry.lfs:
                    self._blobs[entry.sha256] = entry.data
        return sha

    def grant(self, repo_id: str, token: str) -> None:
        """Let requests with ``Authorization: Bearer <token>`` access a gated or private repo."""
        with self._lock:
            self._grants.setdefault(repo_id, set()).add(token)

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

    def close(self) -> None:
        self._closing.set()
        super().close()

    # ------------------------------------------------------------------ internals used by handler

    def _record(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            self.requests.append((method, path))
            for fault in self._faults:
                if fault.remaining > 0 and fault.path_substring in path:
                    fault.remaining -= 1
                    return fault
            return None

    def _token_granted(self, repo_id: str, authorization: str | None) -> bool:
        if not authorization or not authorization.lower().startswith("bearer "):
            return False
        with self._lock:
            return authorization[7:].strip() in self._grants.get(repo_id, set())

    def _find_repo(self, segments: list[str]) -> tuple[_Repo | None, str, list[str]]:
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

    def _check_visible(self, repo: _Repo | None, repo_id: str, auth: str | None) -> _Repo:
        if repo is None:
            raise _Reply(404, "Repository not found", error_code="RepoNotFound")
        if repo.private and not self._token_granted(repo_id, auth):
            raise _Reply(401, "Repository not found", error_code="RepoNotFound")
        return repo

    def _resolve(self, repo: _Repo, revision: str) -> _Commit:
        with self._lock:
            commit = repo.resolve(revision)
        if commit is None:
            raise _Reply(404, f"Invalid rev id: {revision}", error_code="RevisionNotFound")
        return commit

    def _model_info(self, repo: _Repo, commit: _Commit, *, blobs: bool) -> dict[str, Any]:
        author, _, _ = repo.repo_id.rpartition("/")
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": author or None,
            "sha": commit.sha,
            "lastModified": commit.created,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": "auto" if repo.gated else False,
            "disabled": False,
            "downloads": 0,
            "downloadsAllTime": 0,
            "likes": 0,
            "trendingScore": 0,
            "tags": [],
            "library_name": None,
            "spaces": [],
            "usedStorage": sum(len(f.data) for f in commit.files.values()),
        }
        info.update(json.loads(json.dumps(repo.extra)))  # deep copy
        info["siblings"] = [f.sibling(blobs=blobs) for f in commit.files.values()]
        return info

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
            info = self._model_info(repo, commit, blobs=False)
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

    def _tree(self, commit: _Commit, prefix: str, *, recursive: bool) -> list[dict[str, Any]]:
        base = prefix.strip("/")
        start = f"{base}/" if base else ""
        if base and base in commit.files:
            return [commit.files[base].tree_entry()]
        entries: dict[str, dict[str, Any]] = {}
        for name in sorted(commit.files):
            if not name.startswith(start):
                continue
            parts = name[len(start) :].split("/")
            depth = len(parts) if recursive else 1
            for i in range(1, min(depth, len(parts) - 1) + 1):
                folder = start + "/".join(parts[:i])
                entries.setdefault(folder, self._folder_entry(commit, folder))
            if recursive or len(parts) == 1:
                entries[name] = commit.files[name].tree_entry()
        if base and not entries:
            raise _Reply(
                404,
                f"Entry not found: {base}",
                error_code="EntryNotFound",
                headers={"X-Repo-Commit": commit.sha},
            )
        return [entries[key] for key in sorted(entries)]

    @staticmethod
    def _folder_entry(commit: _Commit, folder: str) -> dict[str, Any]:
        oid = hashlib.sha1(f"{commit.sha}:{folder}".encode()).hexdigest()
        return {"type": "directory", "oid": oid, "size": 0, "path": folder}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    server_version = "FakeHub/1.0"
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    # ------------------------------------------------------------------ plumbing

    def _dispatch(self) -> None:
        hub = self.server.hub
        fault = hub._record(self.command, self.path)
        try:
            if fault is not None and fault.hang_s:
                hub._closing.wait(fault.hang_s)
                self.close_connection = True
                return
            if fault is not None:
                message = f"Injected failure {fault.status}"
                raise _Reply(fault.status, message, headers=fault.headers)
            self._route()
        except _Reply as reply:
            self._send_json(reply.status, {"error": reply.message}, reply.headers)
        except Exception:
            with hub._lock:
                hub.errors.append(traceback.format_exc())
            self._send_json(500, {"error": "Internal error in fake hub"})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self._send(status, body, {"Content-Type": "application/json", **(headers or {})})

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # ------------------------------------------------------------------ routing

    def _route(self) -> None:
        hub = self.server.hub
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        segments = [unquote(s) for s in split.path.split("/")[1:]]
        auth = self.headers.get("Authorization")

        if segments[:1] == [_CDN_PREFIX]:
            return self._serve_cdn(segments[1:])
        if segments[:2] == ["api", "models"]:
            if len(segments) == 2 or segments[2:] == [""]:
                if self.command != "GET":
                    raise _Reply(405, "Method not allowed")
                return self._send_json(200, hub._list_models(query, auth))
            repo, repo_id, rest = hub._find_repo(segments[2:])
            return self._route_api(repo, repo_id, rest, query, auth)
        if segments == ["api", "agent-harnesses"]:
            # Fetched once per process by the client's user-agent builder (unless telemetry is off).
            return self._send_json(200, {"standardEnvVars": [], "harnesses": {}})
        if segments[:1] == ["api"]:
            raise _Reply(404, f"Route not implemented by fake hub: {split.path}")
        repo, repo_id, rest = hub._find_repo(segments)
        if rest[:1] == ["resolve"] and len(rest) >= 3 and self.command in ("GET", "HEAD"):
            return self._serve_resolve(repo, repo_id, rest[1], "/".join(rest[2:]), auth)
        raise _Reply(404, f"Route not implemented by fake hub: {split.path}")

    def _route_api(
        self,
        repo: _Repo | None,
        repo_id: str,
        rest: list[str],
        query: dict[str, list[str]],
        auth: str | None,
    ) -> None:
        hub = self.server.hub
        visible = hub._check_visible(repo, repo_id, auth)
        if self.command == "GET" and (not rest or (rest[0] == "revision" and len(rest) == 2)):
            with hub._lock:
                revision = rest[1] if rest else visible.default_branch()
            commit = hub._resolve(visible, revision)
            blobs = query.get("blobs", ["false"])[-1].lower() == "true"
            info = hub._model_info(visible, commit, blobs=blobs)
            if "expand" in query:
                keys = {"_id", "id", *query["expand"]}
                info = {key: value for key, value in info.items() if key in keys}
            return self._send_json(200, info)
        if self.command == "GET" and rest[:1] == ["tree"] and len(rest) >= 2:
            commit = hub._resolve(visible, rest[1])
            recursive = query.get("recursive", ["false"])[-1].lower() == "true"
            return self._send_json(200, hub._tree(commit, "/".join(rest[2:]), recursive=recursive))
        if self.command == "POST" and rest[:1] == ["paths-info"] and len(rest) == 2:
            commit = hub._resolve(visible, rest[1])
            form = parse_qs(self._read_body().decode(), keep_blank_values=True)
            out: list[dict[str, Any]] = []
            for path in form.get("paths", []):
                path = path.strip("/")
                if path in commit.files:
                    out.append(commit.files[path].tree_entry())
                elif any(name.startswith(path + "/") for name in commit.files):
                    out.append(hub._folder_entry(commit, path))
            return self._send_json(200, out)
        if self.command == "GET" and rest == ["refs"]:
            with hub._lock:
                branches = [
                    {"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha}
                    for name, sha in visible.branches.items()
                ]
            payload = {"branches": branches, "converts": [], "tags": [], "pullRequests": []}
            return self._send_json(200, payload)
        raise _Reply(404, f"Route not implemented by fake hub: {self.path}")

    # ------------------------------------------------------------------ file serving

    def _serve_resolve(
        self, repo: _Repo | None, repo_id: str, revision: str, filename: str, auth: str | None
    ) -> None:
        hub = self.server.hub
        visible = hub._check_visible(repo, repo_id, auth)
        commit = hub._resolve(visible, revision)
        if visible.gated and not hub._token_granted(repo_id, auth):
            if auth:
                message = (
                    f"Access to model {repo_id} is restricted and you are not in the authorized "
                    f"list. Visit {hub.url}/{repo_id} to ask for access."
                )
                raise _Reply(403, message, error_code="GatedRepo")
            message = (
                f"Access to model {repo_id} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in."
            )
            raise _Reply(401, message, error_code="GatedRepo")
        entry = commit.files.get(filename)
        if entry is None:
            raise _Reply(
                404,
                "Entry not found",
                error_code="EntryNotFound",
                headers={"X-Repo-Commit": commit.sha},
            )
        headers = {"X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            headers["X-Linked-Size"] = str(len(entry.data))
            headers["ETag"] = f'"{entry.oid}"'
            if hub._lfs_redirect:
                headers["Location"] = (
                    f"{hub._cdn_url}/{_CDN_PREFIX}/{quote(repo_id)}/{entry.sha256}/"
                    f"{quote(filename)}"
                )
                return self._send(302, b"", headers)
            headers["ETag"] = f'"{entry.sha256}"'
        else:
            headers["ETag"] = f'"{entry.oid}"'
        self._send_bytes(entry.data, headers)

    def _serve_cdn(self, rest: list[str]) -> None:
        hub = self.server.hub
        sha256 = next((part for part in rest if re.fullmatch(r"[0-9a-f]{64}", part)), None)
        with hub._lock:
            data = hub._blobs.get(sha256 or "")
        if data is None:
            raise _Reply(404, "Blob not found")
        self._send_bytes(data, {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"})

    def _send_bytes(self, data: bytes, headers: dict[str, str]) -> None:
        headers = {"Content-Type": "application/octet-stream", **headers}
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range") or "")
        if match is None or not any(match.groups()):
            return self._send(200, data, headers)
        first, last = match.groups()
        if first:
            start, end = int(first), int(last) if last else len(data) - 1
        else:
            start, end = max(len(data) - int(last), 0), len(data) - 1
        end = min(end, len(data) - 1)
        if start >= len(data) or start > end:
            headers["Content-Range"] = f"bytes */{len(data)}"
            return self._send(416, b"", headers)
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self._send(206, data[start : end + 1], headers)
