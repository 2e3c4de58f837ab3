"""Safe loading: references, pinning, the safetensors-only policy, remote code, Hub errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from benchmarks import models
from benchmarks.models import ModelRef, ModelResolver, adapter_name, load_model
from benchmarks.runner import run_task
from benchmarks.tasks import load_task
from config.settings import Settings
from core.errors import (
    GatedModelError,
    HubUnavailable,
    ModelNotFound,
    PickleWeightsRefused,
    RemoteCodeRefused,
)
from supersede.demo.zoo import Zoo
from tests.conftest import SHIPPED_TASK, copy_model
from tests.support.hub_server import HubServer

SENTINEL_CODE = """
import pathlib
pathlib.Path({path!r}).write_text("remote code ran")
from transformers import LlamaForCausalLM as EvilModel
"""


def resolver(settings: Settings, token: str | None = None) -> ModelResolver:
    return ModelResolver(settings.hub, token)


def resolve_paths(hub: HubServer) -> list[str]:
    return [path for method, path in hub.requests if "/resolve/" in path]


# ---------------------------------------------------------------------------- references


@pytest.mark.parametrize(
    ("text", "repo", "revision"),
    [
        ("org/model", "org/model", None),
        ("org/model@v1.0", "org/model", "v1.0"),
        ("gpt2", "gpt2", None),
        ("Org-1/Model_2.5@" + "a" * 40, "Org-1/Model_2.5", "a" * 40),
    ],
)
def test_hub_references_parse(text: str, repo: str, revision: str | None) -> None:
    ref = ModelRef.parse(text)
    assert (ref.repo_id, ref.revision, ref.is_local) == (repo, revision, False)


def test_local_folders_parse_as_paths(zoo: Zoo) -> None:
    ref = ModelRef.parse(str(zoo.base))
    assert ref.is_local and ref.path == zoo.base


@pytest.mark.parametrize("text", ["", "org/../../etc", "a/b/c", "./missing-folder", "org/mo del"])
def test_bad_references_are_clear_errors(text: str, make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ModelNotFound) as err:
        resolver(make_settings()).resolve(text)
    assert str(err.value)


# ---------------------------------------------------------------------------- local policy


def test_local_model_is_pinned_by_content(
    zoo: Zoo, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    r = resolver(make_settings())
    first = r.resolve(str(zoo.base))
    assert (
        first.revision.startswith("sha256:") and first.revision == r.resolve(str(zoo.base)).revision
    )
    changed = copy_model(zoo.base, tmp_path / "changed")
    cfg = json.loads((changed / "generation_config.json").read_text())
    (changed / "generation_config.json").write_text(json.dumps({**cfg, "max_length": 7}))
    assert r.resolve(str(changed)).revision != first.revision


def test_local_pickle_only_model_is_refused(
    zoo: Zoo, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    folder = copy_model(
        zoo.base,
        tmp_path / "pickled",
        drop=(".safetensors",),
        add={"pytorch_model.bin": b"not even read"},
    )
    with pytest.raises(PickleWeightsRefused, match=r"pytorch_model\.bin"):
        resolver(make_settings()).resolve(str(folder))


def test_local_pickle_only_adapter_is_refused(
    zoo: Zoo, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    folder = copy_model(
        zoo.adapter,
        tmp_path / "pickled",
        drop=(".safetensors",),
        add={"adapter_model.bin": b"not even read"},
    )
    with pytest.raises(PickleWeightsRefused, match=r"adapter_model\.bin"):
        resolver(make_settings()).resolve(str(folder), "adapter")


def test_folder_without_adapter_config_is_not_an_adapter(
    zoo: Zoo, make_settings: Callable[..., Settings]
) -> None:
    with pytest.raises(ModelNotFound, match=r"adapter_config\.json"):
        resolver(make_settings()).resolve(str(zoo.base), "adapter")


def _remote_code_model(zoo: Zoo, folder: Path, sentinel: Path) -> Path:
    copy_model(
        zoo.base,
        folder,
        add={
            "modeling_evil.py": SENTINEL_CODE.format(path=str(sentinel)).encode(),
        },
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_remote_code_is_refused_unless_allow_listed(
    zoo: Zoo, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    sentinel = tmp_path / "sentinel"
    folder = _remote_code_model(zoo, tmp_path / "evil", sentinel)
    with pytest.raises(RemoteCodeRefused, match="trust_remote_code"):
        resolver(make_settings()).resolve(str(folder))
    assert not sentinel.exists()
    pinned = f"{folder}@{models.content_hash(folder)}"
    allowed = resolver(make_settings(trust_remote_code=(pinned,))).resolve(str(folder))
    assert allowed.trust_remote_code is True
    assert not sentinel.exists()  # resolving never imports anything


# ---------------------------------------------------------------------------- the Hub


def test_hub_model_is_pinned_and_only_safe_files_fetched(
    zoo: Zoo, tmp_path: Path, hub: HubServer, make_settings: Callable[..., Settings]
) -> None:
    folder = copy_model(
        zoo.base,
        tmp_path / "repo",
        add={
            "pytorch_model.bin": b"pickle bytes",
            "training_args.bin": b"pickle",
            "notes.pt": b"x",
        },
    )
    sha = hub.add_repo("acme/tiny", folder)
    resolved = resolver(make_settings(hub)).resolve("acme/tiny")
    assert resolved.revision == sha
    fetched = {p.name for p in resolved.local_dir.iterdir()}
    assert "model.safetensors" in fetched and "config.json" in fetched
    assert not fetched & {"pytorch_model.bin", "training_args.bin", "notes.pt"}
    assert not [p for p in resolve_paths(hub) if p.endswith((".bin", ".pt"))]
    assert all(sha in p for p in resolve_paths(hub))  # every file pinned to the sha


def test_hub_pickle_only_model_is_refused_before_any_download(
    zoo: Zoo, tmp_path: Path, hub: HubServer, make_settings: Callable[..., Settings]
) -> None:
    folder = copy_model(
        zoo.base,
        tmp_path / "repo",
        drop=(".safetensors",),
        add={"pytorch_model.bin": b"pickle bytes"},
    )
    hub.add_repo("acme/pickled", folder)
    with pytest.raises(PickleWeightsRefused):
        resolver(make_settings(hub)).resolve("acme/pickled")
    assert resolve_paths(hub) == []


def test_hub_adapter_with_only_bin_is_refused(
    zoo: Zoo, tmp_path: Path, hub: HubServer, make_settings: Callable[..., Settings]
) -> None:
    folder = copy_model(
        zoo.adapter,
        tmp_path / "repo",
        drop=(".safetensors",),
        add={"adapter_model.bin": b"pickle bytes"},
    )
    hub.add_repo("acme/lora-bin", folder)
    with pytest.raises(PickleWeightsRefused, match=r"adapter_model\.bin"):
        resolver(make_settings(hub)).resolve("acme/lora-bin", "adapter")
    assert resolve_paths(hub) == []


def test_hub_remote_code_is_never_downloaded_or_run(
    zoo: Zoo, tmp_path: Path, hub: HubServer, make_settings: Callable[..., Settings]
) -> None:
    sentinel = tmp_path / "sentinel"
    hub.add_repo("acme/evil", _remote_code_model(zoo, tmp_path / "evil", sentinel))
    with pytest.raises(RemoteCodeRefused):
        resolver(make_settings(hub)).resolve("acme/evil")
    assert not [p for p in resolve_paths(hub) if p.endswith(".py")]
    assert not sentinel.exists()


def test_revision_is_pinned_when_main_moves(
    zoo: Zoo, full_finetune: Path, hub: HubServer, make_settings: Callable[..., Settings]
) -> None:
    old = hub.add_repo("acme/moving", zoo.base)
    new = hub.add_repo("acme/moving", full_finetune)
    assert old != new
    r = resolver(make_settings(hub))
    pinned = r.resolve(f"acme/moving@{old}")
    latest = r.resolve("acme/moving")
    assert (pinned.revision, latest.revision) == (old, new)
    assert (pinned.local_dir / "model.safetensors").read_bytes() == (
        zoo.base / "model.safetensors"
    ).read_bytes()
    assert (latest.local_dir / "model.safetensors").read_bytes() == (
        full_finetune / "model.safetensors"
    ).read_bytes()


def test_gated_repo_needs_a_granted_token(
    zoo: Zoo, hub: HubServer, make_settings: Callable[..., Settings]
) -> None:
    hub.add_repo("vendor/gated", zoo.base, gated=True)
    with pytest.raises(GatedModelError, match="HF_TOKEN"):
        resolver(make_settings(hub)).resolve("vendor/gated")
    hub.grant("vendor/gated", "hf_granted")
    assert resolver(make_settings(hub), token="hf_granted").resolve("vendor/gated").revision


def test_missing_repo_and_revision_are_not_found(
    zoo: Zoo, hub: HubServer, make_settings: Callable[..., Settings]
) -> None:
    hub.add_repo("acme/tiny", zoo.base)
    r = resolver(make_settings(hub))
    with pytest.raises(ModelNotFound, match="not found"):
        r.resolve("acme/nope")
    with pytest.raises(ModelNotFound, match="revision"):
        r.resolve("acme/tiny@no-such-branch")


@pytest.mark.parametrize("status", [429, 500, 503])
def test_hub_failures_are_retryable(
    status: int, zoo: Zoo, hub: HubServer, make_settings: Callable[..., Settings]
) -> None:
    hub.add_repo("acme/tiny", zoo.base)
    hub.fail_next("/api/models/acme/tiny", status, {"Retry-After": "1"})
    with pytest.raises(HubUnavailable, match=str(status)):
        resolver(make_settings(hub)).resolve("acme/tiny")


def test_unreachable_hub_is_retryable(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(HubUnavailable, match="unreachable"):
        resolver(make_settings()).resolve("acme/tiny")  # nothing listens on port 9


# ---------------------------------------------------------------------------- loading


def test_several_adapters_load_the_base_once(
    zoo: Zoo,
    second_adapter: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_settings: Callable[..., Settings],
) -> None:
    from transformers import AutoModelForCausalLM

    calls = []
    original = AutoModelForCausalLM.from_pretrained

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", counting)
    settings = make_settings()
    r = resolver(settings)
    base = r.resolve(str(zoo.base))
    first, second = (
        r.resolve(str(zoo.adapter), "adapter"),
        r.resolve(str(second_adapter), "adapter"),
    )
    task = load_task(SHIPPED_TASK)
    shared = load_model(base, settings.runtime, [first, second])
    assert len(calls) == 1
    shared_scores = {}
    for adapter in (first, second):
        shared.use_adapter(adapter_name(adapter))
        shared_scores[adapter.name] = run_task(shared, task, limit=80).outcomes
    for adapter in (first, second):
        alone = load_model(base, settings.runtime, [adapter])
        assert run_task(alone, task, limit=80).outcomes == shared_scores[adapter.name]
    assert shared_scores[first.name] != shared_scores[second.name]


def test_dtype_is_explicit(zoo: Zoo, make_settings: Callable[..., Settings]) -> None:
    base = resolver(make_settings()).resolve(str(zoo.base))
    fp32 = load_model(base, make_settings().runtime)
    assert (fp32.dtype, next(fp32.model.parameters()).dtype) == ("float32", torch.float32)
    bf16 = load_model(base, make_settings(dtype="bfloat16").runtime)
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert models.pick_dtype(make_settings().runtime, "cuda:0") == "bfloat16"
