"""The Celery app's settings, the worker's import footprint, and docker-compose.yml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from config.settings import Settings, load_settings
from config.workers import WorkersSettings
from core.constants import DEFAULT_QUEUE
from core.errors import ConfigError
from supersede.cli import app as cli_app
from tests.support.settings import build_settings, write_settings
from workers.app import celery_config, embedded_broker, make_app, safe_broker
from workers.routing import route

REPO = Path(__file__).resolve().parents[2]


def settings(**workers: Any) -> Settings:
    return build_settings(Path("/tmp/x"), workers=workers)


def test_reliability_settings_on_redis() -> None:
    conf = celery_config(settings(broker_url="redis://127.0.0.1:6379/3", time_limit=7200,
                                  soft_time_limit=7000))  # fmt: skip
    assert conf["task_serializer"] == conf["result_serializer"] == "json"
    assert conf["accept_content"] == ["json"] and conf["result_accept_content"] == ["json"]
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert (conf["task_soft_time_limit"], conf["task_time_limit"]) == (7000, 7200)
    visibility = conf["broker_transport_options"]["visibility_timeout"]
    assert visibility > conf["task_time_limit"]
    assert conf["result_backend_transport_options"]["visibility_timeout"] == visibility
    assert conf["result_backend"] == "redis://127.0.0.1:6379/3"
    assert {q.name for q in conf["task_queues"]} == {DEFAULT_QUEUE, "gpu-24g", "gpu-80g"}
    app = make_app(settings(broker_url="redis://127.0.0.1:6379/3"))
    assert app.conf.task_acks_late and app.conf.broker_url == "redis://127.0.0.1:6379/3"


def test_embedded_default_is_a_local_sqlite_queue() -> None:
    conf = celery_config(settings())
    assert conf["broker_url"] == "sqla+sqlite:////tmp/x/queue.db"
    assert conf["broker_transport_options"] == {}  # kombu's SQLAlchemy transport takes none
    assert conf["result_backend"] is None
    assert embedded_broker("postgresql+psycopg://u@h/db") == "sqla+postgresql+psycopg://u@h/db"


def test_time_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="soft_time_limit must be below time_limit"):
        WorkersSettings(soft_time_limit=100, time_limit=100)


def test_a_broker_password_is_never_shown() -> None:
    shown = safe_broker("redis://:hunter2@redis:6379/0")
    assert "hunter2" not in shown and "redis:6379" in shown


def test_importing_the_worker_app_loads_no_torch(tmp_path: Path) -> None:
    config = write_settings(tmp_path, name="c.yaml")
    code = (
        "import sys, workers, workers.tasks; app = workers.app; "
        "assert app.conf.task_acks_late; print('torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"SUPERSEDE_CONFIG": str(config), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"  # the parent never initialises CUDA


@pytest.mark.parametrize(
    ("params", "dtype", "queue"),
    [
        (1_000_000_000, "auto", "gpu-24g"),  # 2.2 GiB with overhead
        (8_000_000_000, "bfloat16", "gpu-24g"),  # 17.9 GiB
        (14_000_000_000, "auto", "gpu-80g"),  # 31 GiB
        (8_000_000_000, "float32", "gpu-80g"),  # 35.8 GiB
        (None, "auto", "gpu-80g"),  # unknown: the largest
        (70_000_000_000, "auto", None),  # 156 GiB: fits nowhere
    ],
)
def test_routing_by_memory(params: int | None, dtype: str, queue: str | None) -> None:
    chosen = route(params, dtype, WorkersSettings())
    assert chosen.queue == queue
    if queue is None:
        assert "too large" in chosen.reason and "gpu-80g" in chosen.reason


def test_custom_queues_route_to_the_smallest_fit() -> None:
    workers = WorkersSettings(gpu_queues={"a100": 40, "h200": 141, "l4": 24})
    assert route(15_000_000_000, "auto", workers).queue == "a100"
    assert route(40_000_000_000, "auto", workers).queue == "h200"


def test_unknown_workers_key_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("workers:\n  gpu_queue: {a: 1}\n")
    with pytest.raises(ConfigError, match="did you mean 'gpu_queues'"):
        load_settings(bad)


# ---------------------------------------------------------------------------- docker-compose


def compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_redis_keeps_queued_jobs() -> None:
    command = compose()["services"]["redis"]["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


def test_compose_commands_exist_in_the_cli() -> None:
    services = compose()["services"]
    root = typer.main.get_command(cli_app)
    commands: dict[str, Any] = root.commands  # type: ignore[attr-defined]
    checked = 0
    for name, service in services.items():
        command = service.get("command") or []
        if command[:1] != ["supersede"]:
            continue
        sub = commands[command[1]]
        options = {opt for param in sub.params for opt in getattr(param, "opts", [])}
        for word in command[2:]:
            if word.startswith("-"):
                assert word.split("=")[0] in options, f"{name}: {word} is not an option"
        checked += 1
    assert checked >= 1


def test_compose_workers_consume_configured_queues() -> None:
    services = compose()["services"]
    known = {DEFAULT_QUEUE, *WorkersSettings().gpu_queues}
    celery = ["celery", "-A", "workers"]
    workers = {n: s for n, s in services.items() if s.get("command", [])[:3] == celery}
    assert set(workers) == {"worker-gpu-80g", "worker-default"}
    consumed: set[str] = set()
    for service in workers.values():
        command = service["command"]
        assert command[3] == "worker"
        queues = command[command.index("-Q") + 1].split(",")
        assert set(queues) <= known
        consumed |= set(queues)
    assert consumed == known  # every queue routing can choose has a consumer
    gpu = workers["worker-gpu-80g"]["command"]
    assert gpu[gpu.index("-c") + 1] == "1"
    assert gpu[gpu.index("--max-tasks-per-child") + 1] == "1"
    devices = services["worker-gpu-80g"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_compose_points_everything_at_one_broker_and_store() -> None:
    services = compose()["services"]
    env = services["daemon"]["environment"]
    assert env["SUPERSEDE_WORKERS__BROKER_URL"] == "redis://redis:6379/0"
    assert env["SUPERSEDE_STORE__URL"].startswith("postgresql+psycopg://")
    flower = services["flower"]["command"]
    assert "--broker=redis://redis:6379/0" in flower
    for name in ("daemon", "worker-gpu-80g", "worker-default"):
        assert services[name]["environment"] == env
    assert (REPO / "Dockerfile").is_file()
