"""The result store: a repeat run is answered without loading the model; any change that can
change the answer is a miss. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from benchmarks import bench as bench_module
from benchmarks.bench import bench
from benchmarks.cache import ResultStore, result_key
from config.settings import Settings
from core.errors import ConfigError
from supersede.demo.zoo import Zoo
from tests.conftest import copy_model
from tests.support.hub_server import HubServer
from tests.support.postgres import temporary_database
from tests.support.tasks import shipped_task_copy


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'results.db'}"
    else:
        with temporary_database() as url:
            yield url


def test_repeat_run_is_a_cache_hit_without_loading(
    zoo: Zoo,
    tmp_path: Path,
    store_url: str,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(store_url=store_url)
    task = shipped_task_copy(tmp_path / "task")
    first = bench(settings, str(zoo.base), task, adapter=str(zoo.adapter), limit=40)
    assert not first.cached
    monkeypatch.setattr(bench_module, "load_model", _refuse)
    again = bench(settings, str(zoo.base), task, adapter=str(zoo.adapter), limit=40, batch_size=3)
    assert again.cached and again.key == first.key
    assert again.result.outcomes == first.result.outcomes
    assert again.result.predictions == first.result.predictions
    assert again.result.score == first.result.score
    assert again.result.stats == first.result.stats


def _refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("the model was loaded although the result was stored")


def test_no_cache_runs_again(
    zoo: Zoo, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    task = shipped_task_copy(tmp_path / "task")
    bench(settings, str(zoo.base), task, limit=10)
    forced = bench(settings, str(zoo.base), task, limit=10, use_cache=False)
    assert not forced.cached


def test_changes_that_can_change_the_answer_miss(
    zoo: Zoo, second_adapter: Path, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    task = shipped_task_copy(tmp_path / "task")
    keys = {bench(settings, str(zoo.base), task, adapter=str(zoo.adapter), limit=20).key}

    def run(task_path: Path = task, run_settings: Settings = settings, **changes: object) -> None:
        args: dict[str, object] = {"adapter": str(zoo.adapter), "limit": 20, **changes}
        outcome = bench(run_settings, str(zoo.base), task_path, **args)  # type: ignore[arg-type]
        assert not outcome.cached, changes
        assert outcome.key not in keys, changes
        keys.add(outcome.key)

    run(adapter=str(second_adapter))  # another adapter
    run(adapter=None)  # no adapter
    run(limit=21)  # other examples
    edited = copy_model(zoo.adapter, tmp_path / "edited")  # same adapter folder, new content
    data = bytearray((edited / "adapter_model.safetensors").read_bytes())
    data[-1] ^= 1
    (edited / "adapter_model.safetensors").write_bytes(bytes(data))
    run(adapter=str(edited))
    test_file = task.parent / "test.jsonl"  # task data changed
    test_file.write_text(test_file.read_text().replace("necklace", "bracelet", 1))
    run()
    task.write_text(task.read_text().replace("Sentiment:", "Sentiment :"))  # prompt changed
    run()
    run(run_settings=make_settings(dtype="bfloat16"))  # dtype


def test_hub_revision_is_part_of_the_key(
    zoo: Zoo,
    full_finetune: Path,
    tmp_path: Path,
    hub: HubServer,
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(hub)
    task = shipped_task_copy(tmp_path / "task")
    hub.add_repo("acme/tiny", zoo.base)
    first = bench(settings, "acme/tiny", task, limit=10)
    assert bench(settings, "acme/tiny", task, limit=10).cached
    hub.add_repo("acme/tiny", full_finetune)  # main moves: a new model under the same name
    moved = bench(settings, "acme/tiny", task, limit=10)
    assert not moved.cached and moved.identity["model_revision"] != first.identity["model_revision"]


def test_same_content_under_another_name_is_another_entry(
    zoo: Zoo, tmp_path: Path, hub: HubServer, make_settings: Callable[..., Settings]
) -> None:
    # lm-eval once served one model's cached answers as another's: the identity includes the name.
    settings = make_settings(hub)
    task = shipped_task_copy(tmp_path / "task")
    hub.add_repo("acme/one", zoo.base)
    hub.add_repo("acme/two", zoo.base)
    one = bench(settings, "acme/one", task, limit=10)
    two = bench(settings, "acme/two", task, limit=10)
    assert one.key != two.key and not two.cached


def test_key_is_stable_and_order_free() -> None:
    assert result_key({"a": 1, "b": [1, 2]}) == result_key({"b": [1, 2], "a": 1})
    assert result_key({"a": 1}) != result_key({"a": 2})


def test_unusable_store_url_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"store\.url"):
        ResultStore("nosuchdb://x")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises((ConfigError, OSError)):
        ResultStore(f"sqlite:///{blocker}/sub/store.db")


def test_a_store_from_an_earlier_version_gains_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    from watcher.state import WatchState

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE watch_sources (name VARCHAR(128) PRIMARY KEY, etag VARCHAR(512), "
            "last_modified VARCHAR(128), not_before DATETIME, last_ok_at DATETIME, "
            "last_error TEXT, last_error_at DATETIME, failures INTEGER)"
        )
        old.execute("INSERT INTO watch_sources (name, failures) VALUES ('hub', 2)")
    state = WatchState(f"sqlite:///{path}")
    assert state.sources_with_counts() == [
        {"name": "hub", "polls": 0, "errors": 0, "not_before": None}
    ]
    state.source_failed("hub", "Hub 503", 60)
    (row,) = state.sources_with_counts()
    assert (row["polls"], row["errors"]) == (1, 1)
    assert state.source("hub").failures == 3
