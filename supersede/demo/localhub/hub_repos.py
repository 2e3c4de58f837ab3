"""The local Hub's model repos: files (regular or Git LFS), commits, and the JSON the Hub's API
shows of them (model info, tree entries); :class:`Reply` is how a route answers an error."""

from __future__ import annotations

import hashlib
import json
import pathlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["LFS_SIZE_THRESHOLD", "LFS_SUFFIXES", "Commit", "File", "Reply", "Repo"]

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


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + "000Z"


def safetensors_info(files: dict[str, bytes]) -> dict[str, Any] | None:
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
class File:
    """One file of a commit, with the ids the Hub reports for it."""

    path: str
    data: bytes
    oid: str  # git blob sha1 (of the LFS pointer for LFS files)
    sha256: str
    lfs: bool
    pointer_size: int

    @classmethod
    def build(cls, path: str, data: bytes) -> File:
        """The file as the Hub stores it: with Git LFS by suffix or size."""
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
        """The file's entry in ``/tree`` and ``/paths-info`` answers."""
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
        """The file in the model info's ``siblings`` (sizes and ids only with ``blobs``)."""
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
class Commit:
    """A commit: its files by path."""

    sha: str
    files: dict[str, File]
    created: str

    def tree(self, prefix: str, *, recursive: bool) -> list[dict[str, Any]]:
        """The ``/tree`` listing under ``prefix`` (one level, or all with ``recursive``)."""
        base = prefix.strip("/")
        start = f"{base}/" if base else ""
        if base and base in self.files:
            return [self.files[base].tree_entry()]
        entries: dict[str, dict[str, Any]] = {}
        for name in sorted(self.files):
            if not name.startswith(start):
                continue
            parts = name[len(start) :].split("/")
            depth = len(parts) if recursive else 1
            for i in range(1, min(depth, len(parts) - 1) + 1):
                folder = start + "/".join(parts[:i])
                entries.setdefault(folder, self.folder_entry(folder))
            if recursive or len(parts) == 1:
                entries[name] = self.files[name].tree_entry()
        if base and not entries:
            raise Reply(
                404,
                f"Entry not found: {base}",
                error_code="EntryNotFound",
                headers={"X-Repo-Commit": self.sha},
            )
        return [entries[key] for key in sorted(entries)]

    def paths_info(self, paths: list[str]) -> list[dict[str, Any]]:
        """The ``/paths-info`` answer: the entries of those ``paths`` that exist."""
        out: list[dict[str, Any]] = []
        for path in paths:
            path = path.strip("/")
            if path in self.files:
                out.append(self.files[path].tree_entry())
            elif any(name.startswith(path + "/") for name in self.files):
                out.append(self.folder_entry(path))
        return out

    def folder_entry(self, folder: str) -> dict[str, Any]:
        """A folder's tree entry (its oid is made up, stable per commit)."""
        oid = hashlib.sha1(f"{self.sha}:{folder}".encode()).hexdigest()
        return {"type": "directory", "oid": oid, "size": 0, "path": folder}


@dataclass
class Repo:
    """A model repo: its commits, its branches and the metadata shown in its model info."""

    repo_id: str
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    gated: bool = False
    private: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def default_branch(self) -> str:
        """``main`` when there is one, else the first branch made."""
        return "main" if "main" in self.branches else next(iter(self.branches))

    def resolve(self, revision: str) -> Commit | None:
        """The commit a branch name or a commit sha names (``None``: neither)."""
        sha = self.branches.get(revision, revision)
        return self.commits.get(sha)

    def info(self, commit: Commit, *, blobs: bool) -> dict[str, Any]:
        """The model info JSON at ``commit``."""
        author, _, _ = self.repo_id.rpartition("/")
        info: dict[str, Any] = {
            "_id": hashlib.sha1(self.repo_id.encode()).hexdigest()[:24],
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": author or None,
            "sha": commit.sha,
            "lastModified": commit.created,
            "createdAt": self.created_at,
            "private": self.private,
            "gated": "auto" if self.gated else False,
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
        info.update(json.loads(json.dumps(self.extra)))  # deep copy
        info["siblings"] = [f.sibling(blobs=blobs) for f in commit.files.values()]
        return info


class Reply(Exception):
    """Raised inside a route to send a (usually error) response: ``X-Error-Code`` and
    ``X-Error-Message`` carry ``error_code``, which the Hub client maps to its exceptions."""

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
