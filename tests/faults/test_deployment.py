"""What the deployment exposes: Flower, Redis and PostgreSQL closed by passwords from the
environment, no password in what a worker reports about itself (Celery's remote ``conf`` and
``report``, which Flower shows) or in printed settings, an unprivileged image user, and each
service given only the secrets it uses."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy.engine import make_url

from config.settings import Settings, load_settings
from tests.support.compose import (
    COMPOSE,
    MissingVariable,
    compose,
    created_users,
    dockerfile,
    interpolate,
    published,
    required,
    variables,
)
from tests.support.postgres import temporary_database
from tests.support.redis_server import RedisServer
from tests.support.settings import build_settings, write_settings
from tests.workers.conftest import CeleryWorker
from workers.app import broker_url, celery_config

SHIPPED = load_settings(Path(COMPOSE.parent, "config", "supersede.yaml"))
REDIS_PASSWORD, POSTGRES_PASSWORD = "REDIS_PASSWORD", "POSTGRES_PASSWORD"
SUPERSEDE_SERVICES = ("daemon", "worker-gpu-80g", "worker-default")
#: Every required variable set (to values no file holds).
SET = {REDIS_PASSWORD: "redis-pw", POSTGRES_PASSWORD: "postgres-pw", "FLOWER_BASIC_AUTH": "u:p"}


def services() -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"]
    return found


def urls(value: Any, scheme: str) -> list[str]:
    """Every ``scheme://...`` URL in ``value`` (environment values and command words)."""
    found: list[str] = []
    if isinstance(value, dict):
        for item in value.values():
            found += urls(item, scheme)
    elif isinstance(value, list):
        for item in value:
            found += urls(item, scheme)
    elif isinstance(value, str):
        found += re.findall(rf"{scheme}[a-z+]*://\S+", value)
    return found


# ---------------------------------------------------------------------------------- compose


def test_compose_stops_when_a_required_secret_is_unset() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    needed = required(text)
    assert set(needed) == {REDIS_PASSWORD, POSTGRES_PASSWORD, "FLOWER_BASIC_AUTH"}
    interpolate(services(), SET)  # all set: it starts
    for name in needed:
        with pytest.raises(MissingVariable, match=name) as refused:
            interpolate(services(), {k: v for k, v in SET.items() if k != name})
        assert "README" in str(refused.value)  # the message says where to read how


def test_flower_is_on_loopback_behind_basic_auth() -> None:
    flower = services()["flower"]
    ports = published(flower)
    assert ports and all(address == "127.0.0.1" for address, _, _ in ports)
    auth = flower.get("environment", {}).get("FLOWER_BASIC_AUTH", "")
    options = [w for w in flower["command"] if w.startswith("--basic-auth")]
    given = auth or (options[0].split("=", 1)[1] if options else "")
    assert required(given), "Flower's basic auth must come from a required variable"
    assert "--unauthenticated-api" not in " ".join(flower["command"])


def test_redis_requires_a_password_every_broker_url_carries() -> None:
    found = services()
    command = found["redis"]["command"]
    assert REDIS_PASSWORD in required(command[command.index("--requirepass") + 1])
    brokers = urls(interpolate(found, SET), "redis")
    assert len(brokers) >= 2  # the Supersede services' and Flower's
    for url in brokers:
        assert make_url(url).password == SET[REDIS_PASSWORD], url
    health = found["redis"]["healthcheck"]
    authenticated = REDIS_PASSWORD in variables(found["redis"].get("environment", {}))
    assert authenticated or "-a" in health["test"], "the health check must authenticate"


def test_postgres_needs_a_password_every_store_url_carries() -> None:
    found = services()
    env = found["postgres"]["environment"]
    assert POSTGRES_PASSWORD in required(env[POSTGRES_PASSWORD])
    assert env.get("POSTGRES_HOST_AUTH_METHOD", "scram-sha-256") != "trust"
    assert "trust" not in str(env.get("POSTGRES_INITDB_ARGS", ""))
    stores = urls(interpolate(found, SET), "postgresql")
    assert stores
    for url in stores:
        parsed = make_url(url)
        assert parsed.password == SET[POSTGRES_PASSWORD], url
        assert parsed.username == env["POSTGRES_USER"], url


def test_the_image_runs_as_an_unprivileged_user() -> None:
    instructions = dockerfile()
    users = [rest.split(":")[0] for word, rest in instructions if word == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must end on a non-root USER"
    homes = created_users(instructions)
    assert users[-1] in homes, f"USER {users[-1]} is not created by the Dockerfile"
    home = homes[users[-1]]
    for name in SUPERSEDE_SERVICES:
        targets = [v.split(":")[1] for v in services()[name]["volumes"]]
        assert not any(t.startswith("/root") for t in targets), f"{name}: a volume under /root"
        cache = [t for t in targets if t.endswith("/.cache/huggingface")]
        assert cache == [str(home / ".cache" / "huggingface")], name
        # A named volume takes the owner of the folder it is mounted on: the image makes it.
        made = [rest for word, rest in instructions if word == "RUN" and cache[0] in rest]
        assert made and f"chown -R {users[-1]}" in made[0], "the cache folder must be the user's"


def test_each_service_gets_only_the_secrets_it_uses() -> None:
    """Who uses what (the code): the daemon's watcher lists the Hub (``HF_TOKEN``) and checks
    webhook deliveries; GPU workers download models (``HF_TOKEN``); notifications and verdicts run
    on the default queue (the Slack token); the daemon answers the Slack app (its signing secret
    or app token, and the bot token to update messages); only Flower needs its own login. The
    operators are no secret: with them set, the default worker's messages carry buttons."""
    hub = "HF_TOKEN"
    slack = SHIPPED.notify.slack.token_env
    app = {SHIPPED.notify.slack.signing_secret_env, SHIPPED.notify.slack.app_token_env}
    operators = "SUPERSEDE_NOTIFY__SLACK__OPERATORS"
    webhook = SHIPPED.watch.webhook.secret_env
    store_and_broker = {REDIS_PASSWORD, POSTGRES_PASSWORD}
    expected = {
        "redis": {REDIS_PASSWORD},
        "postgres": {POSTGRES_PASSWORD},
        "daemon": store_and_broker | {hub, webhook, slack, operators} | app,
        "worker-gpu-80g": store_and_broker | {hub},
        "worker-default": store_and_broker | {slack, operators},
        "flower": {REDIS_PASSWORD, "FLOWER_BASIC_AUTH"},
    }
    found = services()
    assert set(found) == set(expected)
    for name, service in found.items():
        assert "env_file" not in service, f"{name}: an env_file hands it every secret"
        assert variables(service) == expected[name], name


# ---------------------------------------------------------------------------------- settings

PASSWORDS = ("st0re-Pa55", "br0ker-Pa55", "back3nd-Pa55")


def with_passwords(folder: Path) -> Settings:
    store, broker, backend = PASSWORDS
    return build_settings(
        folder,
        store={"url": f"postgresql+psycopg://supersede:{store}@postgres:5432/supersede"},
        workers={
            "broker_url": f"redis://:{broker}@redis:6379/0",
            "result_backend": f"redis://:{backend}@redis:6379/1",
        },
    )


def shown(text: str) -> list[str]:
    return [p for p in PASSWORDS if p in text or quote(p) in text]


def test_printed_settings_hide_url_passwords(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = with_passwords(tmp_path)
    with caplog.at_level(logging.INFO):
        logging.getLogger("supersede.test").info("settings: %s / %r", settings, settings.workers)
    printed = [repr(settings), str(settings), f"{settings.store.url}", caplog.text]
    printed += [str(settings.workers.broker_url), repr(settings.workers.result_backend)]
    for text in printed:
        assert shown(text) == [], text
    assert "postgresql+psycopg://supersede:***@postgres:5432/supersede" in repr(settings)
    # ... while every library that reads the URLs gets them whole.
    assert make_url(settings.store.url).password == PASSWORDS[0]
    assert broker_url(settings) == f"redis://:{PASSWORDS[1]}@redis:6379/0"
    assert celery_config(settings)["result_backend"] == f"redis://:{PASSWORDS[2]}@redis:6379/1"
    again = Settings.model_validate_json(settings.model_dump_json())
    assert make_url(again.store.url).password == PASSWORDS[0]


# ---------------------------------------------------------------------------------- a worker


@pytest.fixture
def guarded_redis(tmp_path: Path) -> Iterator[str]:
    """A private Redis that refuses clients without the password; yields its URL with it."""
    import redis

    with RedisServer(tmp_path / "redis") as server:
        with redis.Redis(port=server.port, socket_timeout=5) as client:
            client.config_set("requirepass", PASSWORDS[1])
        yield f"redis://:{PASSWORDS[1]}@127.0.0.1:{server.port}/0"


def test_a_worker_reports_its_configuration_without_passwords(
    tmp_path: Path, guarded_redis: str
) -> None:
    """What Flower shows of a worker (Celery's remote ``conf`` and ``report``) names no store or
    broker password, though the worker was given both in its URLs."""
    from celery import Celery

    with temporary_database() as database:
        store = make_url(database).set(password=PASSWORDS[0]).render_as_string(False)
        config = write_settings(tmp_path, name="worker.yaml")
        env = {"SUPERSEDE_STORE__URL": store, "SUPERSEDE_WORKERS__BROKER_URL": guarded_redis}
        worker = CeleryWorker(config, "default", tmp_path / "worker.log", env=env).start()
        app = Celery("inspector", broker=guarded_redis)
        try:
            inspect = app.control.inspect(timeout=10, limit=1)  # the one worker
            replies = {"conf": inspect.conf(), "report": inspect.report()}
        finally:
            app.close()
            worker.stop(warm=False)
    for command, reply in replies.items():
        assert reply, f"the worker did not answer {command}: {worker.tail()}"
        text = json.dumps(reply)
        assert shown(text) == [], f"{command} shows a password"
    conf = next(iter(replies["conf"].values()))
    assert conf["broker_url"].startswith("redis://:") and "127.0.0.1" in conf["broker_url"]
