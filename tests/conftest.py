"""Shared fixtures: a tiny model zoo built once per session, a local Hub server, settings."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import huggingface_hub.constants
import pytest

from config.settings import Settings
from supersede.demo.zoo import Zoo, build_zoo, read_jsonl, train_full, train_lora
from tests.support.hub_server import HubServer
from tests.support.serving import served
from tests.support.settings import build_settings

REPO = Path(__file__).resolve().parent.parent
SHIPPED_TASK = REPO / "config" / "tasks" / "review_sentiment" / "review_sentiment.yaml"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("SUPERSEDE_") or var in (
            "HF_TOKEN",
            "HUGGING_FACE_HUB_TOKEN",
            "HF_ENDPOINT",
            "HF_HUB_OFFLINE",
        ):
            monkeypatch.delenv(var, raising=False)
    # The Hub client's telemetry would reach for huggingface.co: keep every test on loopback.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)


@pytest.fixture(scope="session")
def train_rows() -> list[dict[str, object]]:
    return read_jsonl(SHIPPED_TASK.parent / "train.jsonl")


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory, train_rows: list[dict[str, object]]) -> Zoo:
    """A tiny base model and a LoRA fine-tune of it (built once per test session)."""
    return build_zoo(tmp_path_factory.mktemp("zoo"), train_rows)


@pytest.fixture(scope="session")
def second_adapter(
    tmp_path_factory: pytest.TempPathFactory, zoo: Zoo, train_rows: list[dict[str, object]]
) -> Path:
    """Another LoRA adapter on the same base (other seed, fewer steps)."""
    return train_lora(zoo.base, tmp_path_factory.mktemp("adapter2"), train_rows, steps=60, seed=7)


@pytest.fixture(scope="session")
def full_finetune(
    tmp_path_factory: pytest.TempPathFactory, zoo: Zoo, train_rows: list[dict[str, object]]
) -> Path:
    """A fully fine-tuned copy of the base."""
    return train_full(zoo.base, tmp_path_factory.mktemp("full"), train_rows, steps=60)


@pytest.fixture
def hub() -> Iterator[HubServer]:
    yield from served(HubServer())


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings with a private SQLite store and Hub cache under the test's tmp_path."""

    def make(
        hub: HubServer | None = None,
        store_url: str | None = None,
        trust_remote_code: tuple[str, ...] = (),
        **runtime: object,
    ) -> Settings:
        return build_settings(
            tmp_path,
            endpoint=hub,
            store={"url": store_url} if store_url else {},
            hub={"timeout_s": 10, "trust_remote_code": trust_remote_code},
            runtime=runtime,
        )

    return make


def copy_model(
    src: Path, dst: Path, *, drop: tuple[str, ...] = (), add: dict[str, bytes] | None = None
) -> Path:
    """Copy a model folder, dropping files whose names end with ``drop`` and adding ``add``."""
    shutil.copytree(src, dst)
    for file in list(dst.iterdir()):
        if file.name.endswith(drop) and drop:
            file.unlink()
    for name, data in (add or {}).items():
        (dst / name).write_bytes(data)
    return dst


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests of the fault catalogue ``fault``: ``pytest -m fault`` is the fault suite."""
    from tests.faults.catalogue import FAULTS

    prefixes = tuple(prefix for fault in FAULTS for prefix in fault.tests)
    for item in items:
        if item.nodeid.startswith(prefixes):
            item.add_marker(pytest.mark.fault)
