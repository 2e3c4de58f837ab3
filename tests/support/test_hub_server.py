"""The fake Hub in ``hub_server.py`` works with the real ``huggingface_hub`` client."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.support.hub_server import HubServer

REPO = "acme/tiny-model"
FILES_V1: dict[str, bytes] = {
    "config.json": json.dumps({"model_type": "llama", "hidden_size": 8}).encode(),
    "model.safetensors": b"\x00\x01safetensors-v1" * 64,
    "pytorch_model.bin": b"pickle-bytes-never-download" * 8,
    "README.md": b"---\nlicense: mit\n---\n# tiny\n",
    "sub/tokenizer_config.json": b'{"bos_token": "<s>"}',
    "sub/vocab.txt": b"a\nb\nc\n",
}


def _write(folder: pathlib.Path, files: dict[str, bytes]) -> pathlib.Path:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


def _snapshot_files(root: str | pathlib.Path) -> dict[str, bytes]:
    base = pathlib.Path(root)
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}


# The environment isolation and the `hub` fixture come from tests/conftest.py.


@pytest.fixture
def v1_folder(tmp_path: pathlib.Path) -> pathlib.Path:
    return _write(tmp_path / "src-v1", FILES_V1)


def test_url_and_lifecycle() -> None:
    with HubServer() as hub:
        assert hub.url.startswith("http://127.0.0.1:")
        url = hub.url
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/api/models", timeout=2)


def test_model_info_returns_sha_and_siblings(hub: HubServer, v1_folder: pathlib.Path) -> None:
    sha = hub.add_repo(
        REPO,
        v1_folder,
        extra={
            "tags": ["text-generation", "llama"],
            "pipeline_tag": "text-generation",
            "library_name": "transformers",
            "createdAt": "2025-01-02T03:04:05.000Z",
            "safetensors": {"parameters": {"BF16": 1234}, "total": 1234},
            "cardData": {"license": "mit", "base_model": "acme/base"},
        },
    )
    assert len(sha) == 40
    assert hub.add_repo(REPO, v1_folder) == sha  # deterministic, content-addressed default

    api = HfApi(endpoint=hub.url, token=False)
    info = api.model_info(REPO)
    assert info.id == REPO
    assert info.sha == sha
    assert sorted(s.rfilename for s in info.siblings or []) == sorted(FILES_V1)
    assert info.private is False
    assert info.gated is False
    assert info.disabled is False
    assert info.pipeline_tag == "text-generation"
    assert info.library_name == "transformers"
    # The card's licence is added to the tags, as the Hub does.
    assert info.tags == ["text-generation", "llama", "license:mit"]
    assert info.created_at is not None and info.created_at.year == 2025
    assert info.last_modified is not None
    assert info.safetensors is not None and info.safetensors.total == 1234
    assert info.card_data is not None and info.card_data.license == "mit"

    detailed = api.model_info(REPO, revision=sha, files_metadata=True)
    by_name = {s.rfilename: s for s in detailed.siblings or []}
    assert by_name["config.json"].size == len(FILES_V1["config.json"])
    assert by_name["config.json"].blob_id and by_name["config.json"].lfs is None
    lfs = by_name["model.safetensors"].lfs
    assert lfs is not None and lfs.size == len(FILES_V1["model.safetensors"])

    expanded = api.model_info(REPO, expand=["sha", "tags"])
    assert expanded.sha == sha and expanded.tags == ["text-generation", "llama", "license:mit"]
    assert expanded.siblings is None and expanded.downloads is None

    assert ("GET", f"/api/models/{REPO}/revision/{sha}?blobs=true") in hub.requests
    assert api.repo_info(REPO).sha == sha


def test_snapshot_download_only_fetches_allowed_files(
    hub: HubServer, v1_folder: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    sha = hub.add_repo(REPO, v1_folder)

    path = snapshot_download(
        REPO,
        revision=sha,
        endpoint=hub.url,
        cache_dir=tmp_path / "cache",
        allow_patterns=["*.json", "*.safetensors"],
        token=False,
    )

    allowed = {"config.json", "model.safetensors", "sub/tokenizer_config.json"}
    assert pathlib.Path(path).name == sha
    assert _snapshot_files(path) == {name: FILES_V1[name] for name in allowed}
    paths = [p for _, p in hub.requests]
    for skipped in ("pytorch_model.bin", "README.md", "vocab.txt"):
        assert not any(skipped in p for p in paths), (skipped, hub.requests)
    # Plain HTTP downloads: metadata via HEAD /resolve, LFS bytes via the "CDN", no Xet.
    assert ("HEAD", f"/{REPO}/resolve/{sha}/config.json") in hub.requests
    assert ("GET", f"/{REPO}/resolve/{sha}/config.json") in hub.requests
    assert any(
        m == "GET" and p.startswith(f"/cdn-lfs/{REPO}/") and p.endswith("/model.safetensors")
        for m, p in hub.requests
    )
    assert not any("xet" in p.lower() for p in paths)
    assert not any(p.startswith(f"/api/models/{REPO}/revision") for p in paths)  # sha: no lookup


def test_pinning_old_sha_after_main_moved(
    hub: HubServer, v1_folder: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    old = hub.add_repo(REPO, v1_folder)
    new_files = {"config.json": b'{"model_type": "llama", "hidden_size": 16}', "new.txt": b"v2"}
    new = hub.add_repo(REPO, _write(tmp_path / "src-v2", new_files))
    assert new != old

    api = HfApi(endpoint=hub.url, token=False)
    assert api.model_info(REPO).sha == new
    assert api.model_info(REPO, revision=old).sha == old
    assert sorted(api.list_repo_files(REPO)) == sorted(new_files)
    assert sorted(api.list_repo_files(REPO, revision=old)) == sorted(FILES_V1)
    refs = api.list_repo_refs(REPO)
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", new)]

    cache = tmp_path / "cache"
    old_path = snapshot_download(REPO, revision=old, endpoint=hub.url, cache_dir=cache, token=False)
    assert _snapshot_files(old_path) == FILES_V1
    main_path = snapshot_download(REPO, endpoint=hub.url, cache_dir=cache, token=False)
    assert pathlib.Path(main_path).name == new
    assert _snapshot_files(main_path) == new_files
    one = hf_hub_download(
        REPO, "config.json", revision=old, endpoint=hub.url, cache_dir=cache, token=False
    )
    assert pathlib.Path(one).read_bytes() == FILES_V1["config.json"]


def test_not_found_errors(hub: HubServer, v1_folder: pathlib.Path, tmp_path: pathlib.Path) -> None:
    hub.add_repo(REPO, v1_folder)
    api = HfApi(endpoint=hub.url, token=False)
    cache = tmp_path / "cache"

    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("acme/does-not-exist", endpoint=hub.url, cache_dir=cache, token=False)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(
            "acme/does-not-exist", "config.json", endpoint=hub.url, cache_dir=cache, token=False
        )
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(
            REPO, "config.json", revision="f" * 40, endpoint=hub.url, cache_dir=cache, token=False
        )
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.json", endpoint=hub.url, cache_dir=cache, token=False)
    assert api.file_exists(REPO, "config.json")
    assert not api.file_exists(REPO, "missing.json")
    assert not api.repo_exists("acme/does-not-exist")


def test_gated_repo(hub: HubServer, v1_folder: pathlib.Path, tmp_path: pathlib.Path) -> None:
    sha = hub.add_repo(REPO, v1_folder, gated=True)
    hub.grant(REPO, "hf_granted")
    cache = tmp_path / "cache"

    info = HfApi(endpoint=hub.url, token=False).model_info(REPO)
    assert info.gated == "auto" and info.sha == sha

    with pytest.raises(GatedRepoError):
        hf_hub_download(REPO, "config.json", endpoint=hub.url, cache_dir=cache, token=False)
    with pytest.raises(GatedRepoError):
        hf_hub_download(REPO, "config.json", endpoint=hub.url, cache_dir=cache, token="hf_nope")
    with pytest.raises(GatedRepoError):
        snapshot_download(REPO, endpoint=hub.url, cache_dir=cache, token=False)

    path = snapshot_download(
        REPO,
        endpoint=hub.url,
        cache_dir=cache,
        token="hf_granted",
        allow_patterns=["*.json", "*.safetensors"],
    )
    assert _snapshot_files(path)["model.safetensors"] == FILES_V1["model.safetensors"]


def test_private_repo(hub: HubServer, v1_folder: pathlib.Path) -> None:
    hub.add_repo(REPO, v1_folder, private=True)
    hub.grant(REPO, "hf_owner")
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.url, token=False).model_info(REPO)
    assert HfApi(endpoint=hub.url, token="hf_owner").model_info(REPO).private is True
    assert list(HfApi(endpoint=hub.url, token=False).list_models(author="acme")) == []
    assert [m.id for m in HfApi(endpoint=hub.url, token="hf_owner").list_models()] == [REPO]


def test_list_models(hub: HubServer, v1_folder: pathlib.Path) -> None:
    hub.add_repo("acme/small", v1_folder, extra={"downloads": 5, "tags": ["llama"]})
    hub.add_repo("acme/big", v1_folder, extra={"downloads": 50, "pipeline_tag": "text-generation"})
    hub.add_repo("other/model", v1_folder, extra={"downloads": 500})
    api = HfApi(endpoint=hub.url, token=False)

    models = list(
        api.list_models(author="acme", sort="downloads", expand=["createdAt", "sha", "downloads"])
    )
    assert [m.id for m in models] == ["acme/big", "acme/small"]
    assert [m.downloads for m in models] == [50, 5]
    assert all(m.sha and m.created_at for m in models)
    assert models[0].tags is None  # not expanded
    assert [m.id for m in api.list_models(filter="llama")] == ["acme/small"]
    assert [m.id for m in api.list_models(sort="downloads", limit=1)] == ["other/model"]
    assert [m.id for m in api.list_models(search="big")] == ["acme/big"]
    path = "/api/models?author=acme&sort=downloads&expand=createdAt&expand=sha&expand=downloads"
    assert ("GET", path) in hub.requests


def test_fail_next_injects_faults(
    hub: HubServer, v1_folder: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    sha = hub.add_repo(REPO, v1_folder)
    api = HfApi(endpoint=hub.url, token=False)

    hub.fail_next(f"/api/models/{REPO}", 429, {"Retry-After": "0"})
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.model_info(REPO)
    assert excinfo.value.response.status_code == 429
    assert api.model_info(REPO).sha == sha

    # The tree listing goes through the client's backoff: a transient 503 is retried.
    hub.fail_next("/tree/", 503, count=1)
    path = snapshot_download(
        REPO,
        revision=sha,
        endpoint=hub.url,
        cache_dir=tmp_path / "cache",
        allow_patterns=["config.json"],
        token=False,
    )
    assert _snapshot_files(path) == {"config.json": FILES_V1["config.json"]}
    assert sum("/tree/" in p for _, p in hub.requests) == 2


def test_paths_info_tree_and_ranges(hub: HubServer, v1_folder: pathlib.Path) -> None:
    sha = hub.add_repo(REPO, v1_folder)
    api = HfApi(endpoint=hub.url, token=False)

    infos = api.get_paths_info(REPO, ["config.json", "sub", "nope"], revision=sha)
    assert [(type(i).__name__, i.path) for i in infos] == [
        ("RepoFile", "config.json"),
        ("RepoFolder", "sub"),
    ]
    top = [e.path for e in api.list_repo_tree(REPO)]
    assert "sub" in top and "sub/vocab.txt" not in top
    assert sorted(e.path for e in api.list_repo_tree(REPO, "sub")) == [
        "sub/tokenizer_config.json",
        "sub/vocab.txt",
    ]
    assert all(
        getattr(e, "xet_hash", None) is None for e in api.list_repo_tree(REPO, recursive=True)
    )

    url = f"{hub.url}/{REPO}/resolve/{sha}/README.md"
    response = httpx.get(url, headers={"Range": "bytes=4-"})
    assert response.status_code == 206
    assert response.content == FILES_V1["README.md"][4:]
    head = httpx.head(f"{hub.url}/{REPO}/resolve/main/model.safetensors")
    assert head.status_code == 302
    assert head.headers["X-Linked-Size"] == str(len(FILES_V1["model.safetensors"]))
    assert head.headers["X-Repo-Commit"] == sha
    assert not any(k.lower().startswith("x-xet") for k in head.headers)


def test_lfs_served_directly_without_redirect(
    v1_folder: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    with HubServer(lfs_redirect=False) as hub:
        hub.add_repo(REPO, v1_folder)
        path = hf_hub_download(
            REPO, "model.safetensors", endpoint=hub.url, cache_dir=tmp_path, token=False
        )
        assert pathlib.Path(path).read_bytes() == FILES_V1["model.safetensors"]
        assert not any(p.startswith("/cdn-lfs") for _, p in hub.requests)


def test_hf_endpoint_env_var(v1_folder: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """``HF_ENDPOINT`` must be set before ``huggingface_hub`` is imported: use a fresh process."""
    with HubServer() as hub:
        sha = hub.add_repo(REPO, v1_folder)
        script = textwrap.dedent(
            f"""
            from huggingface_hub import HfApi, hf_hub_download, snapshot_download
            assert HfApi().model_info({REPO!r}).sha == {sha!r}
            path = hf_hub_download({REPO!r}, "model.safetensors")
            assert open(path, "rb").read() == {FILES_V1["model.safetensors"]!r}
            snapshot_download({REPO!r}, allow_patterns=["config.json"])
            print("ok")
            """
        )
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.url,
            "HF_HOME": str(tmp_path / "hf-home"),
            "HF_HUB_DISABLE_TELEMETRY": "0",
        }
        env.pop("HF_TOKEN", None)
        result = subprocess.run(
            [sys.executable, "-c", script],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "ok"
        assert ("HEAD", f"/{REPO}/resolve/main/model.safetensors") in hub.requests
        assert ("GET", "/api/agent-harnesses") in hub.requests  # telemetry on in the subprocess
