"""The tests' settings builder: private defaults, sections merged or set, the file loads back."""

from __future__ import annotations

from pathlib import Path

from config.settings import load_settings
from tests.support.settings import UNREACHABLE_HUB, build_settings, write_settings


def test_defaults_keep_every_test_private_and_offline(tmp_path: Path) -> None:
    settings = build_settings(tmp_path)
    assert settings.store.url == f"sqlite:///{tmp_path / 'store.db'}"
    assert settings.hub.endpoint == UNREACHABLE_HUB
    assert settings.hub.cache_dir == str(tmp_path / "hf-cache")
    assert settings.runtime.device == "cpu"


def test_sections_merge_over_the_defaults_or_are_set(tmp_path: Path) -> None:
    settings = build_settings(
        tmp_path,
        endpoint="http://127.0.0.1:1234",
        hub={"timeout_s": 7},
        runtime={"dtype": "float32"},
        workers={"max_attempts": 2},
    )
    assert (settings.hub.endpoint, settings.hub.timeout_s) == ("http://127.0.0.1:1234", 7)
    assert settings.hub.cache_dir == str(tmp_path / "hf-cache")
    assert (settings.runtime.device, settings.runtime.dtype) == ("cpu", "float32")
    assert settings.workers.max_attempts == 2


def test_the_written_file_loads_as_the_same_settings(tmp_path: Path) -> None:
    sections = {"watch": {"hub": {"authors": ["acme"]}, "jitter_s": 0}}
    path = write_settings(tmp_path, name="c.yaml", **sections)
    assert path == tmp_path / "c.yaml"
    loaded = load_settings(path)
    assert loaded.model_dump() == build_settings(tmp_path, **sections).model_dump()
