"""Fixtures shared by the engine's tests: the zoo's fine-tune loaded once per module, and the
task kinds the engine scores."""

from __future__ import annotations

import pytest

from benchmarks.models import LoadedModel, ModelResolver, load_model
from benchmarks.tasks.task import Task, load_task
from config.settings import Settings
from supersede.demo.zoo import Zoo
from tests.conftest import SHIPPED_TASK
from tests.support.tasks import GENERATE, MULTI_TOKEN, write_task


@pytest.fixture(scope="module")
def tuned(zoo: Zoo) -> LoadedModel:
    """The zoo's base with its LoRA adapter, on the CPU."""
    settings = Settings()
    resolver = ModelResolver(settings.hub)
    return load_model(
        resolver.resolve(str(zoo.base)),
        settings.runtime.model_copy(update={"device": "cpu"}),
        [resolver.resolve(str(zoo.adapter), "adapter")],
    )


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Task]:
    """One task of each kind: one-token choices, multi-token choices, generation."""
    folder = tmp_path_factory.mktemp("tasks")
    return {
        "single": load_task(SHIPPED_TASK),
        "multi": load_task(write_task(folder, dict[str, object](MULTI_TOKEN))),
        "generate": load_task(write_task(folder, dict[str, object](GENERATE))),
    }
