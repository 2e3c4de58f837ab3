"""The local Hub's routes: how each request is answered (see :mod:`.hub` for the list)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, cast
from urllib.parse import parse_qs, quote, unquote, urlsplit

from supersede.demo.localhub.hub_repos import Reply, Repo
from supersede.demo.localhub.server import LocalHandler

if TYPE_CHECKING:
    from supersede.demo.localhub.hub import HubServer

__all__ = ["CDN_PREFIX", "HubHandler"]

#: First path segment of the "CDN" URLs LFS downloads are redirected to.
CDN_PREFIX = "cdn-lfs"


class HubHandler(LocalHandler):
    """Answers one request of the local Hub. A subclass may override :meth:`answer` to answer
    some requests otherwise (an injected failure) before the routes do."""

    protocol_version = "HTTP/1.0"
    server_version = "LocalHub/1.0"
    timeout = 60

    @property
    def hub(self) -> HubServer:
        """The server this request reached."""
        return cast("HubServer", self.server.owner)

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        try:
            self.answer()
        except Reply as reply:
            self.send_json(reply.status, {"error": reply.message}, reply.headers)
        except Exception:
            self.hub.record_error()
            self.send_json(500, {"error": "Internal error in the local hub"})

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # ------------------------------------------------------------------ routing

    def answer(self) -> None:
        """Route the request; a :class:`Reply` raised on the way is the answer."""
        hub = self.hub
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        segments = [unquote(s) for s in split.path.split("/")[1:]]
        auth = self.headers.get("Authorization")

        if segments[:1] == [CDN_PREFIX]:
            return self._serve_cdn(segments[1:])
        if segments[:2] == ["api", "models"]:
            if len(segments) == 2 or segments[2:] == [""]:
                if self.command != "GET":
                    raise Reply(405, "Method not allowed")
                return self.send_json(200, hub._list_models(query, auth))
            repo, repo_id, rest = hub._find_repo(segments[2:])
            return self._route_api(repo, repo_id, rest, query, auth)
        if segments == ["api", "demo", "publish"] and hub.publisher is not None:
            # `supersede demo --serve` publishes another release on request.
            if self.command != "POST":
                raise Reply(405, "Method not allowed")
            try:
                request = json.loads(self._read_body() or b"{}")
            except ValueError:
                raise Reply(400, "the body is not JSON") from None
            if not isinstance(request, dict):
                raise Reply(400, "the body is not a JSON object")
            return self.send_json(200, hub.publisher(request))
        if segments == ["api", "agent-harnesses"]:
            # Fetched once per process by the client's user-agent builder (unless telemetry is off).
            return self.send_json(200, {"standardEnvVars": [], "harnesses": {}})
        if segments[:1] == ["api"]:
            raise Reply(404, f"Route not implemented by the local hub: {split.path}")
        repo, repo_id, rest = hub._find_repo(segments)
        if rest[:1] == ["resolve"] and len(rest) >= 3 and self.command in ("GET", "HEAD"):
            return self._serve_resolve(repo, repo_id, rest[1], "/".join(rest[2:]), auth)
        raise Reply(404, f"Route not implemented by the local hub: {split.path}")

    def _route_api(
        self,
        repo: Repo | None,
        repo_id: str,
        rest: list[str],
        query: dict[str, list[str]],
        auth: str | None,
    ) -> None:
        hub = self.hub
        visible = hub._check_visible(repo, repo_id, auth)
        if self.command == "GET" and (not rest or (rest[0] == "revision" and len(rest) == 2)):
            with hub._lock:
                revision = rest[1] if rest else visible.default_branch()
            commit = hub._resolve(visible, revision)
            blobs = query.get("blobs", ["false"])[-1].lower() == "true"
            info = visible.info(commit, blobs=blobs)
            if "expand" in query:
                keys = {"_id", "id", *query["expand"]}
                info = {key: value for key, value in info.items() if key in keys}
            return self.send_json(200, info)
        if self.command == "GET" and rest[:1] == ["tree"] and len(rest) >= 2:
            commit = hub._resolve(visible, rest[1])
            recursive = query.get("recursive", ["false"])[-1].lower() == "true"
            return self.send_json(200, commit.tree("/".join(rest[2:]), recursive=recursive))
        if self.command == "POST" and rest[:1] == ["paths-info"] and len(rest) == 2:
            commit = hub._resolve(visible, rest[1])
            form = parse_qs(self._read_body().decode(), keep_blank_values=True)
            return self.send_json(200, commit.paths_info(form.get("paths", [])))
        if self.command == "GET" and rest == ["refs"]:
            with hub._lock:
                branches = [
                    {"name": name, "ref": f"refs/heads/{name}", "targetCommit": sha}
                    for name, sha in visible.branches.items()
                ]
            payload = {"branches": branches, "converts": [], "tags": [], "pullRequests": []}
            return self.send_json(200, payload)
        raise Reply(404, f"Route not implemented by the local hub: {self.path}")

    # ------------------------------------------------------------------ file serving

    def _serve_resolve(
        self, repo: Repo | None, repo_id: str, revision: str, filename: str, auth: str | None
    ) -> None:
        hub = self.hub
        visible = hub._check_visible(repo, repo_id, auth)
        commit = hub._resolve(visible, revision)
        if visible.gated and not hub._token_granted(repo_id, auth):
            if auth:
                message = (
                    f"Access to model {repo_id} is restricted and you are not in the authorized "
                    f"list. Visit {hub.url}/{repo_id} to ask for access."
                )
                raise Reply(403, message, error_code="GatedRepo")
            message = (
                f"Access to model {repo_id} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in."
            )
            raise Reply(401, message, error_code="GatedRepo")
        entry = commit.files.get(filename)
        if entry is None:
            raise Reply(
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
                    f"{hub._cdn_url}/{CDN_PREFIX}/{quote(repo_id)}/{entry.sha256}/{quote(filename)}"
                )
                return self.send_body(302, b"", headers)
            headers["ETag"] = f'"{entry.sha256}"'
        else:
            headers["ETag"] = f'"{entry.oid}"'
        self._send_bytes(entry.data, headers)

    def _serve_cdn(self, rest: list[str]) -> None:
        hub = self.hub
        sha256 = next((part for part in rest if re.fullmatch(r"[0-9a-f]{64}", part)), None)
        with hub._lock:
            data = hub._blobs.get(sha256 or "")
        if data is None:
            raise Reply(404, "Blob not found")
        self._send_bytes(data, {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"})

    def _send_bytes(self, data: bytes, headers: dict[str, str]) -> None:
        headers = {"Content-Type": "application/octet-stream", **headers}
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range") or "")
        if match is None or not any(match.groups()):
            return self.send_body(200, data, headers)
        first, last = match.groups()
        if first:
            start, end = int(first), int(last) if last else len(data) - 1
        else:
            start, end = max(len(data) - int(last), 0), len(data) - 1
        end = min(end, len(data) - 1)
        if start >= len(data) or start > end:
            headers["Content-Range"] = f"bytes */{len(data)}"
            return self.send_body(416, b"", headers)
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self.send_body(206, data[start : end + 1], headers)
