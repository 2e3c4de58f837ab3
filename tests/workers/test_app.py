"""The Celery app's settings, the worker's import footprint, and docker-compose.yml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import typer

from config.settings import Settings, load_settings
from config.workers import WorkersSettings
from core.constants import DEFAULT_QUEUE
from core.errors import ConfigError
from supersede.cli import app as cli_app
from tests.support.compose import compose, interpolate, published
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


#: Every variable docker-compose.yml requires, set (to values no file holds).
COMPOSE_ENV = {"REDIS_PASSWORD": "r", "POSTGRES_PASSWORD": "p", "FLOWER_BASIC_AUTH": "u:p"}


def services() -> dict[str, Any]:
    found: dict[str, Any] = interpolate(compose()["services"], COMPOSE_ENV)
    return found


def test_compose_redis_keeps_queued_jobs() -> None:
    command = services()["redis"]["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


def _options(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in getattr(param, "opts", [])}


def _check_words(service: str, words: list[str], options: set[str]) -> None:
    for word in words:
        if word.startswith("-"):
            assert word.split("=")[0] in options, f"{service}: {word} is not an option"


def test_compose_commands_exist_in_the_cli() -> None:
    """Every ``supersede`` command is a subcommand with those options; every ``celery -A
    workers`` command is a Celery subcommand with those options (``-A workers`` itself loads:
    see test_importing_the_worker_app_loads_no_torch)."""
    from celery.bin.celery import celery as celery_cli

    root = typer.main.get_command(cli_app)
    commands: dict[str, Any] = root.commands  # type: ignore[attr-defined]
    celery_commands: dict[str, Any] = celery_cli.commands
    checked = set()
    for name, service in services().items():
        command = service.get("command") or []
        if command[:1] == ["supersede"]:
            assert command[1] in commands, f"{name}: supersede {command[1]} does not exist"
            _check_words(name, command[2:], _options(commands[command[1]]))
            checked.add(name)
        elif command[:3] == ["celery", "-A", "workers"]:
            assert command[3] in celery_commands, f"{name}: celery {command[3]} does not exist"
            _check_words(name, command[4:], _options(celery_commands[command[3]]))
            checked.add(name)
    assert checked == {"daemon", "worker-gpu-80g", "worker-default"}


def _listeners(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> set[tuple[str, int]]:
    """(address, port) pairs a service listens on inside its container, from its command and
    the settings its environment gives (over the shipped config/, which compose mounts)."""
    command = service.get("command") or []
    if command[:2] == ["supersede", "run"]:
        for name, value in service.get("environment", {}).items():
            if name.startswith("SUPERSEDE_") and name != "SUPERSEDE_CONFIG":
                monkeypatch.setenv(name, str(value))
        settings = load_settings(REPO / "config" / "supersede.yaml")
        webhook, observed = settings.watch.webhook, settings.observability
        found = {(webhook.host, webhook.port)}  # when watch.webhook.enabled
        if observed.metrics_port:
            found.add((observed.metrics_host, observed.metrics_port))
        return found
    if command[:2] == ["celery", "flower"]:
        flags = dict(
            word.split("=", 1) for word in command if word.startswith("--") and "=" in word
        )
        return {(flags.get("--address", "0.0.0.0") or "0.0.0.0", int(flags.get("--port", 5555)))}
    return set()


def test_compose_publishes_only_ports_a_service_listens_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    published_somewhere = 0
    for name, service in services().items():
        with monkeypatch.context() as env:
            listening = _listeners(service, env)
        reachable = {port for address, port in listening if address in ("0.0.0.0", "::")}
        for address, _host_port, port in published(service):
            assert port in reachable, (
                f"{name} publishes {port} but listens on {sorted(listening)} in its container"
            )
            assert address in ("", "127.0.0.1"), f"{name}: {address}"
            published_somewhere += 1
    assert published_somewhere >= 3  # webhook, metrics, Flower
    daemon = {port for _, _, port in published(services()["daemon"])}
    shipped = load_settings(REPO / "config" / "supersede.yaml")
    assert {shipped.watch.webhook.port, shipped.observability.metrics_port} <= daemon


def test_compose_workers_consume_configured_queues() -> None:
    services_ = services()
    known = {DEFAULT_QUEUE, *WorkersSettings().gpu_queues}
    celery = ["celery", "-A", "workers"]
    workers = {n: s for n, s in services_.items() if s.get("command", [])[:3] == celery}
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
    devices = services_["worker-gpu-80g"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_compose_points_everything_at_one_broker_and_store() -> None:
    services_ = services()
    env = services_["daemon"]["environment"]
    assert env["SUPERSEDE_WORKERS__BROKER_URL"] == "redis://:r@redis:6379/0"
    assert env["SUPERSEDE_STORE__URL"] == "postgresql+psycopg://supersede:p@postgres:5432/supersede"
    for name in ("daemon", "worker-gpu-80g", "worker-default"):
        mine = services_[name]["environment"]
        for key in ("SUPERSEDE_CONFIG", "SUPERSEDE_WORKERS__BROKER_URL", "SUPERSEDE_STORE__URL"):
            assert mine[key] == env[key], f"{name}: {key}"
    assert services_["flower"]["environment"]["CELERY_BROKER_URL"] == "redis://:r@redis:6379/0"
    assert (REPO / "Dockerfile").is_file()
