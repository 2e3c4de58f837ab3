"""Start-up checks: every setting a process will need, checked before it does any work.

Several settings are read only when first used: the Slack channel when the first verdict is
posted, a fine-tune's task file when the first release is planned, the store when the first row
is written. A mistake there used to surface minutes or hours later, as a log line repeated on
every retry. :func:`preflight` reads them all up front and raises :class:`ConfigError` with one
line naming the key (and the environment variable that sets it) and what to do.

What each role checks (a process checks only what it will use):

=========  =====  =====  =====  ==============  ======  ========  =======
role       store  tasks  Slack  console, cache  models  API keys  webhook
=========  =====  =====  =====  ==============  ======  ========  =======
run        yes    yes    yes    yes*            yes*    yes*      yes
worker     yes    yes    yes    yes             yes     yes       -
rerun      yes    yes    -      -               -       -         -
poll       yes    -      -      -               -       -         yes
poll-once  yes    -      -      -               -       -         -
=========  =====  =====  =====  ==============  ======  ========  =======

"tasks": each fine-tune's task file and the prompts applied to it; "models": each fine-tune's
model and adapter references, and that its latency target (if any) can be measured; "console,
cache": the folders written when notifying and downloading. ``run`` is the daemon (and
``supersede demo``): it plans jobs, so it needs the task files; * with the embedded default (no
``workers.broker_url``) it is its own worker, and checks what a worker does. Slack is checked by
``run`` even on Redis: the daemon and its workers share one configuration, and a token without a
channel is wrong wherever it is seen; an API key a daemon on Redis never uses is not asked of it
(it may live on the worker hosts only). A worker is asked for the API keys of what runs on the
queues it consumes: an API candidate's and a feed's API models' on the default queue only; a
judged task's API judge's on every queue (the judge is asked in the benchmark job, which runs
on a GPU queue, or on the default one for an API release). ``poll`` only discovers and prints:
it plans, benchmarks and notifies nothing.
"""

from __future__ import annotations

import functools
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, NoReturn

from benchmarks.models import ModelRef
from benchmarks.tasks.task import Task, load_task
from config.settings import FineTune, PromptSettings, Settings, secret, slack_app_mode, task_path
from core.constants import DEFAULT_QUEUE, ENV_NESTED_DELIMITER, ENV_PREFIX
from core.errors import ConfigError, SupersedeError

Role = Literal["run", "worker", "rerun", "poll", "poll-once"]
Check = Callable[[Settings], None]

#: Files a tokenizer's chat template may live in, besides ``tokenizer_config.json``.
_CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def preflight(settings: Settings, role: Role, queues: Sequence[str] | None = None) -> None:
    """Check every setting ``role`` will need; raise :class:`ConfigError` on the first problem.
    ``queues``: the queues a worker consumes (None: every queue, as the embedded worker).

    Creates the store's tables and the notification and download folders (as their first use
    would); writes nothing else.
    """
    for check in checks(settings, role, queues):
        check(settings)


def preflight_or_exit(settings: Settings, role: Role, queues: Sequence[str] | None = None) -> None:
    """:func:`preflight` for a process with no CLI of its own (``celery -A workers worker``): on
    a problem, print it as one line on stderr and exit with code 2, before any work."""
    try:
        preflight(settings, role, queues)
    except SupersedeError as exc:
        exit_fatal(exc)


def exit_fatal(exc: SupersedeError) -> NoReturn:
    """Print ``exc`` as one line (no traceback) and exit with code 2: fix the input, then
    start again. ``SystemExit`` passes through Celery's signal dispatch, which catches and
    only logs every ``Exception`` a handler raises."""
    sys.stderr.write(f"error: {exc}\n")
    sys.stderr.flush()
    raise SystemExit(2)


def checks(
    settings: Settings, role: Role, queues: Sequence[str] | None = None
) -> tuple[Check, ...]:
    """The checks ``role`` runs, environment first (no side effects), then files, then the store
    (``queues``: :func:`preflight`'s)."""
    if role == "poll-once":
        return (check_store,)
    if role == "poll":
        return (check_webhook, check_store)
    if role == "rerun":
        return (check_tasks, check_store)
    works = role == "worker" or settings.workers.broker_url is None
    chosen: list[Check] = [check_slack]
    if role == "run":
        chosen += [check_webhook, check_slack_app]
    if works:
        chosen += [
            # named as the check it binds (what a log or a test reads)
            functools.update_wrapper(
                functools.partial(check_api_keys, queues=queues), check_api_keys
            ),
            check_finetune_models,
            check_deploy,
        ]
    chosen.append(check_tasks)
    if works:
        chosen += [check_console_dir, check_cache_dir]
    chosen.append(check_store)
    return tuple(chosen)


def env_name(*keys: str) -> str:
    """The environment variable that sets a config key: ``notify.slack.channel`` is set by
    ``SUPERSEDE_NOTIFY__SLACK__CHANNEL``."""
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(key.upper() for key in keys)


# ---------------------------------------------------------------------------------- secrets


def check_slack(settings: Settings) -> None:
    """With a Slack token, every message must have a channel to go to.

    A verdict goes to its fine-tune's ``slack_channel``, else ``notify.slack.channel``; a feed's
    announcement has no fine-tune, so it needs ``notify.slack.channel``.
    """
    slack = settings.notify.slack
    if slack.channel or not secret(slack.token_env):
        return
    without = [ft.name for ft in settings.finetunes if not ft.slack_channel]
    if not without and not settings.watch.feeds:
        return
    who = (
        f"verdicts of {', '.join(without)} would have nowhere to go"
        if without
        else "announcements from watch.feeds would have nowhere to go"
    )
    raise ConfigError(
        f"notify.slack.channel is not set but {slack.token_env} is, so {who}: set "
        f"notify.slack.channel in the config or {env_name('notify', 'slack', 'channel')}=C0123... "
        f"in the environment (a fine-tune's slack_channel overrides it), or unset "
        f"{slack.token_env} to print verdicts on the console"
    )


def check_slack_app(settings: Settings) -> None:
    """The Slack app (a signing secret or an app token set) needs the bot token, a well-formed
    app token, and someone allowed to use its buttons."""
    slack = settings.notify.slack
    found = slack_app_mode(settings)
    if found is None:
        if slack.operators and secret(slack.token_env):
            raise ConfigError(
                "notify.slack.operators is set, so verdicts carry buttons, but neither "
                f"{slack.signing_secret_env} nor {slack.app_token_env} is set: this daemon could "
                "not answer them. Set one (see config/slack-app-manifest.yaml), or empty "
                "notify.slack.operators for plain messages"
            )
        return
    variable = slack.app_token_env if found == "socket" else slack.signing_secret_env
    if not secret(slack.token_env):
        raise ConfigError(
            f"{variable} is set but {slack.token_env} is not: the Slack app posts and updates "
            f"messages with the bot token (xoxb-...); set it, or unset {variable}"
        )
    token = secret(slack.app_token_env) or ""
    if found == "socket" and not token.startswith("xapp-"):
        raise ConfigError(
            f"{slack.app_token_env} does not hold an app-level token (xapp-...): make one under "
            "Basic Information > App-Level Tokens with the connections:write scope"
        )
    if not slack.operators:
        raise ConfigError(
            f"{variable} is set, so verdicts carry buttons, but notify.slack.operators is empty: "
            "nobody could use them. List the user ids (U0123...) or user group ids (S0123...) "
            f"allowed to act, e.g. {env_name('notify', 'slack', 'operators')}='[\"U0123\"]'"
        )


def check_webhook(settings: Settings) -> None:
    """An enabled webhook needs its secret: without it no delivery could be verified."""
    hook = settings.watch.webhook
    if hook.enabled and not secret(hook.secret_env):
        raise ConfigError(
            f"watch.webhook.enabled is true but {hook.secret_env} is not set: put the secret "
            f"from the Hub's webhook settings in that environment variable, or set "
            f"{env_name('watch', 'webhook', 'enabled')}=false"
        )


def check_api_keys(settings: Settings, queues: Sequence[str] | None = None) -> None:
    """An endpoint this worker will call that names a key variable needs it set: without it
    every request would be refused, release after release. API candidates and feeds' API models
    run on the default queue; a judged task's API judge wherever benchmarks run (every queue).
    ``queues``: the queues this worker consumes (None: all of them)."""
    if queues is None or DEFAULT_QUEUE in queues:
        named = [(f"api_candidates '{a.name}'", a.api_key_env) for a in settings.api_candidates]
        for feed in settings.watch.feeds:
            named += [
                (f"watch.feeds '{feed.name}' api_models rule '{rule.name}'", rule.api_key_env)
                for rule in feed.api_models
            ]
        for where, variable in named:
            if variable and not secret(variable):
                _key_not_set(where, variable)
    unset = {a.name for a in settings.api_candidates if a.api_key_env and not secret(a.api_key_env)}
    if not unset:
        return  # no task file need be read to know that every judge has its key
    consumed = "every queue" if queues is None else "the queues " + ", ".join(queues)
    for name, entry, variable in _api_judges(settings):
        if entry in unset and variable:
            _key_not_set(
                f"fine-tune '{name}': its judge, api_candidates '{entry}' (asked in the benchmark "
                f"job, so on this worker, which benchmarks on {consumed})",
                variable,
            )


def _key_not_set(where: str, variable: str) -> NoReturn:
    raise ConfigError(
        f"{where}: api_key_env names {variable}, which is not set: put the endpoint's "
        "API key in that environment variable, or remove api_key_env if it needs none"
    )


def _api_judges(settings: Settings) -> list[tuple[str, str, str | None]]:
    """(fine-tune, api_candidates entry, its key variable) of each judged task's API judge. A
    task file that cannot be read is left to :func:`check_tasks`, which names the problem."""
    from benchmarks.judge.pair import spec_for

    found = []
    for ft in settings.finetunes:
        try:
            spec = spec_for(settings, ft, load_task(task_path(settings, ft.task)))
        except (SupersedeError, ValueError):
            continue
        if spec is not None and spec.api is not None:
            found.append((ft.name, spec.api.name, spec.api.api_key_env))
    return found


# ---------------------------------------------------------------------------------- fine-tunes


def check_tasks(settings: Settings) -> None:
    """Each fine-tune's task file exists and parses, and both prompts (the fine-tune's own and
    ``candidates.prompt``) can be applied to it."""
    for index, ft in enumerate(settings.finetunes):
        path = task_path(settings, ft.task)
        try:
            task = load_task(path)
        except SupersedeError as exc:
            hint = (
                ""
                if path.is_file()
                else f"; fix finetunes[{index}].task (a relative path is read from the config "
                "file's folder)"
            )
            raise ConfigError(f"fine-tune '{ft.name}': {exc}{hint}") from None
        _check_prompt(task, ft.prompt, f"finetunes[{index}].prompt", None)
        _check_prompt(task, settings.candidates.prompt, "candidates.prompt", ft)
        _check_retune_data(settings, ft, task, index)
        from benchmarks.judge.pair import spec_for

        try:
            spec_for(settings, ft, task)  # a judged task names a rubric and a judge
        except (ConfigError, ValueError) as exc:
            raise ConfigError(f"fine-tune '{ft.name}': {exc}") from None
        if ft.prompt.system_prompt and ft.prompt.chat_template == "off":
            raise ConfigError(
                f"fine-tune '{ft.name}': finetunes[{index}].prompt.system_prompt is set but "
                "chat_template is 'off', and a system prompt is only sent inside a chat "
                "template: set chat_template to 'on' or 'auto', or remove system_prompt"
            )


def _check_retune_data(settings: Settings, ft: FineTune, task: Task, index: int) -> None:
    """The re-tune's training data a fine-tune names exists: its data file is there and
    readable, its split is in the task file (otherwise every release's re-tune would fail)."""
    from benchmarks.retune import training_rows
    from config.settings import retune_for

    wanted = retune_for(settings, ft)
    named = wanted.data_file or ft.retune.training_split
    if ft.adapter is None or wanted.when == "never" or not named:
        return
    config_dir = settings.source_file.parent if settings.source_file else None
    try:
        training_rows(task, wanted, config_dir)
    except SupersedeError as exc:
        raise ConfigError(f"fine-tune '{ft.name}' (finetunes[{index}].retune): {exc}") from None


def _check_prompt(task: Task, prompt: PromptSettings, key: str, ft: FineTune | None) -> None:
    if prompt.num_fewshot is None:
        return
    try:
        task.with_num_fewshot(prompt.num_fewshot)
    except SupersedeError as exc:
        variable = f" ({env_name('candidates', 'prompt', 'num_fewshot')})" if ft else ""
        on = f", for fine-tune '{ft.name}'" if ft else ""
        raise ConfigError(
            f"{key}.num_fewshot{variable}{on}: {exc}; lower {key}.num_fewshot, or add documents "
            "to the task's few-shot split"
        ) from None


def check_finetune_models(settings: Settings) -> None:
    """Each fine-tune's model and adapter is a Hub id or an existing folder; a local model asked
    to use its chat template has one. (Hub models are checked when they are fetched.)"""
    for index, ft in enumerate(settings.finetunes):
        refs = [("model" if ft.model else "base", ft.model_ref)]
        if ft.adapter:
            refs.append(("adapter", ft.adapter))
        for key, text in refs:
            try:
                ref = ModelRef.parse(text)
            except SupersedeError as exc:
                raise ConfigError(
                    f"fine-tune '{ft.name}' (finetunes[{index}].{key}): {exc}"
                ) from None
            if ref.path is not None and not ref.path.is_dir():
                raise ConfigError(
                    f"fine-tune '{ft.name}' (finetunes[{index}].{key}): {text} is not a folder; "
                    "fix the path (relative paths resolve against the working directory) or "
                    "give a Hub id like org/name"
                )
        base = ModelRef.parse(ft.model_ref).path
        if ft.prompt.chat_template == "on" and base is not None and not _has_chat_template(base):
            raise ConfigError(
                f"fine-tune '{ft.name}': finetunes[{index}].prompt.chat_template is 'on' but "
                f"{ft.model_ref} has no chat template: set chat_template to 'off' (or 'auto')"
            )


def check_deploy(settings: Settings) -> None:
    """A latency target needs the latency measured: with ``runtime.latency_sample`` 0 every
    verdict of that fine-tune would wait for a person's review."""
    from config.settings import deploy_for

    if settings.runtime.latency_sample > 0:
        return
    for ft in settings.finetunes:
        target = deploy_for(settings, ft).latency_p95_ms
        if target is not None:
            raise ConfigError(
                f"fine-tune '{ft.name}' has a p95 latency target of {target:g} ms but "
                f"runtime.latency_sample is 0, so no latency is measured: set "
                f"runtime.latency_sample (or {env_name('runtime', 'latency_sample')}) to 16 or "
                "more, or remove the deploy.latency_p95_ms target"
            )


def _has_chat_template(folder: Path) -> bool:
    if any((folder / name).is_file() for name in _CHAT_TEMPLATE_FILES):
        return True
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("chat_template"))


# ---------------------------------------------------------------------------------- files


def check_console_dir(settings: Settings) -> None:
    """Without a Slack token, messages are written to ``notify.console_dir``: it must be
    writable, or every notification would fail and be retried forever."""
    if secret(settings.notify.slack.token_env):
        return
    _writable_folder(settings.notify.console_dir, "notify.console_dir", ("notify", "console_dir"))


def check_cache_dir(settings: Settings) -> None:
    """Models are downloaded to ``hub.cache_dir`` (when set): it must be writable."""
    if settings.hub.cache_dir:
        _writable_folder(settings.hub.cache_dir, "hub.cache_dir", ("hub", "cache_dir"))


def _writable_folder(folder: str, key: str, env_keys: tuple[str, ...]) -> None:
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".supersede-preflight-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{key} {folder!r} cannot be written ({exc.strerror or exc}): make it writable by "
            f"this user, or point {key} (or {env_name(*env_keys)}) at a writable folder"
        ) from None


def check_store(settings: Settings) -> None:
    """The store opens, its tables exist (created on first use) and it takes a write."""
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.orm import Session

    from benchmarks.cache import BenchmarkResult
    from core.db import make_engine, safe_url, upgrade_store

    url = settings.store.url
    fix = (
        f"fix store.url (or {env_name('store', 'url')}): a database that answers, or a SQLite "
        "file in a folder this user can write"
    )
    try:
        engine = make_engine(url)  # a bad URL, a missing driver, an unusable folder
    except ConfigError as exc:
        raise ConfigError(f"{exc}; {fix}") from None
    try:
        try:
            upgrade_store(engine, url)  # cannot be opened, created or upgraded
        except ConfigError as exc:
            raise ConfigError(f"{exc}; {fix}") from None
        # A store in a read-only folder (or a read-only file) opens and reads fine; only the
        # first write fails. Write a row and roll it back.
        with Session(engine) as session:
            probe = BenchmarkResult(
                key="preflight", created_at=datetime(1970, 1, 1, tzinfo=UTC), model="",
                model_revision="", task="", metric="", score=0.0, n=0, engine_version="",
                identity={}, result={},
            )  # fmt: skip
            session.add(probe)
            try:
                session.flush()
            except DBAPIError as exc:
                if "locked" in str(exc.orig):  # another process is writing: it is writable
                    return
                raise ConfigError(
                    f"store.url {safe_url(url)!r} cannot be written ({exc.orig}); {fix}"
                ) from None
            finally:
                session.rollback()
    finally:
        engine.dispose()
