"""What a release can make a worker download and load, served by the local Hub with real models.

A candidate repo decides its own file listing, sizes, index and config. What must hold: nothing
over the cap is downloaded (refused before the first file request), only the top-level files a
model needs are requested, a full disk ends the job with its reason instead of a retry loop, the
cache is pruned least recently used first (never the snapshot in use or a fine-tune's), remote
code runs only for the pinned commit and never from another repo, an index cannot point the
loader at another snapshot's weights, and a decoy file cannot get an adapter's pickle loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import scan_cache_dir

from benchmarks.models import ModelResolver, content_hash, load_model
from config.settings import Settings, load_settings
from config.workers import WorkersSettings
from core.errors import (
    ConfigError,
    DiskFull,
    DownloadRefused,
    PickleWeightsRefused,
    RemoteCodeRefused,
)
from supersede.demo.zoo import Zoo
from tests.conftest import copy_model
from tests.faults.test_model_faults import FINETUNES, run_candidate
from tests.support.hub_server import HubServer
from tests.support.settings import build_settings
from workers.routing import route

GIB = 1024**3
SENTINEL_CODE = """
import pathlib
pathlib.Path({path!r}).write_text("remote code ran")
from transformers import LlamaForCausalLM as EvilModel
"""


def hub_settings(tmp_path: Path, hub: HubServer, **fields: Any) -> Settings:
    return build_settings(tmp_path, endpoint=hub, hub={"timeout_s": 10, **fields})


def resolver(tmp_path: Path, hub: HubServer, **fields: Any) -> ModelResolver:
    return ModelResolver(hub_settings(tmp_path, hub, **fields).hub)


def requested(hub: HubServer) -> list[str]:
    """The file names of every download request (``/resolve/<sha>/<name>``), in order."""
    return [path.split("/resolve/", 1)[1].split("/", 1)[1] for _, path in hub.requests
            if "/resolve/" in path]  # fmt: skip


def sharded(zoo: Zoo, folder: Path, *, point_to: str | None = None) -> Path:
    """The base model split into two shards with an index (each tensor mapped to ``point_to``
    instead, when given), plus a decoy shard the index does not name."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(zoo.base / "model.safetensors")
    copy_model(zoo.base, folder, drop=(".safetensors",))
    names = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": names[: len(names) // 2],
        "model-00002-of-00002.safetensors": names[len(names) // 2 :],
    }
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, folder / shard, metadata={"format": "pt"})
    save_file({"unused": tensors[names[0]]}, folder / "model-decoy.safetensors")
    weight_map = {key: point_to or shard for shard, keys in shards.items() for key in keys}
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def remote_code_repo(zoo: Zoo, folder: Path, sentinel: Path, auto_map: dict[str, Any]) -> Path:
    copy_model(
        zoo.base,
        folder,
        add={"modeling_evil.py": SENTINEL_CODE.format(path=str(sentinel)).encode()},
    )
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": auto_map}))
    return folder


# ---------------------------------------------------------------------------- the download cap


@pytest.mark.parametrize("cap", ["configured-maximum", "parameter-count"])
def test_listing_over_the_cap_is_refused_before_any_download(
    cap: str, zoo: Zoo, tmp_path: Path, hub: HubServer
) -> None:
    if cap == "configured-maximum":
        # The zoo model's files are a few hundred KiB: a 64 KiB maximum refuses them.
        hub.add_repo("acme/big", zoo.base)
        r = resolver(tmp_path, hub, max_download_gib=64 * 1024 / GIB)
    else:
        # The Hub reports 1,000 float32 parameters, but the listing holds 40 MiB more than that.
        folder = copy_model(zoo.base, tmp_path / "big", add={"tokenizer.model": bytes(40 << 20)})
        hub.add_repo(
            "acme/big", folder, extra={"safetensors": {"parameters": {"F32": 1000}, "total": 1000}}
        )
        r = resolver(tmp_path, hub)

    with pytest.raises(DownloadRefused, match=r"GiB cap") as refused:
        r.resolve("acme/big")

    assert "acme/big" in str(refused.value) and "hub.max_download_gib" in str(refused.value)
    assert requested(hub) == []  # the listing alone decided: no file was requested


def test_only_the_top_level_files_a_model_needs_are_requested(
    zoo: Zoo, tmp_path: Path, hub: HubServer
) -> None:
    needed = {p.name for p in zoo.base.iterdir()}
    folder = copy_model(
        zoo.base,
        tmp_path / "cluttered",
        add={"notes.txt": b"x" * 1000, "dataset_stats.json": b"{}", "README.md": b"# card"},
    )
    for nested in ("original/config.json", "checkpoints/model.safetensors", "extra/vocab.txt"):
        (folder / nested).parent.mkdir(exist_ok=True)
        (folder / nested).write_bytes(b"{}")
    hub.add_repo("acme/cluttered", folder)

    resolved = resolver(tmp_path, hub).resolve("acme/cluttered")

    assert set(requested(hub)) <= needed
    assert {"config.json", "model.safetensors"} <= set(requested(hub))
    assert not [p for p in resolved.local_dir.rglob("*") if p.is_dir()]  # nothing nested


def test_sharded_model_fetches_only_the_shards_its_index_names(
    zoo: Zoo, tmp_path: Path, hub: HubServer, make_settings: Callable[..., Settings]
) -> None:
    hub.add_repo("acme/sharded", sharded(zoo, tmp_path / "sharded"))

    resolved = resolver(tmp_path, hub).resolve("acme/sharded")

    shards = {f for f in requested(hub) if f.endswith(".safetensors")}
    assert shards == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    loaded = load_model(resolved, make_settings().runtime)
    assert loaded.model.config.vocab_size > 0


# ---------------------------------------------------------------------------- a full disk


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every download's temporary file is opened on ``/dev/full`` instead, so its writes fail
    with a real ``ENOSPC`` from the kernel, as on a full filesystem (filling a real filesystem
    needs a mount of its own, and root). Only that one ``open`` is redirected."""
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    real_open = Path.open

    def open_(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if self.name.endswith(".incomplete") and "w" in mode:
            return real_open(Path("/dev/full"), mode, *args, **kwargs)
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)


def test_full_disk_while_downloading_is_fatal_with_its_reason(
    zoo: Zoo, tmp_path: Path, hub: HubServer, full_disk: None
) -> None:
    hub.add_repo("acme/tiny", zoo.base)
    settings = hub_settings(tmp_path, hub)

    with pytest.raises(DiskFull) as full:
        ModelResolver(settings.hub).resolve("acme/tiny")

    message = str(full.value)
    assert "acme/tiny" in message and "disk is full" in message
    assert str(settings.hub.cache_dir) in message


def test_full_disk_ends_the_job_once_instead_of_retrying_as_hub_unavailable(
    zoo: Zoo, tmp_path: Path, hub: HubServer, full_disk: None
) -> None:
    sha = hub.add_repo("acme/tiny", zoo.base)

    run = run_candidate(tmp_path, zoo, hub, "acme/tiny", sha)

    assert run.job.state == "failed" and run.job.attempts == 1, (run.job.state, run.job.reason)
    assert "disk is full" in str(run.job.reason)
    assert sorted(c.finetune or "" for c in run.children) == sorted(FINETUNES)
    assert {c.state for c in run.children} == {"failed"}


# ---------------------------------------------------------------------------- cache eviction


def test_cache_evicts_the_least_recently_used_candidate_and_keeps_the_one_in_use(
    zoo: Zoo, tmp_path: Path, hub: HubServer
) -> None:
    repos = ["acme/finetune-base", "acme/in-use", "acme/old", "acme/recent"]
    for repo_id in repos:
        hub.add_repo(repo_id, zoo.base)
    first = resolver(tmp_path, hub, cache_max_gib=None)
    snapshots = {repo_id: first.resolve(repo_id).local_dir for repo_id in repos}
    size = scan_cache_dir(tmp_path / "hf-cache").size_on_disk / len(repos)
    # Last used: the fine-tune's base longest ago, then the candidate about to be used again.
    for used, repo_id in enumerate(repos):
        os.utime(snapshots[repo_id], (1000 + used, 1000 + used))

    # Room for 4.5 snapshots: with the incoming one counted, exactly one must go.
    settings = hub_settings(tmp_path, hub, cache_max_gib=4.5 * size / GIB)
    again = ModelResolver(settings.hub, keep=["acme/finetune-base"]).resolve("acme/in-use")

    kept = {repo.repo_id for repo in scan_cache_dir(tmp_path / "hf-cache").repos if repo.revisions}
    assert kept == {"acme/finetune-base", "acme/in-use", "acme/recent"}
    assert (
        again.local_dir == snapshots["acme/in-use"] and (again.local_dir / "config.json").is_file()
    )


# ---------------------------------------------------------------------------- remote code


def test_unpinned_allow_list_entry_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "supersede.yaml"
    config.write_text("hub:\n  trust_remote_code: [acme/model]\n")

    with pytest.raises(ConfigError) as bad:
        load_settings(config)

    message = str(bad.value)
    assert "hub.trust_remote_code" in message and "'acme/model'" in message
    assert "org/name@<40-hex commit sha>" in message  # the fix


def test_pinned_allow_list_entry_allows_only_that_commit(
    zoo: Zoo, tmp_path: Path, hub: HubServer
) -> None:
    sentinel = tmp_path / "sentinel"
    auto_map = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    reviewed = hub.add_repo(
        "acme/coded", remote_code_repo(zoo, tmp_path / "v1", sentinel, auto_map)
    )
    r = resolver(tmp_path, hub, trust_remote_code=[f"acme/coded@{reviewed}"])

    allowed = r.resolve("acme/coded")
    assert allowed.trust_remote_code and allowed.revision == reviewed
    assert (allowed.local_dir / "modeling_evil.py").is_file()

    later = remote_code_repo(zoo, tmp_path / "v2", sentinel, auto_map)
    (later / "modeling_evil.py").write_text("import os  # pushed after the review\n")
    pushed = hub.add_repo("acme/coded", later)
    with pytest.raises(RemoteCodeRefused) as refused:
        r.resolve("acme/coded")
    assert f"acme/coded@{pushed}" in str(refused.value)  # names the entry a new review would add
    assert not [f for f in requested(hub) if f.endswith(".py") and pushed in f]
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "auto_map",
    [
        {"AutoModelForCausalLM": "other/repo--modeling_evil.EvilModel"},
        {"AutoTokenizer": [None, "other/repo--tokenization.Fast"]},
    ],
    ids=["model", "tokenizer-list"],
)
def test_auto_map_naming_another_repo_is_refused_even_when_allowed(
    auto_map: dict[str, Any], zoo: Zoo, tmp_path: Path, hub: HubServer
) -> None:
    sentinel = tmp_path / "sentinel"
    sha = hub.add_repo("acme/relay", remote_code_repo(zoo, tmp_path / "relay", sentinel, auto_map))
    r = resolver(tmp_path, hub, trust_remote_code=[f"acme/relay@{sha}"])

    with pytest.raises(RemoteCodeRefused, match="another repo"):
        r.resolve("acme/relay")
    assert not [f for f in requested(hub) if f.endswith((".py", ".safetensors"))]


# ---------------------------------------------------------------------------- index traversal


@pytest.mark.parametrize("where", ["hub", "local"])
def test_index_pointing_outside_the_repo_is_refused(
    where: str, zoo: Zoo, tmp_path: Path, hub: HubServer
) -> None:
    victim = hub.add_repo("acme/victim", zoo.base)
    escape = f"../../../models--acme--victim/snapshots/{victim}/model.safetensors"
    folder = sharded(zoo, tmp_path / "escape", point_to=escape)
    r = resolver(tmp_path, hub)
    if where == "hub":
        r.resolve("acme/victim")  # the other snapshot is in the cache, ready to be read
        hub.requests.clear()
        hub.add_repo("acme/escape", folder)

    with pytest.raises(DownloadRefused, match="not a plain file name"):
        r.resolve("acme/escape" if where == "hub" else str(folder))

    assert [f for f in requested(hub) if f.endswith(".safetensors")] == []


# ---------------------------------------------------------------------------- decoy adapters


@pytest.mark.parametrize("where", ["hub", "local"])
def test_decoy_safetensors_beside_pickle_adapter_is_refused(
    where: str, zoo: Zoo, tmp_path: Path, hub: HubServer
) -> None:
    folder = copy_model(
        zoo.adapter,
        tmp_path / "decoy",
        drop=(".safetensors",),
        add={
            "adapter_model-unused.safetensors": (
                zoo.adapter / "adapter_model.safetensors"
            ).read_bytes(),
            "adapter_model.bin": b"\x80\x04 pickle bytes that must never be unpickled",
        },
    )
    ref = str(folder)
    if where == "hub":
        hub.add_repo("acme/decoy-lora", folder)
        ref = "acme/decoy-lora"

    with pytest.raises(PickleWeightsRefused, match=r"adapter_model\.bin"):
        resolver(tmp_path, hub).resolve(ref, "adapter")
    assert requested(hub) == []


def test_adapter_with_pickle_beside_its_safetensors_is_refused(
    zoo: Zoo, tmp_path: Path, hub: HubServer
) -> None:
    folder = copy_model(zoo.adapter, tmp_path / "both", add={"training_args.bin": b"\x80\x04"})
    with pytest.raises(PickleWeightsRefused, match=r"training_args\.bin"):
        resolver(tmp_path, hub).resolve(str(folder), "adapter")


# ---------------------------------------------------------------------------- routing


def test_unknown_parameter_count_is_estimated_from_the_weights_for_routing(
    zoo: Zoo, tmp_path: Path, hub: HubServer
) -> None:
    hub.add_repo("acme/uncounted", zoo.base, extra={"safetensors": None})
    workers = WorkersSettings(gpu_queues={"gpu-small": 1.0, "gpu-large": 80.0})

    weights = resolver(tmp_path, hub).weight_bytes("acme/uncounted")
    target = route(None, "bfloat16", workers, weight_bytes=weights)

    assert weights == (zoo.base / "model.safetensors").stat().st_size
    assert target.queue == "gpu-small" and "estimated" in target.reason


def test_local_folder_allow_list_entry_pins_its_content(
    zoo: Zoo, tmp_path: Path, hub: HubServer
) -> None:
    sentinel = tmp_path / "sentinel"
    auto_map = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    folder = remote_code_repo(zoo, tmp_path / "coded", sentinel, auto_map)
    r = resolver(tmp_path, hub, trust_remote_code=[f"{folder}@{content_hash(folder)}"])
    assert r.resolve(str(folder)).trust_remote_code

    (folder / "modeling_evil.py").write_text("import os  # changed after the review\n")
    with pytest.raises(RemoteCodeRefused, match=r"hub\.trust_remote_code"):
        r.resolve(str(folder))
    assert not sentinel.exists()
