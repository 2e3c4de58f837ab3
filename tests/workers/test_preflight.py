"""Start-up checks: each bad setting is one line naming the key and what to do, before any
work; a Celery worker with a bad config exits 2 before it consumes anything."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings, load_settings
from config.workers import WorkersSettings
from core.errors import ConfigError
from tests.support.settings import write_settings
from tests.support.tasks import shipped_task_copy
from tests.workers.conftest import REPO, SHARED_REDIS, SHIPPED_TASK, process_env, queue_length
from workers.preflight import Role, checks, env_name, preflight

TOKEN = "xoxb-preflight-token"
FINETUNE = {"name": "reviews", "task": str(SHIPPED_TASK), "base": "acme/base", "adapter": "acme/l"}


@pytest.fixture(autouse=True)
def _no_slack_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slack is configured by each test that wants it, never by the shell running the suite."""
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)


def config_file(tmp_path: Path, **sections: Any) -> Path:
    """A config with a private store, one fine-tune on the shipped task, and ``sections``
    merged over that (a ``finetunes`` entry replaces the fine-tune list)."""
    defaults: dict[str, Any] = {
        "store": {"url": f"sqlite:///{tmp_path / 'store' / 'store.db'}"},
        "finetunes": [FINETUNE],
        "notify": {"console_dir": str(tmp_path / "notifications")},
    }
    return write_settings(tmp_path, **{**defaults, **sections})


def settings_for(tmp_path: Path, **sections: Any) -> Settings:
    return load_settings(config_file(tmp_path, **sections))


def refused(settings: Settings, role: Role = "worker") -> str:
    """The message of the ConfigError ``preflight`` raises; it must be one line."""
    with pytest.raises(ConfigError) as caught:
        preflight(settings, role)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------------------------- Slack


def test_a_slack_token_without_a_channel_names_the_key_and_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    settings = settings_for(tmp_path)
    for role in ("run", "worker"):
        message = refused(settings, role)
        assert "notify.slack.channel" in message and "SUPERSEDE_NOTIFY__SLACK__CHANNEL" in message
        assert "SLACK_BOT_TOKEN" in message and "reviews" in message
        assert TOKEN not in message
    # Discovery and manual reruns notify nothing: they do not need a channel.
    for other in ("poll", "poll-once", "rerun"):
        preflight(settings, other)


def test_the_slack_app_is_checked_before_the_daemon_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slack = {"slack": {"channel": "C0LEADS"}}
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "signing-secret")
    message = refused(settings_for(tmp_path, notify=slack), "run")
    assert "SLACK_SIGNING_SECRET is set but SLACK_BOT_TOKEN is not" in message
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    message = refused(settings_for(tmp_path, notify=slack), "run")
    assert "notify.slack.operators is empty" in message
    assert "SUPERSEDE_NOTIFY__SLACK__OPERATORS" in message
    allowed = {"slack": {"channel": "C0LEADS", "operators": ["U0LEAD", "S0OPS"]}}
    preflight(settings_for(tmp_path, notify=allowed), "run")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xoxb-not-an-app-token")
    message = refused(settings_for(tmp_path, notify=allowed), "run")
    assert "SLACK_APP_TOKEN does not hold an app-level token (xapp-...)" in message
    assert "xoxb-not-an-app-token" not in message
    # A worker answers no Slack request: the app's settings are the daemon's to check.
    preflight(settings_for(tmp_path, notify=slack), "worker")
    # Operators set (messages with buttons) but no way in for Slack's requests.
    monkeypatch.delenv("SLACK_APP_TOKEN")
    monkeypatch.delenv("SLACK_SIGNING_SECRET")
    message = refused(settings_for(tmp_path, notify=allowed), "run")
    assert "neither SLACK_SIGNING_SECRET nor SLACK_APP_TOKEN is set" in message


def test_a_judged_task_without_a_judge_is_refused_at_start_up(tmp_path: Path) -> None:
    task = str(REPO / "config" / "tasks" / "product_copy" / "product_copy.yaml")
    finetunes = [{"name": "copy", "task": task, "model": "acme/copy-ft"}]
    message = refused(settings_for(tmp_path, finetunes=finetunes), "worker")
    assert "fine-tune 'copy'" in message and "metric judge needs a judge" in message
    finetunes[0]["judge"] = {"api": "house-judge"}
    message = refused(settings_for(tmp_path, finetunes=finetunes), "rerun")
    assert "judge.api 'house-judge' is not an api_candidates entry" in message


def test_operators_must_be_slack_ids(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_for(tmp_path, notify={"slack": {"operators": ["@alice"]}})
    message = str(caught.value)
    assert "notify.slack.operators" in message and "@alice" in message
    assert "is not a slack user id" in message.lower()


def test_the_variable_the_message_names_sets_the_channel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    config = config_file(tmp_path, notify={"slack": {"timeout_s": 5}})
    assert env_name("notify", "slack", "channel") == "SUPERSEDE_NOTIFY__SLACK__CHANNEL"
    monkeypatch.setenv("SUPERSEDE_NOTIFY__SLACK__CHANNEL", "C0LEADS")
    settings = load_settings(config)
    assert settings.notify.slack.channel == "C0LEADS"
    assert settings.notify.slack.timeout_s == 5  # merged with the file's section, not replacing it
    preflight(settings, "worker")


def test_channels_on_every_fine_tune_suffice_unless_feeds_announce(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    finetune = {"name": "reviews", "task": str(SHIPPED_TASK), "model": "acme/full",
                "slack_channel": "C0REVIEWS"}  # fmt: skip
    preflight(settings_for(tmp_path, finetunes=[finetune]), "worker")
    feed = {"name": "acme-blog", "url": "http://127.0.0.1:9/rss.xml"}
    settings = settings_for(tmp_path, finetunes=[finetune], watch={"feeds": [feed]})
    message = refused(settings)
    assert "announcements from watch.feeds" in message and "notify.slack.channel" in message


def test_without_a_token_messages_go_to_a_console_dir_that_must_be_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    preflight(settings_for(tmp_path), "worker")
    assert (tmp_path / "notifications").is_dir()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings = settings_for(tmp_path, notify={"console_dir": str(blocker / "notifications")})
    message = refused(settings)
    assert "notify.console_dir" in message and "SUPERSEDE_NOTIFY__CONSOLE_DIR" in message
    # A daemon on Redis notifies nothing itself.
    on_redis = settings_for(
        tmp_path,
        notify={"console_dir": str(blocker / "notifications")},
        workers={"broker_url": SHARED_REDIS},
    )
    preflight(on_redis, "run")


# ---------------------------------------------------------------------------------- task files


def test_a_missing_task_file_names_the_fine_tune_and_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "tasks" / "gone.yaml"
    finetune = {"name": "support", "task": str(missing), "base": "acme/b", "adapter": "acme/l"}
    settings = settings_for(tmp_path, finetunes=[finetune])
    for role in ("run", "worker", "rerun"):
        message = refused(settings, role)
        assert "fine-tune 'support'" in message and str(missing) in message
        assert "finetunes[0].task" in message
    preflight(settings, "poll-once")  # discovery reads no task file


def test_a_latency_target_without_latency_measured_is_refused_at_start(tmp_path: Path) -> None:
    finetune = {**FINETUNE, "deploy": {"latency_p95_ms": 500}}
    settings = settings_for(tmp_path, finetunes=[finetune], runtime={"latency_sample": 0})
    for role in ("run", "worker"):
        message = refused(settings, role)
        assert "fine-tune 'reviews'" in message and "500 ms" in message
        assert (
            "runtime.latency_sample" in message and "SUPERSEDE_RUNTIME__LATENCY_SAMPLE" in message
        )
    # A top-level target counts as each fine-tune's; measured, it is fine.
    settings = settings_for(tmp_path, deploy={"latency_p95_ms": 500}, runtime={"latency_sample": 0})
    assert "fine-tune 'reviews'" in refused(settings)
    preflight(settings_for(tmp_path, deploy={"latency_p95_ms": 500}), "worker")


def test_a_relative_task_path_resolves_against_the_config_file(tmp_path: Path) -> None:
    shipped_task_copy(tmp_path / "tasks")
    finetune = {"name": "r", "task": "tasks/review_sentiment.yaml", "model": "acme/full"}
    preflight(settings_for(tmp_path, finetunes=[finetune]), "worker")
    finetune["task"] = "tasks/typo.yaml"
    message = refused(settings_for(tmp_path, finetunes=[finetune]))
    assert str(tmp_path / "tasks" / "typo.yaml") in message


def test_a_task_file_that_does_not_parse_names_its_key(tmp_path: Path) -> None:
    task = shipped_task_copy(tmp_path / "task")
    task.write_text(task.read_text() + "doc_to_txt: oops\n")
    finetune = {"name": "reviews", "task": str(task), "model": "acme/full"}
    message = refused(settings_for(tmp_path, finetunes=[finetune]))
    assert "fine-tune 'reviews'" in message and str(task) in message
    assert "doc_to_txt" in message and "doc_to_text" in message


# ---------------------------------------------------------------------------------- prompts


def test_more_shots_than_the_task_has_is_refused_at_start(tmp_path: Path) -> None:
    task = shipped_task_copy(tmp_path / "task")
    train = task.parent / "train.jsonl"
    train.write_text("".join(train.read_text().splitlines(keepends=True)[:3]))
    finetune = {"name": "reviews", "task": str(task), "model": "acme/full"}
    settings = settings_for(
        tmp_path, finetunes=[finetune], candidates={"prompt": {"num_fewshot": 5}}
    )
    message = refused(settings)
    assert "candidates.prompt.num_fewshot" in message
    assert "SUPERSEDE_CANDIDATES__PROMPT__NUM_FEWSHOT" in message
    assert "'reviews'" in message and "3 documents" in message
    own = {**finetune, "prompt": {"num_fewshot": 4, "chat_template": "off"}}
    message = refused(settings_for(tmp_path, finetunes=[own]))
    assert "finetunes[0].prompt.num_fewshot" in message


def test_a_fine_tune_system_prompt_without_its_chat_template_is_refused(tmp_path: Path) -> None:
    prompt = {"chat_template": "off", "system_prompt": "You label reviews."}
    finetune = {"name": "reviews", "task": str(SHIPPED_TASK), "model": "acme/full",
                "prompt": prompt}  # fmt: skip
    message = refused(settings_for(tmp_path, finetunes=[finetune]))
    assert "finetunes[0].prompt.system_prompt" in message and "chat_template" in message


def test_a_local_fine_tune_asked_for_a_chat_template_it_lacks(tmp_path: Path) -> None:
    model = tmp_path / "full"
    model.mkdir()
    (model / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 128}))
    finetune = {"name": "reviews", "task": str(SHIPPED_TASK), "model": str(model),
                "prompt": {"chat_template": "on"}}  # fmt: skip
    message = refused(settings_for(tmp_path, finetunes=[finetune]))
    assert "finetunes[0].prompt.chat_template" in message and str(model) in message
    (model / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    preflight(settings_for(tmp_path, finetunes=[finetune]), "worker")


def test_a_fine_tune_folder_that_does_not_exist(tmp_path: Path) -> None:
    gone = tmp_path / "adapters" / "v3"
    finetune = {"name": "reviews", "task": str(SHIPPED_TASK), "base": "acme/base",
                "adapter": str(gone)}  # fmt: skip
    message = refused(settings_for(tmp_path, finetunes=[finetune]))
    assert "finetunes[0].adapter" in message and str(gone) in message


# ---------------------------------------------------------------------------------- secrets


def test_an_enabled_webhook_needs_its_secret_where_it_is_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUPERSEDE_WEBHOOK_SECRET", raising=False)
    settings = settings_for(tmp_path, watch={"webhook": {"enabled": True}})
    for role in ("run", "poll"):
        message = refused(settings, role)
        assert "watch.webhook.enabled" in message and "SUPERSEDE_WEBHOOK_SECRET" in message
    preflight(settings, "worker")  # workers serve no webhook
    preflight(settings, "poll-once")
    monkeypatch.setenv("SUPERSEDE_WEBHOOK_SECRET", "whsec-something")
    preflight(settings, "run")


def test_an_api_key_variable_that_is_not_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VENDOR_KEY", raising=False)
    api = {"name": "vendor-mini", "base_url": "http://127.0.0.1:9/v1", "model": "mini",
           "api_key_env": "VENDOR_KEY"}  # fmt: skip
    settings = settings_for(tmp_path, api_candidates=[api])
    message = refused(settings)
    assert "api_candidates 'vendor-mini'" in message and "VENDOR_KEY" in message
    # A daemon on Redis never calls the endpoint: the key may live on the worker hosts only.
    on_redis = settings_for(tmp_path, api_candidates=[api], workers={"broker_url": SHARED_REDIS})
    preflight(on_redis, "run")
    monkeypatch.setenv("VENDOR_KEY", "sk-vendor")
    preflight(settings, "worker")


def test_a_worker_is_asked_for_the_keys_of_what_runs_on_its_queues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """API candidates run on the default queue: a GPU worker needs none of their keys. A judged
    task's API judge is asked in the benchmark job, so every worker that benchmarks needs it."""
    monkeypatch.delenv("VENDOR_KEY", raising=False)
    monkeypatch.delenv("JUDGE_KEY", raising=False)
    vendor = {"name": "vendor-mini", "base_url": "http://127.0.0.1:9/v1", "model": "mini",
              "api_key_env": "VENDOR_KEY"}  # fmt: skip
    judge = dict(vendor, name="house-judge", model="judge-1", api_key_env="JUDGE_KEY")
    settings = settings_for(tmp_path, api_candidates=[vendor])
    preflight(settings, "worker", ["gpu-24g", "gpu-80g"])
    for queues in (["default"], ["gpu-24g", "default"], None):
        with pytest.raises(ConfigError, match=r"api_candidates 'vendor-mini'.*VENDOR_KEY"):
            preflight(settings, "worker", queues)

    task = str(REPO / "config" / "tasks" / "product_copy" / "product_copy.yaml")
    judged = [
        {"name": "copy", "task": task, "model": "acme/copy-ft", "judge": {"api": "house-judge"}}
    ]
    monkeypatch.setenv("VENDOR_KEY", "sk-vendor")
    settings = settings_for(tmp_path, api_candidates=[vendor, judge], finetunes=judged)
    for queues in (["gpu-24g"], ["default"], None):
        with pytest.raises(ConfigError) as caught:
            preflight(settings, "worker", queues)
        message = str(caught.value)
        assert message.startswith("api_candidates 'house-judge'") or (
            "fine-tune 'copy': its judge, api_candidates 'house-judge'" in message
        ), message
        assert "JUDGE_KEY, which is not set" in message and "\n" not in message
    gpu_message = refused_on(settings, ["gpu-24g"])
    assert "benchmarks on the queues gpu-24g" in gpu_message
    monkeypatch.setenv("JUDGE_KEY", "sk-judge")
    preflight(settings, "worker", ["gpu-24g"])
    preflight(settings, "worker", ["default"])


def refused_on(settings: Settings, queues: list[str]) -> str:
    with pytest.raises(ConfigError) as caught:
        preflight(settings, "worker", queues)
    return str(caught.value)


# ---------------------------------------------------------------------------------- the store


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` made read-only: by its mode, or (root ignores modes) made immutable."""
    os.chmod(folder, 0o555)
    immutable = False
    try:
        probe = folder / "probe"
        try:
            probe.write_text("x")
        except OSError:
            pass
        else:  # root: modes do not bind it
            probe.unlink()
            done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
            if done.returncode != 0:
                pytest.skip("cannot make a read-only folder here (root, no chattr)")
            immutable = True
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        os.chmod(folder, 0o755)


def test_a_store_in_a_read_only_folder_is_one_line(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    preflight(settings, "poll-once")  # the store is made, then its folder frozen
    with read_only(tmp_path / "store"):
        for role in ("run", "worker", "rerun", "poll", "poll-once"):
            message = refused(settings, role)
            assert "store.url" in message and str(tmp_path / "store" / "store.db") in message
            assert "cannot be written" in message and "SUPERSEDE_STORE__URL" in message


def test_a_store_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings = settings_for(tmp_path, store={"url": f"sqlite:///{blocker / 'store.db'}"})
    message = refused(settings, "poll-once")
    assert "store.url" in message and "SUPERSEDE_STORE__URL" in message


def test_the_roles_check_what_they_use() -> None:
    names = {role: {check.__name__ for check in checks(Settings(), role)}
             for role in ("run", "worker", "rerun", "poll", "poll-once")}  # fmt: skip
    assert names["poll-once"] == {"check_store"}
    assert names["poll"] == {"check_store", "check_webhook"}
    assert names["rerun"] == {"check_store", "check_tasks"}
    assert "check_slack" in names["run"] and "check_webhook" in names["run"]
    assert "check_slack" in names["worker"] and "check_webhook" not in names["worker"]
    on_redis = Settings(workers=WorkersSettings(broker_url="redis://127.0.0.1:6379/0"))
    run_on_redis = {check.__name__ for check in checks(on_redis, "run")}
    assert "check_api_keys" not in run_on_redis and "check_finetune_models" not in run_on_redis
    assert "check_slack" in run_on_redis and "check_tasks" in run_on_redis


# ---------------------------------------------------------------------------------- a worker


def celery_worker(
    config: Path, cwd: Path, queues: str = "default"
) -> subprocess.CompletedProcess[str]:
    env = process_env({"SUPERSEDE_CONFIG": str(config)})
    env.pop("SLACK_BOT_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queues,
         "-c", "1", "--without-mingle", "--without-gossip", "--loglevel", "INFO"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_worker_with_a_missing_task_file_exits_2_before_consuming(
    tmp_path: Path, redis_url: str
) -> None:
    from celery import Celery

    missing = tmp_path / "gone.yaml"
    config = config_file(
        tmp_path,
        finetunes=[{"name": "support", "task": str(missing), "model": "acme/full"}],
        workers={"broker_url": redis_url},
    )
    sender = Celery("sender", broker=redis_url)
    sender.send_task("supersede.reconcile", queue="default")
    sender.close()
    assert queue_length(redis_url, "default") == 1

    done = celery_worker(config, tmp_path)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: fine-tune 'support'") and str(missing) in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert queue_length(redis_url, "default") == 1  # nothing was consumed


def test_a_gpu_worker_without_its_judges_key_exits_2_before_consuming(
    tmp_path: Path, redis_url: str
) -> None:
    task = str(REPO / "config" / "tasks" / "product_copy" / "product_copy.yaml")
    judge = {"name": "house-judge", "base_url": "http://127.0.0.1:9/v1", "model": "judge-1",
             "api_key_env": "SUPERSEDE_TEST_UNSET_JUDGE_KEY"}  # fmt: skip
    config = config_file(
        tmp_path,
        api_candidates=[judge],
        finetunes=[{"name": "copy", "task": task, "model": "acme/copy-ft",
                    "judge": {"api": "house-judge"}}],
        workers={"broker_url": redis_url},
    )  # fmt: skip
    done = celery_worker(config, tmp_path, queues="gpu-24g")
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: fine-tune 'copy': its judge, api_candidates 'house-judge'")
    assert "on the queues gpu-24g" in line and "SUPERSEDE_TEST_UNSET_JUDGE_KEY" in line


def test_a_worker_with_an_unreadable_config_exits_2_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such.yaml"
    done = celery_worker(missing, tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        f"error: config file {missing} not found: pass --config PATH or set SUPERSEDE_CONFIG, "
        "or copy config/supersede.yaml"
    ]


def test_re_tune_training_data_that_is_not_there_is_refused_at_start_up(tmp_path: Path) -> None:
    retune = {"data_file": str(tmp_path / "gone.jsonl")}
    finetune = {"name": "reviews", "task": str(SHIPPED_TASK), "base": "acme/base",
                "adapter": "acme/lora", "retune": retune}  # fmt: skip
    message = refused(settings_for(tmp_path, finetunes=[finetune]))
    assert "finetunes[0].retune" in message and "retune.data_file" in message
    assert "gone.jsonl not found" in message
    split = {**finetune, "retune": {"training_split": "validation"}}
    message = refused(settings_for(tmp_path, finetunes=[split]))
    assert "retune.training_split" in message and "'validation'" in message
